//! Email-verification, password-reset and email-change tokens: single-use, expiring, stored
//! hashed.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

use crate::domain::TokenDigest;

/// What a one-time token is for (the `purpose` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    /// The token's `email` is the new address.
    ChangeEmail,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
            Purpose::ChangeEmail => "change_email",
        }
    }
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    purpose: Purpose,
    digest: &TokenDigest,
    user_id: i64,
    email: &str,
    expires_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO one_time_tokens (purpose, token_hash, user_id, email, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(purpose.as_str())
    .bind(digest.as_bytes())
    .bind(user_id)
    .bind(email)
    .bind(expires_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// A token that was valid and is now used up.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Consumed {
    pub user_id: i64,
    pub email: String,
}

/// Whether an unexpired, unused token with this digest and purpose exists (checked before
/// costly work; [`consume`] decides).
pub async fn is_usable(
    db: impl PgExecutor<'_>,
    purpose: Purpose,
    digest: &TokenDigest,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM one_time_tokens
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now())",
    )
    .bind(digest.as_bytes())
    .bind(purpose.as_str())
    .fetch_one(db)
    .await
}

/// Uses up the unexpired, unused token with this digest and purpose, if there is one. One
/// statement, so two concurrent uses cannot both succeed.
pub async fn consume(
    db: impl PgExecutor<'_>,
    purpose: Purpose,
    digest: &TokenDigest,
) -> sqlx::Result<Option<Consumed>> {
    sqlx::query_as(
        "UPDATE one_time_tokens SET used_at = now()
         WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
         RETURNING user_id, email",
    )
    .bind(digest.as_bytes())
    .bind(purpose.as_str())
    .fetch_optional(db)
    .await
}

/// Voids a user's outstanding tokens of one purpose (a password change voids reset links).
pub async fn void_all(db: impl PgExecutor<'_>, user_id: i64, purpose: Purpose) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE one_time_tokens SET used_at = now()
         WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
    )
    .bind(user_id)
    .bind(purpose.as_str())
    .execute(db)
    .await
    .map(|_| ())
}
