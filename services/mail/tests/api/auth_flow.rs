//! With the real auth service on the same bus, its tokens verified against its key set: signing
//! up mails a working verification link, "forgot password" mails a working reset link, an event
//! delivered twice mails once, and the events service's demo client may send mail.

use std::time::Duration;

use kit::config::SecretUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

use crate::common::*;

const AUTH: &str = "/api/auth/v1";

async fn spawn_auth(amqp: &kit::config::AmqpSettings) -> TestApp {
    let amqp = amqp.clone();
    TestApp::spawn_with::<auth::Auth>(move |settings| {
        let prefix = format!("test-{}:", uuid::Uuid::now_v7().simple());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        settings.auth.revocation_prefix = prefix.clone();
        settings.app.redis_prefix = prefix;
        // Tests check behaviour, not hashing cost.
        settings.app.argon2 = auth::config::Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        settings.app.verify_email_url = "https://hatchery.test/verify-email?token={token}".into();
        settings.app.reset_password_url =
            "https://hatchery.test/reset-password?token={token}".into();
        settings.populate.scenario = Some("demo".into());
        settings.amqp = amqp;
    })
    .await
}

/// The link starting with `prefix` in the mail's text part, and its token.
fn link(mail: &smtp_sink::Message, prefix: &str) -> (String, String) {
    let text = mail.text_body().expect("a text part");
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} link in: {text}"));
    let url: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    let token = url
        .split_once("token=")
        .expect("a token parameter")
        .1
        .to_owned();
    (url, token)
}

const EVENTS_CLIENT: &str = "0193a000-0000-7000-8000-00000000c004";
const MAIL_CLIENT: &str = "0193a000-0000-7000-8000-00000000c002";

/// An access token from auth's token endpoint.
async fn access_token(auth: &TestApp, grant: Value) -> String {
    let response = auth.post_json(&format!("{AUTH}/token"), &grant).await;
    let status = response.status();
    let body: Value = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

async fn sign_in(auth: &TestApp, email: &str, password: &str) -> StatusCode {
    auth.post_json(
        &format!("{AUTH}/token"),
        &json!({"grant_type": "password", "email": email, "password": password}),
    )
    .await
    .status()
}

#[tokio::test]
async fn signing_up_and_forgetting_the_password_mail_links_that_work_once_each() {
    let amqp = bus::testing::settings();
    let url = bus::testing::amqp_url();
    let sink = sink(10);
    let auth = spawn_auth(&amqp).await;
    let jwks = format!("{}/.well-known/jwks.json", auth.base_url);
    let mail = spawn_with(&sink, {
        let amqp = amqp.clone();
        move |settings| {
            settings.amqp = amqp;
            settings.auth.public_key = None;
            settings.auth.jwks_url = Some(jwks);
        }
    })
    .await;
    testkit::eventually("mail's bus to be up", Duration::from_secs(10), || async {
        let ready: Value = json(mail.get("/readyz").await).await;
        (ready["checks"]["bus"]["status"] == "up").then_some(())
    })
    .await;

    let email = unique_email("newcomer");
    let password = "correct-horse-battery-staple";
    let signed_up = auth
        .post_json(
            &format!("{AUTH}/signup"),
            &json!({"email": email, "password": password, "name": "Nina Newcomer"}),
        )
        .await;
    assert_eq!(signed_up.status(), StatusCode::CREATED);
    let user: Value = json(signed_up).await;
    assert_eq!(
        sign_in(&auth, &email, password).await,
        StatusCode::BAD_REQUEST,
        "not verified yet"
    );

    let verification = wait_for_mail(&sink, &email).await;
    assert_eq!(
        verification.subject().as_deref(),
        Some("Confirm your email address")
    );
    assert!(verification.header("To").unwrap().contains("Nina Newcomer"));
    let (_, token) = link(&verification, "https://hatchery.test/verify-email?token=");
    let verified = auth
        .post_json(&format!("{AUTH}/email/verify"), &json!({"token": token}))
        .await;
    assert_eq!(verified.status(), StatusCode::NO_CONTENT);
    assert_eq!(sign_in(&auth, &email, password).await, StatusCode::OK);
    let reused = auth
        .post_json(&format!("{AUTH}/email/verify"), &json!({"token": token}))
        .await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // The message is traceable to the signup's event, and to the user (read by the demo admin,
    // signed in on auth).
    let ada = access_token(
        &auth,
        json!({"grant_type": "password", "email": "ada@hatchery.test", "password": "hatchery-ada"}),
    )
    .await;
    let listed: Value = json(
        mail.with_token(&ada)
            .get(&format!(
                "{MESSAGES}?user_id={}",
                user["user"]["id"].as_str().unwrap()
            ))
            .await,
    )
    .await;
    assert_eq!(
        listed["items"][0]["event"]["type"],
        "auth.email.verification_requested"
    );
    assert_eq!(listed["items"][0]["status"], "sent");

    // Forgot password: a reset mail whose link sets a new password.
    let forgot = auth
        .post_json(&format!("{AUTH}/password/forgot"), &json!({"email": email}))
        .await;
    assert_eq!(forgot.status(), StatusCode::ACCEPTED);
    let reset_mail = testkit::eventually("the reset mail", Duration::from_secs(20), || async {
        mail_to(&sink, &email)
            .into_iter()
            .find(|m| m.subject().as_deref() == Some("Reset your Hatchery password"))
    })
    .await;
    let (_, token) = link(&reset_mail, "https://hatchery.test/reset-password?token=");
    let new_password = "another-horse-battery-staple";
    let reset = auth
        .post_json(
            &format!("{AUTH}/password/reset"),
            &json!({"token": token, "new_password": new_password}),
        )
        .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert_eq!(sign_in(&auth, &email, new_password).await, StatusCode::OK);

    // The verification event delivered a second time (as RabbitMQ may): still one mail.
    let envelope: String = sqlx::query_scalar(
        "SELECT envelope::text FROM outbox
         WHERE event_type = 'auth.email.verification_requested' AND envelope->'data'->>'email' = $1",
    )
    .bind(&email)
    .fetch_one(&auth.db)
    .await
    .unwrap();
    let publisher = bus::testing::RawPublisher::new(&url, &amqp.prefix)
        .await
        .unwrap();
    publisher
        .send("auth.email.verification_requested", envelope.as_bytes())
        .await
        .unwrap();
    publisher.confirm_all().await.unwrap();
    testkit::eventually(
        "the redelivery to be recognised",
        Duration::from_secs(10),
        || async {
            let metrics = mail.get("/metrics").await.text().await.ok()?;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with("bus_events_consumed_total")
                        && l.contains("auth.email.verification_requested")
                        && l.contains("duplicate")
                })
                .then_some(())
        },
    )
    .await;
    let verifications = mail_to(&sink, &email)
        .into_iter()
        .filter(|m| m.subject().as_deref() == Some("Confirm your email address"))
        .count();
    assert_eq!(verifications, 1);
    let messages: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE to_email = $1")
        .bind(&email)
        .fetch_one(&mail.db)
        .await
        .unwrap();
    assert_eq!(messages, 2, "one verification, one reset");

    // The events service's demo client sends mail itself; the mail service's own client may not.
    let events = access_token(
        &auth,
        json!({"grant_type": "client_credentials", "client_id": EVENTS_CLIENT, "client_secret": "hatchery-events-secret"}),
    )
    .await;
    let to = unique_email("from-events");
    let sent = send(
        &mail,
        &events,
        &json!({"template": "events.registration_canceled", "recipients": [{"email": to, "name": "Bob"}],
                "data": {"name": "Bob", "event": {"title": "Rust meetup", "starts_at": "2026-12-10T18:30:00Z", "url": "https://hatchery.test/e/1"}}}),
    )
    .await;
    assert_eq!(sent.status(), StatusCode::ACCEPTED);
    let canceled = wait_for_mail(&sink, &to).await;
    assert_eq!(
        canceled.subject().as_deref(),
        Some("Registration canceled: Rust meetup")
    );
    let own = access_token(
        &auth,
        json!({"grant_type": "client_credentials", "client_id": MAIL_CLIENT, "client_secret": "hatchery-mail-secret"}),
    )
    .await;
    let refused = send(
        &mail,
        &own,
        &json!({"template": "auth.verify_email", "recipients": [{"email": to}]}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    publisher.close().await;
    drop(auth);
    bus::testing::cleanup(&url, &amqp, &["mail"]).await;
}
