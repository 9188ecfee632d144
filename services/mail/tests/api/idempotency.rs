//! `Idempotency-Key` on POST /notes: retries are safe, reuse with another body is refused.

use crate::common::{BOB, bob, cleo, demo_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

/// POST /notes as Bob with an Idempotency-Key.
async fn post(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    post_as(app, &bob().mint(), key, body).await
}

async fn post_as(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.with_token(token)
        .request(reqwest::Method::POST, "/api/mail/v1/notes")
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn count_notes(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_first_note() {
    let app = demo_app().await;
    let body = json!({"title": "Pay the flour supplier"});
    let first = post(&app, "retry-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = json(first).await;

    // Same request again (spacing does not matter).
    let again = app
        .with_token(&bob().mint())
        .request(reqwest::Method::POST, "/api/mail/v1/notes")
        .header("idempotency-key", "retry-1")
        .header("content-type", "application/json")
        .body("{ \"title\":   \"Pay the flour supplier\" }")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()["location"], location.as_str());
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = json(again).await;
    assert_eq!(again, first);
    assert_eq!(count_notes(&app).await, 5, "4 demo notes + 1");

    // Without a key, or with another key, it is a new note.
    assert_eq!(
        app.with_token(&bob().mint())
            .post_json("/api/mail/v1/notes", &body)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        post(&app, "retry-2", &body).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(count_notes(&app).await, 7);
}

#[tokio::test]
async fn reusing_a_key_for_another_request_is_refused() {
    let app = demo_app().await;
    let created = post(&app, "k", &json!({"title": "one"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let reused = post(&app, "k", &json!({"title": "two"})).await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(reused).await;
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(count_notes(&app).await, 5);
}

#[tokio::test]
async fn a_failed_request_leaves_the_key_free_for_the_retry() {
    let app = demo_app().await;
    let invalid = post(&app, "fix-and-retry", &json!({"title": " "})).await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The same key with the same (still invalid) body is evaluated again, not replayed.
    let again = post(&app, "fix-and-retry", &json!({"title": " "})).await;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(again.headers().get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn a_key_still_in_flight_is_a_409() {
    let app = demo_app().await;
    let key = "in-flight";
    // Hold the key's lock the way a running request does.
    let mut holder = app.db.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("notes.create:{BOB}\u{1f}{key}"))
        .execute(&mut *holder)
        .await
        .unwrap();
    let busy = post(&app, key, &json!({"title": "x"})).await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);
    let problem: Value = json(busy).await;
    assert_eq!(problem["code"], "idempotency_key_in_use");
    holder.rollback().await.unwrap();
    assert_eq!(
        post(&app, key, &json!({"title": "x"})).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn concurrent_duplicates_create_one_note() {
    let app = demo_app().await;
    let body = json!({"title": "double click"});
    let responses =
        futures_util::future::join_all((0..8).map(|_| post(&app, "double-click", &body))).await;
    let statuses: Vec<StatusCode> = responses.iter().map(|r| r.status()).collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::CREATED));
    assert_eq!(
        count_notes(&app).await,
        5,
        "exactly one note created: {statuses:?}"
    );
}

#[tokio::test]
async fn malformed_keys_are_rejected() {
    let app = demo_app().await;
    let response = post(&app, &"k".repeat(256), &json!({"title": "x"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "invalid_idempotency_key");
}

#[tokio::test]
async fn keys_belong_to_the_caller() {
    let app = demo_app().await;
    let body = json!({"title": "Same key, same body"});
    let bobs = post(&app, "shared-key", &body).await;
    assert_eq!(bobs.status(), StatusCode::CREATED);
    let bobs: Value = json(bobs).await;
    // Cleo picking the same key gets a note of her own, not a replay of Bob's.
    let cleos = post_as(&app, &cleo().mint(), "shared-key", &body).await;
    assert_eq!(cleos.status(), StatusCode::CREATED);
    assert!(cleos.headers().get("idempotent-replayed").is_none());
    let cleos: Value = json(cleos).await;
    assert_ne!(cleos["id"], bobs["id"]);
    assert_eq!(cleos["owner"], crate::common::CLEO);
    assert_eq!(count_notes(&app).await, 6);
}
