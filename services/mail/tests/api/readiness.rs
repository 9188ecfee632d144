//! `/readyz` means "send me traffic": a RabbitMQ or SMTP relay outage degrades it (events wait
//! in the outbox, mail waits in the queue), a database outage fails it. Each server is reached
//! through a fault-injecting proxy, so only this service sees it go down.

use std::time::Duration;

use kit::SecretUrl;
use reqwest::StatusCode;
use serde_json::Value;
use testkit::{FaultProxy, TestApp};

use crate::common::*;

/// `host:port` of an `amqp://user:pass@host:port/vhost` URL.
fn amqp_host_port(url: &str) -> String {
    let authority = url.split("://").nth(1).unwrap_or(url);
    let authority = authority.split('/').next().unwrap_or(authority);
    authority.rsplit('@').next().unwrap_or(authority).to_owned()
}

async fn readiness(app: &TestApp) -> (StatusCode, Value) {
    let response = app.get("/readyz").await;
    let status = response.status();
    (status, response.json().await.expect("readiness is JSON"))
}

/// Polls `/readyz` until its `status` is `expected`.
async fn wait_for(app: &TestApp, expected: &str) -> (StatusCode, Value) {
    testkit::eventually(
        &format!("readiness {expected}"),
        Duration::from_secs(20),
        || async {
            let (status, body) = readiness(app).await;
            (body["status"] == expected).then_some((status, body))
        },
    )
    .await
}

#[tokio::test]
async fn relay_and_rabbitmq_outages_degrade_readiness_and_lose_nothing() {
    let sink = sink(10);
    let smtp = FaultProxy::start(sink.addr().to_string()).await;
    let rabbit = FaultProxy::start(amqp_host_port(&bus::testing::amqp_url())).await;
    let postgres = FaultProxy::start("127.0.0.1:5432").await;
    let mut amqp = bus::testing::settings();
    amqp.url = Some(SecretUrl::new(rabbit.url(&bus::testing::amqp_url())));
    amqp.reconnect_max_delay = Duration::from_millis(200);
    let smtp_url = format!("smtp://{}", smtp.addr());
    let app = spawn_with(&sink, |settings| {
        settings.database.url = SecretUrl::new(postgres.url(settings.database.url.expose()));
        settings.database.acquire_timeout = Some(Duration::from_millis(500));
        settings.amqp = amqp.clone();
        settings.app.smtp.url = smtp_url.try_into().unwrap();
    })
    .await;
    let (status, body) = wait_for(&app, "ok").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["smtp"]["required"], false, "{body}");
    assert_eq!(body["checks"]["database"]["required"], true, "{body}");

    // The relay down: still ready, degraded; mail is accepted and waits.
    smtp.refuse(true);
    smtp.cut_all();
    let (status, body) = wait_for(&app, "degraded").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["smtp"]["status"], "down", "{body}");
    let to = unique_email("patient");
    let accepted = send_verification(&app, std::slice::from_ref(&to)).await;
    let id = accepted[0]["id"].as_str().unwrap();
    wait_for_status(&app, id, "deferred").await;
    smtp.refuse(false);
    let sent = wait_for_status(&app, id, "sent").await;
    assert!(sent["attempts"].as_u64().unwrap() >= 2);
    assert_eq!(mail_to(&sink, &to).len(), 1);
    wait_for(&app, "ok").await;

    // RabbitMQ down: still ready, degraded.
    rabbit.refuse(true);
    rabbit.cut_all();
    let (status, body) = wait_for(&app, "degraded").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["bus"]["status"], "down", "{body}");
    rabbit.refuse(false);
    wait_for(&app, "ok").await;

    // The database down: not ready.
    postgres.refuse(true);
    postgres.cut_all();
    let (status, body) = wait_for(&app, "unavailable").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "down", "{body}");
    postgres.refuse(false);
    let (status, _) = wait_for(&app, "ok").await;
    assert_eq!(status, StatusCode::OK);
}
