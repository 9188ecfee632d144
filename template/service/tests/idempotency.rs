//! `Idempotency-Key` on POST /notes: retries are safe, reuse with another body is refused.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

const BOB: &str = "0193a000-0000-7000-8000-000000000002";

async fn demo_app() -> TestApp {
    TestApp::spawn_with(template::service(), |s| {
        s.populate.scenario = Some("demo".into())
    })
    .await
}

async fn post(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/template/v1/notes"))
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
    let body = json!({"owner": BOB, "title": "Pay the flour supplier"});
    let first = post(&app, "retry-1", &body).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = json(first).await;

    // Same request again (key order and spacing do not matter).
    let again = app
        .client
        .post(app.url("/api/template/v1/notes"))
        .header("idempotency-key", "retry-1")
        .header("content-type", "application/json")
        .body(format!(
            "{{ \"title\": \"Pay the flour supplier\",  \"owner\": \"{BOB}\" }}"
        ))
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
        app.post_json("/api/template/v1/notes", &body)
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
    let created = post(&app, "k", &json!({"owner": BOB, "title": "one"})).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let reused = post(&app, "k", &json!({"owner": BOB, "title": "two"})).await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(reused).await;
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(count_notes(&app).await, 5);
}

#[tokio::test]
async fn a_failed_request_leaves_the_key_free_for_the_retry() {
    let app = demo_app().await;
    let invalid = post(&app, "fix-and-retry", &json!({"owner": BOB, "title": " "})).await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The same key with the same (still invalid) body is evaluated again, not replayed.
    let again = post(&app, "fix-and-retry", &json!({"owner": BOB, "title": " "})).await;
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
        .bind(format!("notes.create\u{1f}{key}"))
        .execute(&mut *holder)
        .await
        .unwrap();
    let busy = post(&app, key, &json!({"owner": BOB, "title": "x"})).await;
    assert_eq!(busy.status(), StatusCode::CONFLICT);
    let problem: Value = json(busy).await;
    assert_eq!(problem["code"], "idempotency_key_in_use");
    holder.rollback().await.unwrap();
    assert_eq!(
        post(&app, key, &json!({"owner": BOB, "title": "x"}))
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn concurrent_duplicates_create_one_note() {
    let app = demo_app().await;
    let body = json!({"owner": BOB, "title": "double click"});
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
    let response = post(&app, &"k".repeat(256), &json!({"owner": BOB, "title": "x"})).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "invalid_idempotency_key");
}
