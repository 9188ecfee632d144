//! The outbox against real Postgres and RabbitMQ: what is committed is published (once), what
//! is rolled back never is.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{Env, ItemCreated, commit_items};
use bus::testing::Tap;
use uuid::Uuid;

#[tokio::test]
async fn rolled_back_events_are_never_published_and_committed_ones_always_are() {
    let mut env = Env::new().await;
    let mut tap = Tap::bind(&env.url, &env.settings.prefix, "shop.#")
        .await
        .unwrap();

    let mut rolled_back = env.pool.begin().await.unwrap();
    let lost = bus::enqueue(
        &mut rolled_back,
        &ItemCreated {
            item: Uuid::now_v7(),
            n: 1,
        },
    )
    .await
    .unwrap();
    rolled_back.rollback().await.unwrap();
    let mut committed = env.pool.begin().await.unwrap();
    let item = Uuid::now_v7();
    let kept = bus::enqueue_as(&mut committed, &ItemCreated { item, n: 2 }, item)
        .await
        .unwrap();
    committed.commit().await.unwrap();

    // The relay starts after the commit: the row waited in the outbox.
    let bus = env.bus("shop");
    env.tasks.spawn(bus.relay().run(env.shutdown.clone()));
    let (event, properties) = tap
        .next(Duration::from_secs(10))
        .await
        .expect("the committed event");
    assert_eq!(event.id, kept);
    assert_eq!(event.event_type, "shop.item.created");
    assert_eq!(event.source, "/shop");
    assert_eq!(event.subject, Some(item.to_string()));
    assert_eq!(event.actor, Some(item));
    assert_eq!(event.data["n"], 2);
    assert_eq!(
        properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str().to_owned()),
        Some(kept.to_string())
    );

    // A later commit arrives next (woken by NOTIFY): nothing was published in between.
    let later = env.enqueue(3, 1, 1).await[0];
    let (next, _) = tap
        .next(Duration::from_secs(10))
        .await
        .expect("the later event");
    assert_eq!(
        next.id, later,
        "only committed events are published, in order"
    );
    assert_ne!(next.id, lost);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_id = $1")
        .bind(lost)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "the rolled-back event never existed");
    testkit::eventually(
        "the outbox to be drained",
        Duration::from_secs(10),
        || async { (env.pending().await == 0).then_some(()) },
    )
    .await;
    tap.close().await;
    env.finish().await;
}

#[tokio::test]
async fn two_relays_on_one_outbox_publish_each_row_once() {
    let mut env = Env::new().await;
    let mut tap = Tap::bind(&env.url, &env.settings.prefix, "shop.#")
        .await
        .unwrap();
    for name in ["relay-a", "relay-b"] {
        let bus = env.bus_with(name, |s| s.outbox_batch = 50);
        env.tasks.spawn(bus.relay().run(env.shutdown.clone()));
    }
    // Writers commit while both relays run, so both are woken and compete for rows.
    let total = 2_000u32;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let pool = env.pool.clone();
            tokio::spawn(async move {
                for batch in 0..(total / 4 / 10) {
                    commit_items(&pool, w * (total / 4) + batch * 10, 10, 10).await;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let mut seen: HashMap<Uuid, u32> = HashMap::new();
    let mut by_relay: HashMap<String, u32> = HashMap::new();
    while seen.len() < total as usize {
        let (event, properties) = tap
            .next(Duration::from_secs(20))
            .await
            .unwrap_or_else(|| panic!("only {} of {total} events arrived", seen.len()));
        *seen.entry(event.id).or_default() += 1;
        let relay = properties
            .app_id()
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default();
        *by_relay.entry(relay).or_default() += 1;
    }
    testkit::eventually(
        "the outbox to be drained",
        Duration::from_secs(10),
        || async { (env.pending().await == 0).then_some(()) },
    )
    .await;
    // Everything is published and marked: anything still arriving would be a duplicate.
    let extra = tap.next(Duration::from_millis(500)).await;
    assert!(extra.is_none(), "a row was published twice: {extra:?}");
    assert!(seen.values().all(|&times| times == 1));
    eprintln!("published per relay: {by_relay:?}");
    tap.close().await;
    env.finish().await;
}

#[tokio::test]
async fn published_rows_are_pruned_after_the_retention_period() {
    let mut env = Env::new().await;
    env.enqueue(0, 30, 10).await;
    let bus = env.bus("shop");
    env.tasks.spawn(bus.relay().run(env.shutdown.clone()));
    testkit::eventually(
        "the outbox to be drained",
        Duration::from_secs(10),
        || async { (env.pending().await == 0).then_some(()) },
    )
    .await;
    // Twenty of them were published long ago; one more is pending (relay stopped first).
    env.shutdown.cancel();
    env.tasks.close();
    env.tasks.wait().await;
    sqlx::query(
        "UPDATE outbox SET published_at = now() - interval '8 days'
         WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 20)",
    )
    .execute(&env.pool)
    .await
    .unwrap();
    env.enqueue(100, 1, 1).await;
    let pruned = bus::outbox::prune(&env.pool, Duration::from_secs(7 * 24 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned, 20);
    assert_eq!(bus::outbox::published_count(&env.pool).await.unwrap(), 10);
    assert_eq!(env.pending().await, 1, "pending rows are never pruned");
    env.finish().await;
}
