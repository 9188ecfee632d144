//! The `signing_keys` table.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};

#[derive(Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub kid: String,
    /// PKCS#8 in clear: only in rows an older release wrote and no instance has sealed yet.
    pub private_key: Option<Vec<u8>>,
    /// `nonce || ciphertext || tag` under the key-encryption key `kek_id` (see `crate::kek`).
    pub sealed_private_key: Option<Vec<u8>>,
    pub kek_id: Option<String>,
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub activates_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("kek_id", &self.kek_id)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

macro_rules! columns {
    () => {
        "kid, private_key, sealed_private_key, kek_id, public_key, created_at, activates_at, retired_at"
    };
}

/// Takes the transaction-scoped lock that serialises key creation and rotation (several
/// instances starting at once create one key, not several).
pub async fn lock(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('auth.signing_keys', 0))")
        .execute(conn)
        .await
        .map(|_| ())
}

/// The keys still published: not retired, or retired after `since`; newest first.
pub async fn published(db: impl PgExecutor<'_>, since: DateTime<Utc>) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM signing_keys WHERE retired_at IS NULL OR retired_at > $1 ORDER BY activates_at DESC, created_at DESC"
    ))
    .bind(since)
    .fetch_all(db)
    .await
}

/// Every key, newest first (for `keys list`).
pub async fn all(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<KeyRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM signing_keys ORDER BY activates_at DESC, created_at DESC"
    ))
    .fetch_all(db)
    .await
}

pub async fn has_current(db: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)")
        .fetch_one(db)
        .await
}

/// Inserts a key whose private half is sealed with the key-encryption key `kek_id`.
pub async fn insert(
    db: impl PgExecutor<'_>,
    kid: &str,
    sealed_private_key: &[u8],
    kek_id: &str,
    public: &[u8],
    activates_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO signing_keys (kid, sealed_private_key, kek_id, public_key, activates_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(kid)
    .bind(sealed_private_key)
    .bind(kek_id)
    .bind(public)
    .bind(activates_at)
    .execute(db)
    .await
    .map(|_| ())
}

/// Stores key `kid`'s private half sealed with `kek_id`, and forgets any plaintext copy.
pub async fn store_sealed(
    db: impl PgExecutor<'_>,
    kid: &str,
    sealed_private_key: &[u8],
    kek_id: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE signing_keys SET sealed_private_key = $2, kek_id = $3, private_key = NULL
         WHERE kid = $1",
    )
    .bind(kid)
    .bind(sealed_private_key)
    .bind(kek_id)
    .execute(db)
    .await
    .map(|_| ())
}

/// Retires the current key as of `at` (it keeps signing until then).
pub async fn retire_current(
    db: impl PgExecutor<'_>,
    at: DateTime<Utc>,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL RETURNING kid",
    )
    .bind(at)
    .fetch_optional(db)
    .await
}

/// Deletes keys retired before `before` (nothing they signed is still valid); returns how many.
pub async fn delete_retired_before(
    db: impl PgExecutor<'_>,
    before: DateTime<Utc>,
) -> sqlx::Result<u64> {
    sqlx::query("DELETE FROM signing_keys WHERE retired_at < $1")
        .bind(before)
        .execute(db)
        .await
        .map(|r| r.rows_affected())
}
