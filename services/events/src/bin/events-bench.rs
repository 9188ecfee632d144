//! `events-bench`: registrations per second and their latency, run in this process against a
//! fresh database on the local Postgres, the local Redis (session revocation checks, realtime
//! pushes) and the local RabbitMQ (the outbox relay publishing every registration's event).
//!
//! ```text
//! cargo run --release -p events --bin events-bench -- [--seconds 5] [--connections 32] [--rate 500] [--events 200]
//! ```
//!
//! Every registration is a new user (`POST /events/{id}/registrations` with their own token,
//! so their local copy is made on the way, as for a first-time visitor). Two workloads:
//! - `hot`: one event, everyone fighting for the same seats (1,000 of them; the rest are
//!   waitlisted, which takes the same lock);
//! - `spread`: registrations spread over `--events` events.
//!
//! Each is measured for `--seconds` after a one-second warm-up, closed loop
//! (`--connections` clients back to back: the throughput) and open loop at `--rate` per second
//! (latency counted from when each request was due, so a stall is not hidden).
//!
//! The load generator shares the machine (and this process's runtime) with the service and
//! Postgres, so the numbers are a floor. Output: `# comments` and `metric value` lines.
//!
//! Environment: `HATCHERY_BENCH_DATABASE_URL` (server URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `REDIS_URL`, `AMQP_URL` (the local ones by
//! default).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use uuid::Uuid;

/// The issue's targets on 2 cores (one hot event).
const TARGET_PER_SECOND: f64 = 1_000.0;
const TARGET_P99_MS: f64 = 50.0;

struct Options {
    seconds: u64,
    connections: usize,
    rate: u64,
    events: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        seconds: 5,
        connections: 32,
        rate: 500,
        events: 200,
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
            "--events" => options.events = value("--events")?.max(1) as usize,
            "-h" | "--help" => {
                println!(
                    "events-bench [--seconds 5] [--connections 32] [--rate 500] [--events 200]"
                );
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
        let name = format!("events_bench_{}", Uuid::now_v7().simple());
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
    bus::testing::cleanup(&amqp, &settings, &["events"]).await;
    outcome
}

/// Signs user tokens, each for a new user with a session.
struct Minter {
    key: identity::SigningKey,
}

impl Minter {
    fn user(&self, roles: Vec<String>) -> anyhow::Result<String> {
        let defaults = kit::config::AuthSettings::default();
        let now = chrono::Utc::now().timestamp();
        let user = Uuid::now_v7();
        let claims = identity::Claims {
            iss: defaults.issuer,
            aud: vec![defaults.audience],
            sub: user,
            sid: Some(Uuid::now_v7()),
            jti: Uuid::now_v7(),
            iat: now,
            exp: now + 3600,
            nbf: None,
            roles,
            email: Some(format!("{}@bench.test", user.simple())),
            name: Some("Bench User".into()),
            email_verified: true,
            scope: None,
        };
        self.key.sign(&claims)
    }
}

/// A pool of fresh users' tokens, handed out once each.
struct Tokens {
    tokens: Vec<String>,
    next: AtomicUsize,
}

impl Tokens {
    fn take(&self) -> Option<&str> {
        self.tokens
            .get(self.next.fetch_add(1, Ordering::Relaxed))
            .map(String::as_str)
    }
}

async fn register(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    event: &str,
) -> Result<(), String> {
    let response = client
        .post(format!("{base}/events/{event}/registrations"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .map_err(|err| {
            if err.is_timeout() {
                "timeout".to_owned()
            } else {
                "request".to_owned()
            }
        })?;
    if response.status() != reqwest::StatusCode::CREATED {
        return Err(format!("register: {}", response.status()));
    }
    Ok(())
}

async fn bench(options: &Options, db: &BenchDb, amqp: &str, prefix: &str) -> anyhow::Result<()> {
    let key = identity::SigningKey::generate("bench")?;
    let mut settings = kit::service::default_settings::<events::Events>()?;
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
    let app = kit::service::build::<events::Events>(settings)
        .await
        .context("starting the service")?;
    let base = format!("http://{}/api/events/v1", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    let minter = Minter { key };
    let organizer = minter.user(vec!["organizer".into()])?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections * 2)
        .build()?;

    let create = |capacity: i64, n: usize| {
        let (client, base, organizer) = (client.clone(), base.clone(), organizer.clone());
        async move {
            let created: Value = client
                .post(format!("{base}/events"))
                .bearer_auth(&organizer)
                .json(&json!({"title": format!("Bench event {n}"), "starts_at": "2031-01-01T18:00:00Z",
                    "ends_at": "2031-01-01T20:00:00Z", "time_zone": "Europe/Madrid",
                    "venue": "Hall", "capacity": capacity}))
                .send()
                .await?
                .json()
                .await?;
            let id = created["id"].as_str().context("an event id")?.to_owned();
            client
                .post(format!("{base}/events/{id}/publish"))
                .bearer_auth(&organizer)
                .send()
                .await?
                .error_for_status()?;
            anyhow::Ok(id)
        }
    };
    let hot = vec![create(1_000, 0).await?];
    let mut spread = Vec::with_capacity(options.events);
    for n in 0..options.events {
        spread.push(create(50, n + 1).await?);
    }

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# events-bench: {cpus} CPU(s); service, Postgres, Redis, RabbitMQ and load generator on one machine"
    );
    // Enough fresh users for every phase.
    let per_phase = (options.seconds as usize + 2) * (options.rate as usize).max(3_000);
    let minted: anyhow::Result<Vec<String>> = (0..per_phase * 4)
        .map(|_| minter.user(Vec::new()))
        .collect();
    let tokens = Arc::new(Tokens {
        tokens: minted?,
        next: AtomicUsize::new(0),
    });
    let client = Arc::new(client);
    let base = Arc::new(base);
    let mut hot_numbers = (0.0, 0.0);
    for (name, events) in [("hot", Arc::new(hot)), ("spread", Arc::new(spread))] {
        let closed = closed_loop(options, &client, &base, &tokens, &events).await;
        println!(
            "# {name}: {} clients, {} s: {} registrations, {} errors",
            options.connections,
            options.seconds,
            closed.latencies.len(),
            closed.errors.len()
        );
        let per_second = closed.print(&format!("{name}_registrations"));
        let (open, shed) = open_loop(options, &client, &base, &tokens, &events).await;
        println!(
            "# {name}: at {}/s offered for {} s: {} registrations, {} errors, {shed} shed",
            options.rate,
            options.seconds,
            open.latencies.len(),
            open.errors.len()
        );
        open.print(&format!("{name}_at_{}", options.rate));
        if name == "hot" {
            hot_numbers = (per_second, open.percentile(0.99).as_secs_f64() * 1000.0);
        }
    }
    let (per_second, p99) = hot_numbers;
    println!(
        "# target: >= {TARGET_PER_SECOND:.0} registrations/s on one hot event: {per_second:.0} ({:.2}x) {}",
        per_second / TARGET_PER_SECOND,
        if per_second >= TARGET_PER_SECOND {
            "ok"
        } else {
            "MISSED"
        }
    );
    println!(
        "# target: p99 < {TARGET_P99_MS:.0} ms at {}/s on one hot event: {p99:.2} ms ({:.2}x) {}",
        options.rate,
        p99 / TARGET_P99_MS,
        if p99 < TARGET_P99_MS { "ok" } else { "MISSED" }
    );
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

async fn closed_loop(
    options: &Options,
    client: &Arc<reqwest::Client>,
    base: &Arc<String>,
    tokens: &Arc<Tokens>,
    events: &Arc<Vec<String>>,
) -> Measured {
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs(options.seconds);
    let workers: Vec<_> = (0..options.connections)
        .map(|worker| {
            let (client, base, tokens, events) =
                (client.clone(), base.clone(), tokens.clone(), events.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors, mut n) = (Vec::new(), Vec::new(), worker);
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    let Some(token) = tokens.take() else { break };
                    n += 1;
                    let done = register(&client, &base, token, &events[n % events.len()]).await;
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
    measured.finish(Duration::from_secs(options.seconds));
    measured
}

/// Requests beyond this many waiting at once are not sent (counted as shed).
const MAX_IN_FLIGHT: usize = 256;

async fn open_loop(
    options: &Options,
    client: &Arc<reqwest::Client>,
    base: &Arc<String>,
    tokens: &Arc<Tokens>,
    events: &Arc<Vec<String>>,
) -> (Measured, usize) {
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
        let (client, base, tokens, events) =
            (client.clone(), base.clone(), tokens.clone(), events.clone());
        tasks.push((
            n as usize,
            tokio::spawn(async move {
                let done = match tokens.take() {
                    Some(token) => {
                        register(&client, &base, token, &events[n as usize % events.len()]).await
                    }
                    None => Err("out of tokens".to_owned()),
                };
                drop(permit);
                (done, due.elapsed())
            }),
        ));
    }
    let mut measured = Measured::default();
    for (n, task) in tasks {
        if let Ok((done, latency)) = task.await
            && n >= warm
        {
            match done {
                Ok(()) => measured.latencies.push(latency),
                Err(why) => measured.errors.push(why),
            }
        }
    }
    measured.finish(Duration::from_secs(options.seconds));
    (measured, shed)
}

#[derive(Default)]
struct Measured {
    /// Why each failed registration failed.
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
