//! Account administration: only admins, and what deleting, restoring, disabling and role
//! changes do to the account's sessions and sign-ins.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

/// Auth with the demo users, and ada's (admin) token.
async fn with_admin() -> (Auth, String) {
    let auth = spawn_demo().await;
    let ada = sign_in(&auth, "ada@hatchery.test", "hatchery-ada").await;
    (auth, access(&ada))
}

#[tokio::test]
async fn regular_users_cannot_reach_admin_routes_or_other_users_data() {
    let (auth, _) = with_admin().await;
    let bob = access(&sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await);
    let as_bob = auth.with_token(&bob);
    let users = format!("{API}/users");
    let cleo = format!("{API}/users/{CLEO}");
    let responses = [
        as_bob.get(&users).await,
        as_bob.get(&cleo).await,
        as_bob.patch_json(&cleo, &json!({"roles": ["admin"]})).await,
        as_bob
            .patch_json(&format!("{API}/users/{BOB}"), &json!({"roles": ["admin"]}))
            .await,
        as_bob.delete(&cleo).await,
        as_bob
            .request(reqwest::Method::POST, &format!("{cleo}/restore"))
            .send()
            .await
            .unwrap(),
    ];
    for response in responses {
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{}",
            response.url()
        );
    }
    assert_eq!(auth.get(&users).await.status(), StatusCode::UNAUTHORIZED);
    // Bob's own data is all /me shows.
    let me: Value = json(as_bob.get(&format!("{API}/me")).await).await;
    assert_eq!(me["id"], BOB);
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT unnest(roles) FROM users WHERE uuid = $1::uuid")
            .bind(BOB)
            .fetch_all(&auth.db)
            .await
            .unwrap();
    assert!(roles.is_empty());
}

#[tokio::test]
async fn admins_list_search_and_page_through_users() {
    let (auth, ada) = with_admin().await;
    let as_ada = auth.with_token(&ada);
    let all: Value = json(as_ada.get(&format!("{API}/users")).await).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    let first: Value = json(as_ada.get(&format!("{API}/users?limit=2")).await).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second: Value = json(
        as_ada
            .get(&format!("{API}/users?limit=2&cursor={cursor}"))
            .await,
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());

    let found: Value = json(as_ada.get(&format!("{API}/users?q=COOPER")).await).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["id"], CLEO);
    let none: Value = json(as_ada.get(&format!("{API}/users?q=%25")).await).await;
    assert_eq!(
        none["items"].as_array().unwrap().len(),
        0,
        "% is taken literally"
    );

    let one: Value = json(as_ada.get(&format!("{API}/users/{BOB}")).await).await;
    assert_eq!(one["email"], "bob@hatchery.test");
    let missing = as_ada
        .get(&format!("{API}/users/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad_limit = as_ada.get(&format!("{API}/users?limit=1000")).await;
    assert_eq!(bad_limit.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Postgres text cannot hold NUL: a search with one is a client error, not a 500.
    let nul = as_ada.get(&format!("{API}/users?q=a%00b")).await;
    assert_eq!(nul.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(nul).await;
    assert_eq!(problem["errors"]["q"][0], "must not contain NUL characters");
}

#[tokio::test]
async fn role_changes_and_disabling_take_effect_and_are_audited() {
    let (auth, ada) = with_admin().await;
    let as_ada = auth.with_token(&ada);
    let bob_path = format!("{API}/users/{BOB}");

    let promoted = as_ada
        .patch_json(&bob_path, &json!({"roles": ["editor", "admin"]}))
        .await;
    assert_eq!(promoted.status(), StatusCode::OK);
    let promoted: Value = json(promoted).await;
    assert_eq!(promoted["roles"], json!(["admin", "editor"]));
    let event = latest_event(&auth, "auth.user.updated", "bob@hatchery.test")
        .await
        .expect("updated event");
    assert_eq!(event["roles"], json!(["admin", "editor"]));
    let bob = sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await;
    assert_eq!(decode(&access(&bob)).1["roles"], json!(["admin", "editor"]));
    assert_eq!(
        auth.with_token(&access(&bob))
            .get(&format!("{API}/users"))
            .await
            .status(),
        StatusCode::OK
    );

    // Demoted: the admin routes close at once, and his sessions end.
    let demoted = as_ada.patch_json(&bob_path, &json!({"roles": []})).await;
    assert_eq!(demoted.status(), StatusCode::OK);
    assert_eq!(
        me_status(&auth, &access(&bob)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        audit(&auth, "roles_changed", BOB).await,
        [("success".to_owned(), None), ("success".to_owned(), None)]
    );

    let invalid = as_ada
        .patch_json(&bob_path, &json!({"roles": ["service"]}))
        .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let own = as_ada
        .patch_json(&format!("{API}/users/{ADA}"), &json!({"roles": []}))
        .await;
    assert_eq!(own.status(), StatusCode::CONFLICT);

    // Disabled: cannot sign in (and is told so, after the right password).
    let disabled = as_ada
        .patch_json(&bob_path, &json!({"is_active": false}))
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let refused = token(
        &auth,
        json!({"grant_type": "password", "email": "bob@hatchery.test", "password": "hatchery-bob"}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(
        json::<Value>(refused).await["error_description"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    as_ada
        .patch_json(&bob_path, &json!({"is_active": true}))
        .await;
    sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await;
    assert_eq!(audit(&auth, "user_disabled", BOB).await.len(), 1);
}

#[tokio::test]
async fn deleted_users_cannot_sign_in_and_can_be_restored() {
    let (auth, ada) = with_admin().await;
    let as_ada = auth.with_token(&ada);
    let cleo = sign_in(&auth, "cleo@hatchery.test", "hatchery-cleo").await;
    let cleo_path = format!("{API}/users/{CLEO}");

    let deleted = as_ada.delete(&cleo_path).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        me_status(&auth, &access(&cleo)).await,
        StatusCode::UNAUTHORIZED
    );
    let refresh_after = token(
        &auth,
        json!({"grant_type": "refresh_token", "refresh_token": refresh(&cleo)}),
    )
    .await;
    assert_eq!(refresh_after.status(), StatusCode::BAD_REQUEST);
    let login = token(&auth, json!({"grant_type": "password", "email": "cleo@hatchery.test", "password": "hatchery-cleo"})).await;
    let unknown = token(&auth, json!({"grant_type": "password", "email": "nobody@hatchery.test", "password": "hatchery-cleo"})).await;
    assert_eq!(login.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json::<Value>(login).await,
        json::<Value>(unknown).await,
        "deleted looks like unknown"
    );

    // Kept, marked, out of the listing, visible by id.
    let listed: Value = json(as_ada.get(&format!("{API}/users")).await).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["id"] != CLEO)
    );
    let with_deleted: Value = json(
        as_ada
            .get(&format!("{API}/users?include_deleted=true"))
            .await,
    )
    .await;
    assert_eq!(with_deleted["items"].as_array().unwrap().len(), 3);
    let shown: Value = json(as_ada.get(&cleo_path).await).await;
    assert!(shown["deleted_at"].is_string());
    let event: Value =
        sqlx::query_scalar("SELECT envelope FROM outbox WHERE event_type = 'auth.user.deleted'")
            .fetch_one(&auth.db)
            .await
            .unwrap();
    assert_eq!(event["data"]["user"], CLEO);
    assert_eq!(event["actor"], ADA);
    assert_eq!(
        as_ada.delete(&cleo_path).await.status(),
        StatusCode::NO_CONTENT,
        "idempotent"
    );
    assert_eq!(
        as_ada.delete(&format!("{API}/users/{ADA}")).await.status(),
        StatusCode::CONFLICT
    );

    let restored = as_ada
        .request(reqwest::Method::POST, &format!("{cleo_path}/restore"))
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), StatusCode::OK);
    assert!(json::<Value>(restored).await["deleted_at"].is_null());
    let again = sign_in(&auth, "cleo@hatchery.test", "hatchery-cleo").await;
    assert_eq!(me_status(&auth, &access(&again)).await, StatusCode::OK);
    // The old session stays ended.
    assert_eq!(
        me_status(&auth, &access(&cleo)).await,
        StatusCode::UNAUTHORIZED
    );
    let restored_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'auth.user.restored'")
            .fetch_one(&auth.db)
            .await
            .unwrap();
    assert_eq!(restored_events, 1);
    assert_eq!(audit(&auth, "user_deleted", CLEO).await.len(), 1);
    assert_eq!(audit(&auth, "user_restored", CLEO).await.len(), 1);
}
