//! Events, on a RabbitMQ prefix of the test's own: every message's outcome is published with
//! the request id that caused it; mapped platform events become mail exactly once; `auth.user.*`
//! keeps the local users current.

use std::time::Duration;

use kit::config::SecretUrl;
use serde_json::{Value, json};
use smtp_sink::{ChaosResponse, Stage};
use testkit::{TestApp, json};

use crate::common::*;

async fn spawn_on_bus(sink: &smtp_sink::Sink, amqp: &kit::config::AmqpSettings) -> TestApp {
    let amqp = amqp.clone();
    let app = spawn_with(sink, move |settings| {
        settings.amqp = amqp;
        settings.redis.url = Some(SecretUrl::new(redis_url()));
    })
    .await;
    // The consumer's queue exists once the bus is up (declared at start).
    testkit::eventually("the bus to be up", Duration::from_secs(10), || async {
        let ready: Value = json(app.get("/readyz").await).await;
        (ready["checks"]["bus"]["status"] == "up").then_some(())
    })
    .await;
    app
}

#[tokio::test]
async fn every_outcome_is_published_with_the_request_id_that_caused_it() {
    let amqp = bus::testing::settings();
    let url = bus::testing::amqp_url();
    let mut tap = bus::testing::Tap::bind(&url, &amqp.prefix, "mail.#")
        .await
        .expect("RabbitMQ must run at 127.0.0.1:5672 (cargo xtask infra starts it)");
    let sink = sink(10);
    let app = spawn_on_bus(&sink, &amqp).await;
    let (good, bad, blocked) = (
        unique_email("good"),
        unique_email("bad"),
        unique_email("blocked"),
    );
    sink.set_recipient_chaos(&bad, vec![ChaosResponse::reply(Stage::Rcpt, 550)])
        .unwrap();
    let added = app
        .with_token(&ada())
        .post_json(SUPPRESSIONS, &json!({"email": blocked}))
        .await;
    assert_eq!(added.status(), reqwest::StatusCode::CREATED);
    let response = app
        .with_token(&ada())
        .request(reqwest::Method::POST, MESSAGES)
        .header("x-request-id", "outcomes-1")
        .json(
            &json!({"template": "auth.verify_email", "data": verification_data(),
                      "recipients": [{"email": good}, {"email": bad}, {"email": blocked}],
                      "tags": ["t1"], "metadata": {"order": "42"}}),
        )
        .send()
        .await
        .unwrap();
    let accepted: Value = json(response).await;
    let ids: Vec<&str> = accepted["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();

    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 3 {
        let (event, _) = tap
            .next(Duration::from_secs(15))
            .await
            .expect("an outcome event");
        seen.insert(event.event_type.clone(), event);
    }
    let sent = &seen["mail.message.sent"];
    assert_eq!(sent.source, "/mail");
    assert_eq!(sent.subject.as_deref(), Some(ids[0]));
    assert_eq!(sent.requestid.as_deref(), Some("outcomes-1"));
    assert_eq!(sent.data["email"], good.as_str());
    assert_eq!(sent.data["template"], "auth.verify_email");
    assert_eq!(sent.data["tags"], json!(["t1"]));
    assert_eq!(sent.data["metadata"], json!({"order": "42"}));
    assert!(sent.data["message_id"].as_str().unwrap().starts_with('<'));
    let failed = &seen["mail.message.failed"];
    assert_eq!(failed.subject.as_deref(), Some(ids[1]));
    assert_eq!(failed.requestid.as_deref(), Some("outcomes-1"));
    assert!(failed.data["reply"].as_str().unwrap().starts_with("550"));
    let suppressed = &seen["mail.message.suppressed"];
    assert_eq!(suppressed.subject.as_deref(), Some(ids[2]));
    assert_eq!(suppressed.data["reason"], "manual");
    assert_eq!(suppressed.requestid.as_deref(), Some("outcomes-1"));

    tap.close().await;
    bus::testing::cleanup(&url, &amqp, &["mail"]).await;
}

#[tokio::test]
async fn a_mapped_event_becomes_one_mail_even_when_delivered_twice_and_user_events_keep_users_current()
 {
    let amqp = bus::testing::settings();
    let url = bus::testing::amqp_url();
    let sink = sink(10);
    let app = spawn_on_bus(&sink, &amqp).await;
    let to = unique_email("evented");
    let user = uuid::Uuid::now_v7();
    let payload = contracts::auth::PasswordResetRequested {
        user,
        email: to.clone(),
        name: "Eve Event".into(),
        token: "secret-token".into(),
        url: "https://hatchery.test/reset-password?token=secret-token".into(),
        expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
    };
    let event = kit::request_id::scope("evented-1".into(), async {
        bus::CloudEvent::new(&payload, Some(user))
    })
    .await;
    let body = serde_json::to_vec(&event).unwrap();
    let publisher = bus::testing::RawPublisher::new(&url, &amqp.prefix)
        .await
        .unwrap();
    publisher
        .send("auth.password.reset_requested", &body)
        .await
        .unwrap();
    publisher
        .send("auth.password.reset_requested", &body)
        .await
        .unwrap();
    publisher.confirm_all().await.unwrap();

    let mail = wait_for_mail(&sink, &to).await;
    assert_eq!(
        mail.subject().as_deref(),
        Some("Reset your Hatchery password")
    );
    assert!(
        mail.text_body()
            .unwrap()
            .contains("https://hatchery.test/reset-password?token=secret-token")
    );
    assert!(mail.header("To").unwrap().contains("Eve Event"));
    // The second copy is recognised by the inbox: wait until the consumer has handled it.
    testkit::eventually(
        "the duplicate to be handled",
        Duration::from_secs(10),
        || async {
            let metrics = app.get("/metrics").await.text().await.ok()?;
            metrics
                .lines()
                .any(|l| {
                    l.starts_with("bus_events_consumed_total")
                        && l.contains("auth.password.reset_requested")
                        && l.contains("duplicate")
                })
                .then_some(())
        },
    )
    .await;
    let rows: Vec<(String, Option<String>, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT status, request_id, event_id FROM messages WHERE to_email = $1")
            .bind(&to)
            .fetch_all(&app.db)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].1.as_deref(), Some("evented-1"));
    assert_eq!(rows[0].2, Some(event.id));
    let listed: Value = json(
        app.with_token(&ada())
            .get(&format!("{MESSAGES}?user_id={user}"))
            .await,
    )
    .await;
    let message = &listed["items"][0];
    assert_eq!(message["event"]["type"], "auth.password.reset_requested");
    assert_eq!(message["tags"], json!(["auth.password.reset_requested"]));
    assert_eq!(mail_to(&sink, &to).len(), 1);

    // auth.user.* keeps the local copy current: mail to Bob by id follows his new address.
    {
        let bob_id: uuid::Uuid = BOB.parse().unwrap();
        let renamed = contracts::auth::UserUpdated {
            user: bob_id,
            email: "robert@hatchery.test".into(),
            name: "Robert Baker".into(),
            roles: vec![],
            is_active: true,
        };
        let publisher = bus::testing::RawPublisher::new(&url, &amqp.prefix)
            .await
            .unwrap();
        let event = bus::CloudEvent::new(&renamed, None);
        publisher
            .send("auth.user.updated", &serde_json::to_vec(&event).unwrap())
            .await
            .unwrap();
        publisher.confirm_all().await.unwrap();
        testkit::eventually(
            "the user copy to change",
            Duration::from_secs(10),
            || async {
                let email: String = sqlx::query_scalar("SELECT email FROM users WHERE uuid = $1")
                    .bind(bob_id)
                    .fetch_one(&app.db)
                    .await
                    .ok()?;
                (email == "robert@hatchery.test").then_some(())
            },
        )
        .await;
        // Mail to Bob by id goes to his new address, under his new name.
        let response = send(
        &app,
        &ada(),
        &json!({"template": "auth.verify_email", "data": verification_data(), "recipients": [{"user_id": BOB}]}),
    )
    .await;
        let accepted: Value = json(response).await;
        assert_eq!(accepted["messages"][0]["email"], "robert@hatchery.test");
        let mail = wait_for_mail(&sink, "robert@hatchery.test").await;
        assert!(mail.header("To").unwrap().contains("Robert Baker"));
    }

    publisher.close().await;
    bus::testing::cleanup(&url, &amqp, &["mail"]).await;
}
