//! Outgoing webhooks to partner endpoints, against a real local HTTP server playing the
//! partner: signed deliveries, retries with backoff until it recovers, the delivery log,
//! replay, and an endpoint disabled after repeated failure and enabled again by an admin.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post as route_post;
use payments::domain::signature;
use serde_json::{Value, json};
use testkit::{TestApp, json};

use crate::common::*;

/// What the partner saw: each request's answer, signature check and body.
#[derive(Default)]
struct Partner {
    /// How many requests to answer 500 before answering 200.
    failures_left: usize,
    received: Vec<(u16, bool, Value)>,
    secret: String,
}

/// The partner's server on a free port; its URL.
async fn partner(state: Arc<Mutex<Partner>>) -> String {
    async fn hook(
        State(state): State<Arc<Mutex<Partner>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let mut partner = state.lock().unwrap();
        let header = headers
            .get(signature::PARTNER_HEADER)
            .and_then(|v| v.to_str().ok());
        let valid = signature::verify(
            partner.secret.as_bytes(),
            header,
            &body,
            chrono::Utc::now().timestamp(),
            300,
        )
        .is_ok();
        let status = if partner.failures_left > 0 {
            partner.failures_left -= 1;
            500
        } else {
            200
        };
        let event = serde_json::from_slice(&body).unwrap_or(Value::Null);
        partner.received.push((status, valid, event));
        StatusCode::from_u16(status).unwrap()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/hooks", route_post(hook))
        .with_state(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn register(app: &TestApp, url: &str, types: Value) -> Value {
    let response = post(
        app,
        &ada().mint(),
        "/api/payments/v1/webhook-endpoints",
        &uuid::Uuid::now_v7().to_string(),
        &json!({"url": url, "event_types": types, "description": "Partner"}),
    )
    .await;
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    json(response).await
}

async fn a_partner_answering_500_four_times_gets_the_event_once_it_recovers(app: &TestApp) {
    let state = Arc::new(Mutex::new(Partner {
        failures_left: 4,
        ..Partner::default()
    }));
    let url = partner(state.clone()).await;
    let endpoint = register(app, &url, json!(["payments.payment.succeeded"])).await;
    let secret = endpoint["secret"]
        .as_str()
        .expect("the secret, once")
        .to_owned();
    assert!(secret.starts_with("whsec_"));
    state.lock().unwrap().secret = secret;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();

    let payment = paid(app, 4200).await;
    let deliveries_path = format!("/api/payments/v1/webhook-endpoints/{endpoint_id}/deliveries");
    let delivered = testkit::eventually(
        "the delivery to succeed",
        Duration::from_secs(10),
        || async {
            let page: Value = json(get(app, &ada().mint(), &deliveries_path).await).await;
            let first = page["items"][0].clone();
            (first["status"] == "succeeded").then_some(first)
        },
    )
    .await;
    assert_eq!(delivered["event_type"], "payments.payment.succeeded");
    assert_eq!(delivered["attempts"], 5);

    {
        let partner = state.lock().unwrap();
        let answers: Vec<u16> = partner.received.iter().map(|r| r.0).collect();
        assert_eq!(answers, [500, 500, 500, 500, 200]);
        assert!(
            partner.received.iter().all(|r| r.1),
            "every attempt is signed"
        );
        let event = &partner.received[4].2;
        assert_eq!(event["type"], "payments.payment.succeeded");
        assert_eq!(event["data"]["payment"], payment.as_str());
        assert_eq!(event["data"]["reference"]["service"], "events");
        assert_eq!(event["id"], delivered["event_id"]);
    }

    // The log shows each attempt and what the partner answered.
    let one: Value = json(
        get(
            app,
            &ada().mint(),
            &format!("{deliveries_path}/{}", delivered["id"].as_str().unwrap()),
        )
        .await,
    )
    .await;
    let codes: Vec<i64> = one["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, [500, 500, 500, 500, 200]);
    let times: Vec<&str> = one["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempted_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]));

    // Replayed, the event goes out again as a new delivery.
    let replay = post(
        app,
        &ada().mint(),
        &format!(
            "{deliveries_path}/{}/replay",
            delivered["id"].as_str().unwrap()
        ),
        "replay-1",
        &json!({}),
    )
    .await;
    assert_eq!(replay.status(), reqwest::StatusCode::ACCEPTED);
    let replay: Value = json(replay).await;
    assert_eq!(replay["replay_of"], delivered["id"]);
    testkit::eventually("the replay to arrive", Duration::from_secs(10), || async {
        (state.lock().unwrap().received.len() == 6).then_some(())
    })
    .await;
    let partner = state.lock().unwrap();
    assert_eq!(
        partner.received[5].2["id"], delivered["event_id"],
        "same event id"
    );
}

async fn an_endpoint_failing_again_and_again_is_disabled_until_an_admin_enables_it(app: &TestApp) {
    let state = Arc::new(Mutex::new(Partner {
        failures_left: usize::MAX,
        ..Partner::default()
    }));
    let url = partner(state.clone()).await;
    let endpoint = register(app, &url, json!([])).await;
    state.lock().unwrap().secret = endpoint["secret"].as_str().unwrap().to_owned();
    let path = format!(
        "/api/payments/v1/webhook-endpoints/{}",
        endpoint["id"].as_str().unwrap()
    );
    paid(app, 100).await;
    let disabled = testkit::eventually(
        "the endpoint to be disabled",
        Duration::from_secs(10),
        || async {
            let endpoint: Value = json(get(app, &ada().mint(), &path).await).await;
            (endpoint["enabled"] == false).then_some(endpoint)
        },
    )
    .await;
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("6 failed")
    );
    assert!(disabled.get("secret").is_none(), "the secret is shown once");
    let tried = state.lock().unwrap().received.len();
    assert_eq!(tried, 6);
    // Disabled: more events wait instead of being sent.
    paid(app, 200).await;

    // The partner is fixed; an admin enables the endpoint: everything waiting goes out.
    state.lock().unwrap().failures_left = 0;
    let enabled = app
        .client
        .patch(app.url(&path))
        .bearer_auth(ada().mint())
        .json(&json!({"enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(enabled.status(), reqwest::StatusCode::OK);
    let enabled: Value = json(enabled).await;
    assert_eq!(
        (
            enabled["enabled"].as_bool(),
            enabled["consecutive_failures"].as_i64()
        ),
        (Some(true), Some(0))
    );
    testkit::eventually("both events to arrive", Duration::from_secs(10), || async {
        let partner = state.lock().unwrap();
        let delivered = partner.received.iter().filter(|r| r.0 == 200).count();
        (delivered == 2).then_some(())
    })
    .await;

    // Only admins manage endpoints.
    let response = get(app, &bob().mint(), "/api/payments/v1/webhook-endpoints").await;
    assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN);
    let bad = post(
        app,
        &ada().mint(),
        "/api/payments/v1/webhook-endpoints",
        "bad-endpoint",
        &json!({"url": "ftp://partner.test", "event_types": ["payments.payment.teleported"]}),
    )
    .await;
    assert_eq!(bad.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(bad).await;
    assert!(problem["errors"]["url"].is_array() && problem["errors"]["event_types"].is_array());
}

/// One service for the scenarios above, in this order: an endpoint is disabled after six
/// failures in a row, which the first partner's four never reach.
#[tokio::test]
async fn partner_webhooks() {
    let app = spawn(|settings| settings.app.webhooks.disable_after = 6).await;
    a_partner_answering_500_four_times_gets_the_event_once_it_recovers(&app).await;
    an_endpoint_failing_again_and_again_is_disabled_until_an_admin_enables_it(&app).await;
}
