//! Consumers against real Postgres and RabbitMQ: exactly-once effects through connection cuts
//! and redeliveries, and poison messages parked without stopping anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::{Env, ItemCreated, commit_items, record, recording_consumers, until_connected};
use bus::ops::Replay;
use bus::testing::RawPublisher;
use bus::{CloudEvent, Consumers, Received, Tx};
use futures_util::future::BoxFuture;
use kit::SecretUrl;
use testkit::{FaultProxy, eventually};
use uuid::Uuid;

#[tokio::test]
async fn a_rabbitmq_cut_while_events_are_committed_loses_and_repeats_nothing() {
    let mut env = Env::new().await;
    let proxy = FaultProxy::start(bus::testing::amqp_address()).await;
    let via_proxy = proxy.url(&env.url);
    let bus = env.bus_with("shop", |s| s.url = Some(SecretUrl::new(via_proxy)));
    let runs = Arc::new(AtomicU64::new(0));
    let consumers = recording_consumers(runs.clone(), None, Arc::new(AtomicBool::new(false)));
    bus.spawn(Some(consumers), &env.tasks, &env.shutdown);
    until_connected(&bus).await;
    let check = bus.check();

    let total = 1_000u32;
    let writer = {
        let pool = env.pool.clone();
        tokio::spawn(async move {
            for n in 0..total {
                commit_items(&pool, n, 1, 1).await;
                tokio::task::yield_now().await;
            }
        })
    };
    eventually(
        "some events to be applied",
        Duration::from_secs(20),
        || async { (env.applied().await.0 >= 100).then_some(()) },
    )
    .await;
    // RabbitMQ goes away for this service: open connections are reset, new ones refused.
    proxy.refuse(true);
    proxy.cut_all();
    let down = eventually(
        "readiness to report the bus down",
        Duration::from_secs(10),
        || async { check.check().await.err() },
    )
    .await;
    assert!(!down.is_empty());
    writer.await.unwrap();
    let (applied_while_down, _) = env.applied().await;
    assert!(
        applied_while_down < i64::from(total),
        "the cut must happen while events are still coming"
    );
    assert!(
        env.pending().await > 0,
        "committed events wait in the outbox"
    );

    proxy.refuse(false);
    eventually(
        "all events to be applied",
        Duration::from_secs(60),
        || async { (env.applied().await.0 >= i64::from(total)).then_some(()) },
    )
    .await;
    eventually(
        "readiness to report the bus up",
        Duration::from_secs(10),
        || async { check.check().await.ok() },
    )
    .await;
    let (rows, distinct) = env.applied().await;
    assert_eq!(
        (rows, distinct),
        (i64::from(total), i64::from(total)),
        "each exactly once"
    );
    assert_eq!(env.pending().await, 0);
    assert!(proxy.connections() > 2, "relay and consumer reconnected");
    env.finish().await;
}

#[tokio::test]
async fn every_message_redelivered_is_applied_once() {
    let mut env = Env::new().await;
    let proxy = Arc::new(FaultProxy::start(bus::testing::amqp_address()).await);
    let via_proxy = proxy.url(&env.url);
    // The consumer loses its connection right after every handler run: the handler's
    // transaction commits, the acknowledgement never reaches RabbitMQ, the message comes back.
    let runs = Arc::new(AtomicU64::new(0));
    let consumers = {
        let (proxy, runs) = (proxy.clone(), runs.clone());
        Consumers::new().on::<ItemCreated, _>(move |tx: &mut Tx, event: Received<ItemCreated>| {
            let (proxy, runs) = (proxy.clone(), runs.clone());
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                record(tx, &event).await?;
                proxy.cut_all();
                Ok(())
            }) as BoxFuture<'_, anyhow::Result<()>>
        })
    };
    let consumer_bus = env.bus_with("shop", |s| {
        s.url = Some(SecretUrl::new(via_proxy));
        s.reconnect_max_delay = Duration::from_millis(100);
    });
    env.tasks
        .spawn(consumer_bus.consumer(consumers).run(env.shutdown.clone()));
    until_connected(&consumer_bus).await;
    let total = 40u32;
    env.enqueue(0, total, 10).await;
    let relay_bus = env.bus("shop-producer");
    env.tasks.spawn(relay_bus.relay().run(env.shutdown.clone()));

    eventually(
        "every event to be applied",
        Duration::from_secs(60),
        || async { (env.applied().await.1 >= i64::from(total)).then_some(()) },
    )
    .await;
    // Each applied delivery was cut before its ack: every one comes back, and the inbox
    // recognises it as a duplicate.
    let series = r#"bus_events_consumed_total{type="shop.item.created",outcome="duplicate"}"#;
    eventually(
        "every message to come back",
        Duration::from_secs(60),
        || async { (metric(series) >= f64::from(total)).then_some(()) },
    )
    .await;
    let (rows, distinct) = env.applied().await;
    assert_eq!(
        (rows, distinct),
        (i64::from(total), i64::from(total)),
        "effects applied once"
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        u64::from(total),
        "the handler never ran twice"
    );
    env.finish().await;
}

#[tokio::test]
async fn poison_messages_are_parked_and_never_stop_the_consumer() {
    let mut env = Env::new().await;
    // Through a proxy only to count connections: the consumer must never reconnect.
    let proxy = FaultProxy::start(bus::testing::amqp_address()).await;
    let via_proxy = proxy.url(&env.url);
    let runs = Arc::new(AtomicU64::new(0));
    let fixed = Arc::new(AtomicBool::new(false));
    const CURSED: u32 = 4_242;
    let consumers = recording_consumers(runs.clone(), Some(CURSED), fixed.clone());
    let bus = env.bus_with("shop", |s| {
        s.url = Some(SecretUrl::new(via_proxy));
        s.max_attempts = 5;
    });
    env.tasks
        .spawn(bus.consumer(consumers).run(env.shutdown.clone()));
    until_connected(&bus).await;
    let check = bus.check();

    let publisher = RawPublisher::new(&env.url, &env.settings.prefix)
        .await
        .unwrap();
    let key = "shop.item.created";
    let good = |n: u32| {
        let item = ItemCreated {
            item: Uuid::now_v7(),
            n,
        };
        serde_json::to_vec(&CloudEvent::new(&item, None)).unwrap()
    };
    let mut cursed_id = None;
    let mut expected_reasons: HashMap<&str, usize> = HashMap::new();
    let mut bad = 0;
    for n in 0..10_000u32 {
        let body = good(n);
        if n == CURSED {
            cursed_id = Some(bus::envelope::decode(&body).unwrap().id);
        }
        publisher.send(key, &body).await.unwrap();
        // Every 100th good event is followed by a bad one: 100 malformed, then 10 of a
        // dataversion nobody handles.
        if n % 100 == 50 {
            let (reason, body) = match bad % 4 {
                0 => (
                    "invalid_json",
                    b"{\"specversion\": \"1.0\", \"id\": ".to_vec(),
                ),
                1 => ("not_cloudevent", br#"{"hello":"world"}"#.to_vec()),
                2 => {
                    let mut event: serde_json::Value = serde_json::from_slice(&good(n)).unwrap();
                    event["data"] = serde_json::json!({"n": "not a number"});
                    ("invalid_data", serde_json::to_vec(&event).unwrap())
                }
                _ => {
                    let mut event: serde_json::Value = serde_json::from_slice(&good(n)).unwrap();
                    event["type"] = "shop.item.exploded".into();
                    ("unknown_type", serde_json::to_vec(&event).unwrap())
                }
            };
            *expected_reasons.entry(reason).or_default() += 1;
            publisher.send(key, &body).await.unwrap();
            bad += 1;
        }
        if n % 1000 == 500 {
            let mut event: serde_json::Value = serde_json::from_slice(&good(n)).unwrap();
            event["dataversion"] = 7.into();
            *expected_reasons
                .entry("unsupported_dataversion")
                .or_default() += 1;
            publisher
                .send(key, &serde_json::to_vec(&event).unwrap())
                .await
                .unwrap();
        }
    }
    publisher.confirm_all().await.unwrap();
    publisher.close().await;
    *expected_reasons.entry("handler_failed").or_default() += 1;
    assert_eq!(expected_reasons.values().sum::<usize>(), 111);

    eventually(
        "every good event to be applied",
        Duration::from_secs(120),
        || async { (env.applied().await.0 >= 9_999).then_some(()) },
    )
    .await;
    let url = env.settings.url.clone().unwrap();
    let topology = bus.topology();
    let parked = eventually(
        "the 111 bad messages to be parked",
        Duration::from_secs(30),
        || async {
            let (parked, total) = bus::ops::parked(&url, &topology, 500).await.ok()?;
            (total == 111).then_some(parked)
        },
    )
    .await;
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for message in &parked {
        *reasons.entry(message.reason.as_str()).or_default() += 1;
        assert!(message.error.is_some(), "{message:?} names its error");
    }
    assert_eq!(reasons, expected_reasons);
    let cursed = parked
        .iter()
        .find(|m| m.reason == "handler_failed")
        .expect("the cursed event is parked");
    assert_eq!(cursed.id, cursed_id.unwrap().to_string());
    assert_eq!(cursed.attempts, 5);
    assert!(
        cursed.error.as_deref().unwrap().contains("cursed"),
        "{cursed:?}"
    );
    assert_eq!(env.applied().await, (9_999, 9_999));
    assert_eq!(
        proxy.connections(),
        1,
        "the consumer never stopped or reconnected"
    );
    assert!(check.check().await.is_ok());

    // The handler is fixed; replaying the parked event applies it.
    fixed.store(true, Ordering::SeqCst);
    let replayed = bus::ops::replay(&url, &topology, &Replay::One(cursed.id.clone()))
        .await
        .unwrap();
    assert_eq!(replayed, 1);
    eventually(
        "the replayed event to be applied",
        Duration::from_secs(20),
        || async { (env.applied().await.0 == 10_000).then_some(()) },
    )
    .await;
    let (_, left) = bus::ops::parked(&url, &topology, 0).await.unwrap();
    assert_eq!(left, 110);
    assert_eq!(env.applied().await, (10_000, 10_000));
    env.finish().await;
}

/// The value of one Prometheus sample line of this process.
fn metric(series: &str) -> f64 {
    let text = kit::telemetry::metrics_handle().render();
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}
