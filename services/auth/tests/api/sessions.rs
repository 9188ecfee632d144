//! Refresh rotation, reuse detection, and signing out — seen by auth and by another service.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

use crate::common::*;

async fn refresh_with(auth: &Auth, refresh_token: &str) -> reqwest::Response {
    token(
        auth,
        json!({"grant_type": "refresh_token", "refresh_token": refresh_token}),
    )
    .await
}

#[tokio::test]
async fn every_refresh_rotates_and_a_concurrent_refresh_is_tolerated() {
    let auth = spawn().await;
    let person = verified_person(&auth, "rotate").await;
    let first = sign_in(&auth, &person.email, &person.password).await;
    let sid = decode(&access(&first)).1["sid"].clone();

    let second: Value = json(refresh_with(&auth, &refresh(&first)).await).await;
    assert_ne!(refresh(&second), refresh(&first));
    assert_ne!(access(&second), access(&first));
    assert_eq!(decode(&access(&second)).1["sid"], sid, "same session");
    assert_eq!(me_status(&auth, &access(&second)).await, StatusCode::OK);

    // The first token again, within the grace period (two tabs refreshing at once): allowed.
    let concurrent = refresh_with(&auth, &refresh(&first)).await;
    assert_eq!(concurrent.status(), StatusCode::OK);
    let third: Value = json(concurrent).await;
    assert_eq!(me_status(&auth, &access(&third)).await, StatusCode::OK);
    let fourth = refresh_with(&auth, &refresh(&second)).await;
    assert_eq!(fourth.status(), StatusCode::OK);

    // Only hashes are stored.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM refresh_tokens WHERE token_hash = convert_to($1, 'UTF8')",
    )
    .bind(refresh(&first))
    .fetch_one(&auth.db)
    .await
    .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn presenting_a_rotated_refresh_token_after_the_grace_period_ends_the_session() {
    // No grace at all, so the test needs no waiting: any second use is a reuse.
    let auth = spawn_with(|s| s.app.refresh_reuse_grace = std::time::Duration::ZERO).await;
    let person = verified_person(&auth, "reuse").await;
    let stolen = sign_in(&auth, &person.email, &person.password).await;
    let other_session = sign_in(&auth, &person.email, &person.password).await;
    let legit: Value = json(refresh_with(&auth, &refresh(&stolen)).await).await;
    assert_eq!(me_status(&auth, &access(&legit)).await, StatusCode::OK);

    let replay = refresh_with(&auth, &refresh(&stolen)).await;
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    let answer: Value = json(replay).await;
    assert_eq!(answer["error"], "invalid_grant");

    // The whole session is gone: its newest refresh token and its access tokens.
    let next = refresh_with(&auth, &refresh(&legit)).await;
    assert_eq!(next.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        me_status(&auth, &access(&legit)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        me_status(&auth, &access(&stolen)).await,
        StatusCode::UNAUTHORIZED
    );
    // Other sessions of the user are not affected.
    assert_eq!(
        me_status(&auth, &access(&other_session)).await,
        StatusCode::OK
    );
    assert_eq!(
        audit(&auth, "refresh", &person.id).await,
        [(
            "failure".to_owned(),
            Some("refresh_token_reused".to_owned())
        )]
    );
}

/// The template service verifying auth's tokens through auth's JWKS, checking revocation in
/// the same Redis under the same prefix: "any other service".
async fn second_service(auth: &Auth) -> TestApp {
    let jwks = auth.url("/.well-known/jwks.json");
    let prefix = auth.settings.auth.revocation_prefix.clone();
    TestApp::spawn_with::<template::Template>(move |settings| {
        settings.auth.public_key = None;
        settings.auth.jwks_url = Some(jwks);
        settings.auth.revocation_prefix = prefix;
        settings.redis.url = Some(kit::SecretUrl::new(redis_url()));
    })
    .await
}

async fn notes_status(other: &TestApp, token: &str) -> StatusCode {
    other
        .with_token(token)
        .get("/api/template/v1/notes")
        .await
        .status()
}

#[tokio::test]
async fn after_logout_the_token_is_refused_by_every_service() {
    let auth = spawn().await;
    let other = second_service(&auth).await;
    let person = verified_person(&auth, "logout").await;
    let tokens = sign_in(&auth, &person.email, &person.password).await;
    let kept = sign_in(&auth, &person.email, &person.password).await;
    assert_eq!(notes_status(&other, &access(&tokens)).await, StatusCode::OK);

    let logout = auth
        .with_token(&access(&tokens))
        .post_json(&format!("{API}/logout"), &json!({}))
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);

    assert_eq!(
        me_status(&auth, &access(&tokens)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        notes_status(&other, &access(&tokens)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        refresh_with(&auth, &refresh(&tokens)).await.status(),
        StatusCode::BAD_REQUEST
    );
    // Only that session ended.
    assert_eq!(notes_status(&other, &access(&kept)).await, StatusCode::OK);
    assert_eq!(
        audit(&auth, "logout", &person.id).await,
        [("success".to_owned(), None)]
    );
}

#[tokio::test]
async fn global_logout_ends_every_session_and_a_new_login_still_works() {
    let auth = spawn().await;
    let other = second_service(&auth).await;
    let person = verified_person(&auth, "global").await;
    let laptop = sign_in(&auth, &person.email, &person.password).await;
    let phone = sign_in(&auth, &person.email, &person.password).await;
    assert_eq!(notes_status(&other, &access(&phone)).await, StatusCode::OK);

    let logout = auth
        .with_token(&access(&laptop))
        .post_json(&format!("{API}/logout?scope=global"), &json!({}))
        .await;
    assert_eq!(logout.status(), StatusCode::NO_CONTENT);
    for session in [&laptop, &phone] {
        assert_eq!(
            notes_status(&other, &access(session)).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            me_status(&auth, &access(session)).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            refresh_with(&auth, &refresh(session)).await.status(),
            StatusCode::BAD_REQUEST
        );
    }
    // Signing in again right away (same second) works everywhere.
    let fresh = sign_in(&auth, &person.email, &person.password).await;
    assert_eq!(me_status(&auth, &access(&fresh)).await, StatusCode::OK);
    assert_eq!(notes_status(&other, &access(&fresh)).await, StatusCode::OK);

    let bad_scope = auth
        .with_token(&access(&fresh))
        .post_json(&format!("{API}/logout?scope=everything"), &json!({}))
        .await;
    assert_eq!(bad_scope.status(), StatusCode::BAD_REQUEST);
}
