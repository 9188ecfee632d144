//! What the bus tests share: a fresh database with the template's migrations (which every
//! service copies, outbox and inbox included), a unique prefix, a test event, and clean-up.

use std::sync::Arc;
use std::time::Duration;

use bus::{Bus, Consumers, Received, Tx};
use futures_util::future::BoxFuture;
use kit::config::AmqpSettings;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use testkit::TestDb;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// The payload the tests publish and consume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemCreated {
    pub item: Uuid,
    pub n: u32,
}

impl contracts::Event for ItemCreated {
    const TYPE: &'static str = "shop.item.created";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.item)
    }
}

pub struct Env {
    /// Keeps the test's database until the end of the test.
    _db: TestDb,
    pub pool: PgPool,
    pub settings: AmqpSettings,
    pub url: String,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
    services: Vec<String>,
    finished: bool,
}

impl Env {
    /// A fresh database (migrated, with an `applied` table for handler effects) and a unique
    /// prefix on the local RabbitMQ.
    pub async fn new() -> Env {
        testkit::init_logs();
        let db = TestDb::create().await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(20)
            .connect(&db.url())
            .await
            .expect("connect to the test database");
        bus::SCHEMA.apply(&pool).await.expect("the bus tables");
        // No unique key on purpose: an effect applied twice shows up as two rows.
        sqlx::query("CREATE TABLE applied (event_id uuid NOT NULL, n integer NOT NULL)")
            .execute(&pool)
            .await
            .expect("create applied");
        let settings = bus::testing::settings();
        Env {
            _db: db,
            pool,
            url: bus::testing::amqp_url(),
            settings,
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            services: Vec::new(),
            finished: false,
        }
    }

    /// A bus for `service` on this test's prefix and database (queues deleted by `finish`).
    pub fn bus(&mut self, service: &str) -> Bus {
        self.bus_with(service, |_| {})
    }

    pub fn bus_with(&mut self, service: &str, adjust: impl FnOnce(&mut AmqpSettings)) -> Bus {
        self.services.push(service.to_owned());
        let mut settings = self.settings.clone();
        adjust(&mut settings);
        Bus::new(service, &settings, self.pool.clone()).expect("the test settings have a URL")
    }

    /// Commits `count` events, `per_tx` per transaction; returns their ids.
    pub async fn enqueue(&self, first: u32, count: u32, per_tx: u32) -> Vec<Uuid> {
        commit_items(&self.pool, first, count, per_tx).await
    }

    pub async fn applied(&self) -> (i64, i64) {
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM applied")
            .fetch_one(&self.pool)
            .await
            .expect("count applied")
    }

    pub async fn pending(&self) -> i64 {
        bus::outbox::lag(&self.pool).await.expect("lag").pending
    }

    /// Stops the background tasks and deletes this test's exchange and queues.
    pub async fn finish(mut self) {
        self.finished = true;
        self.shutdown.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.tasks.wait()).await;
        let services: Vec<&str> = self.services.iter().map(String::as_str).collect();
        bus::testing::cleanup(&self.url, &self.settings, &services).await;
        self.pool.close().await;
    }
}

impl Drop for Env {
    /// A test that failed before `finish` still removes its exchange and queues.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.shutdown.cancel();
        let (url, settings) = (self.url.clone(), self.settings.clone());
        let services = self.services.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            let services: Vec<&str> = services.iter().map(String::as_str).collect();
            runtime.block_on(bus::testing::cleanup(&url, &settings, &services));
            Some(())
        })
        .join();
    }
}

/// Commits the events `n = first..first + count`, `per_tx` per transaction; returns their ids.
pub async fn commit_items(pool: &PgPool, first: u32, count: u32, per_tx: u32) -> Vec<Uuid> {
    let mut ids = Vec::new();
    let mut n = first;
    while n < first + count {
        let mut tx = pool.begin().await.expect("begin");
        for _ in 0..per_tx.min(first + count - n) {
            let event = ItemCreated {
                item: Uuid::now_v7(),
                n,
            };
            ids.push(bus::enqueue(&mut tx, &event).await.expect("enqueue"));
            n += 1;
        }
        tx.commit().await.expect("commit");
    }
    ids
}

/// A handler's effect: one `applied` row (twice if the effect were applied twice).
pub async fn record(tx: &mut Tx, event: &Received<ItemCreated>) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO applied (event_id, n) VALUES ($1, $2)")
        .bind(event.id)
        .bind(i32::try_from(event.data.n)?)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Waits until `bus` reports its relay and consumer connected.
pub async fn until_connected(bus: &Bus) {
    let check = bus.check();
    testkit::eventually("the bus to connect", Duration::from_secs(10), || async {
        check.check().await.ok()
    })
    .await;
}

/// Handlers that record each applied event in `applied`; `fail_n` always fails unless `fixed`.
pub fn recording_consumers(
    runs: Arc<std::sync::atomic::AtomicU64>,
    fail_n: Option<u32>,
    fixed: Arc<std::sync::atomic::AtomicBool>,
) -> Consumers {
    Consumers::new().on::<ItemCreated, _>(move |tx: &mut Tx, event: Received<ItemCreated>| {
        let runs = runs.clone();
        let fixed = fixed.clone();
        Box::pin(async move {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if Some(event.data.n) == fail_n && !fixed.load(std::sync::atomic::Ordering::SeqCst) {
                anyhow::bail!("item {} is cursed", event.data.n);
            }
            record(tx, &event).await
        }) as BoxFuture<'_, anyhow::Result<()>>
    })
}
