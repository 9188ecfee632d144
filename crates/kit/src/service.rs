//! A service's description, its assembled application, and the command line every service
//! binary shares (`serve`, `migrate`, `populate`, `check`, `openapi`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use futures_util::future::BoxFuture;
use sqlx::migrate::Migrator;
use sqlx::{PgConnection, PgPool};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;

use crate::config::{self, AppSettings, Settings};
use crate::health::{self, Check};
use crate::{db, http, telemetry};

/// Loads one scenario's documents for this service into the database, inside the caller's
/// transaction.
pub type PopulateFn = for<'a> fn(
    &'a mut PgConnection,
    &'a populator::Scenario,
) -> BoxFuture<'a, Result<populator::Report, populator::Error>>;

/// Builds the service's API router (with its state applied) from the shared parts.
pub type RoutesFn<A> = fn(&Parts<A>) -> OpenApiRouter;

/// Starts a service's background work (event relay, consumers, key rotation...) on
/// `parts.tasks`, watching `parts.shutdown`, and returns the readiness checks it adds. Runs in
/// `serve` after migrations and seed data, before the first request is accepted.
pub type StartFn<A> =
    for<'a> fn(&'a Parts<A>) -> BoxFuture<'a, anyhow::Result<Vec<Arc<dyn Check>>>>;

/// Operational subcommands of a service beyond the shared ones (e.g. `events parked`).
pub struct Commands<A: 'static> {
    /// The subcommands, as clap commands.
    pub define: fn() -> Vec<clap::Command>,
    /// Runs the subcommand `name` with its matches; the database is connected and migrated.
    pub run:
        for<'a> fn(&'a str, &'a clap::ArgMatches, Parts<A>) -> BoxFuture<'a, anyhow::Result<()>>,
}

/// What a service is: its name, port, migrations, routes and seed-data loader. A service's
/// `lib.rs` returns one of these; its `main.rs` hands it to [`run`].
///
/// A service with neither migrations nor seed data has no database (the broker): kit then
/// neither creates, connects to, migrates nor checks one.
pub struct Service<A: 'static = ()> {
    pub name: &'static str,
    pub port: u16,
    pub version: &'static str,
    pub description: &'static str,
    pub migrator: Option<&'static Migrator>,
    pub routes: RoutesFn<A>,
    pub populate: Option<PopulateFn>,
    pub start: Option<StartFn<A>>,
    pub commands: Option<Commands<A>>,
}

/// What a service's routes and background tasks are built from.
#[derive(Clone)]
pub struct Parts<A> {
    pub name: &'static str,
    pub settings: Arc<Settings<A>>,
    pub db: PgPool,
    /// Cancelled when the service starts shutting down.
    pub shutdown: CancellationToken,
    /// Background tasks: awaited (within the grace period) before the process exits.
    pub tasks: TaskTracker,
    /// Values the `start` hook hands on to `routes` (which runs after it), keyed by type: e.g.
    /// the broker's hub, fed by the Redis task `start` spawned.
    pub extensions: Arc<std::sync::Mutex<::http::Extensions>>,
}

/// A service ready to serve: database migrated and populated, router assembled.
pub struct App {
    name: &'static str,
    router: Router,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

impl<A: AppSettings> Service<A> {
    /// Settings from defaults, the optional file and the environment.
    pub fn load_settings(&self, file: Option<&Path>) -> Result<Settings<A>, config::ConfigError> {
        config::load(self.name, self.port, file)
    }

    /// Built-in defaults only (tests start here and change what they need).
    pub fn default_settings(&self) -> Result<Settings<A>, config::ConfigError> {
        config::defaults(self.name, self.port)
    }

    /// Connects (creating the database in development), migrates, loads the configured
    /// scenario and assembles the router. A bad scenario file fails here, so the service
    /// refuses to start with the file and line in the message.
    pub async fn build(&self, settings: Settings<A>) -> anyhow::Result<App> {
        if !self.has_database() {
            let pool = db::connect_lazy(&settings.database)?;
            let parts = self.parts(settings, pool);
            let extra_checks = match self.start {
                Some(start) => start(&parts).await.context("starting background work")?,
                None => Vec::new(),
            };
            return Ok(self.assemble(parts, extra_checks).0);
        }
        let pool = db::connect(&settings.database, settings.create_database_if_missing()).await?;
        if settings.database.migrate_on_start {
            self.migrate(&pool).await?;
        }
        if let Some(scenario) = settings.populate.scenario.clone() {
            self.populate(&pool, &settings.populate.dir, &scenario)
                .await?;
        }
        let parts = self.parts(settings, pool);
        parts
            .tasks
            .spawn(prune_idempotency(parts.db.clone(), parts.shutdown.clone()));
        let extra_checks = match self.start {
            Some(start) => start(&parts).await.context("starting background work")?,
            None => Vec::new(),
        };
        Ok(self.assemble(parts, extra_checks).0)
    }

    /// Whether this service owns a database (see [`Service`]).
    pub fn has_database(&self) -> bool {
        self.migrator.is_some() || self.populate.is_some()
    }

    fn parts(&self, settings: Settings<A>, pool: PgPool) -> Parts<A> {
        Parts {
            name: self.name,
            settings: Arc::new(settings),
            db: pool,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            extensions: Arc::default(),
        }
    }

    /// Applies this service's pending migrations.
    pub async fn migrate(&self, pool: &PgPool) -> anyhow::Result<usize> {
        let Some(migrator) = self.migrator else {
            return Ok(0);
        };
        let applied = db::migrate(pool, migrator).await?;
        if applied > 0 {
            tracing::info!(applied, "applied migrations");
        }
        Ok(applied)
    }

    /// Loads `scenario` from `dir` in one transaction: all of it, or nothing.
    pub async fn populate(
        &self,
        pool: &PgPool,
        dir: &Path,
        scenario: &str,
    ) -> anyhow::Result<populator::Report> {
        let Some(populate) = self.populate else {
            return Ok(populator::Report::default());
        };
        let scenario = populator::Scenario::open(dir, scenario)
            .map_err(|err| anyhow::anyhow!("cannot load scenario: {err}"))?;
        let mut tx = pool.begin().await?;
        let report = populate(&mut tx, &scenario)
            .await
            .map_err(|err| anyhow::anyhow!("cannot load scenario {}: {err}", scenario.name()))?;
        tx.commit().await?;
        tracing::info!(scenario = scenario.name(), %report, "populated");
        Ok(report)
    }

    fn assemble(&self, parts: Parts<A>, extra_checks: Vec<Arc<dyn Check>>) -> (App, String) {
        let settings = parts.settings.clone();
        let (api, mut openapi) = (self.routes)(&parts).split_for_parts();
        openapi.info.title = format!("Hatchery {} service", self.name);
        openapi.info.version = self.version.to_owned();
        openapi.info.description = Some(self.description.to_owned());
        crate::openapi::finish(&mut openapi);
        let openapi_json = openapi.to_pretty_json().unwrap_or_else(|_| "{}".to_owned());
        let mut checks: Vec<Arc<dyn Check>> = Vec::new();
        if self.has_database() {
            checks.push(Arc::new(health::Database(parts.db.clone())));
        }
        if let Some(url) = &settings.redis.url
            && let Ok(redis) = health::Redis::new(url)
        {
            checks.push(Arc::new(redis));
        }
        if let Some(url) = &settings.amqp.url {
            checks.push(Arc::new(health::Amqp(url.clone())));
        }
        checks.extend(extra_checks);
        let router = http::stack(
            api,
            http::Ops {
                checks,
                openapi_json: openapi_json.clone(),
            },
            &settings.http,
        );
        let app = App {
            name: self.name,
            router,
            shutdown: parts.shutdown,
            tasks: parts.tasks,
            grace: settings.http.shutdown_grace,
        };
        (app, openapi_json)
    }

    /// The OpenAPI document, built without touching the database.
    pub fn openapi_json(&self, settings: Settings<A>) -> anyhow::Result<String> {
        let pool = db::connect_lazy(&settings.database)?;
        Ok(self.assemble(self.parts(settings, pool), Vec::new()).1)
    }
}

impl App {
    /// The complete router (API + operational endpoints + middleware).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Cancelled when the app starts shutting down; background tasks watch it.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until `signal` completes, then stops accepting connections, lets in-flight
    /// requests and background tasks finish within the grace period, and returns.
    pub async fn serve(
        self,
        listener: TcpListener,
        signal: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let token = self.shutdown.clone();
        // Small writes (websocket frames above all) leave at once instead of waiting for the
        // peer's delayed ACK (Nagle's algorithm adds up to 40 ms per frame otherwise).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut TcpStream| {
            let _ = tcp.set_nodelay(true);
        });
        // The peer address reaches handlers as `ConnectInfo<SocketAddr>` (rate limits per
        // client address, audit logs).
        let router = self
            .router
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(token.clone().cancelled_owned())
            .into_future();
        let mut server = tokio::spawn(server);
        tokio::select! {
            () = signal => tracing::info!("shutdown requested"),
            () = token.cancelled() => {}
            result = &mut server => {
                token.cancel();
                return result.context("server task failed")?.context("server failed");
            }
        }
        token.cancel();
        self.tasks.close();
        let deadline = tokio::time::Instant::now() + self.grace;
        match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(result) => result
                .context("server task failed")?
                .context("server failed")?,
            Err(_) => {
                server.abort();
                tracing::warn!(grace = ?self.grace, "in-flight requests outlived the grace period");
            }
        }
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(grace = ?self.grace, "background tasks outlived the grace period");
        }
        tracing::info!(service = self.name, "stopped");
        Ok(())
    }
}

/// Hourly, deletes stored idempotent responses past retention (services with the table).
async fn prune_idempotency(pool: PgPool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        let has_table: Result<bool, _> =
            sqlx::query_scalar("SELECT to_regclass('idempotency') IS NOT NULL")
                .fetch_one(&pool)
                .await;
        if let Ok(true) = has_table {
            match crate::idempotency::prune(&pool).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned idempotent responses"),
                Err(err) => tracing::warn!(error = %err, "pruning idempotent responses failed"),
            }
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        tokio::signal::ctrl_c().await.ok();
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[derive(Parser)]
struct Cli {
    /// TOML file with settings (environment variables override it).
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Apply pending database migrations.
    Migrate,
    /// Load a seed-data scenario (get-or-create: safe to repeat).
    Populate {
        #[arg(long)]
        scenario: String,
    },
    /// Check the configuration and every dependency; non-zero exit on failure.
    Check,
    /// Print the OpenAPI document.
    Openapi,
}

/// Exit code for a configuration that does not load or validate.
pub const EXIT_CONFIG: u8 = 2;

/// Runs a service binary: parses the command line, loads settings (exit code 2 on a bad one)
/// and runs the command on a Tokio runtime.
pub fn run<A: AppSettings>(service: Service<A>) -> ExitCode {
    let extra = service
        .commands
        .as_ref()
        .map(|c| (c.define)())
        .unwrap_or_default();
    let extra_names: Vec<String> = extra.iter().map(|c| c.get_name().to_owned()).collect();
    let matches = Cli::command()
        .name(service.name)
        .version(service.version)
        .about(service.description)
        .subcommands(extra)
        .get_matches();
    let config_file = matches.get_one::<PathBuf>("config").cloned();
    let cli = match matches.subcommand_name() {
        Some(name) if extra_names.iter().any(|n| n == name) => None,
        _ => match Cli::from_arg_matches(&matches) {
            Ok(cli) => Some(cli),
            Err(err) => err.exit(),
        },
    };
    let settings = match service.load_settings(config_file.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{}: {err}", service.name);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{}: cannot start the async runtime: {err}", service.name);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let environment = format!("{:?}", settings.environment).to_lowercase();
        let _telemetry =
            telemetry::init(service.name, &environment, &settings.log, &settings.sentry);
        let Some(cli) = cli else {
            return extra_command(&service, settings, &matches).await;
        };
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve(&service, settings).await,
            Command::Migrate => migrate(&service, settings).await,
            Command::Populate { scenario } => populate(&service, settings, &scenario).await,
            Command::Check => check(&service, settings).await,
            Command::Openapi => service
                .openapi_json(settings)
                .map(|json| println!("{json}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "{} failed", service.name);
            eprintln!("{}: error: {err:#}", service.name);
            ExitCode::FAILURE
        }
    }
}

async fn serve<A: AppSettings>(service: &Service<A>, settings: Settings<A>) -> anyhow::Result<()> {
    let started = Instant::now();
    let address = (settings.http.host.clone(), settings.http.port);
    let app = service.build(settings).await?;
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
    let local = listener.local_addr()?;
    tracing::info!(
        service = service.name,
        address = %format!("http://{local}"),
        startup_ms = started.elapsed().as_millis() as u64,
        "listening"
    );
    app.serve(listener, shutdown_signal()).await
}

async fn extra_command<A: AppSettings>(
    service: &Service<A>,
    settings: Settings<A>,
    matches: &clap::ArgMatches,
) -> anyhow::Result<()> {
    let (Some(commands), Some((name, sub))) = (&service.commands, matches.subcommand()) else {
        anyhow::bail!("no such command");
    };
    let pool = db::connect(&settings.database, settings.create_database_if_missing()).await?;
    service.migrate(&pool).await?;
    (commands.run)(name, sub, service.parts(settings, pool)).await
}

async fn migrate<A: AppSettings>(
    service: &Service<A>,
    settings: Settings<A>,
) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database, settings.create_database_if_missing()).await?;
    let applied = service.migrate(&pool).await?;
    println!("{}: {applied} migration(s) applied", service.name);
    Ok(())
}

async fn populate<A: AppSettings>(
    service: &Service<A>,
    settings: Settings<A>,
    scenario: &str,
) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database, settings.create_database_if_missing()).await?;
    service.migrate(&pool).await?;
    let report = service
        .populate(&pool, &settings.populate.dir, scenario)
        .await?;
    println!("{}: scenario {scenario}: {report}", service.name);
    Ok(())
}

async fn check<A: AppSettings>(service: &Service<A>, settings: Settings<A>) -> anyhow::Result<()> {
    println!(
        "{:<10} ok    {} environment, port {}",
        "config",
        format!("{:?}", settings.environment).to_lowercase(),
        settings.http.port
    );
    let mut checks: Vec<(Arc<dyn Check>, String)> = Vec::new();
    if service.has_database() {
        checks.push((
            Arc::new(health::Database(db::connect_lazy(&settings.database)?)),
            settings.database.url.redacted(),
        ));
    }
    if let Some(url) = &settings.redis.url {
        let redis = health::Redis::new(url).map_err(|err| anyhow::anyhow!("redis.url: {err}"))?;
        checks.push((Arc::new(redis), url.redacted()));
    }
    if let Some(url) = &settings.amqp.url {
        checks.push((Arc::new(health::Amqp(url.clone())), url.redacted()));
    }
    let only: Vec<Arc<dyn Check>> = checks.iter().map(|(c, _)| c.clone()).collect();
    let readiness = health::probe(&only).await;
    for (check, target) in &checks {
        let Some(status) = readiness.checks.get(check.name()) else {
            continue;
        };
        match &status.error {
            None => println!(
                "{:<10} up    {target} ({} ms)",
                check.name(),
                status.latency_ms
            ),
            Some(error) => println!("{:<10} DOWN  {target}: {error}", check.name()),
        }
    }
    if readiness.is_ready() {
        Ok(())
    } else {
        anyhow::bail!("some dependencies are down")
    }
}
