//! Sessions and the tokens issued for them: a login starts a session with a refresh token;
//! each refresh rotates it; logout, password changes, reuse of a rotated token, deactivation
//! and deletion end sessions. Ending a session is written to the database (so it cannot be
//! refreshed) and to Redis (so every service refuses its access tokens at once).

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{OpaqueToken, Scopes, TokenDigest};
use std::sync::Arc;

use kit::Settings;
use redis::aio::ConnectionManager;
use sqlx::PgPool;

use crate::config::Config;
use crate::keys::KeyRing;
use crate::store::clients::ClientRow;
use crate::store::sessions::{self as store, NewSession};
use crate::store::users::UserRow;

/// What the token endpoint answers.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: Option<OpaqueToken>,
    pub scope: Option<String>,
}

fn unix_now() -> i64 {
    Utc::now().timestamp()
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// The claims of a user token as signed. Every claim is always written (`roles: []`,
/// `email_verified: false`), so clients reading a token see the whole shape; verifiers read
/// them as `identity::Claims`.
#[derive(Serialize)]
struct UserClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: Uuid,
    sid: Uuid,
    jti: Uuid,
    iat: i64,
    exp: i64,
    roles: &'a [String],
    email: &'a str,
    name: &'a str,
    email_verified: bool,
}

/// The claims of a service (client-credentials) token: no session, no person.
#[derive(Serialize)]
struct ServiceClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: Uuid,
    jti: Uuid,
    iat: i64,
    exp: i64,
    roles: [&'a str; 1],
    scope: &'a str,
}

/// Where a login came from (kept on the session).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Refresh {
    /// A new access token and the next refresh token.
    Issued { issued: Issued, user: Uuid },
    /// Not a usable refresh token (unknown, expired, session ended, user gone).
    Refused(&'static str),
    /// A rotated token presented after the grace period: the session has been ended.
    Reused { session: Uuid, user: Uuid },
}

/// Issues and ends sessions and tokens: what the token endpoint, logout, password changes and
/// the admin API share. Takes the settings, the signing keys and Redis (where revocations are
/// written), never the HTTP state, so a command or a consumer can end a session too.
#[derive(Clone)]
pub struct Sessions {
    settings: Arc<Settings<Config>>,
    keys: KeyRing,
    redis: ConnectionManager,
}

impl Sessions {
    pub fn new(settings: Arc<Settings<Config>>, keys: KeyRing, redis: ConnectionManager) -> Self {
        Self {
            settings,
            keys,
            redis,
        }
    }

    /// A signed access token for `user` in session `sid`.
    pub fn user_token(&self, user: &UserRow, sid: Uuid) -> anyhow::Result<String> {
        let auth = &self.settings.auth;
        let iat = unix_now();
        let claims = UserClaims {
            iss: &auth.issuer,
            aud: &auth.audience,
            sub: user.uuid,
            sid,
            jti: Uuid::now_v7(),
            iat,
            exp: iat.saturating_add(seconds(self.settings.app.access_token_ttl)),
            roles: &user.roles,
            email: &user.email,
            name: &user.name,
            email_verified: user.email_verified(),
        };
        self.sign(&claims)
    }

    /// A signed service token for `client` with `scopes`.
    pub fn service_token(&self, client: &ClientRow, scopes: &Scopes) -> anyhow::Result<String> {
        let auth = &self.settings.auth;
        let iat = unix_now();
        let scope = scopes.joined();
        let claims = ServiceClaims {
            iss: &auth.issuer,
            aud: &auth.audience,
            sub: client.uuid,
            jti: Uuid::now_v7(),
            iat,
            exp: iat.saturating_add(seconds(self.settings.app.service_token_ttl)),
            roles: [identity::SERVICE_ROLE],
            scope: &scope,
        };
        self.sign(&claims)
    }

    fn sign(&self, claims: &impl Serialize) -> anyhow::Result<String> {
        let keys = self.keys.current();
        let key = keys
            .active()
            .context("no active signing key (the service has not started)")?;
        key.sign(claims)
    }

    /// Starts a session for `user` inside `tx`: the session row, its first refresh token and an
    /// access token.
    pub async fn start(
        &self,
        tx: &mut PgConnection,
        user: &UserRow,
        origin: &Origin,
    ) -> anyhow::Result<Issued> {
        let app = &self.settings.app;
        let sid = Uuid::now_v7();
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(app.session_max_age)?;
        store::insert(
            &mut *tx,
            &NewSession {
                id: sid,
                user_id: user.id,
                expires_at,
                ip: origin.ip.as_deref(),
                user_agent: origin.user_agent.as_deref(),
            },
        )
        .await
        .context("creating a session")?;
        let refresh = self.new_refresh_token(tx, sid, expires_at).await?;
        Ok(Issued {
            access_token: self.user_token(user, sid)?,
            expires_in: app.access_token_ttl.as_secs(),
            refresh_token: Some(refresh),
            scope: None,
        })
    }

    /// A new refresh token for session `sid`, expiring after `refresh_token_ttl` but never after
    /// the session.
    async fn new_refresh_token(
        &self,
        tx: &mut PgConnection,
        sid: Uuid,
        session_expires_at: chrono::DateTime<Utc>,
    ) -> anyhow::Result<OpaqueToken> {
        let token = OpaqueToken::generate()?;
        let expires_at = (Utc::now()
            + chrono::Duration::from_std(self.settings.app.refresh_token_ttl)?)
        .min(session_expires_at);
        store::insert_refresh_token(&mut *tx, sid, &token.digest(), expires_at)
            .await
            .context("storing a refresh token")?;
        Ok(token)
    }

    /// Exchanges a presented refresh token, rotating it. A token already rotated within
    /// `refresh_reuse_grace` (a client refreshing twice at once) is exchanged again; after that,
    /// presenting it ends the session: either the token was stolen and replayed, or the legitimate
    /// client already moved on, and both parties holding it must sign in again.
    pub async fn refresh(&self, db: &PgPool, presented: &str) -> anyhow::Result<Refresh> {
        let mut tx = db.begin().await?;
        let Some(found) = store::lock_refresh_token(&mut *tx, &TokenDigest::of(presented)).await?
        else {
            return Ok(Refresh::Refused("The refresh token is invalid."));
        };
        let now = Utc::now();
        if found.session_revoked_at.is_some() {
            return Ok(Refresh::Refused("The session has ended; sign in again."));
        }
        if found.session_expires_at <= now || found.token_expires_at <= now {
            return Ok(Refresh::Refused(
                "The refresh token has expired; sign in again.",
            ));
        }
        let Some(user) = crate::store::users::lock_by_id(&mut *tx, found.user_id).await? else {
            return Ok(Refresh::Refused("The refresh token is invalid."));
        };
        if let Some(rotated_at) = found.rotated_at {
            let grace = chrono::Duration::from_std(self.settings.app.refresh_reuse_grace)?;
            if now - rotated_at > grace {
                self.end_session(&mut tx, found.session_id, "refresh_token_reused")
                    .await?;
                crate::store::audit::record(
                    &mut *tx,
                    &crate::store::audit::Entry::failure(
                        "refresh",
                        "refresh_token_reused",
                        Some(user.uuid),
                    )
                    .with_detail(serde_json::json!({"session": found.session_id})),
                )
                .await?;
                tx.commit().await?;
                return Ok(Refresh::Reused {
                    session: found.session_id,
                    user: user.uuid,
                });
            }
        }
        if user.is_deleted() || !user.is_active {
            return Ok(Refresh::Refused("The account is no longer active."));
        }
        store::mark_rotated(&mut *tx, found.token_id).await?;
        store::touch_refreshed(&mut *tx, found.session_id).await?;
        let next = self
            .new_refresh_token(&mut tx, found.session_id, found.session_expires_at)
            .await?;
        let access_token = self.user_token(&user, found.session_id)?;
        tx.commit().await?;
        Ok(Refresh::Issued {
            issued: Issued {
                access_token,
                expires_in: self.settings.app.access_token_ttl.as_secs(),
                refresh_token: Some(next),
                scope: None,
            },
            user: user.uuid,
        })
    }

    /// How long a revocation marker must live: until every access token it concerns has expired.
    fn marker_ttl(&self) -> Duration {
        self.settings.app.longest_token_ttl() + self.settings.auth.leeway + Duration::from_secs(1)
    }

    /// Ends session `sid` in the database (inside `tx`) and in Redis. Redis is written before the
    /// caller commits: if it cannot be reached the whole operation fails, rather than leaving a
    /// session that looks ended here while its tokens still work everywhere else.
    pub async fn end_session(
        &self,
        tx: &mut PgConnection,
        sid: Uuid,
        reason: &str,
    ) -> anyhow::Result<()> {
        store::revoke(&mut *tx, sid, reason).await?;
        let mut redis = self.redis.clone();
        identity::revocation::revoke_session_in(
            &mut redis,
            &self.settings.auth.revocation_prefix,
            sid,
            self.marker_ttl(),
        )
        .await
        .context("writing the session revocation to Redis")?;
        Ok(())
    }

    /// Ends every session of `user` except `keep` (in the database inside `tx`, and in Redis).
    /// Without `keep`, also refuses every token of the user issued before now, sessions or not.
    /// Returns how many sessions were live.
    pub async fn end_all(
        &self,
        tx: &mut PgConnection,
        user: &UserRow,
        keep: Option<Uuid>,
        reason: &str,
    ) -> anyhow::Result<usize> {
        let ended = store::revoke_all(&mut *tx, user.id, keep, reason).await?;
        let prefix = &self.settings.auth.revocation_prefix;
        let ttl = self.marker_ttl();
        let mut redis = self.redis.clone();
        for sid in &ended {
            identity::revocation::revoke_session_in(&mut redis, prefix, *sid, ttl)
                .await
                .context("writing a session revocation to Redis")?;
        }
        if keep.is_none() {
            identity::revocation::revoke_subject_before_in(
                &mut redis,
                prefix,
                user.uuid,
                unix_now(),
                ttl,
            )
            .await
            .context("writing the user's revocation to Redis")?;
        }
        Ok(ended.len())
    }
}
