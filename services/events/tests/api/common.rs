//! What the tests share: the service with the demo scenario, trusting testkit's signing key
//! (or a real auth service), with fast hold expiry; tokens for the demo users; short ways to
//! create events and register.

use std::time::Duration;

use kit::Settings;
use kit::config::SecretUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json, tokens};
use uuid::Uuid;

pub const ADA: &str = "0193a000-0000-7000-8000-000000000001";
pub const BOB: &str = "0193a000-0000-7000-8000-000000000002";
pub const CLEO: &str = "0193a000-0000-7000-8000-000000000003";

pub const API: &str = "/api/events/v1";

/// The shared Redis (`REDIS_URL`, else the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Demo scenario, Redis, testkit's tokens, quick expiry polling, `configure` last.
pub async fn spawn(configure: impl FnOnce(&mut Settings<events::config::Config>)) -> TestApp {
    TestApp::spawn_with::<events::Events>(|settings| {
        settings.populate.scenario = Some("demo".into());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        tokens::trust(settings);
        settings.app.expiry_poll = Duration::from_millis(50);
        settings.app.realtime_prefix = format!("test.{}.", Uuid::now_v7().simple());
        settings.app.public_url = format!("http://{}:{}", settings.http.host, settings.http.port);
        configure(settings);
    })
    .await
}

fn demo_user(id: &str, email: &str, name: &str) -> tokens::Token {
    tokens::user(Uuid::parse_str(id).expect("a demo user id"))
        .email(email)
        .name(name)
}

/// Ada Admin (role `admin`), who organises.
pub fn ada() -> String {
    demo_user(ADA, "ada@hatchery.test", "Ada Admin")
        .admin()
        .mint()
}

pub fn bob() -> String {
    demo_user(BOB, "bob@hatchery.test", "Bob Baker").mint()
}

pub fn cleo() -> String {
    demo_user(CLEO, "cleo@hatchery.test", "Cleo Cooper").mint()
}

pub async fn post(app: &TestApp, token: &str, path: &str, body: &Value) -> reqwest::Response {
    app.with_token(token)
        .post_json(&format!("{API}{path}"), body)
        .await
}

pub async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let response = app.with_token(token).get(&format!("{API}{path}")).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    json(response).await
}

/// A published event made by `organizer` from `body` (merged over sensible defaults).
pub async fn published_event(app: &TestApp, organizer: &str, body: Value) -> Value {
    let mut event = json!({
        "title": "Rust meetup",
        "starts_at": "2030-06-01T16:30:00Z",
        "ends_at": "2030-06-01T19:00:00Z",
        "time_zone": "Europe/Madrid",
        "venue": "The Hatchery",
        "capacity": 10,
    });
    for (key, value) in body.as_object().expect("an object") {
        event[key] = value.clone();
    }
    let response = post(app, organizer, "/events", &event).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = json(response).await;
    let id = created["id"].as_str().expect("an id").to_owned();
    let response = post(app, organizer, &format!("/events/{id}/publish"), &json!({})).await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

/// Registers with `token` for `event`; the registration.
pub async fn register(app: &TestApp, token: &str, event: &str, body: Value) -> Value {
    let response = post(app, token, &format!("/events/{event}/registrations"), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json(response).await
}

/// Waits until registration `id` (seen by `token`) has `status`.
pub async fn until_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    testkit::eventually(
        &format!("registration {id} to be {status}"),
        Duration::from_secs(15),
        || async {
            let registration = get(app, token, &format!("/registrations/{id}")).await;
            (registration["status"] == status).then_some(registration)
        },
    )
    .await
}

/// A problem's `code`, after checking its status.
pub async fn problem(response: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let body: Value = json(response).await;
    body["code"].as_str().expect("a code").to_owned()
}
