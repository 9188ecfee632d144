//! Publications through real Redis to real websocket clients: the message format, filter
//! fields, ordering, throttling, one Redis subscription per topic, and several broker
//! processes behind one Redis.

use std::time::Duration;

use crate::common::*;
use realtime::PublishOptions;
use serde_json::{Value, json};

async fn numsub(channel: &str) -> i64 {
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .unwrap();
    reply.1
}

#[tokio::test]
async fn published_messages_reach_subscribers_in_socketshark_format() {
    let broker = spawn_broker(basic_services).await;
    let mut client = broker.client().await;
    client.subscribe("simple.topic").await;

    // From the typed publisher services use (it adds published_at and the request id; clients
    // see neither).
    let events = publisher(&broker.prefix, "simple").await;
    let receivers = events
        .publish("topic", &json!({"baz": "foo"}), PublishOptions::new())
        .await
        .unwrap();
    assert_eq!(receivers, 1);
    assert_eq!(
        client.recv().await,
        message("simple.topic", json!({"baz": "foo"}))
    );

    // Raw socketshark payloads: a wrong subscription, broken JSON and a payload without data
    // are ignored; filter fields decide for anonymous sessions too.
    let prefix = &broker.prefix;
    for payload in [
        json!({"subscription": "simple.othertopic", "data": {"never": "arrives"}}).to_string(),
        "{".to_owned(),
        json!({"subscription": "simple.topic"}).to_string(),
        json!({"subscription": "simple.topic", "session_id": "sess_123", "data": {"arrives": false}}).to_string(),
        json!({"subscription": "simple.topic", "session_id": null, "data": {"arrives": true}}).to_string(),
        json!({"subscription": "simple.topic", "data": [1, 2, 3]}).to_string(),
    ] {
        publish_raw(prefix, "simple.topic", &payload).await;
    }
    assert_eq!(
        client.recv().await,
        message("simple.topic", json!({"arrives": true}))
    );
    assert_eq!(
        client.recv().await,
        message("simple.topic", json!([1, 2, 3]))
    );
    let metrics = broker.metrics().await;
    assert!(
        metrics.contains("broker_publications_invalid_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn filter_fields_match_extra_and_auth_fields() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        basic_services(config);
        ticket_auth(config, &callbacks);
    })
    .await;
    let mut anonymous = broker.client().await;
    assert_eq!(
        anonymous
            .request(json!({"event": "subscribe", "subscription": "simple.topic", "extra": "bar"}))
            .await,
        json!({"event": "subscribe", "subscription": "simple.topic", "status": "ok", "extra": "bar"})
    );
    let mut signed_in = broker.client().await;
    callbacks.ok("ticket", json!({"status": "ok", "session_id": "sess_123"}));
    signed_in.auth("t").await;
    signed_in.subscribe("simple_auth.topic").await;

    let prefix = &broker.prefix;
    publish_raw(
        prefix,
        "simple.topic",
        &json!({"subscription": "simple.topic", "extra": "foo", "data": {"test": "foo"}})
            .to_string(),
    )
    .await;
    publish_raw(
        prefix,
        "simple.topic",
        &json!({"subscription": "simple.topic", "extra": "bar", "data": {"test": "bar"}})
            .to_string(),
    )
    .await;
    assert_eq!(
        anonymous.recv().await,
        json!({"event": "message", "subscription": "simple.topic", "data": {"test": "bar"}, "extra": "bar"})
    );

    for (session, arrives) in [(json!("sess_invalid"), false), (json!("sess_123"), true)] {
        publish_raw(
            prefix,
            "simple_auth.topic",
            &json!({"subscription": "simple_auth.topic", "session_id": session, "data": {"arrives": arrives}}).to_string(),
        )
        .await;
    }
    assert_eq!(
        signed_in.recv().await,
        message("simple_auth.topic", json!({"arrives": true}))
    );
    // Filters through the typed publisher.
    let simple_auth = publisher(prefix, "simple_auth").await;
    simple_auth
        .publish(
            "topic",
            &json!("for sess_123"),
            PublishOptions::new().filter("session_id", "sess_123"),
        )
        .await
        .unwrap();
    assert_eq!(
        signed_in.recv().await,
        message("simple_auth.topic", json!("for sess_123"))
    );
}

#[tokio::test]
async fn out_of_order_messages_are_dropped_per_order_key() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        config.services.insert(
            "calls".into(),
            broker::config::ServiceConfig {
                require_authentication: false,
                before_subscribe: Some(callbacks.url("before_subscribe")),
                ..Default::default()
            },
        );
    })
    .await;
    let mut client = broker.client().await;
    // before_subscribe's answer carries order 2: it counts like a message.
    callbacks.ok(
        "before_subscribe",
        json!({"status": "ok", "options": {"order": 2}, "data": {"msg": 1}}),
    );
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "calls.call_1"}))
            .await,
        json!({"event": "subscribe", "subscription": "calls.call_1", "status": "ok", "data": {"msg": 1}})
    );
    let calls = publisher(&broker.prefix, "calls").await;
    let sequence: [(f64, Option<&str>, Value); 10] = [
        (1.0, None, json!({"msg": 2})),
        (2.0, None, json!({"msg": 3})),
        (3.0, None, json!({"msg": 4})),
        (5.0, None, json!({"msg": 5})),
        (4.0, None, json!({"msg": 6})),
        (5.0, None, json!({"msg": 7})),
        (6.0, None, json!({"msg": 8})),
        (1.1, Some("other"), json!({"other": 1})),
        (1.3, Some("other"), json!({"other": 2})),
        (1.2, Some("other"), json!({"other": 3})),
    ];
    for (order, key, data) in sequence {
        let mut options = PublishOptions::new().order(order);
        if let Some(key) = key {
            options = options.order_key(key);
        }
        calls.publish("call_1", &data, options).await.unwrap();
    }
    calls
        .publish("call_1", &json!("end"), PublishOptions::new())
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let received = client.recv().await;
        if received["data"] == "end" {
            break;
        }
        got.push(received["data"].clone());
    }
    assert_eq!(
        got,
        [
            json!({"msg": 4}),
            json!({"msg": 5}),
            json!({"msg": 8}),
            json!({"other": 1}),
            json!({"other": 2})
        ]
    );
}

#[tokio::test]
async fn throttled_messages_send_the_first_then_the_latest() {
    let broker = spawn_broker(basic_services).await;
    let mut client = broker.client().await;
    client.subscribe("simple.stats").await;
    let stats = publisher(&broker.prefix, "simple").await;
    let throttled = PublishOptions::new().throttle(Duration::from_millis(300));
    for n in 1..=3 {
        stats
            .publish("stats", &json!({"n_calls": n}), throttled.clone())
            .await
            .unwrap();
    }
    stats
        .publish("stats", &json!("unthrottled"), PublishOptions::new())
        .await
        .unwrap();
    assert_eq!(client.recv().await["data"], json!({"n_calls": 1}));
    assert_eq!(client.recv().await["data"], json!("unthrottled"));
    // The last held-back message comes when the period ends (not the middle one).
    let started = std::time::Instant::now();
    assert_eq!(
        client.recv().await,
        message("simple.stats", json!({"n_calls": 3}))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn one_redis_subscription_per_topic_shared_and_dropped_with_the_last_subscriber() {
    let broker = spawn_broker(basic_services).await;
    let channel = format!("{}simple.shared", broker.prefix);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = broker.client().await;
        client.subscribe("simple.shared").await;
        clients.push(client);
    }
    assert_eq!(numsub(&channel).await, 1);
    let receivers = publish_raw(
        &broker.prefix,
        "simple.shared",
        &json!({"subscription": "simple.shared", "data": 1}).to_string(),
    )
    .await;
    assert_eq!(
        receivers, 1,
        "one Redis subscriber serves all three clients"
    );
    for client in &mut clients {
        assert_eq!(client.recv().await, message("simple.shared", json!(1)));
    }
    // Unsubscribing two keeps the channel; the last one (by disconnecting) drops it.
    for client in clients.iter_mut().take(2) {
        client
            .request(json!({"event": "unsubscribe", "subscription": "simple.shared"}))
            .await;
    }
    assert_eq!(numsub(&channel).await, 1);
    drop(clients);
    testkit::eventually("the channel to be unsubscribed", WAIT, || async {
        (numsub(&channel).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn messages_published_during_before_subscribe_arrive_after_the_ok() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        config.services.insert(
            "slow".into(),
            broker::config::ServiceConfig {
                require_authentication: false,
                before_subscribe: Some(callbacks.url("before_subscribe")),
                ..Default::default()
            },
        );
    })
    .await;
    callbacks.answer(
        "before_subscribe",
        [Answer::Slow(Duration::from_millis(300))],
    );
    let mut client = broker.client().await;
    client
        .send(json!({"event": "subscribe", "subscription": "slow.topic"}))
        .await;
    callbacks.wait_for("before_subscribe", 1).await;
    // The broker listens before calling before_subscribe.
    let receivers = publish_raw(
        &broker.prefix,
        "slow.topic",
        &json!({"subscription": "slow.topic", "data": "early"}).to_string(),
    )
    .await;
    assert_eq!(receivers, 1);
    assert_eq!(
        client.recv().await,
        json!({"event": "subscribe", "subscription": "slow.topic", "status": "ok"})
    );
    assert_eq!(client.recv().await, message("slow.topic", json!("early")));
}

#[tokio::test]
async fn every_broker_process_delivers_to_its_own_subscribers() {
    let prefix = unique_prefix();
    let first = spawn_broker_on(REDIS, &prefix, basic_services).await;
    let second = spawn_broker_on(REDIS, &prefix, basic_services).await;
    let mut on_first = first.client().await;
    let mut on_second = second.client().await;
    on_first.subscribe("simple.news").await;
    on_second.subscribe("simple.news").await;
    let news = publisher(&prefix, "simple").await;
    let receivers = news
        .publish("news", &json!({"headline": "both"}), PublishOptions::new())
        .await
        .unwrap();
    assert_eq!(receivers, 2, "each broker process listens once");
    assert_eq!(
        on_first.recv().await,
        message("simple.news", json!({"headline": "both"}))
    );
    assert_eq!(
        on_second.recv().await,
        message("simple.news", json!({"headline": "both"}))
    );
}
