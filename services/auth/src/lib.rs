//! The `auth` service: users, passwords, sessions, signing keys and service clients. It issues
//! the platform's access tokens (EdDSA JWTs, verified by every service with the `identity`
//! crate against this service's JWKS) and publishes `auth.*` events.
//!
//! See `docs/auth.md` for the API, the token format and operations.

pub mod accounts;
pub mod commands;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod kek;
pub mod keys;
pub mod passwords;
pub mod populate;
pub mod ratelimit;
pub mod sessions;
pub mod store;
pub mod tickets;

use anyhow::Context;
use kit::{Database, Personal, Replace, Resources, Started, Uses};
use sqlx::migrate::Migrator;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::http::AppState;
use crate::keys::KeyRing;

/// The service, handed to `kit::run` by `main.rs` and to `testkit` by tests.
pub struct Auth;

static MIGRATOR: Migrator = sqlx::migrate!();

impl kit::Service for Auth {
    type Config = Config;
    type State = AppState;

    const NAME: &'static str = "auth";
    const PORT: u16 = 8001;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = env!("CARGO_PKG_DESCRIPTION");
    const DATABASE: Option<Database> = Some(Database {
        migrations: &MIGRATOR,
        shared: &[&identity::SCHEMA, &kit::idempotency::SCHEMA, &bus::SCHEMA],
        populate: Some(populate::load),
        changelog: &[],
        personal: &[
            // No credential survives: accounts have no password (set one through a reset),
            // sessions, links and signing keys are gone (a new key is made at start), service
            // clients need new secrets (`auth clients`).
            Personal::column("users", "password_hash", Replace::Null),
            Personal::column("sessions", "ip", Replace::Ip),
            Personal::column("sessions", "user_agent", Replace::Text),
            Personal::clear("refresh_tokens"),
            Personal::clear("one_time_tokens"),
            Personal::clear("signing_keys"),
            Personal::column("clients", "secret_hash", Replace::Secret),
            Personal::column("audit_log", "ip", Replace::Ip),
            Personal::column("audit_log", "detail", Replace::Json),
        ],
    });
    const USES: &'static [Uses] = &[Uses::Redis, Uses::RabbitMq];

    fn routes() -> OpenApiRouter<AppState> {
        http::router()
    }

    /// Checks the settings, seals signing keys stored in clear, creates the first signing key
    /// if there is none, loads the keys (and reloads them periodically), builds the handlers'
    /// state, and runs the outbox relay. A key-encryption key that opens no signing key stops
    /// the start, naming the one needed.
    async fn start(resources: &Resources<Config>) -> anyhow::Result<Started<AppState>> {
        let settings = &resources.settings;
        settings
            .app
            .validate()
            .map_err(|why| anyhow::anyhow!("invalid configuration: {why}"))?;
        let keks = kek::Keks::from_settings(settings)?;
        let sealed = keys::seal(&resources.db, &keks, false).await?;
        if sealed.from_clear > 0 {
            tracing::info!(
                keys = sealed.from_clear,
                kek = keks.current().id(),
                "sealed the signing keys stored in clear"
            );
        }
        keys::ensure_active(&resources.db, &keks).await?;
        let ring = KeyRing::empty(keep_retired_keys(settings), keks);
        ring.reload(&resources.db)
            .await
            .context("the signing keys cannot be loaded")?;
        let state = AppState::new(resources, ring.clone())?;
        let revocations = state.identity.revocation_check();
        let account_changes = accounts::listen(
            &resources.db,
            state.accounts.clone(),
            resources.shutdown.clone(),
        )
        .await
        .context("cannot listen for account changes")?;
        let mut started = Started::new(state)
            .task("account change listener", account_changes)
            .task(
                "signing key reload",
                ring.keep_fresh(
                    resources.db.clone(),
                    settings.app.key_reload,
                    resources.shutdown.clone(),
                ),
            );
        if let Some(check) = revocations {
            started = started.degraded_without(check);
        }
        started.with(bus::wire(resources, bus::Consumers::new()))
    }

    fn commands() -> Vec<kit::clap::Command> {
        commands::define()
    }

    async fn run_command(
        name: &str,
        matches: &kit::clap::ArgMatches,
        resources: Resources<Config>,
    ) -> anyhow::Result<()> {
        commands::run(name, matches, resources).await
    }
}

/// How long a retired signing key stays published: until every token it signed has expired
/// (plus the verifiers' clock leeway).
pub fn keep_retired_keys(settings: &kit::Settings<Config>) -> std::time::Duration {
    settings.app.longest_token_ttl() + settings.auth.leeway
}
