//! `Idempotency-Key` on every POST: concurrent retries make one payment, a reference is charged
//! once whatever the key, the same key with another body is refused, and retries of a
//! confirmation answer what the first one did.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

use crate::common::*;

async fn count_payments(app: &testkit::TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM payments WHERE source = $1::uuid")
        .bind(EVENTS_CLIENT)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

async fn a_hundred_concurrent_creates_with_one_key_make_one_payment(app: &TestApp) {
    let before = count_payments(app).await;
    let body = registration(BOB, 3000);
    let token = events_service();
    let requests = (0..100).map(|_| post(app, &token, PAYMENTS, "registration-42", &body));
    let responses = futures_util::future::join_all(requests).await;
    let mut ids = HashSet::new();
    let mut statuses = Vec::new();
    for response in responses {
        let status = response.status();
        statuses.push(status);
        let answer: Value = json(response).await;
        match status {
            StatusCode::CREATED => {
                ids.insert(answer["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                assert_eq!(answer["code"], "idempotency_key_in_use", "{answer}")
            }
            other => panic!("unexpected {other}: {answer}"),
        }
    }
    assert_eq!(ids.len(), 1, "every 201 is the same payment: {ids:?}");
    assert_eq!(count_payments(app).await, before + 1);

    // Once finished, every retry gets that payment again.
    let retry = post(app, &token, PAYMENTS, "registration-42", &body).await;
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    let retry: Value = json(retry).await;
    assert!(ids.contains(retry["id"].as_str().unwrap()));

    // The same reference with a new key: refused, naming the payment.
    let other_key = post(app, &token, PAYMENTS, "registration-42-bis", &body).await;
    assert_eq!(other_key.status(), StatusCode::CONFLICT);
    let location = other_key.headers()["location"].to_str().unwrap().to_owned();
    let problem: Value = json(other_key).await;
    assert_eq!(problem["code"], "reference_in_use");
    let existing = retry["id"].as_str().unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains(existing),
        "{problem}"
    );
    assert!(location.ends_with(existing));
    assert_eq!(count_payments(app).await, before + 1);
}

async fn the_same_key_with_another_body_is_refused_and_no_key_is_a_400(app: &TestApp) {
    let token = events_service();
    let first = post(app, &token, PAYMENTS, "k-1", &registration(BOB, 100)).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let other = post(app, &token, PAYMENTS, "k-1", &registration(BOB, 200)).await;
    assert_eq!(other.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(other).await;
    assert_eq!(problem["code"], "idempotency_key_reused");

    let no_key = app
        .client
        .post(app.url(PAYMENTS))
        .bearer_auth(&token)
        .json(&registration(BOB, 100))
        .send()
        .await
        .unwrap();
    assert_eq!(no_key.status(), StatusCode::BAD_REQUEST);
    let problem: Value = json(no_key).await;
    assert_eq!(problem["code"], "idempotency_key_required");

    // Keys are per caller: the same key from another caller is another request.
    let bobs = post(
        app,
        &bob().mint(),
        PAYMENTS,
        "k-1",
        &json!({"amount": 100, "currency": "EUR", "reference": {"service": "shop", "id": "k"}}),
    )
    .await;
    assert_eq!(bobs.status(), StatusCode::CREATED);
}

async fn a_retried_confirmation_answers_what_the_first_did_and_charges_once(app: &TestApp) {
    let created = create(app, &registration(BOB, 5000)).await;
    let id = created["id"].as_str().unwrap();
    let path = format!("{PAYMENTS}/{id}/confirm");
    let body = json!({"payment_method": "pm_card_visa"});
    let token = events_service();
    let attempts = (0..10).map(|_| post(app, &token, &path, "pay-once", &body));
    let answers = futures_util::future::join_all(attempts).await;
    let mut succeeded = 0;
    for answer in answers {
        match answer.status() {
            StatusCode::OK => {
                let payment: Value = json(answer).await;
                assert_eq!(payment["status"], "succeeded");
                succeeded += 1;
            }
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(succeeded >= 1);
    let replay = post(app, &token, &path, "pay-once", &body).await;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    // One charge at the provider, one transition to succeeded.
    let received: i64 =
        sqlx::query_scalar("SELECT amount_received FROM test_provider_intents WHERE id = $1")
            .bind(created["provider_payment_id"].as_str().unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(received, 5000);
    let transitions = history(app, id)
        .await
        .iter()
        .filter(|h| h["to_status"] == "succeeded")
        .count();
    assert_eq!(transitions, 1);
}

/// One service for the scenarios above.
#[tokio::test]
async fn idempotency_keys_make_retries_safe() {
    let app = demo_app().await;
    a_hundred_concurrent_creates_with_one_key_make_one_payment(&app).await;
    the_same_key_with_another_body_is_refused_and_no_key_is_a_400(&app).await;
    a_retried_confirmation_answers_what_the_first_did_and_charges_once(&app).await;
}
