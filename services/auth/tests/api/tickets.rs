//! Websocket tickets for the broker.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

#[tokio::test]
async fn a_ticket_is_exchanged_once_by_a_service_for_its_user() {
    let auth = spawn_demo().await;
    let ada = access(&sign_in(&auth, "ada@hatchery.test", "hatchery-ada").await);
    let created = auth
        .with_token(&ada)
        .post_json(&format!("{API}/tickets"), &json!({}))
        .await;
    assert_eq!(created.status(), StatusCode::CREATED);
    let ticket: Value = json(created).await;
    assert_eq!(ticket["expires_in"], 30);
    let broker = service_token(&auth, BROKER_CLIENT, BROKER_SECRET).await;
    let validate = format!("{API}/tickets/validate");

    let answer: Value = json(
        auth.with_token(&broker)
            .post_json(&validate, &json!({"ticket": ticket["ticket"]}))
            .await,
    )
    .await;
    assert_eq!(answer["status"], "ok");
    assert_eq!(answer["user_id"], ADA);
    assert_eq!(answer["roles"], json!(["admin"]));
    assert_eq!(answer["session_id"], decode(&ada).1["sid"]);

    let failed = json!({"status": "error", "error": "Authentication failed."});
    for body in [
        json!({"ticket": ticket["ticket"]}),
        json!({"ticket": "made-up"}),
        json!({}),
        json!({"ticket": 42}),
    ] {
        let response = auth.with_token(&broker).post_json(&validate, &body).await;
        assert_eq!(response.status(), StatusCode::OK, "{body}");
        assert_eq!(json::<Value>(response).await, failed, "{body}");
    }

    // Only services may exchange tickets; only users may get them.
    let another: Value = json(
        auth.with_token(&ada)
            .post_json(&format!("{API}/tickets"), &json!({}))
            .await,
    )
    .await;
    let anonymous = auth
        .post_json(&validate, &json!({"ticket": another["ticket"]}))
        .await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let as_user = auth
        .with_token(&ada)
        .post_json(&validate, &json!({"ticket": another["ticket"]}))
        .await;
    assert_eq!(as_user.status(), StatusCode::FORBIDDEN);
    let for_service = auth
        .with_token(&broker)
        .post_json(&format!("{API}/tickets"), &json!({}))
        .await;
    assert_eq!(for_service.status(), StatusCode::FORBIDDEN);
    // The refused attempts did not use the ticket up.
    let still: Value = json(
        auth.with_token(&broker)
            .post_json(&validate, &json!({"ticket": another["ticket"]}))
            .await,
    )
    .await;
    assert_eq!(still["status"], "ok");
}

#[tokio::test]
async fn a_ticket_of_a_session_that_ended_is_refused() {
    let auth = spawn_demo().await;
    let bob = access(&sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await);
    let ticket: Value = json(
        auth.with_token(&bob)
            .post_json(&format!("{API}/tickets"), &json!({}))
            .await,
    )
    .await;
    auth.with_token(&bob)
        .post_json(&format!("{API}/logout"), &json!({}))
        .await;
    let broker = service_token(&auth, BROKER_CLIENT, BROKER_SECRET).await;
    let answer: Value = json(
        auth.with_token(&broker)
            .post_json(
                &format!("{API}/tickets/validate"),
                &json!({"ticket": ticket["ticket"]}),
            )
            .await,
    )
    .await;
    assert_eq!(answer["status"], "error");
}
