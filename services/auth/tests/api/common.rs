//! What the tests share: the service on a fresh database with its own Redis key prefixes,
//! cheap password hashing, and helpers for the usual steps (sign up, verify, sign in).

use std::time::Duration;

use auth::config::{Argon2Settings, Config};
use base64::Engine;
use kit::Settings;
use kit::config::SecretUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

pub const ADA: &str = "0193a000-0000-7000-8000-000000000001";
pub const BOB: &str = "0193a000-0000-7000-8000-000000000002";
pub const CLEO: &str = "0193a000-0000-7000-8000-000000000003";
pub const BROKER_CLIENT: &str = "0193a000-0000-7000-8000-00000000c001";
pub const BROKER_SECRET: &str = "hatchery-broker-secret";
pub const EVENTS_CLIENT: &str = "0193a000-0000-7000-8000-00000000c004";
pub const EVENTS_SECRET: &str = "hatchery-events-secret";

pub const API: &str = "/api/auth/v1";

/// The shared Redis (`REDIS_URL`, else the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The cheapest argon2id the library accepts: tests check behaviour, not cost.
pub fn cheap_hashing() -> Argon2Settings {
    Argon2Settings {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    }
}

/// The key-encryption keys of a service started without `app.key_encryption_key` (development).
pub fn development_keks() -> auth::kek::Keks {
    auth::kek::Keks::new(auth::kek::Kek::development(), None)
}

/// A running auth service and the settings it runs with.
pub struct Auth {
    pub app: TestApp,
    pub settings: Settings<Config>,
}

impl std::ops::Deref for Auth {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

/// Auth with its own Redis key prefixes (revocations, rate limits, tickets), cheap hashing,
/// and `configure` applied last.
pub async fn spawn_with(configure: impl FnOnce(&mut Settings<Config>)) -> Auth {
    let mut kept = None;
    let app = TestApp::spawn_with::<auth::Auth>(|settings| {
        let prefix = format!("test-{}:", uuid::Uuid::now_v7().simple());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        settings.auth.revocation_prefix = prefix.clone();
        settings.app.redis_prefix = prefix;
        settings.app.argon2 = cheap_hashing();
        configure(settings);
        kept = Some(settings.clone());
    })
    .await;
    Auth {
        app,
        settings: kept.expect("settings were configured"),
    }
}

pub async fn spawn() -> Auth {
    spawn_with(|_| {}).await
}

/// Auth with the demo scenario (users with passwords, service clients).
pub async fn spawn_demo() -> Auth {
    spawn_with(|settings| settings.populate.scenario = Some("demo".into())).await
}

/// A user of a test: the address and password it signed up with, and its id.
#[derive(Debug, Clone)]
pub struct Person {
    pub id: String,
    pub email: String,
    pub password: String,
}

pub fn unique_email(label: &str) -> String {
    format!("{label}-{}@example.test", uuid::Uuid::now_v7().simple())
}

pub async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.post_json(&format!("{API}{path}"), &body).await
}

/// Signs up; returns the created user.
pub async fn sign_up(app: &TestApp, email: &str, password: &str) -> Value {
    let response = post(
        app,
        "/signup",
        json!({"email": email, "password": password, "name": "Test Person"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = json(response).await;
    body["user"].clone()
}

/// The `data` of the newest outbox event of `event_type` about `email`: what the mail
/// service receives (the links' tokens are only ever in these).
pub async fn latest_event(app: &TestApp, event_type: &str, email: &str) -> Option<Value> {
    sqlx::query_scalar::<_, Value>(
        "SELECT envelope->'data' FROM outbox
         WHERE event_type = $1 AND envelope->'data'->>'email' = $2
         ORDER BY id DESC LIMIT 1",
    )
    .bind(event_type)
    .bind(email)
    .fetch_optional(&app.db)
    .await
    .expect("read the outbox")
}

/// Waits for such an event (work done after the response).
pub async fn wait_for_event(app: &TestApp, event_type: &str, email: &str) -> Value {
    testkit::eventually(
        &format!("{event_type} for {email}"),
        Duration::from_secs(10),
        || latest_event(app, event_type, email),
    )
    .await
}

/// Signs up and verifies the email with the token from the verification event.
pub async fn verified_person(app: &TestApp, label: &str) -> Person {
    let email = unique_email(label);
    let password = format!("pw-{label}-correct-horse");
    let user = sign_up(app, &email, &password).await;
    let event = wait_for_event(app, "auth.email.verification_requested", &email).await;
    let response = post(app, "/email/verify", json!({"token": event["token"]})).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    Person {
        id: user["id"].as_str().expect("user id").to_owned(),
        email,
        password,
    }
}

/// The token endpoint with a JSON body.
pub async fn token(app: &TestApp, body: Value) -> reqwest::Response {
    post(app, "/token", body).await
}

/// Signs in; panics unless it works. Returns the token response.
pub async fn sign_in(app: &TestApp, email: &str, password: &str) -> Value {
    let response = token(
        app,
        json!({"grant_type": "password", "email": email, "password": password}),
    )
    .await;
    let status = response.status();
    let body: Value = json(response).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

pub fn access(tokens: &Value) -> String {
    tokens["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

pub fn refresh(tokens: &Value) -> String {
    tokens["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

/// `GET /me` with `token`: the status.
pub async fn me_status(app: &TestApp, token: &str) -> StatusCode {
    app.with_token(token)
        .get(&format!("{API}/me"))
        .await
        .status()
}

/// A JWT's header and claims, decoded without verification (tests look at what was issued).
pub fn decode(jwt: &str) -> (Value, Value) {
    let mut parts = jwt.split('.');
    let mut part = || {
        let text = parts.next().expect("a JWT part");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .expect("base64url");
        serde_json::from_slice::<Value>(&bytes).expect("JSON")
    };
    (part(), part())
}

/// Audit entries of `action` about `subject`, oldest first: (outcome, reason).
pub async fn audit(app: &TestApp, action: &str, subject: &str) -> Vec<(String, Option<String>)> {
    sqlx::query_as(
        "SELECT outcome, reason FROM audit_log WHERE action = $1 AND subject = $2::uuid ORDER BY id",
    )
    .bind(action)
    .bind(subject)
    .fetch_all(&app.db)
    .await
    .expect("read the audit log")
}

/// A service token for a demo client.
pub async fn service_token(app: &TestApp, client: &str, secret: &str) -> String {
    let response = token(
        app,
        json!({"grant_type": "client_credentials", "client_id": client, "client_secret": secret}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = json(response).await;
    access(&body)
}

/// `application/x-www-form-urlencoded` text of `pairs` (reqwest is built without its form
/// feature).
pub fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |text: &str| {
        let mut out = String::new();
        for byte in text.bytes() {
            match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(byte as char)
                }
                b' ' => out.push('+'),
                other => out.push_str(&format!("%{other:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub const FORM: &str = "application/x-www-form-urlencoded";
