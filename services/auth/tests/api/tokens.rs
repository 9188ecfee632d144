//! The token endpoint: password and client-credentials grants, RFC 6749 shapes and errors,
//! and what the issued tokens say.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

#[tokio::test]
async fn the_password_grant_issues_an_eddsa_token_with_every_claim() {
    let auth = spawn().await;
    let person = verified_person(&auth, "claims").await;
    let response = token(&auth, json!({"grant_type": "password", "email": person.email.to_uppercase(), "password": person.password})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: Value = json(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert!(
        body["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 40)
    );

    let (header, claims) = decode(&access(&body));
    assert_eq!(header["alg"], "EdDSA");
    let kid = header["kid"].as_str().expect("kid");
    for field in [
        "iss",
        "aud",
        "sub",
        "sid",
        "jti",
        "iat",
        "exp",
        "roles",
        "email",
        "name",
        "email_verified",
    ] {
        assert!(claims.get(field).is_some(), "{field} missing: {claims}");
    }
    assert_eq!(claims["iss"], "hatchery-auth");
    assert_eq!(claims["aud"], "hatchery");
    assert_eq!(claims["sub"], person.id);
    assert_eq!(claims["email"], person.email);
    assert_eq!(claims["email_verified"], true);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );

    // The key is in the JWKS, at both addresses.
    let well_known: Value = json(auth.get("/.well-known/jwks.json").await).await;
    let api: Value = json(auth.get(&format!("{API}/jwks")).await).await;
    assert_eq!(well_known, api);
    let key = well_known["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("the token's kid is published");
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert!(key.get("d").is_none(), "no private part: {key}");

    // The session is recorded with the login's origin.
    let sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sessions WHERE id = $1::uuid AND ip = '127.0.0.1'",
    )
    .bind(claims["sid"].as_str().unwrap())
    .fetch_one(&auth.db)
    .await
    .unwrap();
    assert_eq!(sessions, 1);
    assert_eq!(
        audit(&auth, "login", &person.id).await,
        [("success".to_owned(), None)]
    );
}

#[tokio::test]
async fn wrong_passwords_and_unknown_emails_get_the_same_answer() {
    let auth = spawn().await;
    let person = verified_person(&auth, "wrong").await;
    let wrong = token(
        &auth,
        json!({"grant_type": "password", "email": person.email, "password": "not the password"}),
    )
    .await;
    let unknown = token(&auth, json!({"grant_type": "password", "email": unique_email("ghost"), "password": "not the password"})).await;
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert_eq!(unknown.status(), StatusCode::BAD_REQUEST);
    let wrong: Value = json(wrong).await;
    let unknown: Value = json(unknown).await;
    assert_eq!(wrong, unknown);
    assert_eq!(wrong["error"], "invalid_grant");
    assert!(wrong["error_description"].is_string());
    assert_eq!(
        audit(&auth, "login", &person.id).await,
        [("failure".to_owned(), Some("wrong_password".to_owned()))]
    );
    let unknown_logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'login' AND reason = 'unknown_email'",
    )
    .fetch_one(&auth.db)
    .await
    .unwrap();
    assert_eq!(unknown_logged, 1);
}

#[tokio::test]
async fn unverified_accounts_are_told_so_when_verification_is_required() {
    let auth = spawn().await;
    let email = unique_email("unverified");
    sign_up(&auth, &email, "unverified pass").await;
    let refused = token(
        &auth,
        json!({"grant_type": "password", "email": email, "password": "unverified pass"}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let body: Value = json(refused).await;
    assert_eq!(body["error"], "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("verified"),
        "{body}"
    );
    // The wrong password still gets the generic answer (verification status is not revealed).
    let wrong = token(
        &auth,
        json!({"grant_type": "password", "email": email, "password": "wrong wrong"}),
    )
    .await;
    let wrong: Value = json(wrong).await;
    assert!(
        !wrong["error_description"]
            .as_str()
            .unwrap()
            .contains("verified")
    );

    let lenient = spawn_with(|s| s.app.require_verified_email = false).await;
    sign_up(&lenient, &email, "unverified pass").await;
    let tokens = sign_in(&lenient, &email, "unverified pass").await;
    assert_eq!(decode(&access(&tokens)).1["email_verified"], false);
}

#[tokio::test]
async fn form_encoded_requests_and_request_errors_follow_rfc_6749() {
    let auth = spawn().await;
    let person = verified_person(&auth, "form").await;
    let url = auth.url(&format!("{API}/token"));
    let by_form = auth
        .client
        .post(&url)
        .header("content-type", FORM)
        .body(form(&[
            ("grant_type", "password"),
            ("username", &person.email),
            ("password", &person.password),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(by_form.status(), StatusCode::OK);
    let tokens: Value = json(by_form).await;
    let refreshed = auth
        .client
        .post(&url)
        .header("content-type", FORM)
        .body(form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh(&tokens)),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), StatusCode::OK);

    let cases = [
        (json!({"grant_type": "implicit"}), "unsupported_grant_type"),
        (
            json!({"email": person.email, "password": person.password}),
            "invalid_request",
        ),
        (
            json!({"grant_type": "password", "email": person.email}),
            "invalid_request",
        ),
        (json!({"grant_type": "refresh_token"}), "invalid_request"),
        (
            json!({"grant_type": "password", "email": 5, "password": "x"}),
            "invalid_request",
        ),
        (
            json!({"grant_type": "refresh_token", "refresh_token": "made-up"}),
            "invalid_grant",
        ),
    ];
    for (body, error) in cases {
        let response = token(&auth, body.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let answer: Value = json(response).await;
        assert_eq!(answer["error"], error, "{body}: {answer}");
        assert!(answer["error_description"].is_string());
    }
    let text = auth
        .client
        .post(&url)
        .body("grant_type=password")
        .send()
        .await
        .unwrap();
    assert_eq!(text.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn client_credentials_issue_service_tokens_without_refresh_tokens() {
    let auth = spawn_demo().await;
    let response = token(
        &auth,
        json!({"grant_type": "client_credentials", "client_id": EVENTS_CLIENT, "client_secret": EVENTS_SECRET}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = json(response).await;
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(
        body["scope"],
        "mail:send payments:create payments:read payments:refund"
    );
    let (_, claims) = decode(&access(&body));
    assert_eq!(claims["sub"], EVENTS_CLIENT);
    assert_eq!(claims["roles"], json!(["service"]));
    assert_eq!(
        claims["scope"],
        "mail:send payments:create payments:read payments:refund"
    );
    assert!(claims.get("sid").is_none() && claims.get("email").is_none());

    // HTTP Basic, and a narrower scope.
    let basic = auth
        .client
        .post(auth.url(&format!("{API}/token")))
        .basic_auth(EVENTS_CLIENT, Some(EVENTS_SECRET))
        .header("content-type", FORM)
        .body(form(&[
            ("grant_type", "client_credentials"),
            ("scope", "payments:read"),
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    let basic: Value = json(basic).await;
    assert_eq!(basic["scope"], "payments:read");

    let broader = token(
        &auth,
        json!({"grant_type": "client_credentials", "client_id": EVENTS_CLIENT, "client_secret": EVENTS_SECRET, "scope": "admin"}),
    )
    .await;
    assert_eq!(broader.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json::<Value>(broader).await["error"], "invalid_scope");

    for (id, secret) in [
        (EVENTS_CLIENT, "wrong secret"),
        ("not-a-uuid", EVENTS_SECRET),
        (BROKER_CLIENT, EVENTS_SECRET),
    ] {
        let refused = token(
            &auth,
            json!({"grant_type": "client_credentials", "client_id": id, "client_secret": secret}),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{id}");
        assert_eq!(json::<Value>(refused).await["error"], "invalid_client");
    }

    // A service token is not a user: /me refuses it.
    assert_eq!(
        me_status(&auth, &access(&body)).await,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn the_authorization_server_metadata_describes_the_token_endpoint_and_keys() {
    let auth = spawn().await;
    let metadata: Value = json(auth.get("/.well-known/oauth-authorization-server").await).await;
    assert_eq!(metadata["issuer"], auth.settings.auth.issuer.as_str());
    assert_eq!(
        metadata["token_endpoint"],
        format!("{}{API}/token", auth.base_url).as_str()
    );
    assert_eq!(
        metadata["grant_types_supported"],
        json!(["password", "refresh_token", "client_credentials"])
    );
    assert_eq!(
        metadata["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    // The key set is where it says.
    let jwks_uri = metadata["jwks_uri"].as_str().unwrap();
    let jwks: Value = json(auth.client.get(jwks_uri).send().await.unwrap()).await;
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
}
