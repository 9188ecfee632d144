//! `/readyz` means "send me traffic": a RabbitMQ or SMTP relay outage degrades it (events wait
//! in the outbox, mail waits in the queue), a database outage fails it. Each server is reached
//! through a fault-injecting proxy, so only this service sees it go down.

use std::time::Duration;

use kit::SecretUrl;
use reqwest::StatusCode;
use testkit::FaultProxy;

use crate::common::*;

#[tokio::test]
async fn relay_and_rabbitmq_outages_degrade_readiness_and_lose_nothing() {
    let sink = sink(10);
    let smtp = FaultProxy::start(sink.addr().to_string()).await;
    let rabbit = FaultProxy::start(bus::testing::amqp_address()).await;
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
    let (status, body) = app.readiness_becomes("ok").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["checks"]["smtp"]["required"], false, "{body}");
    assert_eq!(body["checks"]["database"]["required"], true, "{body}");

    // The relay down: still ready, degraded; mail is accepted and waits.
    smtp.refuse(true);
    smtp.cut_all();
    let (status, body) = app.readiness_becomes("degraded").await;
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
    app.readiness_becomes("ok").await;

    // RabbitMQ down: still ready, degraded.
    rabbit.refuse(true);
    rabbit.cut_all();
    let (status, body) = app.readiness_becomes("degraded").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["bus"]["status"], "down", "{body}");
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
