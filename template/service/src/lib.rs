//! The `template` service: notes owned by users. It exists to show, compiled and tested, the
//! shape every Hatchery service has; `cargo xtask new-service <name>` copies it.
//!
//! - `lib.rs` (here): the service — name, port, database, what it uses, routes, and `start`,
//!   which builds the handlers' state and everything that runs beside them;
//! - `config.rs`: the service's own settings; `domain.rs`: validated types and rules, no I/O;
//! - `http/`: one module per resource; `store.rs`: queries; `events.rs`: what it publishes and
//!   consumes; `populate.rs`: seed data.
//!
//! Logic that is neither HTTP nor SQL (a capacity rule, a delivery loop) gets a module of its
//! own that takes the narrow things it needs (a pool, a client), never the HTTP state.

pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod populate;
pub mod store;

use kit::{Database, Personal, Replace, Resources, Started, Uses};
use sqlx::migrate::Migrator;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::http::AppState;

/// The service, handed to `kit::run` by `main.rs` and to `testkit` by tests.
pub struct Template;

static MIGRATOR: Migrator = sqlx::migrate!();

impl kit::Service for Template {
    type Config = Config;
    type State = AppState;

    const NAME: &'static str = "template";
    const PORT: u16 = 8005;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = env!("CARGO_PKG_DESCRIPTION");
    const DATABASE: Option<Database> = Some(Database {
        migrations: &MIGRATOR,
        shared: &[&identity::SCHEMA, &kit::idempotency::SCHEMA, &bus::SCHEMA],
        populate: Some(populate::load),
        changelog: kit::changelog!["0001_trim_note_titles.sql"],
        personal: &[
            Personal::column("notes", "title", Replace::Text),
            Personal::column("notes", "body", Replace::Text),
        ],
    });
    const USES: &'static [Uses] = &[Uses::Redis, Uses::RabbitMq];

    fn routes() -> OpenApiRouter<AppState> {
        http::router()
    }

    /// The handlers' state (token verification with revocation in Redis, the database), the
    /// outbox relay and the event consumer.
    async fn start(resources: &Resources<Config>) -> anyhow::Result<Started<AppState>> {
        let identity = identity::Identity::from_resources(resources)?;
        let mut started = Started::new(AppState {
            db: resources.db.clone(),
            settings: resources.settings.clone(),
            identity: identity.clone(),
        });
        if let Some(revocations) = identity.revocation_check() {
            started = started.degraded_without(revocations);
        }
        started.with(bus::wire(resources, events::consumers()))
    }

    fn commands() -> Vec<kit::clap::Command> {
        bus::ops::define()
    }

    async fn run_command(
        name: &str,
        matches: &kit::clap::ArgMatches,
        resources: Resources<Config>,
    ) -> anyhow::Result<()> {
        bus::ops::run(name, matches, resources).await
    }
}
