//! Bad input gets a 422 naming the field (or a 400 for what is not JSON), never a 500, and
//! stores nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

use crate::common::*;

async fn payments_count(app: &testkit::TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn bad_payments_are_refused_field_by_field(app: &TestApp) {
    let before = payments_count(app).await;
    let token = events_service();
    let base = registration(BOB, 1000);
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let many_keys: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    let cases = [
        (with("amount", json!(-100)), "amount"),
        (with("amount", json!(0)), "amount"),
        (with("amount", json!(12.5)), "amount"),
        (with("amount", json!(12.0)), "amount"),
        (with("amount", json!(100_000_001)), "amount"),
        (with("amount", json!(u64::MAX)), "amount"),
        (with("amount", json!("1000")), "amount"),
        (with("currency", json!("XYZ")), "currency"),
        (with("currency", json!("eur")), "currency"),
        (
            with("payment_method", json!("pm_card_unheard_of")),
            "payment_method",
        ),
        (with("payment_method", json!("card_visa")), "payment_method"),
        (with("metadata", Value::Object(many_keys)), "metadata"),
        (with("metadata", json!({"k": "x".repeat(501)})), "metadata"),
        (with("metadata", json!({"bad key": "v"})), "metadata"),
        (with("metadata", json!({"n": 1})), "metadata.n"),
        (
            with("reference", json!({"service": "Events", "id": "x"})),
            "reference.service",
        ),
        (
            with("reference", json!({"service": "events", "id": ""})),
            "reference.id",
        ),
        (with("description", json!("x".repeat(1001))), "description"),
        (with("capture_method", json!("later")), "capture_method"),
        (with("colour", json!("red")), "colour"),
    ];
    for (index, (body, field)) in cases.into_iter().enumerate() {
        let response = post(app, &token, PAYMENTS, &format!("bad-{index}"), &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}: {body}"
        );
        let problem: Value = json(response).await;
        assert_eq!(problem["code"], "validation_failed", "{problem}");
        assert!(
            problem["errors"][field].is_array(),
            "{field} named in {problem}"
        );
    }
    // KWD has three decimals, JPY none: the maximum follows the currency.
    let kwd = json!({"amount": 1_000_000_000, "currency": "KWD",
        "reference": {"service": "events", "id": "kwd"}, "user": BOB});
    assert_eq!(
        post(app, &token, PAYMENTS, "kwd", &kwd).await.status(),
        StatusCode::CREATED
    );
    let jpy = json!({"amount": 1_000_001, "currency": "JPY",
        "reference": {"service": "events", "id": "jpy"}, "user": BOB});
    assert_eq!(
        post(app, &token, PAYMENTS, "jpy", &jpy).await.status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Every invalid field at once.
    let all = json!({"amount": 0, "currency": "XYZ", "reference": {"service": "", "id": ""},
        "user": BOB, "metadata": {"bad key": "v"}});
    let response = post(app, &token, PAYMENTS, "all-bad", &all).await;
    let problem: Value = json(response).await;
    for field in ["currency", "reference.service", "reference.id", "metadata"] {
        assert!(problem["errors"][field].is_array(), "{field}: {problem}");
    }

    // Not JSON: 400; not JSON at all: 415.
    let raw = app
        .client
        .post(app.url(PAYMENTS))
        .bearer_auth(&token)
        .header("idempotency-key", "raw")
        .header("content-type", "application/json")
        .body("{\"amount\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let form = app
        .client
        .post(app.url(PAYMENTS))
        .bearer_auth(&token)
        .header("idempotency-key", "form")
        .body("amount=1")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        payments_count(app).await,
        before + 1,
        "only the KWD payment"
    );
}

async fn confirmation_needs_a_payment_method_the_provider_knows(app: &TestApp) {
    let created = create(app, &registration(BOB, 1000)).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("{PAYMENTS}/{id}/confirm");
    let token = events_service();
    for (key, body) in [
        ("none", json!({})),
        ("unknown", json!({"payment_method": "pm_card_unheard_of"})),
        ("malformed", json!({"payment_method": "visa"})),
    ] {
        let response = post(app, &token, &path, key, &body).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{key}");
        let problem: Value = json(response).await;
        assert!(problem["errors"]["payment_method"].is_array(), "{problem}");
    }
    assert_eq!(payment(app, id).await["status"], "requires_payment_method");
    // Unknown ids are 404s.
    let response = post(
        app,
        &token,
        &format!("{PAYMENTS}/{}/confirm", uuid::Uuid::now_v7()),
        "nope",
        &json!({"payment_method": "pm_card_visa"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = get(app, &token, &format!("{PAYMENTS}/not-a-uuid")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// One service for the scenarios above, in this order (the first counts payments).
#[tokio::test]
async fn bad_input_is_refused() {
    let app = demo_app().await;
    bad_payments_are_refused_field_by_field(&app).await;
    confirmation_needs_a_payment_method_the_provider_knows(&app).await;
}
