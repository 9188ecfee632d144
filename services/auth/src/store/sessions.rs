//! Sessions (logins) and their refresh tokens.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::TokenDigest;

pub struct NewSession<'a> {
    pub id: Uuid,
    pub user_id: i64,
    pub expires_at: DateTime<Utc>,
    pub ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

pub async fn insert(db: impl PgExecutor<'_>, session: &NewSession<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO sessions (id, user_id, expires_at, ip, user_agent) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(session.id)
    .bind(session.user_id)
    .bind(session.expires_at)
    .bind(session.ip)
    .bind(session.user_agent)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn insert_refresh_token(
    db: impl PgExecutor<'_>,
    session: Uuid,
    digest: &TokenDigest,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (session_id, token_hash, expires_at) VALUES ($1, $2, $3)",
    )
    .bind(session)
    .bind(digest.as_bytes())
    .bind(expires_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// A presented refresh token with its session, as found (and locked) for a refresh.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PresentedRefresh {
    pub token_id: i64,
    pub token_expires_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub session_id: Uuid,
    pub session_expires_at: DateTime<Utc>,
    pub session_revoked_at: Option<DateTime<Utc>>,
    pub user_id: i64,
}

/// The refresh token with this digest and its session, both locked: concurrent refreshes of
/// one session take turns, so exactly one of them rotates a token.
pub async fn lock_refresh_token(
    db: impl PgExecutor<'_>,
    digest: &TokenDigest,
) -> sqlx::Result<Option<PresentedRefresh>> {
    sqlx::query_as(
        "SELECT t.id AS token_id, t.expires_at AS token_expires_at, t.rotated_at,
                s.id AS session_id, s.expires_at AS session_expires_at,
                s.revoked_at AS session_revoked_at, s.user_id
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
         WHERE t.token_hash = $1
         FOR UPDATE OF t, s",
    )
    .bind(digest.as_bytes())
    .fetch_optional(db)
    .await
}

pub async fn mark_rotated(db: impl PgExecutor<'_>, token_id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1 AND rotated_at IS NULL")
        .bind(token_id)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn touch_refreshed(db: impl PgExecutor<'_>, session: Uuid) -> sqlx::Result<()> {
    sqlx::query("UPDATE sessions SET last_refreshed_at = now() WHERE id = $1")
        .bind(session)
        .execute(db)
        .await
        .map(|_| ())
}

/// Ends one session (kept as it was if already ended); `true` when it was live.
pub async fn revoke(db: impl PgExecutor<'_>, session: Uuid, reason: &str) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(session)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Ends every live session of a user except `keep`; returns the ids of those ended.
pub async fn revoke_all(
    db: impl PgExecutor<'_>,
    user_id: i64,
    keep: Option<Uuid>,
    reason: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $3
         WHERE user_id = $1 AND revoked_at IS NULL AND ($2::uuid IS NULL OR id <> $2)
         RETURNING id",
    )
    .bind(user_id)
    .bind(keep)
    .bind(reason)
    .fetch_all(db)
    .await
}

/// The session of an access token, when it is live.
pub async fn is_live(db: impl PgExecutor<'_>, session: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > now())",
    )
    .bind(session)
    .fetch_one(db)
    .await
}
