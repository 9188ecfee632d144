//! `identity::ServiceClient`, the one way a service calls another with its own token, against
//! the real auth service: the token is fetched once and reused, fetched again after a 401, and
//! the caller's request id travels with the call.

use std::time::Duration;

use identity::{ClientCredentials, ServiceClient};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

fn broker_client(auth: &Auth, secret: &str) -> ServiceClient {
    ServiceClient::new(
        ClientCredentials {
            token_url: auth.url(&format!("{API}/token")),
            client_id: BROKER_CLIENT.into(),
            client_secret: kit::Secret::new(secret),
            scope: None,
        },
        reqwest::Client::new(),
    )
}

/// Ticket validation: an endpoint that takes service tokens only.
async fn validate(auth: &Auth, client: &ServiceClient) -> reqwest::Response {
    let url = auth.url(&format!("{API}/tickets/validate"));
    client
        .send(|http| http.post(&url).json(&json!({"ticket": "no-such-ticket"})))
        .await
        .expect("the call is made")
}

fn issued_at(token: &str) -> i64 {
    let (_, claims) = decode(token);
    claims["iat"].as_i64().expect("iat")
}

#[tokio::test]
async fn a_service_token_is_reused_renewed_after_a_401_and_carries_the_request_id() {
    let auth = spawn_demo().await;
    let client = broker_client(&auth, BROKER_SECRET);

    let first = client.token().await.unwrap();
    assert_eq!(client.token().await.unwrap(), first, "reused while valid");

    let response = kit::request_id::scope("trace-me-42".into(), validate(&auth, &client)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");

    // Auth revokes every token of this client issued so far: the next call is refused once,
    // and the client comes back with a token issued after the cut.
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let cutoff = issued_at(&first) + 1;
    identity::revocation::revoke_subject_before_in(
        &mut redis,
        &auth.settings.auth.revocation_prefix,
        BROKER_CLIENT.parse().unwrap(),
        cutoff,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    testkit::eventually(
        "a call with a token issued after the revocation",
        Duration::from_secs(5),
        || async { (validate(&auth, &client).await.status() == StatusCode::OK).then_some(()) },
    )
    .await;
    let renewed = client.token().await.unwrap();
    assert_ne!(renewed, first);
    assert!(issued_at(&renewed) >= cutoff);

    // Bad credentials: a clear error naming the token endpoint, no call made.
    let wrong = broker_client(&auth, "not-the-secret");
    let error = wrong.token().await.unwrap_err().to_string();
    assert!(error.contains("/token") && error.contains("401"), "{error}");
}
