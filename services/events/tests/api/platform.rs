//! The platform working together, everything real: auth issues the users' tokens and the events
//! service's own (client credentials), payments takes the money (its `test` provider), mail
//! delivers to an SMTP sink, the broker carries availability to a websocket client, and
//! RabbitMQ carries the events between them.
//!
//! A paid seat end to end: registered and held, paid with `pm_card_visa`, confirmed when
//! `payments.payment.succeeded` arrives, mailed with its ticket, checked in at the door (a
//! second scan is `already_redeemed`, the same nonce the same answer). The seat is given up
//! (refunded) and offered to the first on the waitlist, who declines a card: the hold expires
//! and the seat is offered to the next, whose payment comes too late and is refunded. A
//! cancelled event cancels, refunds and mails everyone.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::config::ServiceConfig;
use futures_util::{SinkExt, StreamExt};
use identity::ClientCredentials;
use kit::Secret;
use kit::config::{AmqpSettings, SecretUrl};
use reqwest::StatusCode;
use serde_json::{Value, json};
use smtp_sink::Sink;
use testkit::{TestApp, json, tokens};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::common::{BOB, get, post, published_event, redis_url, register, spawn, until_status};

const AUTH: &str = "/api/auth/v1";
const PAYMENTS: &str = "/api/payments/v1/payments";
const EVENTS_CLIENT: &str = "0193a000-0000-7000-8000-00000000c004";
const WAIT: Duration = Duration::from_secs(20);

async fn spawn_auth() -> TestApp {
    TestApp::spawn_with::<auth::Auth>(move |settings| {
        let prefix = format!("test-{}:", Uuid::now_v7().simple());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        settings.auth.revocation_prefix = prefix.clone();
        settings.app.redis_prefix = prefix;
        settings.app.argon2 = auth::config::Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        settings.populate.scenario = Some("demo".into());
    })
    .await
}

/// A demo user's access token from auth's password grant.
async fn sign_in(auth: &TestApp, who: &str) -> String {
    let response = auth
        .post_json(
            &format!("{AUTH}/token"),
            &json!({"grant_type": "password", "email": format!("{who}@hatchery.test"),
                "password": format!("hatchery-{who}")}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = json(response).await;
    body["access_token"].as_str().unwrap().to_owned()
}

async fn spawn_payments(jwks: &str, amqp: &AmqpSettings) -> TestApp {
    let (jwks, amqp) = (jwks.to_owned(), amqp.clone());
    TestApp::spawn_with::<payments::Payments>(move |settings| {
        settings.populate.scenario = Some("demo".into());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        settings.auth.jwks_url = Some(jwks);
        settings.amqp = amqp;
        settings.app.reconcile.enabled = false;
        settings.app.realtime_prefix = format!("test.{}.", Uuid::now_v7().simple());
    })
    .await
}

async fn spawn_mail(sink: &Sink, amqp: &AmqpSettings) -> TestApp {
    let (smtp, amqp) = (format!("smtp://{}", sink.addr()), amqp.clone());
    TestApp::spawn_with::<mail::Mail>(move |settings| {
        settings.populate.scenario = Some("demo".into());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        tokens::trust(settings);
        settings.amqp = amqp;
        let app = &mut settings.app;
        app.smtp.url = smtp.try_into().expect("an SMTP URL");
        app.smtp.max_per_second = 0;
        app.delivery.poll = Duration::from_millis(100);
    })
    .await
}

/// The broker with the platform's public `events` topics, on `prefix`.
async fn spawn_broker(prefix: &str) -> TestApp {
    let prefix = prefix.to_owned();
    TestApp::spawn_with::<broker::BrokerService>(move |settings| {
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        tokens::trust(settings);
        settings.app.channel_prefix = prefix;
        settings.app.services.insert(
            "events".into(),
            ServiceConfig {
                require_authentication: false,
                authorization: Some("public".into()),
                ..ServiceConfig::default()
            },
        );
        settings.app.services.insert(
            "notifications".into(),
            ServiceConfig {
                authorization: Some("owner".into()),
                ..ServiceConfig::default()
            },
        );
    })
    .await
}

async fn bus_up(app: &TestApp, what: &str) {
    testkit::eventually(&format!("{what}'s bus to be up"), WAIT, || async {
        let ready: Value = json(app.get("/readyz").await).await;
        (ready["checks"]["bus"]["status"] == "up").then_some(())
    })
    .await;
}

/// The first mail to `email` whose subject starts with `subject`.
async fn mail_to(sink: &Sink, email: &str, subject: &str) -> smtp_sink::Message {
    testkit::eventually(&format!("{subject:?} to {email}"), WAIT, || async {
        sink.messages().into_iter().find(|m| {
            m.recipients.iter().any(|r| r == email)
                && m.subject().is_some_and(|s| s.starts_with(subject))
        })
    })
    .await
}

/// A POST to payments with a fresh `Idempotency-Key`.
async fn pay(payments: &TestApp, token: &str, payment: &str, method: &str) -> Value {
    let response = payments
        .client
        .post(payments.url(&format!("{PAYMENTS}/{payment}/confirm")))
        .bearer_auth(token)
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&json!({"payment_method": method}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

async fn refunded(payments: &TestApp, admin: &str, payment: &str, amount: i64) {
    testkit::eventually(&format!("payment {payment} refunded"), WAIT, || async {
        let seen: Value = json(
            payments
                .with_token(admin)
                .get(&format!("{PAYMENTS}/{payment}"))
                .await,
        )
        .await;
        (seen["amount_refunded"] == amount).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_seats_from_registration_to_the_door_with_payments_mail_and_the_broker() {
    let amqp = bus::testing::settings();
    let sink = Sink::start("127.0.0.1:0").expect("an SMTP sink");
    let realtime = format!("test.{}.", Uuid::now_v7().simple());
    let auth = spawn_auth().await;
    let jwks = format!("{}/.well-known/jwks.json", auth.base_url);
    // Started together: each makes and migrates its own database.
    let (payments, mail, broker) = tokio::join!(
        spawn_payments(&jwks, &amqp),
        spawn_mail(&sink, &amqp),
        spawn_broker(&realtime)
    );
    let events = spawn(|settings| {
        settings.auth.public_key = None;
        settings.auth.jwks_url = Some(jwks.clone());
        settings.amqp = amqp.clone();
        let app = &mut settings.app;
        app.realtime_prefix = realtime.clone();
        app.client = Some(ClientCredentials {
            token_url: format!("{}{AUTH}/token", auth.base_url),
            client_id: EVENTS_CLIENT.into(),
            client_secret: Secret::new("hatchery-events-secret"),
            scope: None,
        });
        app.payments_url = payments.url("/api/payments/v1");
        app.hold = Duration::from_millis(1_500);
        app.offer = Duration::from_millis(1_500);
        app.expiry_grace = Duration::from_secs(1);
    })
    .await;
    bus_up(&mail, "mail").await;
    bus_up(&events, "events").await;
    bus_up(&payments, "payments").await;
    let (ada, bob, cleo) = (
        sign_in(&auth, "ada").await,
        sign_in(&auth, "bob").await,
        sign_in(&auth, "cleo").await,
    );

    let seat = json!({"name": "Seat", "price": {"amount": 2500, "currency": "EUR"}, "capacity": 1});
    let event = published_event(
        &events,
        &ada,
        json!({"title": "Paid workshop", "capacity": 1, "ticket_types": [seat]}),
    )
    .await;
    let id = event["id"].as_str().unwrap().to_owned();

    // A websocket client watching the event's seats.
    let ws_url = format!("{}/ws", broker.base_url.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("websocket");
    let topic = format!("events.event_{id}");
    ws.send(Message::text(
        json!({"event": "subscribe", "subscription": topic}).to_string(),
    ))
    .await
    .unwrap();
    let seen_left = Arc::new(Mutex::new(Vec::<i64>::new()));
    let watcher = {
        let seen_left = seen_left.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                let Message::Text(text) = frame else { continue };
                let message: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if message["event"] == "subscribe" {
                    assert_eq!(message["status"], "ok", "{message}");
                }
                if let Some(left) = message["data"]["left"].as_i64() {
                    seen_left.lock().unwrap().push(left);
                }
            }
        })
    };
    let saw = |left: i64| {
        let seen_left = seen_left.clone();
        async move {
            testkit::eventually(
                &format!("the websocket client to see {left} seats left"),
                WAIT,
                || async { seen_left.lock().unwrap().contains(&left).then_some(()) },
            )
            .await;
        }
    };

    // Bob's own notifications: only he may subscribe to them (the broker checks the token's
    // subject against the topic's user).
    let (mut bobs_ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
        .await
        .expect("websocket");
    let bob_uuid = Uuid::parse_str(BOB).unwrap();
    for request in [
        json!({"event": "auth", "method": "jwt", "token": tokens::user(bob_uuid).mint()}),
        json!({"event": "subscribe", "subscription": format!("notifications.user_{BOB}")}),
    ] {
        bobs_ws
            .send(Message::text(request.to_string()))
            .await
            .unwrap();
    }
    let bob_heard = Arc::new(Mutex::new(Vec::<Value>::new()));
    let bob_listener = {
        let bob_heard = bob_heard.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = bobs_ws.next().await {
                let Message::Text(text) = frame else { continue };
                let message: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if message["event"] == "auth" || message["event"] == "subscribe" {
                    assert_eq!(message["status"], "ok", "{message}");
                }
                bob_heard.lock().unwrap().push(message);
            }
        })
    };
    let bob_told = |status: &'static str| {
        let bob_heard = bob_heard.clone();
        async move {
            testkit::eventually(
                &format!("Bob's websocket to hear his registration is {status}"),
                WAIT,
                || async {
                    bob_heard
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|m| {
                            m["data"]["type"] == "registration" && m["data"]["status"] == status
                        })
                        .then_some(())
                },
            )
            .await;
        }
    };

    // Bob registers: his seat is held and he pays it; the payment confirms it.
    let bobs = register(&events, &bob, &id, json!({})).await;
    assert_eq!(bobs["status"], "pending_payment", "{bobs}");
    assert!(bobs["payment"]["client_secret"].is_string(), "{bobs}");
    saw(0).await;
    let bob_payment = bobs["payment"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pay(&payments, &bob, &bob_payment, "pm_card_visa").await["status"],
        "succeeded"
    );
    let bob_registration = bobs["id"].as_str().unwrap().to_owned();
    until_status(&events, &bob, &bob_registration, "confirmed").await;
    bob_told("pending_payment").await;
    bob_told("confirmed").await;
    bob_listener.abort();
    let confirmation = mail_to(&sink, "bob@hatchery.test", "You're in: Paid workshop").await;
    let ticket = get(
        &events,
        &bob,
        &format!("/registrations/{bob_registration}/ticket"),
    )
    .await;
    let html = confirmation.html_body().expect("an HTML part");
    let secret = ticket["secret"].as_str().unwrap();
    assert!(
        html.contains(secret) && html.contains("qr.svg"),
        "the QR image: {html}"
    );
    assert!(html.contains(ticket["code"].as_str().unwrap()), "{html}");
    let qr_url = ticket["qr_url"].as_str().unwrap();
    assert!(qr_url.starts_with(&events.base_url), "{qr_url}");
    let qr = events.get(&qr_url.replace(&events.base_url, "")).await;
    assert_eq!(qr.headers()["content-type"], "image/svg+xml");

    // At the door.
    let scan = |nonce: &'static str| {
        let (events, ada, id, secret) = (&events, &ada, &id, ticket["secret"].clone());
        async move {
            let response = post(
                events,
                ada,
                &format!("/events/{id}/checkins"),
                &json!({"secret": secret, "nonce": nonce, "type": "entry"}),
            )
            .await;
            json::<Value>(response).await
        }
    };
    let first = scan("door-1").await;
    assert_eq!(
        (first["result"].as_str(), first["attendee"].as_str()),
        (Some("ok"), Some("Bob Baker"))
    );
    assert_eq!(scan("door-2").await["result"], "already_redeemed");
    assert_eq!(scan("door-1").await, first);

    // Cleo, then Ada, wait. Bob gives his seat up: refunded, and Cleo is offered it.
    let cleos = register(&events, &cleo, &id, json!({})).await;
    let adas = register(&events, &ada, &id, json!({})).await;
    assert_eq!(
        (cleos["status"].as_str(), adas["status"].as_str()),
        (Some("waitlisted"), Some("waitlisted"))
    );
    let gave_up = post(
        &events,
        &bob,
        &format!("/registrations/{bob_registration}/cancel"),
        &json!({}),
    )
    .await;
    assert_eq!(gave_up.status(), StatusCode::OK);
    refunded(&payments, &ada, &bob_payment, 2500).await;
    let cleo_registration = cleos["id"].as_str().unwrap().to_owned();
    until_status(&events, &cleo, &cleo_registration, "pending_payment").await;
    let offer = mail_to(
        &sink,
        "cleo@hatchery.test",
        "A seat opened up: Paid workshop",
    )
    .await;
    assert!(offer.text_body().unwrap().contains(&cleo_registration));

    // Cleo's card is declined; her hold expires and the seat goes to Ada.
    let cleo_paying = post(
        &events,
        &cleo,
        &format!("/registrations/{cleo_registration}/payment"),
        &json!({}),
    )
    .await;
    let cleo_paying: Value = json(cleo_paying).await;
    let declined = pay(
        &payments,
        &cleo,
        cleo_paying["payment"]["id"].as_str().unwrap(),
        "pm_card_chargeDeclined",
    )
    .await;
    assert_eq!(declined["status"], "failed");
    until_status(&events, &cleo, &cleo_registration, "expired").await;
    let ada_registration = adas["id"].as_str().unwrap().to_owned();
    until_status(&events, &ada, &ada_registration, "pending_payment").await;

    // Ada pays only after her hold expired: refunded, and told, never confirmed.
    let ada_paying = post(
        &events,
        &ada,
        &format!("/registrations/{ada_registration}/payment"),
        &json!({}),
    )
    .await;
    let ada_paying: Value = json(ada_paying).await;
    let ada_payment = ada_paying["payment"]["id"].as_str().unwrap().to_owned();
    until_status(&events, &ada, &ada_registration, "expired").await;
    saw(1).await;
    assert_eq!(
        pay(&payments, &ada, &ada_payment, "pm_card_visa").await["status"],
        "succeeded"
    );
    refunded(&payments, &ada, &ada_payment, 2500).await;
    let told = mail_to(
        &sink,
        "ada@hatchery.test",
        "Registration canceled: Paid workshop",
    )
    .await;
    assert!(
        told.text_body().unwrap().contains("refunded"),
        "{:?}",
        told.text_body()
    );
    assert_eq!(
        get(&events, &ada, &format!("/registrations/{ada_registration}")).await["status"],
        "expired"
    );

    // A cancelled event: every registration cancelled, the paid one refunded, everyone mailed.
    let tickets = json!([
        {"name": "Supporter", "price": {"amount": 1000, "currency": "EUR"}, "capacity": 5},
        {"name": "Free", "capacity": 5},
    ]);
    let party = published_event(
        &events,
        &ada,
        json!({"title": "Summer party", "capacity": 10, "ticket_types": tickets}),
    )
    .await;
    let party_id = party["id"].as_str().unwrap().to_owned();
    let free_ticket = party["ticket_types"][1]["id"].clone();
    let supporter = register(&events, &bob, &party_id, json!({})).await;
    let supporter_payment = supporter["payment"]["id"].as_str().unwrap().to_owned();
    pay(&payments, &bob, &supporter_payment, "pm_card_visa").await;
    until_status(
        &events,
        &bob,
        supporter["id"].as_str().unwrap(),
        "confirmed",
    )
    .await;
    let guest = register(
        &events,
        &cleo,
        &party_id,
        json!({"ticket_type": free_ticket}),
    )
    .await;
    assert_eq!(guest["status"], "confirmed");
    let cancelled = post(
        &events,
        &ada,
        &format!("/events/{party_id}/cancel"),
        &json!({"reason": "Rain."}),
    )
    .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    refunded(&payments, &ada, &supporter_payment, 1000).await;
    for email in ["bob@hatchery.test", "cleo@hatchery.test"] {
        let mail = mail_to(&sink, email, "Registration canceled: Summer party").await;
        assert!(mail.text_body().unwrap().contains("Rain."));
    }
    watcher.abort();
    bus::testing::cleanup(
        &bus::testing::amqp_url(),
        &amqp,
        &["payments", "mail", "events"],
    )
    .await;
}
