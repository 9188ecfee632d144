//! With a DSN configured, a failing request reaches error tracking with its request id. The
//! DSN points at a local HTTP endpoint that records what the SDK sends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;

#[tokio::test]
async fn failures_are_reported_with_the_request_id() {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = received.clone();
    let collector = axum::Router::new().route(
        "/api/{project}/envelope/",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&body).into_owned());
                "{}"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dsn = format!("http://publickey@{}/7", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let sentry = kit::config::SentrySettings {
        dsn: Some(kit::SecretUrl::new(dsn)),
        environment: Some("test".into()),
        sample_rate: 1.0,
    };
    let log = kit::config::LogSettings {
        format: kit::config::LogFormat::Json,
        level: "info".into(),
    };
    let _guard = kit::telemetry::init("probe", "test", &log, &sentry);
    assert!(kit::telemetry::error_tracking_enabled());

    let app = testkit::TestApp::spawn::<crate::common::Probe>().await;
    let response = app
        .client
        .get(app.url("/fail"))
        .header("x-request-id", "sentry-trace-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);

    let envelope = testkit::eventually("an error event", Duration::from_secs(10), || {
        let found = received
            .lock()
            .unwrap()
            .iter()
            .find(|e| e.contains("sentry-trace-1"))
            .cloned();
        async move { found }
    })
    .await;
    assert!(envelope.contains("request failed"), "{envelope}");
    assert!(
        envelope.contains("disk on fire"),
        "the cause is in the event: {envelope}"
    );
    assert!(envelope.contains("\"environment\":\"test\""), "{envelope}");
}
