//! `/readyz` means "send me traffic": a RabbitMQ outage degrades it (the outbox keeps the
//! events, writes go on), a database outage fails it. Each server is reached through a
//! fault-injecting proxy, so only this service sees it go down.

use std::time::Duration;

use kit::SecretUrl;
use reqwest::StatusCode;
use serde_json::json;
use testkit::{FaultProxy, TestApp, tokens};

use crate::common::{bob, redis_url};

#[tokio::test]
async fn a_rabbitmq_outage_degrades_readiness_and_a_database_outage_fails_it() {
    let rabbit = FaultProxy::start(bus::testing::amqp_address()).await;
    let postgres = FaultProxy::start("127.0.0.1:5432").await;
    let mut amqp = bus::testing::settings();
    amqp.url = Some(SecretUrl::new(rabbit.url(&bus::testing::amqp_url())));
    amqp.reconnect_max_delay = Duration::from_millis(200);
    let app = TestApp::spawn_with::<template::Template>(|settings| {
        settings.database.url = SecretUrl::new(postgres.url(settings.database.url.expose()));
        settings.database.acquire_timeout = Some(Duration::from_millis(500));
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        settings.amqp = amqp;
        tokens::trust(settings);
    })
    .await;
    let (status, body) = app.readiness_becomes("ok").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["bus"]["required"], false, "{body}");
    assert_eq!(body["checks"]["database"]["required"], true, "{body}");

    // RabbitMQ down: still ready, degraded, and writes go on (their events wait).
    rabbit.refuse(true);
    rabbit.cut_all();
    let (status, body) = app.readiness_becomes("degraded").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["bus"]["status"], "down", "{body}");
    let created = app
        .with_token(&bob().mint())
        .post_json(
            "/api/template/v1/notes",
            &json!({"title": "Written during the outage"}),
        )
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    rabbit.refuse(false);
    app.readiness_becomes("ok").await;

    // The database down: not ready.
    postgres.refuse(true);
    postgres.cut_all();
    let (status, body) = app.readiness_becomes("unavailable").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "down", "{body}");
    postgres.refuse(false);
    let (status, _) = app.readiness_becomes("ok").await;
    assert_eq!(status, StatusCode::OK);
}
