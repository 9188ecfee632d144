//! Events the service publishes reach RabbitMQ (through the outbox), on a prefix of the test's
//! own.

use std::time::Duration;

use crate::common::{BOB, bob, redis_url};
use kit::config::SecretUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json, tokens};

#[tokio::test]
async fn creating_a_note_publishes_note_created() {
    let amqp = bus::testing::settings();
    let url = bus::testing::amqp_url();
    let mut tap = bus::testing::Tap::bind(&url, &amqp.prefix, "mail.#")
        .await
        .expect("RabbitMQ must run at 127.0.0.1:5672 (cargo xtask infra starts it)");
    let app = TestApp::spawn_with::<mail::Mail>(|settings| {
        settings.populate.scenario = Some("demo".into());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        settings.amqp = amqp.clone();
        tokens::trust(settings);
    })
    .await;

    let response = app
        .with_token(&bob().mint())
        .request(reqwest::Method::POST, "/api/mail/v1/notes")
        .header("x-request-id", "events-test-1")
        .json(&json!({"title": "Flour order"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let note: Value = json(response).await;

    let (event, _) = tap
        .next(Duration::from_secs(10))
        .await
        .expect("mail.note.created reaches RabbitMQ");
    assert_eq!(event.event_type, "mail.note.created");
    assert_eq!(event.source, "/mail");
    assert_eq!(event.dataversion, Some(1));
    assert_eq!(event.subject.as_deref(), note["id"].as_str());
    assert_eq!(event.requestid.as_deref(), Some("events-test-1"));
    assert_eq!(event.actor.map(|a| a.to_string()).as_deref(), Some(BOB));
    assert_eq!(event.data["note"], note["id"]);
    assert_eq!(event.data["owner"], BOB);
    assert_eq!(event.data["title"], "Flour order");

    // The bus (relay and consumer) is part of readiness.
    testkit::eventually("the bus to be ready", Duration::from_secs(10), || async {
        let ready: Value = json(app.get("/readyz").await).await;
        (ready["checks"]["bus"]["status"] == "up").then_some(())
    })
    .await;

    tap.close().await;
    bus::testing::cleanup(&url, &amqp, &[]).await;
}

#[tokio::test]
async fn auth_user_events_keep_the_local_user_copy_current() {
    let amqp = bus::testing::settings();
    let url = bus::testing::amqp_url();
    let app = TestApp::spawn_with::<mail::Mail>(|settings| {
        settings.populate.scenario = Some("demo".into());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        settings.amqp = amqp.clone();
        tokens::trust(settings);
    })
    .await;
    // The consumer's queue exists once the service is ready (declared at start).
    testkit::eventually("the bus to be up", Duration::from_secs(10), || async {
        let ready: Value = json(app.get("/readyz").await).await;
        (ready["checks"]["bus"]["status"] == "up").then_some(())
    })
    .await;

    let bob_id: uuid::Uuid = BOB.parse().unwrap();
    let renamed = contracts::auth::UserUpdated {
        user: bob_id,
        email: "bob@hatchery.test".into(),
        name: "Robert Baker".into(),
        roles: vec!["admin".into()],
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

    let row: (String, Vec<String>) = testkit::eventually(
        "the user copy to change",
        Duration::from_secs(10),
        || async {
            let row: (String, Vec<String>) =
                sqlx::query_as("SELECT name, roles FROM users WHERE uuid = $1")
                    .bind(bob_id)
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
            (row.0 == "Robert Baker").then_some(row)
        },
    )
    .await;
    assert_eq!(row.1, vec!["admin".to_owned()]);

    // Deleted in auth: deleted here, so Bob's token no longer opens anything.
    let gone = contracts::auth::UserDeleted { user: bob_id };
    let deleted = bus::CloudEvent::new(&gone, None);
    publisher
        .send("auth.user.deleted", &serde_json::to_vec(&deleted).unwrap())
        .await
        .unwrap();
    publisher.confirm_all().await.unwrap();
    testkit::eventually("Bob to be refused", Duration::from_secs(10), || async {
        let status = app
            .with_token(&bob().mint())
            .get("/api/mail/v1/notes")
            .await
            .status();
        (status == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;

    publisher.close().await;
    bus::testing::cleanup(&url, &amqp, &["mail"]).await;
}
