//! Service clients (OAuth client credentials).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{Scopes, TokenDigest};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClientRow {
    pub uuid: Uuid,
    pub name: String,
    pub secret_hash: Vec<u8>,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<ClientRow>> {
    sqlx::query_as(
        "SELECT uuid, name, secret_hash, scopes, created_at, disabled_at FROM clients WHERE uuid = $1",
    )
    .bind(uuid)
    .fetch_optional(db)
    .await
}

/// Every client, by name (operators list them; there are a handful).
pub async fn list(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<ClientRow>> {
    sqlx::query_as(
        "SELECT uuid, name, secret_hash, scopes, created_at, disabled_at FROM clients ORDER BY name",
    )
    .fetch_all(db)
    .await
}

/// Inserts a client unless one with this UUID exists; `true` when inserted. A taken name
/// violates `clients_name_key`.
pub async fn insert_if_absent(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    name: &str,
    secret: &TokenDigest,
    scopes: &Scopes,
) -> sqlx::Result<bool> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO clients (uuid, name, secret_hash, scopes) VALUES ($1, $2, $3, $4)
         ON CONFLICT (uuid) DO NOTHING RETURNING id",
    )
    .bind(uuid)
    .bind(name)
    .bind(secret.as_bytes())
    .bind(scopes.to_vec())
    .fetch_optional(db)
    .await?;
    Ok(inserted.is_some())
}
