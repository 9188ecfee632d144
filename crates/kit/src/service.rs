//! What a service is ([`Service`]), what kit hands it to start from ([`Resources`]), what its
//! start returns ([`Started`]), the assembled application ([`App`]), and the command line every
//! service binary shares (`serve`, `migrate`, `populate`, `check`, `openapi`, and for operating
//! the database `changelog`, `backup`, `restore`, `anonymize`).
//!
//! A service is a type implementing [`Service`] in its `lib.rs`; its `main.rs` is
//! `fn main() -> ExitCode { kit::run::<my_service::MyService>() }`. The wiring is typed: `start`
//! builds the handlers' state once (pools, verifier, clients) and returns it with its readiness
//! checks and background tasks; `routes` is an `OpenApiRouter<State>`. A service whose state
//! cannot be built does not start, and says why; the OpenAPI document is built from the routes
//! alone, with no state and no connection.

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

use crate::anonymize::Personal;
use crate::changelog::{Change, ChangelogError};
use crate::config::{self, AppSettings, Settings, Uses};
use crate::db::SharedSchema;
use crate::health::{self, Check, Dependency};
use crate::{db, http, telemetry};

/// Loads one scenario's documents for this service into the database, inside the caller's
/// transaction.
pub type PopulateFn = for<'a> fn(
    &'a mut PgConnection,
    &'a populator::Scenario,
) -> BoxFuture<'a, Result<populator::Report, populator::Error>>;

/// A service's database: its own migrations, the shared tables it uses, and its seed data.
pub struct Database {
    /// The service's own migrations (`sqlx::migrate!()`: `services/<name>/migrations`).
    pub migrations: &'static Migrator,
    /// Tables owned by shared crates that the service uses (`bus::SCHEMA`,
    /// `identity::SCHEMA`, `kit::idempotency::SCHEMA`); applied before the service's own.
    pub shared: &'static [&'static SharedSchema],
    /// Loads a scenario's YAML documents (`populator/<scenario>/<service>/`).
    pub populate: Option<PopulateFn>,
    /// One-off data changes, applied in order once per database (`kit::changelog!` of the
    /// files in `changelog/`, or code changes): see [`crate::changelog`].
    pub changelog: &'static [Change],
    /// The service's own columns holding personal data, and how the anonymizer replaces them
    /// (the shared tables' are declared by their crates): see [`crate::anonymize`].
    pub personal: &'static [Personal],
}

impl Database {
    fn uses(&self, schema: &SharedSchema) -> bool {
        self.shared.iter().any(|s| std::ptr::eq(*s, schema))
    }

    /// Every personal-data declaration for this database: the shared schemas' first, then the
    /// service's own.
    pub fn all_personal(&self) -> Vec<&'static Personal> {
        self.shared
            .iter()
            .flat_map(|schema| schema.personal.iter())
            .chain(self.personal.iter())
            .collect()
    }
}

/// A Hatchery service. Implemented by one type in the service's `lib.rs`:
///
/// ```ignore
/// pub struct Template;
///
/// impl kit::Service for Template {
///     type Config = config::Config;
///     type State = http::AppState;
///     const NAME: &'static str = "template";
///     const PORT: u16 = 8005;
///     const VERSION: &'static str = env!("CARGO_PKG_VERSION");
///     const DESCRIPTION: &'static str = env!("CARGO_PKG_DESCRIPTION");
///     const DATABASE: Option<kit::Database> = Some(kit::Database { ... });
///     const USES: &'static [kit::Uses] = &[kit::Uses::Redis, kit::Uses::RabbitMq];
///
///     fn routes() -> OpenApiRouter<http::AppState> { http::router() }
///
///     async fn start(resources: &kit::Resources<Config>) -> anyhow::Result<kit::Started<http::AppState>> {
///         let state = http::AppState { db: resources.db.clone(), ... };
///         Ok(kit::Started::new(state))
///     }
/// }
/// ```
pub trait Service: Sized + 'static {
    /// The service's own settings: the `[app]` section, `<SERVICE>__APP__<KEY>`.
    type Config: AppSettings;
    /// What the handlers share, built once by [`Service::start`].
    type State: Clone + Send + Sync + 'static;

    /// URL prefix (`/api/<name>/v1`), database, environment prefix, scenario folder.
    const NAME: &'static str;
    /// Default local port.
    const PORT: u16;
    const VERSION: &'static str;
    const DESCRIPTION: &'static str;
    /// `None`: the service has no database (the broker); kit neither creates, connects to,
    /// migrates nor checks one.
    const DATABASE: Option<Database>;
    /// The servers the service talks to besides its database: in development their URLs
    /// default to the local servers; in production an unset one stops the start.
    const USES: &'static [Uses] = &[];

    /// Every route, generic over the state: the OpenAPI document is built from these alone.
    fn routes() -> OpenApiRouter<Self::State>;

    /// Builds the state and everything that runs beside the handlers. Runs in `serve` after
    /// migrations and seed data, before the first request is accepted; an error stops the
    /// start with its message.
    fn start(
        resources: &Resources<Self::Config>,
    ) -> impl Future<Output = anyhow::Result<Started<Self::State>>> + Send;

    /// Operational subcommands beyond the shared ones (e.g. `events parked`).
    fn commands() -> Vec<clap::Command> {
        Vec::new()
    }

    /// Runs the subcommand `name` (one of [`Service::commands`]); the database is connected and
    /// migrated.
    fn run_command(
        name: &str,
        matches: &clap::ArgMatches,
        resources: Resources<Self::Config>,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = (matches, resources);
        async move { anyhow::bail!("no such command: {name}") }
    }
}

/// What kit prepared for a service before its `start`: settings, the database pool, the
/// shutdown signal and the tracker of background work.
#[derive(Clone)]
pub struct Resources<A> {
    pub name: &'static str,
    pub settings: Arc<Settings<A>>,
    /// The service's database (for a service without one, a pool that never connects).
    pub db: PgPool,
    /// Cancelled when the service starts shutting down.
    pub shutdown: CancellationToken,
    /// Work started while serving (a mail sent after the response, a websocket connection):
    /// awaited, within the grace period, before the process exits.
    pub tasks: TaskTracker,
}

/// A background task: named, so an early end is logged with the name.
type Task = (&'static str, BoxFuture<'static, ()>);

/// What a service's `start` built: the handlers' state, what `/readyz` checks besides the
/// database, and the background tasks to run until shutdown.
pub struct Started<S> {
    state: S,
    checks: Vec<Dependency>,
    tasks: Vec<Task>,
}

impl<S> Started<S> {
    pub fn new(state: S) -> Self {
        Self {
            state,
            checks: Vec::new(),
            tasks: Vec::new(),
        }
    }

    /// `/readyz` answers 503 while `check` fails: the service cannot serve without it.
    pub fn ready_when(mut self, check: impl Check + 'static) -> Self {
        self.checks.push(Dependency::required(check));
        self
    }

    /// `/readyz` answers 200 `degraded` while `check` fails: the service still serves.
    pub fn degraded_without(mut self, check: impl Check + 'static) -> Self {
        self.checks.push(Dependency::degrading(check));
        self
    }

    /// A task that runs until the service shuts down (it watches `Resources::shutdown` and
    /// logs its own failures); ending before that is logged as a warning with `name`.
    pub fn task(
        mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.tasks.push((name, Box::pin(task)));
        self
    }

    /// Runs `wire` on this value: for crates that add their checks and tasks (`bus::wire`).
    pub fn with(self, wire: impl FnOnce(Self) -> anyhow::Result<Self>) -> anyhow::Result<Self> {
        wire(self)
    }

    pub fn state(&self) -> &S {
        &self.state
    }
}

/// A service ready to serve: database migrated and populated, state built, router assembled.
pub struct App {
    name: &'static str,
    router: Router,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    grace: Duration,
}

/// Settings from defaults, the optional file and the environment.
pub fn load_settings<S: Service>(
    file: Option<&Path>,
) -> Result<Settings<S::Config>, config::ConfigError> {
    config::load(S::NAME, S::PORT, S::USES, file)
}

/// Built-in defaults only, with no server URLs: tests start here and set what they use.
pub fn default_settings<S: Service>() -> Result<Settings<S::Config>, config::ConfigError> {
    config::defaults(S::NAME, S::PORT)
}

/// Connects (creating the database in development), migrates, loads the configured scenario,
/// runs the service's `start` and assembles the router. A bad scenario file or a state that
/// cannot be built fails here, so the service refuses to start and says why.
pub async fn build<S: Service>(settings: Settings<S::Config>) -> anyhow::Result<App> {
    let resources = match &S::DATABASE {
        None => {
            let pool = db::connect_lazy(&settings.database)?;
            resources::<S>(settings, pool)
        }
        Some(database) => {
            let pool =
                db::connect(&settings.database, settings.create_database_if_missing()).await?;
            if settings.database.migrate_on_start {
                migrate::<S>(&pool).await?;
            }
            if settings.apply_changelog_on_start() {
                apply_changelog::<S>(&pool, false).await?;
            } else {
                warn_of_pending_changes(&pool, database.changelog).await;
            }
            if let Some(scenario) = settings.populate.scenario.clone() {
                populate::<S>(&pool, &settings.populate.dir, &scenario).await?;
            }
            let resources = resources::<S>(settings, pool);
            if database.uses(&crate::idempotency::SCHEMA) {
                let (db, shutdown) = (resources.db.clone(), resources.shutdown.clone());
                resources
                    .tasks
                    .spawn(crate::idempotency::prune_periodically(db, shutdown));
            }
            resources
        }
    };
    let started = match S::start(&resources).await {
        Ok(started) => started,
        Err(err) => {
            resources.shutdown.cancel();
            return Err(err.context(format!("{} cannot start", S::NAME)));
        }
    };
    Ok(assemble::<S>(resources, started))
}

fn resources<S: Service>(settings: Settings<S::Config>, pool: PgPool) -> Resources<S::Config> {
    Resources {
        name: S::NAME,
        settings: Arc::new(settings),
        db: pool,
        shutdown: CancellationToken::new(),
        tasks: TaskTracker::new(),
    }
}

/// Applies the service's pending migrations: the shared tables it uses, then its own.
pub async fn migrate<S: Service>(pool: &PgPool) -> anyhow::Result<usize> {
    let Some(database) = &S::DATABASE else {
        return Ok(0);
    };
    let applied = db::migrate_service(pool, database.shared, database.migrations).await?;
    if applied > 0 {
        tracing::info!(applied, "applied migrations");
    }
    Ok(applied)
}

/// In production the deploy applies data changes; one it skipped is worth a warning.
async fn warn_of_pending_changes(pool: &PgPool, changes: &[Change]) {
    if changes.is_empty() {
        return;
    }
    match crate::changelog::status(pool, changes).await {
        Ok(entries) => {
            let pending: Vec<&str> = entries
                .iter()
                .filter(|e| e.state == crate::changelog::State::Pending)
                .map(|e| e.name.as_str())
                .collect();
            if !pending.is_empty() {
                tracing::warn!(
                    pending = %pending.join(", "),
                    "data changes are pending: the deploy applies them with `changelog apply`"
                );
            }
        }
        Err(err) => tracing::warn!(error = %format!("{err:#}"), "cannot read the data changelog"),
    }
}

/// Applies the service's pending data changes (see [`crate::changelog`]).
pub async fn apply_changelog<S: Service>(
    pool: &PgPool,
    dry_run: bool,
) -> Result<crate::changelog::Applied, ChangelogError> {
    let Some(database) = &S::DATABASE else {
        return Ok(Default::default());
    };
    crate::changelog::apply(pool, database.changelog, S::VERSION, dry_run).await
}

/// Loads `scenario` from `dir` in one transaction: all of it, or nothing.
pub async fn populate<S: Service>(
    pool: &PgPool,
    dir: &Path,
    scenario: &str,
) -> anyhow::Result<populator::Report> {
    let Some(populate) = S::DATABASE.as_ref().and_then(|d| d.populate) else {
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

/// The service's OpenAPI document, built from its routes alone (no state, no connection).
pub fn openapi<S: Service>() -> utoipa::openapi::OpenApi {
    let (_, mut document) = S::routes().split_for_parts();
    document.info.title = format!("Hatchery {} service", S::NAME);
    document.info.version = S::VERSION.to_owned();
    document.info.description = Some(S::DESCRIPTION.to_owned());
    crate::openapi::finish(&mut document);
    document
}

/// [`openapi`] as pretty JSON.
pub fn openapi_json<S: Service>() -> String {
    openapi::<S>()
        .to_pretty_json()
        .unwrap_or_else(|err| format!("{{\"error\": \"cannot render the document: {err}\"}}"))
}

fn assemble<S: Service>(resources: Resources<S::Config>, started: Started<S::State>) -> App {
    let Started {
        state,
        checks: extra_checks,
        tasks,
    } = started;
    let settings = resources.settings.clone();
    let (api, _) = S::routes().with_state(state).split_for_parts();
    let mut checks = Vec::new();
    if S::DATABASE.is_some() {
        checks.push(Dependency::required(health::Database(resources.db.clone())));
    }
    checks.extend(extra_checks);
    for (name, task) in tasks {
        let shutdown = resources.shutdown.clone();
        resources.tasks.spawn(async move {
            task.await;
            if !shutdown.is_cancelled() {
                tracing::warn!(task = name, "background task ended before shutdown");
            }
        });
    }
    let router = http::stack(
        api,
        http::Ops {
            checks,
            openapi_json: openapi_json::<S>(),
        },
        &settings.http,
    );
    App {
        name: S::NAME,
        router,
        shutdown: resources.shutdown,
        tasks: resources.tasks,
        grace: settings.http.shutdown_grace,
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
    /// One-off data changes (`changelog/`): what is applied, and applying the pending ones.
    Changelog {
        #[command(subcommand)]
        action: ChangelogAction,
    },
    /// Dump the database (pg_dump, custom format) with a manifest into DIR/<service>/.
    Backup {
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
    },
    /// Restore DIR/<service>/ into a new database (the configured one's name by default), then
    /// check every table against the manifest.
    Restore {
        #[arg(long, value_name = "DIR")]
        from: PathBuf,
        /// The database to restore into.
        #[arg(long, value_name = "NAME")]
        into: Option<String>,
        /// Replace an existing database of that name (dropped once the copy is verified).
        #[arg(long)]
        replace: bool,
    },
    /// Replace the personal data in a copy of the database (a restored backup).
    Anonymize {
        /// The copy to rewrite, on the configured server.
        #[arg(long, value_name = "NAME")]
        database: String,
        /// Allow rewriting the service's own configured database.
        #[arg(long)]
        i_mean_it: bool,
        /// Keys the hashes of values that belong to no platform user; give every service of
        /// one run the same (default: random).
        #[arg(long, env = "HATCHERY_ANONYMIZE_SALT", hide_env_values = true)]
        salt: Option<String>,
    },
    /// Print the OpenAPI document.
    Openapi,
}

#[derive(Subcommand)]
enum ChangelogAction {
    /// Every data change and whether it was applied (when, by which release, how long).
    Status,
    /// Apply the pending changes in order, each in a transaction of its own.
    Apply {
        /// Run the pending changes in one transaction and roll it back.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Exit code for a configuration that does not load or validate.
pub const EXIT_CONFIG: u8 = 2;

/// Runs a service binary: parses the command line, loads settings (exit code 2 on a bad one)
/// and runs the command on a Tokio runtime.
pub fn run<S: Service>() -> ExitCode {
    let extra = S::commands();
    let extra_names: Vec<String> = extra.iter().map(|c| c.get_name().to_owned()).collect();
    let matches = Cli::command()
        .name(S::NAME)
        .version(S::VERSION)
        .about(S::DESCRIPTION)
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
    if let Some(Cli {
        command: Some(Command::Openapi),
        ..
    }) = cli
    {
        // The document comes from the routes alone: no settings, no runtime, no connection.
        println!("{}", openapi_json::<S>());
        return ExitCode::SUCCESS;
    }
    let settings = match load_settings::<S>(config_file.as_deref()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{}: {err}", S::NAME);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{}: cannot start the async runtime: {err}", S::NAME);
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let environment = format!("{:?}", settings.environment).to_lowercase();
        let _telemetry = telemetry::init(S::NAME, &environment, &settings.log, &settings.sentry);
        let Some(cli) = cli else {
            return extra_command::<S>(settings, &matches).await;
        };
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => serve::<S>(settings).await,
            Command::Migrate => migrate_command::<S>(settings).await,
            Command::Populate { scenario } => populate_command::<S>(settings, &scenario).await,
            Command::Check => check::<S>(settings).await,
            Command::Changelog { action } => changelog_command::<S>(settings, action).await,
            Command::Backup { to } => backup_command::<S>(settings, &to).await,
            Command::Restore {
                from,
                into,
                replace,
            } => restore_command::<S>(settings, &from, into, replace).await,
            Command::Anonymize {
                database,
                i_mean_it,
                salt,
            } => anonymize_command::<S>(settings, &database, i_mean_it, salt).await,
            Command::Openapi => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let modified = err
                .downcast_ref::<ChangelogError>()
                .is_some_and(|e| matches!(e, ChangelogError::Modified { .. }));
            tracing::error!(error = %format!("{err:#}"), "{} failed", S::NAME);
            eprintln!("{}: error: {err:#}", S::NAME);
            if modified {
                ExitCode::from(crate::changelog::EXIT_MODIFIED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn serve<S: Service>(settings: Settings<S::Config>) -> anyhow::Result<()> {
    let started = Instant::now();
    let address = (settings.http.host.clone(), settings.http.port);
    let app = build::<S>(settings).await?;
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {}:{}", address.0, address.1))?;
    let local = listener.local_addr()?;
    tracing::info!(
        service = S::NAME,
        address = %format!("http://{local}"),
        startup_ms = started.elapsed().as_millis() as u64,
        "listening"
    );
    app.serve(listener, shutdown_signal()).await
}

async fn connect_and_migrate<S: Service>(settings: &Settings<S::Config>) -> anyhow::Result<PgPool> {
    if S::DATABASE.is_none() {
        return db::connect_lazy(&settings.database);
    }
    let pool = db::connect(&settings.database, settings.create_database_if_missing()).await?;
    migrate::<S>(&pool).await?;
    Ok(pool)
}

async fn extra_command<S: Service>(
    settings: Settings<S::Config>,
    matches: &clap::ArgMatches,
) -> anyhow::Result<()> {
    let Some((name, sub)) = matches.subcommand() else {
        anyhow::bail!("no such command");
    };
    let pool = connect_and_migrate::<S>(&settings).await?;
    S::run_command(name, sub, resources::<S>(settings, pool)).await
}

async fn migrate_command<S: Service>(settings: Settings<S::Config>) -> anyhow::Result<()> {
    let pool = db::connect(&settings.database, settings.create_database_if_missing()).await?;
    let applied = migrate::<S>(&pool).await?;
    println!("{}: {applied} migration(s) applied", S::NAME);
    Ok(())
}

async fn populate_command<S: Service>(
    settings: Settings<S::Config>,
    scenario: &str,
) -> anyhow::Result<()> {
    let pool = connect_and_migrate::<S>(&settings).await?;
    let report = populate::<S>(&pool, &settings.populate.dir, scenario).await?;
    println!("{}: scenario {scenario}: {report}", S::NAME);
    Ok(())
}

async fn changelog_command<S: Service>(
    settings: Settings<S::Config>,
    action: ChangelogAction,
) -> anyhow::Result<()> {
    let Some(database) = &S::DATABASE else {
        println!("{}: no database, no data changes", S::NAME);
        return Ok(());
    };
    let pool = connect_and_migrate::<S>(&settings).await?;
    match action {
        ChangelogAction::Status => {
            let entries = crate::changelog::status(&pool, database.changelog).await?;
            print!("{}", crate::changelog::render_status(&entries));
        }
        ChangelogAction::Apply { dry_run } => {
            let applied = apply_changelog::<S>(&pool, dry_run).await?;
            let verb = if dry_run { "would apply" } else { "applied" };
            for name in &applied.names {
                println!("{verb} {name}");
            }
            println!(
                "{}: {} data change(s) {verb}, {} row(s){}",
                S::NAME,
                applied.names.len(),
                applied.rows,
                if dry_run { " (rolled back)" } else { "" }
            );
        }
    }
    Ok(())
}

async fn backup_command<S: Service>(
    settings: Settings<S::Config>,
    to: &Path,
) -> anyhow::Result<()> {
    if S::DATABASE.is_none() {
        println!("{}: no database, nothing to back up", S::NAME);
        return Ok(());
    }
    let started = Instant::now();
    let dir = to.join(S::NAME);
    let manifest =
        crate::backup::backup(S::NAME, S::VERSION, settings.database.url.expose(), &dir).await?;
    println!(
        "{}: backed up database {} ({} table(s), {} row(s), {} bytes) into {} in {} ms",
        S::NAME,
        manifest.database,
        manifest.tables.len(),
        manifest.rows(),
        manifest.bytes,
        dir.join(&manifest.file).display(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// The database name of the service's configured URL.
fn configured_database<A>(settings: &Settings<A>) -> anyhow::Result<String> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(settings.database.url.expose())?;
    Ok(options
        .get_database()
        .context("database.url names no database")?
        .to_owned())
}

/// `settings`' database URL, naming database `name` instead.
fn url_of_database<A>(
    settings: &Settings<A>,
    name: &str,
) -> anyhow::Result<sqlx::postgres::PgConnectOptions> {
    use std::str::FromStr;
    Ok(sqlx::postgres::PgConnectOptions::from_str(settings.database.url.expose())?.database(name))
}

async fn restore_command<S: Service>(
    settings: Settings<S::Config>,
    from: &Path,
    into: Option<String>,
    replace: bool,
) -> anyhow::Result<()> {
    if S::DATABASE.is_none() {
        println!("{}: no database, nothing to restore", S::NAME);
        return Ok(());
    }
    let dir = from.join(S::NAME);
    let into = match into {
        Some(name) => name,
        None => configured_database(&settings)?,
    };
    let restored =
        crate::backup::restore(&dir, settings.database.url.expose(), &into, replace).await?;
    let manifest = &restored.manifest;
    println!(
        "{}: restored {} ({} table(s), {} row(s), every checksum as in the manifest) into database {}{}, taken {} by release {} at migration {}, in {} ms",
        S::NAME,
        dir.join(&manifest.file).display(),
        manifest.tables.len(),
        manifest.rows(),
        restored.database,
        if restored.replaced { " (replaced)" } else { "" },
        manifest.taken_at.format("%Y-%m-%dT%H:%M:%SZ"),
        manifest.release,
        manifest
            .migrations
            .get("_sqlx_migrations")
            .copied()
            .unwrap_or(0),
        restored.took.as_millis()
    );
    Ok(())
}

async fn anonymize_command<S: Service>(
    settings: Settings<S::Config>,
    database: &str,
    i_mean_it: bool,
    salt: Option<String>,
) -> anyhow::Result<()> {
    let Some(declared) = &S::DATABASE else {
        println!("{}: no database, nothing to anonymize", S::NAME);
        return Ok(());
    };
    if database == configured_database(&settings)? && !i_mean_it {
        anyhow::bail!(
            "{database} is this service's own database: anonymize a restored copy              (`restore --into NAME`), or pass --i-mean-it"
        );
    }
    use sqlx::ConnectOptions;
    let mut conn = url_of_database(&settings, database)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to database {database}"))?;
    let salt = salt.unwrap_or_else(crate::anonymize::random_salt);
    let report = crate::anonymize::anonymize(&mut conn, &declared.all_personal(), &salt).await?;
    println!("{}: anonymized database {database}: {report}", S::NAME);
    Ok(())
}

async fn check<S: Service>(settings: Settings<S::Config>) -> anyhow::Result<()> {
    println!(
        "{:<10} ok    {} environment, port {}",
        "config",
        format!("{:?}", settings.environment).to_lowercase(),
        settings.http.port
    );
    let mut checks: Vec<(Arc<dyn Check>, String)> = Vec::new();
    if S::DATABASE.is_some() {
        checks.push((
            Arc::new(health::Database(db::connect_lazy(&settings.database)?)),
            settings.database.url.redacted(),
        ));
    }
    for server in S::USES {
        let target = match server {
            Uses::Redis => settings.redis.url.as_ref(),
            Uses::RabbitMq => settings.amqp.url.as_ref(),
        };
        let Some(url) = target else { continue };
        let check: Arc<dyn Check> = match server {
            Uses::Redis => Arc::new(crate::redis::RedisCheck(crate::redis::connect(url)?)),
            Uses::RabbitMq => Arc::new(health::Amqp(url.clone())),
        };
        checks.push((check, url.redacted()));
    }
    let dependencies: Vec<Dependency> = checks
        .iter()
        .map(|(check, _)| Dependency {
            check: check.clone(),
            required: true,
        })
        .collect();
    let readiness = health::probe(&dependencies).await;
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
    if readiness.all_up() {
        Ok(())
    } else {
        anyhow::bail!("some dependencies are down")
    }
}
