//! The `template` service: notes owned by users. It exists to show, compiled and tested, the
//! shape every Hatchery service has; `cargo xtask new-service <name>` copies it.

pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod populate;
pub mod store;

use sqlx::migrate::Migrator;

/// The service name: URL prefix, database, environment prefix, scenario folder.
pub const NAME: &str = "template";
/// Default local port.
pub const PORT: u16 = 8005;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The service description handed to `kit::run` by `main.rs` and to `testkit` by tests.
pub fn service() -> kit::Service<config::Config> {
    kit::Service {
        name: NAME,
        port: PORT,
        version: env!("CARGO_PKG_VERSION"),
        description: env!("CARGO_PKG_DESCRIPTION"),
        migrator: Some(&MIGRATOR),
        routes: http::router,
        populate: Some(populate::load),
        start: Some(events::start),
        commands: Some(events::commands()),
    }
}
