//! Signing up, verifying the email address, and the account's own `/me`.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

#[tokio::test]
async fn signup_creates_an_unverified_account_and_requests_a_verification_mail() {
    let auth = spawn().await;
    let email = unique_email("signup");
    let response = post(
        &auth,
        "/signup",
        json!({"email": format!("  {}  ", email.to_uppercase()), "password": "correct horse", "name": "  Dora Dough "}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = json(response).await;
    let user = &body["user"];
    assert_eq!(user["email"], email, "email is trimmed and lower-cased");
    assert_eq!(user["name"], "Dora Dough");
    assert_eq!(user["roles"], json!([]));
    assert_eq!(user["email_verified"], false);
    assert!(user.get("password_hash").is_none() && !body.to_string().contains("argon2"));
    let id = user["id"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);

    // The verification mail is requested through an event carrying what the mail needs.
    let event = latest_event(&auth, "auth.email.verification_requested", &email)
        .await
        .expect("verification requested in the signup transaction");
    assert_eq!(event["user"], id);
    assert_eq!(event["name"], "Dora Dough");
    let token = event["token"].as_str().unwrap();
    assert!(
        event["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("token={token}"))
    );
    let registered = latest_event(&auth, "auth.user.registered", &email)
        .await
        .expect("registered event");
    assert_eq!(registered["user"], id);

    // The token is stored hashed only.
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT token_hash FROM one_time_tokens")
        .fetch_all(&auth.db)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token.as_bytes());

    // Password stored as an argon2id PHC string.
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE uuid = $1::uuid")
        .bind(id)
        .fetch_one(&auth.db)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert_eq!(
        audit(&auth, "signup", id).await,
        [("success".to_owned(), None)]
    );
}

#[tokio::test]
async fn signup_refuses_taken_emails_and_invalid_fields() {
    let auth = spawn().await;
    let email = unique_email("taken");
    sign_up(&auth, &email, "first password").await;

    let again = post(
        &auth,
        "/signup",
        json!({"email": email.to_uppercase(), "password": "other password", "name": "X"}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let problem: Value = json(again).await;
    assert_eq!(problem["code"], "email_taken");

    let invalid = post(
        &auth,
        "/signup",
        json!({"email": "not-an-email", "password": "short", "name": "   "}),
    )
    .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(invalid).await;
    assert_eq!(problem["code"], "validation_failed");
    for field in ["email", "password", "name"] {
        assert!(problem["errors"][field].is_array(), "{field}: {problem}");
    }
    let too_long = post(
        &auth,
        "/signup",
        json!({"email": unique_email("long"), "password": "x".repeat(1025), "name": "Long"}),
    )
    .await;
    assert_eq!(too_long.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let exactly_max = post(
        &auth,
        "/signup",
        json!({"email": unique_email("max"), "password": "x".repeat(1024), "name": "Max"}),
    )
    .await;
    assert_eq!(exactly_max.status(), StatusCode::CREATED);

    let malformed = auth
        .client
        .post(auth.url(&format!("{API}/signup")))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn email_verification_tokens_are_single_use_and_resend_always_answers_202() {
    let auth = spawn().await;
    let email = unique_email("verify");
    sign_up(&auth, &email, "verify me please").await;
    let first = wait_for_event(&auth, "auth.email.verification_requested", &email).await;

    // Resend: a new token for the unverified account; unknown addresses get the same answer.
    let known = post(&auth, "/email/resend", json!({"email": email})).await;
    let unknown = post(
        &auth,
        "/email/resend",
        json!({"email": unique_email("nobody")}),
    )
    .await;
    assert_eq!(known.status(), StatusCode::ACCEPTED);
    assert_eq!(unknown.status(), StatusCode::ACCEPTED);
    assert_eq!(known.text().await.unwrap(), unknown.text().await.unwrap());
    let second = testkit::eventually(
        "a second verification token",
        std::time::Duration::from_secs(10),
        || async {
            latest_event(&auth, "auth.email.verification_requested", &email)
                .await
                .filter(|event| event["token"] != first["token"])
        },
    )
    .await;

    let bad = post(&auth, "/email/verify", json!({"token": "not-a-token"})).await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(bad).await;
    assert_eq!(problem["code"], "invalid_token");

    // Either token works once.
    let ok = post(&auth, "/email/verify", json!({"token": second["token"]})).await;
    assert_eq!(ok.status(), StatusCode::NO_CONTENT);
    let reused = post(&auth, "/email/verify", json!({"token": second["token"]})).await;
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let tokens = sign_in(&auth, &email, "verify me please").await;
    let me: Value = json(
        auth.with_token(&access(&tokens))
            .get(&format!("{API}/me"))
            .await,
    )
    .await;
    assert_eq!(me["email_verified"], true);
}

#[tokio::test]
async fn me_shows_and_renames_the_signed_in_user() {
    let auth = spawn().await;
    let person = verified_person(&auth, "me").await;
    let tokens = sign_in(&auth, &person.email, &person.password).await;
    let as_person = auth.with_token(&access(&tokens));

    let me: Value = json(as_person.get(&format!("{API}/me")).await).await;
    assert_eq!(me["id"], person.id);
    assert_eq!(me["email"], person.email);
    assert!(me["last_login_at"].is_string());

    let renamed = as_person
        .patch_json(&format!("{API}/me"), &json!({"name": "  New Name "}))
        .await;
    assert_eq!(renamed.status(), StatusCode::OK);
    let renamed: Value = json(renamed).await;
    assert_eq!(renamed["name"], "New Name");
    let event = latest_event(&auth, "auth.user.updated", &person.email)
        .await
        .expect("updated event");
    assert_eq!(event["name"], "New Name");
    assert_eq!(event["is_active"], true);

    let invalid = as_person
        .patch_json(&format!("{API}/me"), &json!({"name": ""}))
        .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let unknown_field = as_person
        .patch_json(&format!("{API}/me"), &json!({"email": "x@y.test"}))
        .await;
    assert_eq!(unknown_field.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let anonymous = auth.get(&format!("{API}/me")).await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let garbage = me_status(&auth, "not.a.jwt").await;
    assert_eq!(garbage, StatusCode::UNAUTHORIZED);
    // A token signed by someone else (testkit's key) is not auth's.
    let forged = testkit::tokens::user(person.id.parse().unwrap()).mint();
    assert_eq!(me_status(&auth, &forged).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn changing_the_password_keeps_this_session_and_ends_the_others() {
    let auth = spawn().await;
    let person = verified_person(&auth, "change").await;
    let here = sign_in(&auth, &person.email, &person.password).await;
    let elsewhere = sign_in(&auth, &person.email, &person.password).await;
    let path = format!("{API}/me/password");

    let wrong = auth
        .with_token(&access(&here))
        .post_json(
            &path,
            &json!({"current_password": "not it at all", "new_password": "brand new secret"}),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(wrong).await;
    assert!(
        problem["errors"]["current_password"].is_array(),
        "{problem}"
    );

    let weak = auth
        .with_token(&access(&here))
        .post_json(
            &path,
            &json!({"current_password": person.password, "new_password": "short"}),
        )
        .await;
    assert_eq!(weak.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let changed = auth
        .with_token(&access(&here))
        .post_json(
            &path,
            &json!({"current_password": person.password, "new_password": "brand new secret"}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);

    assert_eq!(me_status(&auth, &access(&here)).await, StatusCode::OK);
    assert_eq!(
        me_status(&auth, &access(&elsewhere)).await,
        StatusCode::UNAUTHORIZED
    );
    let refresh_elsewhere = token(
        &auth,
        json!({"grant_type": "refresh_token", "refresh_token": refresh(&elsewhere)}),
    )
    .await;
    assert_eq!(refresh_elsewhere.status(), StatusCode::BAD_REQUEST);

    let old = token(
        &auth,
        json!({"grant_type": "password", "email": person.email, "password": person.password}),
    )
    .await;
    assert_eq!(old.status(), StatusCode::BAD_REQUEST);
    sign_in(&auth, &person.email, "brand new secret").await;
    let entries = audit(&auth, "password_changed", &person.id).await;
    assert_eq!(
        entries,
        [
            ("failure".to_owned(), Some("wrong_password".to_owned())),
            ("success".to_owned(), None)
        ]
    );
}

#[tokio::test]
async fn an_email_change_is_confirmed_from_the_new_address_and_the_old_one_is_told() {
    let auth = spawn().await;
    let person = verified_person(&auth, "mover").await;
    let tokens = sign_in(&auth, &person.email, &person.password).await;
    let as_person = auth.with_token(&access(&tokens));
    let path = format!("{API}/me/email");
    let new_email = unique_email("moved");

    // The password is asked for; the new address must be new and free.
    let wrong = as_person
        .post_json(
            &path,
            &json!({"new_email": new_email, "password": "not my password"}),
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(wrong).await;
    assert!(problem["errors"]["password"].is_array(), "{problem}");
    let same = as_person
        .post_json(
            &path,
            &json!({"new_email": person.email.to_uppercase(), "password": person.password}),
        )
        .await;
    assert_eq!(same.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let other = verified_person(&auth, "occupant").await;
    let taken = as_person
        .post_json(
            &path,
            &json!({"new_email": other.email, "password": person.password}),
        )
        .await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    assert_eq!(json::<Value>(taken).await["code"], "email_taken");

    let requested = as_person
        .post_json(
            &path,
            &json!({"new_email": new_email, "password": person.password}),
        )
        .await;
    assert_eq!(requested.status(), StatusCode::ACCEPTED);
    // The link goes to the new address; until it is followed, nothing changes.
    let mail = wait_for_event(&auth, "auth.email.change_requested", &new_email).await;
    assert_eq!(mail["old_email"], person.email.as_str());
    assert!(
        mail["url"]
            .as_str()
            .unwrap()
            .ends_with(mail["token"].as_str().unwrap())
    );
    let me: Value = json(as_person.get(&format!("{API}/me")).await).await;
    assert_eq!(me["email"], person.email.as_str());
    sign_in(&auth, &person.email, &person.password).await;

    let confirmed = post(
        &auth,
        "/email/change/confirm",
        json!({"token": mail["token"]}),
    )
    .await;
    assert_eq!(confirmed.status(), StatusCode::NO_CONTENT);
    let me: Value = json(as_person.get(&format!("{API}/me")).await).await;
    assert_eq!(me["email"], new_email.as_str());
    assert_eq!(me["email_verified"], true);
    sign_in(&auth, &new_email, &person.password).await;
    let old = token(
        &auth,
        json!({"grant_type": "password", "email": person.email, "password": person.password}),
    )
    .await;
    assert_eq!(old.status(), StatusCode::BAD_REQUEST);
    // The old address is told; every service learns the new one.
    let notice = wait_for_event(&auth, "auth.email.changed", &person.email).await;
    assert_eq!(notice["new_email"], new_email.as_str());
    let updated = latest_event(&auth, "auth.user.updated", &new_email)
        .await
        .expect("auth.user.updated with the new address");
    assert_eq!(updated["user"], person.id.as_str());
    assert_eq!(
        audit(&auth, "email_changed", &person.id).await,
        [("success".to_owned(), None)]
    );
    // The link works once.
    let again = post(
        &auth,
        "/email/change/confirm",
        json!({"token": mail["token"]}),
    )
    .await;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(json::<Value>(again).await["code"], "invalid_token");
}
