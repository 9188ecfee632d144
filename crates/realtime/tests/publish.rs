//! Publishing against the real Redis on 127.0.0.1:6379, read back by a pub/sub subscriber.

use std::time::Duration;

use futures_util::StreamExt;
use realtime::{Envelope, Error, PublishOptions, Publisher};
use serde_json::{Value, json};

const REDIS: &str = "redis://127.0.0.1:6379";

fn unique_prefix() -> String {
    format!("test.{}.", uuid::Uuid::now_v7().simple())
}

async fn publisher(prefix: &str) -> Publisher {
    Publisher::connect(&kit::SecretUrl::new(REDIS), "events")
        .expect("a Redis URL")
        .with_prefix(prefix)
}

#[tokio::test]
async fn a_subscriber_receives_the_envelope_with_request_id_and_timestamp() {
    let prefix = unique_prefix();
    let publisher = publisher(&prefix).await;
    let client = redis::Client::open(REDIS).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channel = format!("{prefix}events.event_42");
    pubsub.subscribe(&channel).await.unwrap();

    let options = PublishOptions::new()
        .order(3.0)
        .order_key("seats")
        .throttle(Duration::from_millis(250))
        .filter("user_id", "0193a000-0000-7000-8000-000000000001");
    let receivers = kit::request_id::scope("req-abc".to_owned(), async {
        publisher
            .publish("event_42", &json!({"seats_left": 3}), options)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(receivers, 1, "exactly our subscriber listens on {channel}");

    let message = tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
        .await
        .expect("message within 5 s")
        .expect("stream open");
    assert_eq!(message.get_channel_name(), channel);
    let payload: Value = serde_json::from_slice(message.get_payload_bytes()).unwrap();
    assert_eq!(payload["subscription"], "events.event_42");
    assert_eq!(payload["data"], json!({"seats_left": 3}));
    assert_eq!(
        payload["options"],
        json!({"order": 3.0, "order_key": "seats", "throttle": 0.25})
    );
    assert_eq!(payload["user_id"], "0193a000-0000-7000-8000-000000000001");
    assert_eq!(payload["request_id"], "req-abc");
    let published_at = payload["published_at"].as_str().unwrap();
    let stamped = chrono::DateTime::parse_from_rfc3339(published_at).unwrap();
    let age = chrono::Utc::now().signed_duration_since(stamped);
    assert!(age.num_seconds().abs() < 60, "{published_at}");

    // The same text reads back as the typed envelope.
    let envelope: Envelope = serde_json::from_value(payload).unwrap();
    assert_eq!(envelope.options.order_key.as_deref(), Some("seats"));
    assert!(envelope.filters.contains_key("user_id"));
}

#[tokio::test]
async fn nobody_listening_is_not_an_error_and_bad_input_is() {
    let publisher = publisher(&unique_prefix()).await;
    let receivers = publisher
        .publish("nobody_here", &json!({}), PublishOptions::new())
        .await
        .unwrap();
    assert_eq!(receivers, 0);
    // Outside a request there is no request id to forward.
    let (_, payload) = publisher
        .encode("t", &json!(1), PublishOptions::new())
        .unwrap();
    assert!(!payload.contains("request_id"), "{payload}");
    assert!(!payload.contains("options"), "{payload}");

    assert!(matches!(
        publisher
            .publish("has space", &json!({}), PublishOptions::new())
            .await,
        Err(Error::InvalidTopic(_))
    ));
    assert!(matches!(
        publisher
            .publish("t", &json!({}), PublishOptions::new().filter("data", 1))
            .await,
        Err(Error::ReservedField(field)) if field == "data"
    ));
    assert!(matches!(
        publisher.encode("t", &json!({}), PublishOptions::new().order(f64::NAN)),
        Err(Error::InvalidOrder)
    ));
}
