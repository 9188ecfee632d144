//! Status changes reach the paying user's `notifications.user_<uuid>` topic (a Redis PUBLISH in
//! the broker's format), so a checkout page updates without polling.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use testkit::TestApp;

use crate::common::*;

/// A unique prefix for a service's realtime channels, to give [`spawn`]'s settings.
pub fn realtime_prefix() -> String {
    format!("test.{}.", uuid::Uuid::now_v7().simple())
}

/// Run on a service publishing under `prefix`.
pub async fn the_paying_user_hears_every_status_change(app: &TestApp, prefix: &str) {
    let channel = format!("{prefix}notifications.user_{BOB}");
    let client = redis::Client::open(redis_url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&channel).await.unwrap();

    let created = create(app, &registration(BOB, 3100)).await;
    let id = created["id"].as_str().unwrap();
    confirm(app, id, "pm_card_threeDSecureRequired").await;
    let url = payment(app, id).await["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    app.client
        .post(url)
        .json(&serde_json::json!({"client_secret": created["client_secret"], "outcome": "succeed"}))
        .send()
        .await
        .unwrap();

    let mut messages = pubsub.on_message();
    let mut seen = Vec::new();
    while seen.last().map(|(s, _): &(String, i64)| s.as_str()) != Some("succeeded") {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a push within 10 s")
            .expect("the subscription is open");
        let envelope: Value =
            serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap();
        assert_eq!(
            envelope["subscription"],
            format!("notifications.user_{BOB}")
        );
        let payment = &envelope["data"]["payment"];
        if payment["id"] != id {
            continue;
        }
        assert_eq!(envelope["options"]["order_key"], format!("payment_{id}"));
        assert_eq!(
            envelope["options"]["order"].as_f64(),
            payment["version"].as_f64()
        );
        seen.push((
            payment["status"].as_str().unwrap().to_owned(),
            payment["version"].as_i64().unwrap(),
        ));
    }
    let statuses: Vec<&str> = seen.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["requires_action", "succeeded"]);
    assert!(seen[0].1 < seen[1].1, "versions order the pushes");
}
