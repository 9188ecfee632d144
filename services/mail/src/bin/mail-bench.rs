//! `mail-bench`: the mail service's throughput and accept latency, run in this process against
//! a fresh database on the local Postgres, the local Redis and RabbitMQ (outcome events are
//! published, as in production) and an in-process SMTP sink.
//!
//! ```text
//! cargo run --release -p mail --bin mail-bench -- [--messages 20000] [--per-request 100]
//!     [--clients 8] [--rate 500] [--seconds 10]
//! ```
//!
//! 1. Delivery throughput: `--messages` mails sent as requests of `--per-request` recipients from
//!    `--clients` concurrent clients; messages/s from the first request until the sink has
//!    received the last mail (API accept → render → SMTP → the sink's receipt).
//! 2. Accept latency: `POST /messages` with one recipient at a steady `--rate` requests/s for
//!    `--seconds` (an open loop: requests are not held back by slow answers), while the
//!    workers deliver them; latency percentiles of the 202s.
//!
//! The load generator, the sink and the service share the machine (and this process), so the
//! numbers are a floor. Output: `# comments` and `metric value` lines, then the targets.
//!
//! Environment: `HATCHERY_BENCH_DATABASE_URL` (server URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `REDIS_URL` (default
//! `redis://127.0.0.1:6379`), `AMQP_URL` (default the local RabbitMQ).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Targets (issue: on 2 cores with everything local).
const DELIVERED_PER_SECOND_TARGET: f64 = 2_000.0;
const ACCEPT_P99_TARGET_MS: f64 = 10.0;

struct Options {
    messages: usize,
    per_request: usize,
    clients: usize,
    rate: u32,
    seconds: u64,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        messages: 20_000,
        per_request: 100,
        clients: 8,
        rate: 500,
        seconds: 10,
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
            "--messages" => options.messages = value("--messages")?.max(1) as usize,
            "--per-request" => {
                options.per_request = value("--per-request")?.clamp(1, 1000) as usize
            }
            "--clients" => options.clients = value("--clients")?.max(1) as usize,
            "--rate" => options.rate = value("--rate")?.clamp(1, 100_000) as u32,
            "--seconds" => options.seconds = value("--seconds")?.max(1),
            "-h" | "--help" => {
                println!(
                    "mail-bench [--messages 20000] [--per-request 100] [--clients 8] [--rate 500] [--seconds 10]"
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
        let name = format!("mail_bench_{}", uuid::Uuid::now_v7().simple());
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
    let prefix = format!("mail-bench-{}", uuid::Uuid::now_v7().simple());
    let outcome = bench(&options, &db, &prefix).await;
    db.drop_database().await;
    let amqp = kit::config::AmqpSettings {
        prefix,
        ..Default::default()
    };
    bus::testing::cleanup(&amqp_url(), &amqp, &["mail"]).await;
    outcome
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| kit::Uses::RabbitMq.local_url().to_owned())
}

/// A service token granted `mail:send`, signed with `key`.
fn service_token(key: &identity::SigningKey) -> anyhow::Result<String> {
    let defaults = kit::config::AuthSettings::default();
    let now = chrono::Utc::now().timestamp();
    key.sign(&identity::Claims {
        iss: defaults.issuer,
        aud: vec![defaults.audience],
        sub: uuid::Uuid::now_v7(),
        sid: None,
        jti: uuid::Uuid::now_v7(),
        iat: now,
        exp: now + 3600,
        nbf: None,
        roles: vec![identity::SERVICE_ROLE.to_owned()],
        email: None,
        name: None,
        email_verified: false,
        scope: Some(mail::http::SEND_SCOPE.to_owned()),
    })
}

async fn bench(options: &Options, db: &BenchDb, prefix: &str) -> anyhow::Result<()> {
    let sink = smtp_sink::Sink::start_with(
        "127.0.0.1:0",
        smtp_sink::Options {
            max_messages: options.messages
                + (options.rate as usize) * (options.seconds as usize + 2)
                + 100,
            http: None,
            ..smtp_sink::Options::default()
        },
    )?;
    let key = identity::SigningKey::generate("mail-bench")?;
    let mut settings = kit::service::default_settings::<mail::Mail>()?;
    settings.database.url = kit::SecretUrl::new(db.url());
    settings.database.max_connections = 32;
    settings.redis.url = Some(kit::SecretUrl::new(
        std::env::var("REDIS_URL").unwrap_or_else(|_| kit::Uses::Redis.local_url().to_owned()),
    ));
    settings.amqp.url = Some(kit::SecretUrl::new(amqp_url()));
    settings.amqp.prefix = prefix.to_owned();
    settings.auth.public_key = Some(key.public_key().to_base64());
    settings.populate.scenario = Some("demo".into());
    settings.populate.dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../populator");
    settings.log.level = "warn".into();
    settings.app.smtp.url = format!("smtp://{}", sink.addr())
        .try_into()
        .map_err(|err: String| anyhow::anyhow!(err))?;
    settings.app.smtp.max_per_second = 0;
    settings.app.smtp.max_connections = 16;
    settings.app.delivery.batch = 100;
    let (workers, batch, connections) = (
        settings.app.delivery.workers,
        settings.app.delivery.batch,
        settings.app.smtp.max_connections,
    );
    let app = kit::service::build::<mail::Mail>(settings)
        .await
        .context("starting the service")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    let token = service_token(&key)?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let url = format!("{base}/api/mail/v1/messages");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# mail-bench: {cpus} CPU(s); service, SMTP sink and load generator in one process; \
         {workers} workers × batch {batch}, {connections} SMTP connections, no send-rate limit"
    );

    // Warm-up: connections, compiled templates, the database's caches.
    post(&client, &url, &token, 50, "warm").await?;
    wait_for(&sink, 50, Duration::from_secs(30)).await?;

    // 1. Delivery throughput.
    let before = sink.messages().len();
    let requests = options.messages.div_ceil(options.per_request);
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..options.clients)
        .map(|client_index| {
            let (client, url, token, next) =
                (client.clone(), url.clone(), token.clone(), next.clone());
            let (per_request, total) = (options.per_request, options.messages);
            tokio::spawn(async move {
                loop {
                    let request = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if request >= requests {
                        return Ok::<(), anyhow::Error>(());
                    }
                    let count = per_request.min(total - request * per_request);
                    post(
                        &client,
                        &url,
                        &token,
                        count,
                        &format!("t{client_index}-{request}"),
                    )
                    .await?;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await??;
    }
    let accepted_in = started.elapsed();
    wait_for(&sink, before + options.messages, Duration::from_secs(600)).await?;
    let delivered_in = started.elapsed();
    let delivered_per_second = options.messages as f64 / delivered_in.as_secs_f64();
    println!(
        "# throughput: {} messages in {} requests of {} recipients from {} clients; accepted in {:.2} s, delivered in {:.2} s",
        options.messages,
        requests,
        options.per_request,
        options.clients,
        accepted_in.as_secs_f64(),
        delivered_in.as_secs_f64()
    );
    println!(
        "accepted_per_second {:.0}",
        options.messages as f64 / accepted_in.as_secs_f64()
    );
    println!("delivered_per_second {delivered_per_second:.0}");

    // 2. Accept latency at a steady rate, one recipient per request.
    let before = sink.messages().len();
    let total = (options.rate as u64 * options.seconds) as usize;
    let interval = Duration::from_secs(1) / options.rate;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut pending = Vec::with_capacity(total);
    for index in 0..total {
        ticker.tick().await;
        let (client, url, token) = (client.clone(), url.clone(), token.clone());
        pending.push(tokio::spawn(async move {
            let sent = Instant::now();
            let ok = post(&client, &url, &token, 1, &format!("l{index}"))
                .await
                .is_ok();
            (ok, sent.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for task in pending {
        match task.await {
            Ok((true, latency)) => latencies.push(latency),
            _ => errors += 1,
        }
    }
    let offered_in = started.elapsed();
    wait_for(&sink, before + latencies.len(), Duration::from_secs(120)).await?;
    let drained_in = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let p99 = percentile(0.99);
    println!(
        "# latency: {total} single-recipient requests at {} req/s over {:.1} s ({} errors); all delivered {:.2} s after the first",
        options.rate,
        offered_in.as_secs_f64(),
        errors,
        drained_in.as_secs_f64()
    );
    println!("accept_p50_ms {:.2}", percentile(0.50));
    println!("accept_p99_ms {p99:.2}");
    println!("accept_max_ms {:.2}", percentile(1.0));
    println!("accept_errors {errors}");

    println!(
        "# target delivered_per_second >= {DELIVERED_PER_SECOND_TARGET:.0}: {}",
        verdict(delivered_per_second >= DELIVERED_PER_SECOND_TARGET)
    );
    println!(
        "# target accept_p99_ms < {ACCEPT_P99_TARGET_MS:.0} at {} req/s: {}",
        options.rate,
        verdict(p99 < ACCEPT_P99_TARGET_MS && errors == 0)
    );
    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

fn verdict(met: bool) -> &'static str {
    if met { "ok" } else { "MISSED" }
}

/// One `POST /messages` with `count` recipients; an error unless it answers 202.
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    count: usize,
    label: &str,
) -> anyhow::Result<()> {
    let recipients: Vec<serde_json::Value> = (0..count)
        .map(|i| json!({"email": format!("{label}-{i}@bench.test")}))
        .collect();
    let response = client
        .post(url)
        .bearer_auth(token)
        .json(&json!({
            "template": "auth.verify_email",
            "data": {"name": "Bench", "email": "bench@bench.test",
                     "url": "https://hatchery.test/verify-email?token=bench", "expires_at": "2026-12-02T10:00:00Z"},
            "recipients": recipients,
        }))
        .send()
        .await?;
    let status = response.status();
    if status != reqwest::StatusCode::ACCEPTED {
        let body = response.text().await.unwrap_or_default();
        bail!("POST /messages answered {status}: {body}");
    }
    response.bytes().await?;
    Ok(())
}

/// Waits (polling) until the sink holds `count` messages.
async fn wait_for(sink: &smtp_sink::Sink, count: usize, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while sink.messages().len() < count {
        if Instant::now() > deadline {
            bail!(
                "only {} of {count} mails reached the sink within {timeout:?}",
                sink.messages().len()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}
