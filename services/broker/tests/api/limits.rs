//! Bad and greedy clients: oversized frames, subscription floods, too many connections, clients
//! that stop reading or never answer pings. Each gets the documented error or close, and the
//! broker keeps serving everyone else.

use std::time::Duration;

use crate::common::*;
use broker::config::SlowClient;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_others_carry_on() {
    let broker = spawn_broker(basic_services).await;
    let mut bystander = broker.client().await;
    bystander.subscribe("simple.topic").await;
    let mut greedy = broker.client().await;
    let huge = format!(r#"{{"event":"ping","data":"{}"}}"#, "x".repeat(1024 * 1024));
    // The broker may cut the connection while the frame is still being sent.
    let _ = greedy.ws.send(Message::text(huge)).await;
    let frame = greedy.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1009, "{frame:?}");
    assert_eq!(frame.reason.as_str(), "frame too large");
    assert_eq!(
        bystander
            .request(json!({"event": "ping", "data": "ok"}))
            .await,
        json!({"event": "pong", "data": "ok"})
    );
    // A frame at the limit is still fine.
    let mut fine = broker.client().await;
    let padding = "y".repeat(60 * 1024);
    assert_eq!(
        fine.request(json!({"event": "ping", "data": padding}))
            .await["event"],
        "pong"
    );
}

#[tokio::test]
async fn ten_thousand_subscribes_stop_at_the_cap_with_the_documented_error() {
    let broker = spawn_broker(|config| {
        basic_services(config);
        config.limits.max_subscriptions = 1_000;
    })
    .await;
    let client = broker.client().await;
    let (mut sink, mut stream) = client.ws.split();
    let sender = tokio::spawn(async move {
        for i in 0..10_000 {
            let event = json!({"event": "subscribe", "subscription": format!("simple.t{i}")});
            sink.send(Message::text(event.to_string())).await.unwrap();
        }
        sink
    });
    let (mut ok, mut refused) = (0, 0);
    while ok + refused < 10_000 {
        let frame = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("replies keep coming")
            .expect("connection open")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let reply: Value = serde_json::from_str(text.as_str()).unwrap();
        match reply["status"].as_str() {
            Some("ok") => ok += 1,
            _ => {
                assert_eq!(reply["error"], "Too many subscriptions.", "{reply}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (1_000, 9_000));
    let mut sink = sender.await.unwrap();
    sink.send(Message::text(r#"{"event":"ping","data":"alive"}"#))
        .await
        .unwrap();
    let pong = loop {
        if let Some(Ok(Message::Text(text))) = stream.next().await {
            break serde_json::from_str::<Value>(text.as_str()).unwrap();
        }
    };
    assert_eq!(pong, json!({"event": "pong", "data": "alive"}));
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_with_503() {
    let broker = spawn_broker(|config| {
        basic_services(config);
        config.limits.max_connections = 2;
    })
    .await;
    let first = broker.client().await;
    let _second = broker.client().await;
    match Client::try_connect(&broker.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        Err(other) => panic!("expected a 503, got {other}"),
        Ok(_) => panic!("a third connection was accepted"),
    }
    drop(first);
    let mut third = testkit::eventually("a place to free up", WAIT, || async {
        Client::try_connect(&broker.ws_url()).await.ok()
    })
    .await;
    assert_eq!(
        third.request(json!({"event": "ping"})).await["event"],
        "pong"
    );
    assert!(
        broker
            .metrics()
            .await
            .contains("broker_connections_refused_total")
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_while_others_keep_receiving() {
    let broker = spawn_broker(|config| {
        basic_services(config);
        config.limits.outgoing_queue = 64;
    })
    .await;
    let mut reader = broker.client().await;
    reader.subscribe("simple.firehose").await;
    let mut stalled = broker.client().await;
    stalled.subscribe("simple.firehose").await;

    // 3000 messages of 8 KB (24 MB): far more than socket buffers plus a 64-message queue
    // hold. Published 50 at a time, as fast as the reader takes them.
    let redis = redis::Client::open(REDIS).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{}simple.firehose", broker.prefix);
    let padding = "z".repeat(8 * 1024);
    for chunk in 0..60 {
        let mut pipe = redis::pipe();
        for n in chunk * 50..(chunk + 1) * 50 {
            let payload =
                json!({"subscription": "simple.firehose", "data": {"n": n, "pad": padding}});
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(payload.to_string())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
        for n in chunk * 50..(chunk + 1) * 50 {
            let received = reader.recv().await;
            assert_eq!(
                received["data"]["n"], n,
                "the reader gets every message, in order"
            );
        }
    }
    // The stalled client was disconnected: reading now, it finds the end of the stream after
    // at most what its socket buffers held.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut last = -1;
        while let Some(Ok(frame)) = stalled.ws.next().await {
            if let Message::Text(text) = frame {
                let message: Value = serde_json::from_str(text.as_str()).unwrap();
                last = message["data"]["n"].as_i64().unwrap_or(last);
            }
        }
        last
    })
    .await
    .expect("the stalled client's connection ended");
    assert!(
        ended < 2_999,
        "it did not get everything: the broker gave up on it"
    );
    let metrics = broker.metrics().await;
    assert!(
        metrics.contains("broker_slow_client_disconnects_total"),
        "{metrics}"
    );
}

#[tokio::test]
async fn drop_oldest_keeps_a_slow_client_connected_with_the_latest_messages() {
    let broker = spawn_broker(|config| {
        basic_services(config);
        config.limits.outgoing_queue = 16;
        config.limits.slow_client = SlowClient::DropOldest;
        // Only the queue policy is under test here, not the stuck-write timeout.
        config.limits.write_timeout = Duration::from_secs(120);
    })
    .await;
    let mut slow = broker.client().await;
    slow.subscribe("simple.burst").await;
    // 32 MB, pipelined: more than the socket buffers and the 16-frame queue hold.
    let redis = redis::Client::open(REDIS).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let channel = format!("{}simple.burst", broker.prefix);
    let padding = "b".repeat(16 * 1024);
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for n in chunk * 100..(chunk + 1) * 100 {
            let payload = json!({"subscription": "simple.burst", "data": {"n": n, "pad": padding}});
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(payload.to_string())
                .ignore();
        }
        pipe.query_async::<()>(&mut conn).await.unwrap();
    }
    publish_raw(
        &broker.prefix,
        "simple.burst",
        &json!({"subscription": "simple.burst", "data": {"n": "last"}}).to_string(),
    )
    .await;
    let mut seen = 0;
    loop {
        let received = slow.recv().await;
        seen += 1;
        if received["data"]["n"] == "last" {
            break;
        }
    }
    assert!(seen < 2_001, "some were dropped ({seen} arrived)");
    assert_eq!(
        slow.request(json!({"event": "ping", "data": "still"}))
            .await,
        json!({"event": "pong", "data": "still"})
    );
}

#[tokio::test]
async fn a_client_that_never_answers_pings_is_disconnected() {
    let broker = spawn_broker(|config| {
        basic_services(config);
        config.ping.interval = Duration::from_millis(200);
        config.ping.timeout = Duration::from_millis(200);
    })
    .await;
    let mut silent = broker.client().await;
    let mut lively = broker.client().await;
    // The silent client does not read (so never answers pings) while the lively one keeps
    // reading and answering for a few ping periods.
    let lively_task = tokio::spawn(async move {
        let until = tokio::time::Instant::now() + Duration::from_millis(1_000);
        while tokio::time::Instant::now() < until {
            let _ = tokio::time::timeout_at(until, lively.ws.next()).await;
        }
        lively
    });
    let mut lively = lively_task.await.unwrap();
    let frame = silent.closed().await.expect("a close frame");
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert_eq!(
        lively
            .request(json!({"event": "ping", "data": "here"}))
            .await,
        json!({"event": "pong", "data": "here"})
    );
}

#[tokio::test]
async fn metrics_count_connections_messages_and_latency() {
    let broker = spawn_broker(basic_services).await;
    let mut client = broker.client().await;
    client.subscribe("simple.metrics").await;
    let simple = publisher(&broker.prefix, "simple").await;
    simple
        .publish("metrics", &json!(1), Default::default())
        .await
        .unwrap();
    assert_eq!(client.recv().await, message("simple.metrics", json!(1)));
    let metrics = testkit::eventually("the latency sample", WAIT, || async {
        let text = broker.metrics().await;
        text.contains("broker_publish_to_send_duration_seconds_count")
            .then_some(text)
    })
    .await;
    for name in [
        "broker_connections",
        "broker_subscriptions",
        "broker_topics",
        "broker_messages_in_total",
        "broker_messages_out_total",
        "broker_publications_total",
        "broker_client_events_total",
        "broker_redis_up",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}
