//! What auth publishes reaches RabbitMQ through the outbox, on the test's own prefix.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn signup_publishes_registered_and_verification_requested() {
    let amqp = bus::testing::settings();
    let url = bus::testing::amqp_url();
    let mut tap = bus::testing::Tap::bind(&url, &amqp.prefix, "auth.#")
        .await
        .expect("RabbitMQ must run at 127.0.0.1:5672 (cargo xtask infra starts it)");
    let settings = amqp.clone();
    let auth = spawn_with(move |s| s.amqp = settings).await;
    let email = unique_email("published");
    let response = auth
        .client
        .post(auth.url(&format!("{API}/signup")))
        .header("x-request-id", "signup-events-1")
        .json(&json!({"email": email, "password": "published pw", "name": "Pub Lished"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let user: serde_json::Value = testkit::json(response).await;
    let id = user["user"]["id"].as_str().unwrap().to_owned();

    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (event, _) = tap
            .next(Duration::from_secs(10))
            .await
            .expect("auth events reach RabbitMQ");
        assert_eq!(event.source, "/auth");
        assert_eq!(event.subject.as_deref(), Some(id.as_str()));
        assert_eq!(event.requestid.as_deref(), Some("signup-events-1"));
        assert_eq!(event.data["user"], id.as_str());
        assert_eq!(event.data["email"], email.as_str());
        seen.push(event);
    }
    let types: Vec<&str> = seen.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["auth.user.registered", "auth.email.verification_requested"]
    );
    assert!(seen[1].data["token"].is_string() && seen[1].data["url"].is_string());

    let ready: serde_json::Value = testkit::json(auth.get("/readyz").await).await;
    assert_eq!(ready["checks"]["bus"]["status"], "up", "{ready}");
    tap.close().await;
    bus::testing::cleanup(&url, &amqp, &[]).await;
}
