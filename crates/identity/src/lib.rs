//! Who is calling: the platform's one user crate.
//!
//! - [`Claims`]: what an access token says (user tokens and service tokens).
//! - [`Verifier`]: checks a token — EdDSA (Ed25519) signature only, key from the auth
//!   service's JWKS (cached, refetched on an unknown `kid` at most once per
//!   `auth.jwks_min_refetch`) or a configured public key; `iss`, `aud`, `exp`/`nbf` with
//!   `auth.leeway`.
//! - [`revocation`]: ended sessions in Redis, checked on every authenticated request; the key
//!   layout the auth service writes (with [`revocation::revoke_session`] and
//!   [`revocation::revoke_subject_before`]).
//! - Extractors: [`CurrentUser`], [`MaybeUser`] (or `Option<CurrentUser>`),
//!   [`RequireRole<Admin>`](RequireRole), [`ServiceCaller`].
//! - [`users`]: the service's local copy of users (created on first sight from token claims,
//!   kept current from `auth.user.*` events).
//! - [`keys`]: public keys, JWK/JWKS shapes, and the [`keys::SigningKey`] the auth service
//!   signs with.
//!
//! `docs/identity.md` describes the token format, the rules and the Redis layout for people.
//!
//! # Wiring a service
//!
//! ```ignore
//! #[derive(Clone)]
//! pub struct AppState { pub db: PgPool, pub identity: identity::Identity }
//!
//! impl axum::extract::FromRef<AppState> for identity::Identity {
//!     fn from_ref(state: &AppState) -> Self { state.identity.clone() }
//! }
//!
//! // in `kit::Service::start`:
//! let identity = identity::Identity::from_resources(resources)?;
//! let started = kit::Started::new(AppState { db: resources.db.clone(), identity: identity.clone() });
//! let started = match identity.revocation_check() { Some(check) => started.degraded_without(check), None => started };
//!
//! async fn list(State(s): State<AppState>, user: CurrentUser) -> ApiResult<...> {
//!     // user.id is the local key; user.uuid the platform id; user.is_admin() ...
//! }
//! ```
//!
//! A service that keeps local users lists [`SCHEMA`] in its `kit::Database::shared`; one that
//! calls another service uses [`ServiceClient`].
//!
//! Settings come from kit's `auth` section (`kit::config::AuthSettings`) and `redis.url`.

pub mod claims;
pub mod client;
mod error;
pub mod events;
mod extract;
pub mod keys;
pub mod revocation;
pub mod users;
mod verify;

use std::sync::Arc;

use kit::config::{AuthSettings, SecretUrl};
use sqlx::PgPool;

pub use claims::{ADMIN_ROLE, Claims, SERVICE_ROLE};
pub use client::{ClientCredentials, ServiceClient};
pub use error::{AuthError, Invalid};
pub use extract::{
    Admin, Authenticated, CurrentUser, MaybeUser, RequireRole, Role, ServiceCaller, bearer_token,
    refuse_service_tokens, refuse_unusable_account,
};
pub use keys::{Jwk, JwkSet, PublicKey, SigningKey};
pub use revocation::Revocations;
pub use users::LocalUser;
pub use verify::{KeySource, Verifier};

/// The `users` table (the local copy of platform users), defined once for every service.
pub static SCHEMA: kit::SharedSchema = kit::SharedSchema {
    owner: "identity",
    migrator: &MIGRATOR,
    replaces: &["users"],
    // The same user gets the same fake address and name in every service (keyed by the UUID).
    personal: &[
        kit::Personal::column("users", "email", kit::Replace::Email { user: Some("uuid") }),
        kit::Personal::column("users", "name", kit::Replace::Name { user: Some("uuid") }),
    ],
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Everything a service needs to authenticate requests: the verifier, the revocation check
/// and the user store. Cheap to clone; put one in the router state.
#[derive(Clone)]
pub struct Identity(Arc<Inner>);

struct Inner {
    verifier: Verifier,
    revocations: Option<Revocations>,
    db: PgPool,
}

impl Identity {
    /// From the `auth` settings, Redis (`None` = revocation is not checked) and the service's
    /// database (its `users` table).
    pub fn new(auth: &AuthSettings, redis: Option<&SecretUrl>, db: PgPool) -> anyhow::Result<Self> {
        let verifier = Verifier::new(auth)?;
        let revocations = redis
            .map(|url| {
                Revocations::new(url, auth.revocation_timeout, auth.revocation_check)
                    .map(|r| r.with_prefix(auth.revocation_prefix.clone()))
            })
            .transpose()?;
        Ok(Self::with_parts(verifier, revocations, db))
    }

    /// From a verifier and revocation check built by the caller.
    pub fn with_parts(verifier: Verifier, revocations: Option<Revocations>, db: PgPool) -> Self {
        Self(Arc::new(Inner {
            verifier,
            revocations,
            db,
        }))
    }

    /// From what kit prepared for a service: settings `auth` and `redis.url`, the database.
    /// Without `redis.url` (only possible outside production: a service using Redis must have
    /// it there) revoked sessions are not refused, and a warning says so.
    pub fn from_resources<A>(resources: &kit::Resources<A>) -> anyhow::Result<Self> {
        let settings = &resources.settings;
        if settings.redis.url.is_none() {
            tracing::warn!(
                "redis.url is not set: revoked sessions are NOT refused by this service"
            );
        }
        Self::new(
            &settings.auth,
            settings.redis.url.as_ref(),
            resources.db.clone(),
        )
    }

    /// Readiness of the revocation store, when revocation is checked: a service answers
    /// authenticated requests 503 while it is unreachable (fail-closed) but serves the rest.
    pub fn revocation_check(&self) -> Option<kit::redis::RedisCheck> {
        self.0.revocations.as_ref().map(Revocations::readiness)
    }

    pub fn verifier(&self) -> &Verifier {
        &self.0.verifier
    }

    /// Verifies `token` and checks that its session was not revoked.
    pub async fn authenticate(&self, token: &str) -> Result<Claims, AuthError> {
        let claims = self.0.verifier.verify(token).await?;
        if let Some(revocations) = &self.0.revocations {
            revocations.check(&claims).await?;
        }
        Ok(claims)
    }

    /// The local user row for a verified user token (created on first sight, kept current).
    pub async fn sync_user(&self, claims: &Claims) -> sqlx::Result<LocalUser> {
        let mut conn = self.0.db.acquire().await?;
        users::upsert_from_claims(&mut conn, claims).await
    }
}
