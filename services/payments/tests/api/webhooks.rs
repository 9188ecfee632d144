//! Provider webhooks at `/webhooks/{provider}`: only a valid, fresh signature over the exact
//! body is accepted; an event is applied once however often it comes; a late event never moves
//! a payment backwards.

use chrono::Utc;
use payments::domain::signature;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

use crate::common::*;

const SECRET: &str = "whsec_hatchery_test_provider";
const WEBHOOK: &str = "/api/payments/v1/webhooks/test";

/// An event about payment intent `intent` now in `status`.
fn event(id: &str, intent: &str, status: &str, amount: i64) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": format!("payment_intent.{status}"),
        "created": Utc::now().timestamp(),
        "data": {"object": {
            "id": intent, "object": "payment_intent", "status": status,
            "amount": amount, "amount_received": if status == "succeeded" { amount } else { 0 },
            "currency": "eur", "last_payment_error": null, "next_action": null,
        }},
    })
    .to_string()
}

async fn deliver(app: &TestApp, body: &str, header: Option<String>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url(WEBHOOK))
        .header("content-type", "application/json; charset=utf-8")
        .body(body.to_owned());
    if let Some(header) = header {
        request = request.header("stripe-signature", header);
    }
    request.send().await.unwrap()
}

fn signed(body: &str, at: i64) -> Option<String> {
    Some(signature::sign(SECRET.as_bytes(), at, body.as_bytes()))
}

/// A payment waiting for confirmation at the test provider (sending no webhooks of its own).
async fn waiting(app: &TestApp) -> (String, String) {
    let created = create(app, &registration(BOB, 1234)).await;
    (
        created["id"].as_str().unwrap().to_owned(),
        created["provider_payment_id"].as_str().unwrap().to_owned(),
    )
}

async fn forged_tampered_or_old_webhooks_are_refused_and_change_nothing(app: &TestApp) {
    let (id, intent) = waiting(app).await;
    let now = Utc::now().timestamp();
    let body = event("evt_forged_1", &intent, "succeeded", 1234);

    let cases = [
        ("unsigned", None),
        (
            "signed with another secret",
            Some(signature::sign(b"whsec_attacker", now, body.as_bytes())),
        ),
        (
            "tampered",
            signed(&event("evt_forged_1", &intent, "succeeded", 99), now),
        ),
        ("ten minutes old", signed(&body, now - 600)),
        ("malformed", Some("t=now,v1=nothex".to_owned())),
    ];
    for (what, header) in cases {
        let response = deliver(app, &body, header).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what}");
        let problem: Value = json(response).await;
        assert_eq!(problem["code"], "invalid_signature", "{what}: {problem}");
    }
    let unchanged = payment(app, &id).await;
    assert_eq!(unchanged["status"], "requires_payment_method");
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM provider_events")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(seen, 0, "nothing recorded");

    // Signed right, but not an event.
    let junk = r#"{"hello": "world"}"#;
    let response = deliver(app, junk, signed(junk, now)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // A provider that is not configured here.
    let response = app
        .client
        .post(app.url("/api/payments/v1/webhooks/stripe"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

async fn the_same_webhook_twice_is_applied_once(app: &TestApp) {
    let (id, intent) = waiting(app).await;
    let body = event("evt_twice", &intent, "succeeded", 1234);
    let first = deliver(app, &body, signed(&body, Utc::now().timestamp())).await;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = json(first).await;
    assert_eq!(first, json!({"received": true, "duplicate": false}));
    // Redelivered later, signed again as providers do.
    let second = deliver(app, &body, signed(&body, Utc::now().timestamp() + 1)).await;
    assert_eq!(second.status(), StatusCode::OK);
    let second: Value = json(second).await;
    assert_eq!(second["duplicate"], true);

    let succeeded = payment(app, &id).await;
    assert_eq!(succeeded["status"], "succeeded");
    let from_webhooks: Vec<Value> = history(app, &id)
        .await
        .into_iter()
        .filter(|h| h["provider_event_id"] == "evt_twice")
        .collect();
    assert_eq!(from_webhooks.len(), 1);
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'payments.payment.succeeded' AND envelope->'data'->>'payment' = $1",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(events, 1, "one payments.payment.succeeded");
}

async fn a_late_processing_webhook_never_moves_a_succeeded_payment_back(app: &TestApp) {
    let (id, intent) = waiting(app).await;
    let now = Utc::now().timestamp();
    let succeeded = event("evt_ok", &intent, "succeeded", 1234);
    assert_eq!(
        deliver(app, &succeeded, signed(&succeeded, now))
            .await
            .status(),
        StatusCode::OK
    );
    let version = payment(app, &id).await["version"].clone();
    // The processing event was sent first but arrives last.
    let processing = event("evt_earlier", &intent, "processing", 1234);
    let response = deliver(app, &processing, signed(&processing, now)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let after = payment(app, &id).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["version"], version, "nothing changed");

    // Out of order the other way round, it moves forward: processing, then succeeded.
    let (other, other_intent) = waiting(app).await;
    for (event_id, status) in [("evt_p", "processing"), ("evt_s", "succeeded")] {
        let body = event(event_id, &other_intent, status, 1234);
        deliver(app, &body, signed(&body, now)).await;
    }
    let steps: Vec<String> = history(app, &other)
        .await
        .iter()
        .map(|h| h["to_status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        steps,
        ["requires_payment_method", "processing", "succeeded"]
    );
}

/// One service for the scenarios above, in this order (the first counts what was recorded).
#[tokio::test]
async fn provider_webhooks() {
    let app = demo_app().await;
    forged_tampered_or_old_webhooks_are_refused_and_change_nothing(&app).await;
    the_same_webhook_twice_is_applied_once(&app).await;
    a_late_processing_webhook_never_moves_a_succeeded_payment_back(&app).await;
}
