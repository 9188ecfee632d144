//! The service's HTTP API: one module per resource, each with its own `router()`, all under
//! `/api/auth/v1`, plus the key set at `/.well-known/jwks.json`.

mod audit;
mod email;
mod extract;
mod jwks;
mod me;
mod metadata;
mod password;
mod schemas;
mod session;
mod signup;
mod tickets;
mod token;
mod users;

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRef;
use identity::Identity;
use kit::{ApiError, Resources, Settings};
use redis::aio::ConnectionManager;
use sqlx::PgPool;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;

use crate::accounts::Accounts;
use crate::config::Config;
use crate::keys::KeyRing;
use crate::passwords::{Hasher, Pool};
use crate::ratelimit::RateLimiter;
use crate::sessions::Sessions;
use crate::tickets::Tickets;

pub use extract::{Admin, Client, SignedIn};
pub use users::User;

/// What handlers share, built once by the service's `start`. Every extractor takes its own
/// copy of the state, so a copy is one shared pointer.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    pub db: PgPool,
    /// The signed-in account, as it is now, for every authenticated request.
    pub accounts: Arc<Accounts>,
    pub settings: Arc<Settings<Config>>,
    /// Verifies the tokens this service signed, with revocation checked in Redis, exactly as
    /// every other service does.
    pub identity: Identity,
    pub keys: KeyRing,
    pub hasher: Hasher,
    pub redis: ConnectionManager,
    pub limits: RateLimiter,
    pub tickets: Tickets,
    pub sessions: Sessions,
    /// Work finished after the response (password-reset and verification mails), awaited at
    /// shutdown.
    pub tasks: TaskTracker,
}

/// Connections kept for reading the signed-in account (at most half the pool's).
const ACCOUNT_READ_CONNECTIONS: u32 = 4;

impl FromRef<AppState> for Identity {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

impl AppState {
    /// The state for the service's resources, signing and verifying with `keys`.
    pub fn new(resources: &Resources<Config>, keys: KeyRing) -> anyhow::Result<AppState> {
        let settings = resources.settings.clone();
        let app = &settings.app;
        let url = settings.redis.url.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "redis.url (AUTH__REDIS__URL or REDIS_URL) is not set: auth keeps session revocations, rate limits and tickets in Redis"
            )
        })?;
        let redis = kit::redis::connect(url)?;
        let verifier = identity::Verifier::with_key_source(Arc::new(keys.clone()), &settings.auth);
        let revocations = identity::Revocations::new(
            url,
            settings.auth.revocation_timeout,
            settings.auth.revocation_check,
        )?
        .with_prefix(settings.auth.revocation_prefix.clone());
        let identity = Identity::with_parts(verifier, Some(revocations), resources.db.clone());
        Ok(AppState(Arc::new(Shared {
            db: resources.db.clone(),
            accounts: Arc::new(Accounts::new(
                resources.db.clone(),
                (settings.database.max_connections / 2).min(ACCOUNT_READ_CONNECTIONS) as usize,
                app.account_cache_ttl,
            )),
            identity,
            sessions: Sessions::new(settings.clone(), keys.clone(), redis.clone()),
            keys,
            hasher: Hasher::new(
                app.argon2,
                Pool {
                    workers: app.hashing_concurrency,
                    nice: app.hashing_nice,
                },
            )?,
            limits: RateLimiter::new(redis.clone(), &app.redis_prefix, app.rate_limits.enabled),
            tickets: Tickets::new(redis.clone(), &app.redis_prefix),
            redis,
            tasks: resources.tasks.clone(),
            settings,
        })))
    }

    /// Runs `work` on the service's task tracker (awaited at shutdown) with the current request
    /// id, after the response has been sent: requests about existing and unknown accounts are then
    /// answered in the same time.
    pub fn spawn_after_response<F, Fut>(&self, what: &'static str, work: F)
    where
        F: FnOnce(AppState) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let request_id = kit::request_id::current().unwrap_or_default();
        let task_state = self.clone();
        let span = tracing::Span::current();
        self.tasks.spawn(tracing::Instrument::instrument(
            kit::request_id::scope(request_id, async move {
                if let Err(err) = work(task_state).await {
                    tracing::error!(error = %format!("{err:#}"), what, "background work failed");
                }
            }),
            span,
        ));
    }
}

/// The answer to a token that is unknown, used, expired or for another purpose.
pub fn invalid_token() -> ApiError {
    ApiError::unprocessable(
        "invalid_token",
        "This link is invalid, was already used or has expired.",
    )
}

/// Every route: the API under `/api/auth/v1`, the key set at `/.well-known/jwks.json` and the
/// OAuth metadata at `/.well-known/oauth-authorization-server`.
pub fn router() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .merge(signup::router())
        .merge(token::router())
        .merge(session::router())
        .merge(me::router())
        .merge(email::router())
        .merge(password::router())
        .merge(users::router())
        .merge(audit::router())
        .merge(jwks::api_router())
        .merge(tickets::router());
    OpenApiRouter::with_openapi(token::document())
        .nest("/api/auth/v1", api)
        .merge(jwks::well_known_router())
        .merge(metadata::well_known_router())
}
