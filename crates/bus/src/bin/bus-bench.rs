//! `bus-bench`: throughput and latency of the event bus against the local RabbitMQ and
//! Postgres, printed as numbers. Run it in release:
//!
//! ```sh
//! cargo run --release -p bus --bin bus-bench            # what `cargo xtask bench bus` runs
//! cargo run --release -p bus --bin bus-bench -- --events 50000 --latency-seconds 20
//! ```
//!
//! It creates a database and a prefix of its own and removes both at the end. Measured:
//! 1. raw lapin publishing with publisher confirms (the ceiling for the relay);
//! 2. the outbox relay draining a pre-filled outbox;
//! 3. end to end, outbox → relay → RabbitMQ → consumer → handler transaction;
//! 4. latency (commit of the event → handler) at a steady 1,000 events/s.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bus::{Bus, CloudEvent, Consumers, Received, Tx};
use clap::Parser;
use futures_util::future::{BoxFuture, join_all};
use kit::SecretUrl;
use kit::config::AmqpSettings;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::{BasicProperties, Confirmation};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Event bus benchmark: publish, relay, end-to-end throughput and latency")]
struct Args {
    /// Events per throughput measurement.
    #[arg(long, default_value_t = 20_000)]
    events: u32,
    /// Length of the latency run at 1,000 events/s.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Consumer prefetch (default: the service default).
    #[arg(long)]
    prefetch: Option<u16>,
    /// Consumer concurrency (default: the service default).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Postgres server (a database is created on it and dropped afterwards).
    #[arg(
        long,
        env = "HATCHERY_TEST_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// RabbitMQ.
    #[arg(
        long,
        env = "HATCHERY_TEST_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp: String,
}

/// The benchmark's event: about the size of a typical domain event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order: Uuid,
    customer: Uuid,
    total: i64,
    currency: String,
    note: String,
    /// Wall clock (ns since the epoch) just before the producing transaction commits.
    sent_at_ns: u128,
}

impl contracts::Event for OrderPlaced {
    const TYPE: &'static str = "bench.order.placed";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.order)
    }
}

fn order() -> OrderPlaced {
    OrderPlaced {
        order: Uuid::now_v7(),
        customer: Uuid::now_v7(),
        total: 12_50,
        currency: "EUR".into(),
        note: "two loaves, one sourdough starter".into(),
        sent_at_ns: now_ns(),
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = PgConnectOptions::from_str(&args.postgres).context("--postgres")?;
    let name = format!("bench_{}", Uuid::now_v7().simple());
    let mut admin = server.connect().await.context("cannot reach Postgres")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    let defaults = AmqpSettings::default();
    let settings = AmqpSettings {
        url: Some(SecretUrl::new(args.amqp.clone())),
        prefix: format!("bench-{}", Uuid::now_v7().simple()),
        prefetch: args.prefetch.unwrap_or(defaults.prefetch),
        concurrency: args.concurrency.unwrap_or(defaults.concurrency),
        ..defaults
    };
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(server.clone().database(&name))
        .await?;
    let result = run(&args, &pool, &settings).await;
    pool.close().await;
    bus::testing::cleanup(&args.amqp, &settings, &["bench"]).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .ok();
    admin.close().await.ok();
    result
}

async fn run(args: &Args, pool: &PgPool, settings: &AmqpSettings) -> anyhow::Result<()> {
    bus::SCHEMA.apply(pool).await?;
    sqlx::query(
        "CREATE TABLE bench_applied (event_id uuid PRIMARY KEY, latency_us bigint NOT NULL)",
    )
    .execute(pool)
    .await?;
    let bus = Bus::new("bench", settings, pool.clone()).context("amqp url")?;
    let topology = bus.topology();
    let (connection, channel) = bus::testing::channel(&args.amqp).await?;
    // The real topology: the events land in the consumer's quorum queue.
    topology
        .declare_consumer(
            &channel,
            &[<OrderPlaced as contracts::Event>::TYPE.to_owned()],
        )
        .await?;
    let n = args.events;
    let sample = serde_json::to_vec(&CloudEvent::new(&order(), None))?;
    println!(
        "bus benchmark: {n} events of {} bytes, quorum queue, batches of {}, prefetch {}, concurrency {}",
        sample.len(),
        settings.outbox_batch,
        settings.prefetch,
        settings.concurrency
    );

    // 1. Raw publishing with confirms, in the relay's pattern (a batch out, then its confirms).
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let started = Instant::now();
    let batch = settings.outbox_batch as usize;
    let mut sent = 0usize;
    while sent < n as usize {
        let count = batch.min(n as usize - sent);
        let publishes = (0..count).map(|_| {
            channel.basic_publish(
                topology.exchange().into(),
                <OrderPlaced as contracts::Event>::TYPE.into(),
                BasicPublishOptions::default(),
                &sample,
                BasicProperties::default().with_delivery_mode(2),
            )
        });
        let mut confirms = Vec::with_capacity(count);
        for publish in join_all(publishes).await {
            confirms.push(publish?);
        }
        for confirm in join_all(confirms).await {
            anyhow::ensure!(
                matches!(confirm?, Confirmation::Ack(_)),
                "publish not confirmed"
            );
        }
        sent += count;
    }
    let raw_rate = f64::from(n) / started.elapsed().as_secs_f64();
    println!("raw lapin publish with confirms: {raw_rate:>9.0} events/s");
    purge(&channel, &topology.queue()).await?;

    // 2. The relay draining a pre-filled outbox.
    fill_outbox(pool, n).await?;
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let started = Instant::now();
    tasks.spawn(bus.relay().run(shutdown.clone()));
    wait_until(|| async { Ok(bus::outbox::lag(pool).await?.pending == 0) }).await?;
    let relay_rate = f64::from(n) / started.elapsed().as_secs_f64();
    println!(
        "outbox relay:                    {relay_rate:>9.0} events/s ({:.0} % of raw; target >= 70 %)",
        100.0 * relay_rate / raw_rate
    );
    stop(&shutdown, &tasks).await;
    purge(&channel, &topology.queue()).await?;

    // 3. End to end: outbox → relay → RabbitMQ → consumer → handler transaction.
    fill_outbox(pool, n).await?;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let started = Instant::now();
    bus.spawn(Some(consumers(latencies.clone())), &tasks, &shutdown);
    wait_until(|| async { Ok(applied(pool).await? >= i64::from(n)) }).await?;
    let e2e_rate = f64::from(n) / started.elapsed().as_secs_f64();
    println!("end to end outbox -> handler:    {e2e_rate:>9.0} events/s (target >= 5,000)");

    // 4. Latency at a steady 1,000 events/s (the first second is warm-up).
    latencies.lock().map(|mut l| l.clear()).ok();
    let seconds = args.latency_seconds.max(2);
    let total = 1_000 * seconds;
    let before = applied(pool).await?;
    // Producers have their own connections, as request handlers would.
    let producer_pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(pool.connect_options().as_ref().clone())
        .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut producers = tokio::task::JoinSet::new();
    let warmup_end = Instant::now() + Duration::from_secs(1);
    let mut measured_from = None;
    for _ in 0..total {
        tick.tick().await;
        if measured_from.is_none() && Instant::now() >= warmup_end {
            latencies.lock().map(|mut l| l.clear()).ok();
            measured_from = Some(Instant::now());
        }
        let pool = producer_pool.clone();
        producers.spawn(async move {
            let mut tx = pool.begin().await?;
            // The clock starts here (not before waiting for a connection): commit → handler.
            bus::enqueue(&mut tx, &order()).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        });
        while let Some(done) = producers.try_join_next() {
            done??;
        }
    }
    while let Some(done) = producers.join_next().await {
        done??;
    }
    let target = before + i64::try_from(total)?;
    wait_until(|| async { Ok(applied(pool).await? >= target) }).await?;
    stop(&shutdown, &tasks).await;
    let mut measured = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    measured.sort_unstable();
    let pct = |p: f64| {
        let index = ((measured.len() as f64 - 1.0) * p).round() as usize;
        measured
            .get(index)
            .map_or(f64::NAN, |us| *us as f64 / 1000.0)
    };
    println!(
        "latency at 1,000 events/s:       p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} events (target p99 < 100 ms)",
        pct(0.50),
        pct(0.99),
        pct(1.0),
        measured.len()
    );
    connection.close(200, "done".into()).await.ok();
    Ok(())
}

/// The handler: one insert in the event's transaction, recording commit → handler latency.
fn consumers(latencies: Arc<Mutex<Vec<u64>>>) -> Consumers {
    Consumers::new().on::<OrderPlaced, _>(move |tx: &mut Tx, event: Received<OrderPlaced>| {
        let latency_us = u64::try_from(now_ns().saturating_sub(event.data.sent_at_ns) / 1_000)
            .unwrap_or(u64::MAX);
        if let Ok(mut all) = latencies.lock() {
            all.push(latency_us);
        }
        Box::pin(async move {
            sqlx::query("INSERT INTO bench_applied (event_id, latency_us) VALUES ($1, $2)")
                .bind(event.id)
                .bind(i64::try_from(latency_us).unwrap_or(i64::MAX))
                .execute(&mut **tx)
                .await?;
            Ok(())
        }) as BoxFuture<'_, anyhow::Result<()>>
    })
}

async fn fill_outbox(pool: &PgPool, n: u32) -> anyhow::Result<()> {
    let mut written = 0;
    while written < n {
        let mut tx = pool.begin().await?;
        for _ in 0..1_000.min(n - written) {
            bus::enqueue(&mut tx, &order()).await?;
            written += 1;
        }
        tx.commit().await?;
    }
    Ok(())
}

async fn applied(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM bench_applied")
        .fetch_one(pool)
        .await?)
}

async fn purge(channel: &lapin::Channel, queue: &str) -> anyhow::Result<()> {
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    Ok(())
}

async fn stop(shutdown: &CancellationToken, tasks: &TaskTracker) {
    shutdown.cancel();
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(30), tasks.wait()).await;
}

/// Polls `done` every 10 ms, for at most five minutes.
async fn wait_until<F, Fut>(mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(300);
    while !done().await? {
        anyhow::ensure!(Instant::now() < deadline, "gave up after five minutes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
