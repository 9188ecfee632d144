//! What the HTTP tests share: the service with the demo scenario and the built-in test provider
//! (fast timings, its own realtime prefix), tokens for the demo users and the events service,
//! and short ways to create and confirm payments.

use std::time::Duration;

use kit::config::SecretUrl;
use payments::config::Config;
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use testkit::{TestApp, json, tokens};
use uuid::Uuid;

pub const ADA: &str = "0193a000-0000-7000-8000-000000000001";
pub const BOB: &str = "0193a000-0000-7000-8000-000000000002";
pub const CLEO: &str = "0193a000-0000-7000-8000-000000000003";
/// The events service's client (demo scenario).
pub const EVENTS_CLIENT: &str = "0193a000-0000-7000-8000-00000000c004";

pub const PAYMENTS: &str = "/api/payments/v1/payments";

/// The shared Redis (`REDIS_URL`, else the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Timings a test can wait for: reconciliation off (tests that need it turn it on), partner
/// webhooks retried within milliseconds.
pub fn fast(app: &mut Config) {
    app.reconcile.enabled = false;
    app.webhooks.poll = Duration::from_millis(20);
    app.webhooks.backoff = Duration::from_millis(20);
    app.webhooks.max_backoff = Duration::from_millis(100);
    app.webhooks.timeout = Duration::from_secs(2);
    app.realtime_prefix = format!("test.{}.", Uuid::now_v7().simple());
}

/// The service with the demo scenario, the test provider and Redis.
pub async fn demo_app() -> TestApp {
    spawn(|_| {}).await
}

/// Like [`demo_app`], after `configure` adjusts the service's own settings.
pub async fn spawn(configure: impl FnOnce(&mut kit::Settings<Config>)) -> TestApp {
    TestApp::spawn_with::<payments::Payments>(|settings| {
        settings.populate.scenario = Some("demo".into());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        tokens::trust(settings);
        fast(&mut settings.app);
        configure(settings);
    })
    .await
}

fn demo_user(id: &str, email: &str, name: &str) -> tokens::Token {
    tokens::user(Uuid::parse_str(id).expect("a demo user id"))
        .email(email)
        .name(name)
}

/// Ada Admin (role `admin`).
pub fn ada() -> tokens::Token {
    demo_user(ADA, "ada@hatchery.test", "Ada Admin").admin()
}

pub fn bob() -> tokens::Token {
    demo_user(BOB, "bob@hatchery.test", "Bob Baker")
}

pub fn cleo() -> tokens::Token {
    demo_user(CLEO, "cleo@hatchery.test", "Cleo Cooper")
}

/// The events service's token, with the scopes the demo gives it.
pub fn events_service() -> String {
    tokens::service(EVENTS_CLIENT.parse().expect("a client id"))
        .scope("payments:read payments:create payments:refund")
        .mint()
}

/// A POST with a token, an `Idempotency-Key` and a JSON body.
pub async fn post(app: &TestApp, token: &str, path: &str, key: &str, body: &Value) -> Response {
    app.client
        .request(Method::POST, app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .expect("POST")
}

pub async fn get(app: &TestApp, token: &str, path: &str) -> Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET")
}

/// A payment body for the events service: `amount` EUR cents for `user`, paying for a fresh
/// registration.
pub fn registration(user: &str, amount: i64) -> Value {
    json!({
        "amount": amount,
        "currency": "EUR",
        "description": "A workshop seat",
        "reference": {"service": "events", "id": Uuid::now_v7().to_string()},
        "user": user,
    })
}

/// Creates a payment as the events service; the created payment.
pub async fn create(app: &TestApp, body: &Value) -> Value {
    let key = Uuid::now_v7().to_string();
    let response = post(app, &events_service(), PAYMENTS, &key, body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    json(response).await
}

/// Confirms payment `id` with `payment_method` as the events service; the answer.
pub async fn confirm(app: &TestApp, id: &str, payment_method: &str) -> Value {
    let path = format!("{PAYMENTS}/{id}/confirm");
    let body = json!({"payment_method": payment_method});
    let response = post(
        app,
        &events_service(),
        &path,
        &Uuid::now_v7().to_string(),
        &body,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

/// A succeeded payment of `amount` for Bob; its id.
pub async fn paid(app: &TestApp, amount: i64) -> String {
    let payment = create(app, &registration(BOB, amount)).await;
    let id = payment["id"].as_str().expect("an id").to_owned();
    let confirmed = confirm(app, &id, "pm_card_visa").await;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    id
}

/// The payment as it is now (admin's view).
pub async fn payment(app: &TestApp, id: &str) -> Value {
    json(get(app, &ada().mint(), &format!("{PAYMENTS}/{id}")).await).await
}

/// The payment's history, oldest first.
pub async fn history(app: &TestApp, id: &str) -> Vec<Value> {
    let history: Value =
        json(get(app, &ada().mint(), &format!("{PAYMENTS}/{id}/history")).await).await;
    history["items"].as_array().expect("items").clone()
}

/// Waits until payment `id` has `status`.
pub async fn until_status(app: &TestApp, id: &str, status: &str) -> Value {
    testkit::eventually(
        &format!("payment {id} to be {status}"),
        Duration::from_secs(10),
        || async {
            let payment = payment(app, id).await;
            (payment["status"] == status).then_some(payment)
        },
    )
    .await
}
