//! The service's HTTP API: one module per resource, each with its own `router()`, all under
//! `/api/auth/v1`, plus the key set at `/.well-known/jwks.json`.

mod email;
mod extract;
mod jwks;
mod me;
mod password;
mod schemas;
mod session;
mod signup;
mod tickets;
mod token;
mod users;

use std::sync::Arc;

use axum::extract::FromRef;
use identity::Identity;
use kit::{Parts, Settings};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::keys::KeyRing;
use crate::passwords::Hasher;
use crate::ratelimit::RateLimiter;
use crate::tickets::Tickets;

pub use extract::{Admin, Client, SignedIn};
pub use users::User;

/// What handlers share. Built by the `start` hook (which owns the background tasks it needs)
/// and handed to [`router`] through `Parts::extensions`.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub settings: Arc<Settings<Config>>,
    /// Verifies the tokens this service signed, with revocation checked in Redis, exactly as
    /// every other service does.
    pub identity: Identity,
    pub keys: KeyRing,
    pub hasher: Hasher,
    pub redis: ConnectionManager,
    pub limits: RateLimiter,
    pub tickets: Tickets,
    /// Work finished after the response (password-reset and verification mails), awaited at
    /// shutdown.
    pub tasks: TaskTracker,
}

impl FromRef<AppState> for Identity {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

impl AppState {
    /// The state for `parts`, verifying with `keys` and talking to Redis at `redis.url`.
    pub fn new(parts: &Parts<Config>, keys: KeyRing) -> anyhow::Result<AppState> {
        let settings = parts.settings.clone();
        let app = &settings.app;
        let url = settings
            .redis
            .url
            .clone()
            .unwrap_or_else(|| kit::SecretUrl::new("redis://127.0.0.1:6379"));
        let client = redis::Client::open(url.expose())
            .map_err(|err| anyhow::anyhow!("redis.url {}: {err}", url.redacted()))?;
        let redis_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        let redis = ConnectionManager::new_lazy_with_config(client, redis_config)
            .map_err(|err| anyhow::anyhow!("redis.url {}: {err}", url.redacted()))?;
        let lookup = keys.clone();
        let verifier =
            identity::Verifier::with_key_lookup(move |kid| lookup.public_key(kid), &settings.auth);
        let revocations = identity::Revocations::new(
            &url,
            settings.auth.revocation_timeout,
            settings.auth.revocation_check,
        )?
        .with_prefix(settings.auth.revocation_prefix.clone());
        let identity = Identity::with_parts(verifier, Some(revocations), parts.db.clone());
        Ok(AppState {
            db: parts.db.clone(),
            identity,
            keys,
            hasher: Hasher::new(app.argon2, app.hashing_concurrency)?,
            limits: RateLimiter::new(redis.clone(), &app.redis_prefix, app.rate_limits.enabled),
            tickets: Tickets::new(redis.clone(), &app.redis_prefix),
            redis,
            tasks: parts.tasks.clone(),
            settings,
        })
    }
}

/// Every route, with the state `start` built (or, for `openapi`, which runs no `start`, an
/// idle one that never serves).
pub fn router(parts: &Parts<Config>) -> OpenApiRouter {
    let started = parts
        .extensions
        .lock()
        .ok()
        .and_then(|extensions| extensions.get::<AppState>().cloned());
    let state = match started {
        Some(state) => state,
        None => {
            let keep = parts.settings.app.longest_token_ttl();
            match AppState::new(parts, KeyRing::empty(keep)) {
                Ok(state) => state,
                Err(err) => {
                    tracing::error!(error = %format!("{err:#}"), "cannot build the auth service's state");
                    return OpenApiRouter::new();
                }
            }
        }
    };
    let api = OpenApiRouter::new()
        .merge(signup::router())
        .merge(token::router())
        .merge(session::router())
        .merge(me::router())
        .merge(email::router())
        .merge(password::router())
        .merge(users::router())
        .merge(jwks::api_router())
        .merge(tickets::router());
    OpenApiRouter::with_openapi(token::document())
        .nest("/api/auth/v1", api)
        .merge(jwks::well_known_router())
        .with_state(state)
}
