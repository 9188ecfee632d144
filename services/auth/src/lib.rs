//! The `auth` service: users, passwords, sessions, signing keys and service clients. It issues
//! the platform's access tokens (EdDSA JWTs, verified by every service with the `identity`
//! crate against this service's JWKS) and publishes `auth.*` events.
//!
//! See `docs/auth.md` for the API, the token format and operations.

pub mod commands;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod keys;
pub mod passwords;
pub mod populate;
pub mod ratelimit;
pub mod sessions;
pub mod store;
pub mod tickets;

use std::sync::Arc;

use anyhow::Context;
use futures_util::future::BoxFuture;
use kit::Parts;
use kit::health::Check;
use sqlx::migrate::Migrator;

use crate::config::Config;
use crate::keys::KeyRing;

/// The service name: URL prefix, database, environment prefix, scenario folder.
pub const NAME: &str = "auth";
/// Default local port.
pub const PORT: u16 = 8001;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The service description handed to `kit::run` by `main.rs` and to `testkit` by tests.
pub fn service() -> kit::Service<Config> {
    kit::Service {
        name: NAME,
        port: PORT,
        version: env!("CARGO_PKG_VERSION"),
        description: env!("CARGO_PKG_DESCRIPTION"),
        migrator: Some(&MIGRATOR),
        routes: http::router,
        populate: Some(populate::load),
        start: Some(start),
        commands: Some(commands::commands()),
    }
}

/// How long a retired signing key stays published: until every token it signed has expired
/// (plus the verifiers' clock leeway).
pub fn keep_retired_keys(settings: &kit::Settings<Config>) -> std::time::Duration {
    settings.app.longest_token_ttl() + settings.auth.leeway
}

/// The `start` hook: checks the settings, creates the first signing key if there is none,
/// loads the keys (and reloads them periodically), builds the handlers' state, and starts the
/// outbox relay.
fn start(parts: &Parts<Config>) -> BoxFuture<'_, anyhow::Result<Vec<Arc<dyn Check>>>> {
    Box::pin(async move {
        let settings = &parts.settings;
        settings
            .app
            .validate()
            .map_err(|why| anyhow::anyhow!("invalid configuration: {why}"))?;
        settings.redis.url.as_ref().context(
            "redis.url (AUTH__REDIS__URL or REDIS_URL) is not set: auth keeps session revocations, rate limits and tickets in Redis",
        )?;
        keys::ensure_active(&parts.db).await?;
        let ring = KeyRing::empty(keep_retired_keys(settings));
        ring.reload(&parts.db).await?;
        parts.tasks.spawn(ring.clone().keep_fresh(
            parts.db.clone(),
            settings.app.key_reload,
            parts.shutdown.clone(),
        ));
        let state = http::AppState::new(parts, ring)?;
        parts
            .extensions
            .lock()
            .map_err(|_| anyhow::anyhow!("extensions lock poisoned"))?
            .insert(state);
        bus::start(parts, None).await
    })
}
