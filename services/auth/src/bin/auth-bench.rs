//! `auth-bench`: throughput of the auth service, run in this process against a fresh database
//! on the local Postgres and the local Redis (the production password-hashing cost, rate
//! limits off).
//!
//! ```text
//! cargo run --release -p auth --bin auth-bench -- [--seconds 10] [--connections 64] [--logins 16]
//! ```
//!
//! Measures, each for `--seconds` after a one-second warm-up:
//! - `GET /api/auth/v1/me` with a valid token over `--connections` concurrent keep-alive
//!   connections: requests/s and latency percentiles;
//! - password logins (`POST /token`, argon2id with the default OWASP cost) from `--logins`
//!   concurrent clients: logins/s (bounded by hashing: about one login per CPU per hash time).
//!
//! The load generator shares the machine (and this process's runtime) with the service, so
//! the numbers are a floor. Output: `# comments` and `metric value` lines.
//!
//! Environment: `HATCHERY_BENCH_DATABASE_URL` (server URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`), `REDIS_URL` (default `redis://127.0.0.1:6379`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

struct Options {
    seconds: u64,
    connections: usize,
    logins: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        seconds: 10,
        connections: 64,
        logins: 16,
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
            "--logins" => options.logins = value("--logins")?.max(1) as usize,
            "-h" | "--help" => {
                println!("auth-bench [--seconds 10] [--connections 64] [--logins 16]");
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
        let name = format!("auth_bench_{}", uuid::Uuid::now_v7().simple());
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
    let outcome = bench(&options, &db).await;
    db.drop_database().await;
    outcome
}

async fn bench(options: &Options, db: &BenchDb) -> anyhow::Result<()> {
    let mut settings = kit::service::default_settings::<auth::Auth>()?;
    let prefix = format!("bench-{}:", uuid::Uuid::now_v7().simple());
    settings.database.url = kit::SecretUrl::new(db.url());
    settings.database.max_connections = 32;
    settings.redis.url = Some(kit::SecretUrl::new(
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
    ));
    settings.auth.revocation_prefix = prefix.clone();
    settings.app.redis_prefix = prefix;
    settings.app.rate_limits.enabled = false;
    let argon2 = settings.app.argon2;
    let app = kit::service::build::<auth::Auth>(settings)
        .await
        .context("starting the service")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.connections.max(options.logins))
        .build()?;
    let email = "bench@hatchery.test";
    let password = "bench-password-1";
    let signup = client
        .post(format!("{base}/api/auth/v1/signup"))
        .json(&json!({"email": email, "password": password, "name": "Bench"}))
        .send()
        .await?;
    anyhow::ensure!(
        signup.status() == 201,
        "signup answered {}",
        signup.status()
    );
    let pool = sqlx::PgPool::connect(&db.url()).await?;
    sqlx::query("UPDATE users SET email_verified_at = now()")
        .execute(&pool)
        .await?;
    pool.close().await;
    let login = json!({"grant_type": "password", "email": email, "password": password});
    let tokens: Value = client
        .post(format!("{base}/api/auth/v1/token"))
        .json(&login)
        .send()
        .await?
        .json()
        .await?;
    let token = tokens["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned();

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# auth-bench: {cpus} CPU(s), service and load generator in one process");
    let me_url = format!("{base}/api/auth/v1/me");
    let me = load(
        &client,
        options.connections,
        Duration::from_secs(options.seconds),
        move |client| client.get(&me_url).bearer_auth(&token),
    )
    .await;
    println!(
        "# GET /me: {} connections, {} s: {} requests, {} errors",
        options.connections, options.seconds, me.count, me.errors
    );
    me.print("get_me");

    let token_url = format!("{base}/api/auth/v1/token");
    let logins = load(
        &client,
        options.logins,
        Duration::from_secs(options.seconds),
        move |client| client.post(&token_url).json(&login),
    )
    .await;
    println!(
        "# password logins: argon2id m={} KiB t={} p={}, {} concurrent clients, {} s: {} logins, {} errors",
        argon2.memory_kib,
        argon2.iterations,
        argon2.parallelism,
        options.logins,
        options.seconds,
        logins.count,
        logins.errors
    );
    logins.print("login");

    let _ = stop.send(());
    let _ = server.await;
    Ok(())
}

/// What one load run measured.
struct Measured {
    count: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Measured {
    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }

    fn print(&self, name: &str) {
        let per_second = self.count as f64 / self.elapsed.as_secs_f64();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("{name}_per_second {per_second:.1}");
        println!("{name}_p50_ms {:.2}", ms(self.percentile(0.50)));
        println!("{name}_p99_ms {:.2}", ms(self.percentile(0.99)));
        println!("{name}_errors {}", self.errors);
    }
}

/// Runs `concurrency` loops sending `request` back to back: one warm-up second, then
/// `duration` measured.
async fn load<F>(
    client: &reqwest::Client,
    concurrency: usize,
    duration: Duration,
    request: F,
) -> Measured
where
    F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                loop {
                    let started = Instant::now();
                    if started >= end {
                        break;
                    }
                    let ok = match request(&client).send().await {
                        Ok(response) => {
                            let ok = response.status().is_success();
                            let _ = response.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    if started >= warm_until {
                        if ok {
                            latencies.push(started.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        if let Ok((mut measured, failed)) = worker.await {
            latencies.append(&mut measured);
            errors += failed;
        }
    }
    latencies.sort();
    Measured {
        count: latencies.len(),
        errors,
        elapsed: duration,
        latencies,
    }
}
