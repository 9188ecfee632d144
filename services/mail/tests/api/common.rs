//! What the tests share: the service with the demo scenario (its templates and event
//! mappings), delivering to an SMTP sink of the test's own with short retry delays, trusting
//! testkit's signing key; tokens for the demo users and for services; waiting on messages.

use std::time::Duration;

use kit::Settings;
use kit::config::SecretUrl;
use mail::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use smtp_sink::Sink;
use testkit::{TestApp, json, tokens};
use uuid::Uuid;

pub const ADA: &str = "0193a000-0000-7000-8000-000000000001";
pub const BOB: &str = "0193a000-0000-7000-8000-000000000002";

pub const MESSAGES: &str = "/api/mail/v1/messages";
pub const TEMPLATES: &str = "/api/mail/v1/templates";
pub const SUPPRESSIONS: &str = "/api/mail/v1/suppressions";

/// The shared Redis (`REDIS_URL`, else the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A sink on free ports keeping up to `max_messages`.
pub fn sink(max_messages: usize) -> Sink {
    Sink::start_with(
        "127.0.0.1:0",
        smtp_sink::Options {
            max_messages,
            ..smtp_sink::Options::default()
        },
    )
    .expect("start the SMTP sink")
}

/// Delivery to `sink`, fast: short backoff and lease, no send-rate limit.
pub fn deliver_to(settings: &mut Settings<Config>, sink: &Sink) {
    let app = &mut settings.app;
    app.smtp.url = format!("smtp://{}", sink.addr())
        .try_into()
        .expect("an SMTP URL");
    app.smtp.timeout = Duration::from_secs(2);
    app.smtp.max_per_second = 0;
    app.delivery.poll = Duration::from_millis(200);
    app.delivery.lease = Duration::from_secs(5);
    app.delivery.retry_delay = Duration::from_millis(40);
    app.delivery.retry_max_delay = Duration::from_millis(100);
}

/// The service with the demo scenario, delivering to `sink`, `configure` applied last.
pub async fn spawn_with(sink: &Sink, configure: impl FnOnce(&mut Settings<Config>)) -> TestApp {
    TestApp::spawn_with::<mail::Mail>(|settings| {
        settings.populate.scenario = Some("demo".into());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        tokens::trust(settings);
        deliver_to(settings, sink);
        configure(settings);
    })
    .await
}

pub async fn spawn(sink: &Sink) -> TestApp {
    spawn_with(sink, |_| {}).await
}

/// Ada Admin (role `admin`).
pub fn ada() -> String {
    tokens::user(Uuid::parse_str(ADA).expect("a demo user id"))
        .email("ada@hatchery.test")
        .name("Ada Admin")
        .admin()
        .mint()
}

pub fn bob() -> String {
    tokens::user(Uuid::parse_str(BOB).expect("a demo user id"))
        .email("bob@hatchery.test")
        .name("Bob Baker")
        .mint()
}

/// A service token for a new client, with `scope` (space-separated) when given.
pub fn service(scope: Option<&str>) -> (Uuid, String) {
    let client = Uuid::now_v7();
    let token = tokens::service(client);
    let token = match scope {
        Some(scope) => token.scope(scope),
        None => token,
    };
    (client, token.mint())
}

pub fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.test", Uuid::now_v7().simple())
}

/// `POST /messages` with `token`.
pub async fn send(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.with_token(token).post_json(MESSAGES, body).await
}

/// Sends `auth.verify_email` (its sample variables) to `recipients`; the accepted messages.
pub async fn send_verification(app: &TestApp, recipients: &[String]) -> Vec<Value> {
    let recipients: Vec<Value> = recipients.iter().map(|e| json!({"email": e})).collect();
    let response = send(
        app,
        &ada(),
        &json!({
            "template": "auth.verify_email",
            "data": verification_data(),
            "recipients": recipients,
        }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = json(response).await;
    body["messages"].as_array().expect("messages").clone()
}

pub fn verification_data() -> Value {
    json!({
        "name": "Test Person",
        "email": "test@example.test",
        "url": "https://hatchery.test/verify-email?token=t0k3n&x=1",
        "expires_at": "2026-12-02T10:00:00Z",
    })
}

/// `GET /messages/{id}` as Ada.
pub async fn message(app: &TestApp, id: &str) -> Value {
    let response = app
        .with_token(&ada())
        .get(&format!("{MESSAGES}/{id}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

/// Polls the message until its status is `status`.
pub async fn wait_for_status(app: &TestApp, id: &str, status: &str) -> Value {
    testkit::eventually(
        &format!("message {id} to be {status}"),
        Duration::from_secs(20),
        || async {
            let message = message(app, id).await;
            (message["status"] == status).then_some(message)
        },
    )
    .await
}

/// Polls the database until no message is waiting or being sent; the counts by status.
pub async fn wait_until_all_finished(db: &sqlx::PgPool, timeout: Duration) -> Vec<(String, i64)> {
    testkit::eventually("every message to finish", timeout, || async {
        let counts = mail::store::messages::count_by_status(db).await.ok()?;
        let waiting = counts
            .iter()
            .any(|(status, _)| matches!(status.as_str(), "queued" | "sending" | "deferred"));
        (!waiting).then_some(counts)
    })
    .await
}

/// The sink's messages to `email`.
pub fn mail_to(sink: &Sink, email: &str) -> Vec<smtp_sink::Message> {
    sink.messages()
        .into_iter()
        .filter(|m| m.recipients.iter().any(|r| r.eq_ignore_ascii_case(email)))
        .collect()
}

/// Waits until the sink holds a message to `email`.
pub async fn wait_for_mail(sink: &Sink, email: &str) -> smtp_sink::Message {
    testkit::eventually(
        &format!("a mail to {email}"),
        Duration::from_secs(20),
        || async { mail_to(sink, email).into_iter().next() },
    )
    .await
}

/// The timeline's kinds, in order.
pub fn kinds(message: &Value) -> Vec<String> {
    message["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .map(|e| e["kind"].as_str().expect("kind").to_owned())
        .collect()
}
