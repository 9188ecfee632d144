//! Forgotten passwords: no account enumeration, single-use expiring tokens, every session
//! ended on reset.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

#[tokio::test]
async fn forgot_answers_unknown_and_known_emails_alike() {
    let auth = spawn().await;
    let person = verified_person(&auth, "forgot").await;

    let mut known_times = Vec::new();
    let mut unknown_times = Vec::new();
    let mut answers = Vec::new();
    for round in 0..4 {
        for (email, times) in [
            (person.email.clone(), &mut known_times),
            (unique_email(&format!("nobody{round}")), &mut unknown_times),
        ] {
            let started = Instant::now();
            let response = post(&auth, "/password/forgot", json!({"email": email})).await;
            times.push(started.elapsed());
            let status = response.status();
            let content_type = response.headers().get("content-type").cloned();
            answers.push((status, content_type, response.bytes().await.unwrap()));
        }
    }
    let (first_status, first_type, first_body) = answers[0].clone();
    assert_eq!(first_status, StatusCode::ACCEPTED);
    for (status, content_type, body) in &answers {
        assert_eq!(
            (status, content_type, body),
            (&first_status, &first_type, &first_body)
        );
    }
    // The work for a known account happens after the answer: similar times. (Medians, with a
    // floor, so scheduling noise on a busy machine does not decide.)
    let median = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    let (known, unknown) = (median(&mut known_times), median(&mut unknown_times));
    let slack = Duration::from_millis(25);
    assert!(
        known <= unknown * 3 + slack && unknown <= known * 3 + slack,
        "known {known:?} vs unknown {unknown:?}"
    );

    // And the known account does get its mail request.
    let event = wait_for_event(&auth, "auth.password.reset_requested", &person.email).await;
    assert_eq!(event["user"], person.id);
    assert!(
        event["url"]
            .as_str()
            .unwrap()
            .contains(event["token"].as_str().unwrap())
    );
    let expires =
        chrono::DateTime::parse_from_rfc3339(event["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.signed_duration_since(chrono::Utc::now());
    assert!(
        left > chrono::Duration::minutes(55) && left <= chrono::Duration::minutes(60),
        "{left}"
    );
}

#[tokio::test]
async fn a_reset_token_sets_the_password_once_and_ends_every_session() {
    let auth = spawn().await;
    let person = verified_person(&auth, "reset").await;
    let session = sign_in(&auth, &person.email, &person.password).await;
    assert_eq!(
        post(&auth, "/password/forgot", json!({"email": person.email}))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    let event = wait_for_event(&auth, "auth.password.reset_requested", &person.email).await;
    let reset_token = event["token"].as_str().unwrap();

    let weak = post(
        &auth,
        "/password/reset",
        json!({"token": reset_token, "new_password": "short"}),
    )
    .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bogus = post(
        &auth,
        "/password/reset",
        json!({"token": "bogus", "new_password": "a fine new password"}),
    )
    .await;
    assert_eq!(bogus.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json::<Value>(bogus).await["code"], "invalid_token");

    let reset = post(
        &auth,
        "/password/reset",
        json!({"token": reset_token, "new_password": "a fine new password"}),
    )
    .await;
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    let again = post(
        &auth,
        "/password/reset",
        json!({"token": reset_token, "new_password": "another new password"}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);

    assert_eq!(
        me_status(&auth, &access(&session)).await,
        StatusCode::UNAUTHORIZED
    );
    let old = token(
        &auth,
        json!({"grant_type": "password", "email": person.email, "password": person.password}),
    )
    .await;
    assert_eq!(old.status(), StatusCode::BAD_REQUEST);
    let fresh = sign_in(&auth, &person.email, "a fine new password").await;
    assert_eq!(me_status(&auth, &access(&fresh)).await, StatusCode::OK);
    assert_eq!(
        audit(&auth, "password_reset", &person.id).await,
        [("success".to_owned(), None)]
    );
}

#[tokio::test]
async fn expired_reset_tokens_are_refused() {
    let auth = spawn().await;
    let person = verified_person(&auth, "expired").await;
    post(&auth, "/password/forgot", json!({"email": person.email})).await;
    let event = wait_for_event(&auth, "auth.password.reset_requested", &person.email).await;
    sqlx::query("UPDATE one_time_tokens SET expires_at = now() - interval '1 second' WHERE purpose = 'reset_password'")
        .execute(&auth.db)
        .await
        .unwrap();
    let late = post(
        &auth,
        "/password/reset",
        json!({"token": event["token"], "new_password": "too late for this"}),
    )
    .await;
    assert_eq!(late.status(), StatusCode::UNPROCESSABLE_ENTITY);
    sign_in(&auth, &person.email, &person.password).await;
}
