//! `payments-bench`: create + confirm round trips of the payments service with the built-in
//! `test` provider, run in this process against a fresh database on the local Postgres, the
//! local Redis (realtime pushes) and the local RabbitMQ (the outbox relay publishing every
//! `payments.payment.succeeded`), the provider's own webhooks included.
//!
//! ```text
//! cargo run --release -p payments --bin payments-bench -- [--seconds 10] [--connections 32] [--rate 500]
//! ```
//!
//! A round trip is `POST /payments` (as the events service, with an `Idempotency-Key`) then
//! `POST /payments/{id}/confirm` with `pm_card_visa`, the answer being `succeeded`. Measured,
//! each for `--seconds` after a one-second warm-up:
//! - throughput: `--connections` clients doing round trips back to back;
//! - latency at a fixed rate: round trips started every `1/--rate` s whatever the answers
//!   (latency counted from when each was due, so a stall is not hidden), p50 and p99.
//!
//! The load generator shares the machine (and this process's runtime) with the service and
//! Postgres, so the numbers are a floor. Output: `# comments` and `metric value` lines.
//!
//! Environment: `HATCHERY_BENCH_DATABASE_URL` (server URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `REDIS_URL`, `AMQP_URL` (the local ones by
//! default).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

// The service's own allocator (its `main.rs`), so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The issue's targets on 2 cores.
const TARGET_PER_SECOND: f64 = 2_000.0;
const TARGET_P99_MS: f64 = 20.0;

struct Options {
    seconds: u64,
    connections: usize,
    rate: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        seconds: 10,
        connections: 32,
        rate: 500,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> anyhow::Result<u64> {
            args.next()
                .with_context(|| format!("{name} needs a value"))?
                .parse()
                .with_context(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seconds" => options.seconds = value("--seconds")?.max(1),
            "--connections" => options.connections = value("--connections")?.max(1) as usize,
            "--rate" => options.rate = value("--rate")?.max(1),
            "-h" | "--help" => {
                println!("payments-bench [--seconds 10] [--connections 32] [--rate 500]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(options)
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(options))
}

/// A database of the bench's own, dropped at the end.
struct BenchDb {
    server: PgConnectOptions,
    name: String,
}

impl BenchDb {
    async fn create() -> anyhow::Result<BenchDb> {
        let url = std::env::var("HATCHERY_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let server = PgConnectOptions::from_str(&url).context("HATCHERY_BENCH_DATABASE_URL")?;
        let name = format!("payments_bench_{}", Uuid::now_v7().simple());
        kit::db::create_database(&server.clone().database(&name)).await?;
        Ok(BenchDb { server, name })
    }

    fn url(&self) -> String {
        self.server
            .clone()
            .database(&self.name)
            .to_url_lossy()
            .to_string()
    }

    async fn drop_database(self) {
        let statement = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            kit::db::quote_identifier(&self.name)
        );
        if let Ok(mut conn) = self.server.connect().await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(statement))
                .execute(&mut conn)
                .await;
            conn.close().await.ok();
        }
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let db = BenchDb::create().await?;
    let prefix = format!("bench-{}", Uuid::now_v7().simple());
    let amqp = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let outcome = bench(&options, &db, &amqp, &prefix).await;
    db.drop_database().await;
    let settings = kit::config::AmqpSettings {
        prefix,
        ..Default::default()
    };
    // The service's queues (its consumer of `auth.user.*`), then the exchange.
    bus::testing::cleanup(&amqp, &settings, &["payments"]).await;
    outcome
}

/// One create + confirm ending `succeeded`; why not otherwise.
async fn round_trip(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    user: Uuid,
) -> Result<(), String> {
    let body = json!({
        "amount": 2500,
        "currency": "EUR",
        "reference": {"service": "events", "id": Uuid::now_v7().to_string()},
        "user": user,
    });
    let created = client
        .post(format!("{base}/payments"))
        .bearer_auth(token)
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&body)
        .send()
        .await
        .map_err(|err| format!("create: {}", kind(&err)))?;
    if created.status() != reqwest::StatusCode::CREATED {
        return Err(format!("create: {}", created.status()));
    }
    let created: Value = created.json().await.map_err(|_| "create: body")?;
    let id = created["id"].as_str().ok_or("create: no id")?;
    let confirmed = client
        .post(format!("{base}/payments/{id}/confirm"))
        .bearer_auth(token)
        .header("idempotency-key", Uuid::now_v7().to_string())
        .json(&json!({"payment_method": "pm_card_visa"}))
        .send()
        .await
        .map_err(|err| format!("confirm: {}", kind(&err)))?;
    if !confirmed.status().is_success() {
        return Err(format!("confirm: {}", confirmed.status()));
    }
    let payment: Value = confirmed.json().await.map_err(|_| "confirm: body")?;
    if payment["status"] == "succeeded" {
        Ok(())
    } else {
        Err(format!("confirm: {}", payment["status"]))
    }
}

fn kind(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "request"
    }
}

async fn bench(options: &Options, db: &BenchDb, amqp: &str, prefix: &str) -> anyhow::Result<()> {
    let key = identity::SigningKey::generate("bench")?;
    let mut settings = kit::service::default_settings::<payments::Payments>()?;
    settings.database.url = kit::SecretUrl::new(db.url());
    settings.database.max_connections = 40;
    settings.redis.url = Some(kit::SecretUrl::new(
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
    ));
    settings.amqp.url = Some(kit::SecretUrl::new(amqp));
    settings.amqp.prefix = prefix.to_owned();
    settings.auth.jwks_url = None;
    settings.auth.public_key = Some(key.public_key().to_base64());
    settings.app.realtime_prefix = format!("{prefix}.");
    settings.log.level = "warn".into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    settings.http.port = listener.local_addr()?.port();
    let app = kit::service::build::<payments::Payments>(settings)
        .await
        .context("starting the service")?;
    let base = format!("http://{}/api/payments/v1", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));

    let defaults = kit::config::AuthSettings::default();
    let now = chrono::Utc::now().timestamp();
    let claims = identity::Claims {
        iss: defaults.issuer,
        aud: vec![defaults.audience],
        sub: Uuid::now_v7(),
        sid: None,
        jti: Uuid::now_v7(),
        iat: now,
        exp: now + 3600,
        nbf: None,
        roles: vec![identity::SERVICE_ROLE.to_owned()],
        email: None,
        name: None,
        email_verified: false,
        scope: Some("payments:create payments:read".to_owned()),
    };
    let token = Arc::new(key.sign(&claims)?);
    let users: Arc<Vec<Uuid>> = Arc::new((0..100).map(|_| Uuid::now_v7()).collect());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections * 2)
        .build()?;
    let base = Arc::new(base);
    if let Err(why) = round_trip(&client, &base, &token, users[0]).await {
        bail!("a first round trip did not succeed: {why}");
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# payments-bench: {cpus} CPU(s); service, Postgres, Redis, RabbitMQ and load generator on one machine"
    );
    let duration = Duration::from_secs(options.seconds);

    // Throughput: clients back to back.
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + duration;
    let workers: Vec<_> = (0..options.connections)
        .map(|worker| {
            let (client, base, token, users) =
                (client.clone(), base.clone(), token.clone(), users.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut n) = (Vec::new(), Vec::new(), worker);
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    n += 1;
                    let done = round_trip(&client, &base, &token, users[n % users.len()]).await;
                    if started >= warm_until {
                        match done {
                            Ok(()) => latencies.push(started.elapsed()),
                            Err(why) => errors.push(why),
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut measured = Measured::default();
    for worker in workers {
        if let Ok((latencies, errors)) = worker.await {
            measured.latencies.extend(latencies);
            measured.errors.extend(errors);
        }
    }
    measured.finish(duration);
    println!(
        "# throughput: {} clients, {} s: {} round trips, {} errors",
        options.connections,
        options.seconds,
        measured.latencies.len(),
        measured.errors.len()
    );
    let per_second = measured.print("create_confirm");

    // Latency at a fixed rate, open loop. Round trips beyond `MAX_IN_FLIGHT` waiting at once are
    // not sent (counted as shed): past its capacity the service would only queue them.
    const MAX_IN_FLIGHT: usize = 256;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let interval = Duration::from_secs_f64(1.0 / options.rate as f64);
    let total = options.rate * (options.seconds + 1);
    let start = Instant::now();
    let warm = options.rate as usize;
    let mut tasks = Vec::with_capacity(total as usize);
    let mut shed = 0usize;
    for n in 0..total {
        let due = start + interval * u32::try_from(n).unwrap_or(u32::MAX);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            if n as usize >= warm {
                shed += 1;
            }
            continue;
        };
        let (client, base, token, users) =
            (client.clone(), base.clone(), token.clone(), users.clone());
        tasks.push((
            n as usize,
            tokio::spawn(async move {
                let done =
                    round_trip(&client, &base, &token, users[n as usize % users.len()]).await;
                drop(permit);
                (done, due.elapsed())
            }),
        ));
    }
    let mut at_rate = Measured::default();
    for (n, task) in tasks {
        if let Ok((done, latency)) = task.await
            && n >= warm
        {
            match done {
                Ok(()) => at_rate.latencies.push(latency),
                Err(why) => at_rate.errors.push(why),
            }
        }
    }
    at_rate.finish(duration);
    println!(
        "# at {} round trips/s offered for {} s: {} round trips, {} errors, {} shed (more than {MAX_IN_FLIGHT} waiting)",
        options.rate,
        options.seconds,
        at_rate.latencies.len(),
        at_rate.errors.len(),
        shed
    );
    at_rate.print(&format!("at_{}", options.rate));
    let p99 = at_rate.percentile(0.99).as_secs_f64() * 1000.0;

    println!(
        "# target: >= {TARGET_PER_SECOND:.0} round trips/s: {per_second:.0} ({:.2}x) {}",
        per_second / TARGET_PER_SECOND,
        if per_second >= TARGET_PER_SECOND {
            "ok"
        } else {
            "MISSED"
        }
    );
    println!(
        "# target: p99 < {TARGET_P99_MS:.0} ms at {}/s: {p99:.2} ms ({:.2}x) {}",
        options.rate,
        p99 / TARGET_P99_MS,
        if p99 < TARGET_P99_MS { "ok" } else { "MISSED" }
    );
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

#[derive(Default)]
struct Measured {
    /// Why each failed round trip failed.
    errors: Vec<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        self.latencies.sort();
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }

    /// Prints the metrics; the rate per second.
    fn print(&self, name: &str) -> f64 {
        let per_second = self.latencies.len() as f64 / self.elapsed.as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("{name}_per_second {per_second:.1}");
        println!("{name}_p50_ms {:.2}", ms(self.percentile(0.50)));
        println!("{name}_p99_ms {:.2}", ms(self.percentile(0.99)));
        println!("{name}_errors {}", self.errors.len());
        let mut reasons: std::collections::BTreeMap<&str, usize> = Default::default();
        for why in &self.errors {
            *reasons.entry(why.as_str()).or_default() += 1;
        }
        for (why, count) in reasons {
            println!("# {count} × {why}");
        }
        per_second
    }
}
