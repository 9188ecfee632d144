//! kit's HTTP stack end to end, through a probe service on a real socket. (These live in
//! testkit because kit cannot dev-depend on testkit without two copies of kit's types.)

use std::time::Duration;

use crate::common::{NoDatabase, Probe};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

async fn probe() -> TestApp {
    TestApp::spawn::<Probe>().await
}

#[tokio::test]
async fn a_panic_is_a_500_problem_and_the_next_request_succeeds() {
    let app = probe().await;
    for _ in 0..3 {
        let response = app.get("/boom").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let problem: Value = json(response).await;
        assert_eq!(problem["code"], "internal_error");
        assert_eq!(problem["request_id"], id.as_str());
        assert!(
            !problem.to_string().contains("probe exploded"),
            "panic message must not leak"
        );
        assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn internal_errors_hide_their_cause() {
    let app = probe().await;
    let response = app.get("/fail").await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = response.text().await.unwrap();
    assert!(!body.contains("disk on fire"), "{body}");
}

#[tokio::test]
async fn request_ids_are_echoed_when_sane_and_generated_otherwise() {
    let app = probe().await;
    let sent = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "frontend-42.a@b_c")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-request-id"], "frontend-42.a@b_c");

    for insane in ["has spaces", &"x".repeat(129), "semi;colon"] {
        let response = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", insane)
            .send()
            .await
            .unwrap();
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, insane);
        assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    }
    let generated = app.get("/does-not-exist").await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let problem: Value = json(generated).await;
    assert_eq!(problem["request_id"], id.as_str());
}

#[tokio::test]
async fn slow_requests_time_out_with_a_problem() {
    let app =
        TestApp::spawn_with::<Probe>(|s| s.http.request_timeout = Duration::from_millis(200)).await;
    let response = app.get("/slow/5000").await;
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "timeout");
    assert_eq!(app.get("/slow/1").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_and_under_it_are_fine() {
    let app = TestApp::spawn_with::<Probe>(|s| s.http.body_limit = 1024).await;
    let big = json!({"data": "x".repeat(2048)});
    let response = app.post_json("/echo", &big).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "payload_too_large");
    let small = json!({"data": "ok"});
    let echoed: Value = json(app.post_json("/echo", &small).await).await;
    assert_eq!(echoed, small);
}

#[tokio::test]
async fn readiness_is_ok_with_the_database_up_and_liveness_needs_nothing() {
    let app = probe().await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = json(ready).await;
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["database"]["status"], "up");
    assert_eq!(body["checks"]["database"]["required"], true);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = probe().await;
    for ms in [1, 2, 3] {
        app.get(&format!("/slow/{ms}")).await;
    }
    let text = app.get("/metrics").await.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("http_server_requests_total") && l.contains("route=\"/slow/{ms}\""))
        .unwrap_or_else(|| panic!("no counter for the route template:\n{text}"));
    assert!(line.ends_with(" 3"), "{line}");
    assert!(
        text.contains("http_server_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn cors_is_answered_for_configured_origins_only() {
    let app =
        TestApp::spawn_with::<Probe>(|s| s.http.cors_origins = vec!["https://app.example".into()])
            .await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/echo"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "content-type,authorization",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let app = probe().await;
    let response = app
        .client
        .get(app.url("/openapi.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // reqwest here has no gzip decoder: the header is what the client would act on.
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned());
    let length = response.bytes().await.unwrap().len();
    assert!(
        encoding.as_deref() == Some("gzip") || length < 32,
        "{encoding:?} {length}"
    );
}

#[tokio::test]
async fn a_service_without_a_database_never_connects_to_one() {
    // Nothing listens on port 1: a service that needed the database could not start.
    let app = TestApp::spawn_with::<NoDatabase>(|s| {
        s.database.url = kit::SecretUrl::new("postgres://nobody@127.0.0.1:1/none")
    })
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let body: Value = json(ready).await;
    assert!(body["checks"].get("database").is_none(), "{body}");
    assert_eq!(app.get("/slow/1").await.status(), StatusCode::OK);
}
