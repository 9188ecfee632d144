//! The `users` table: the template's columns plus credentials and verification.

use chrono::{DateTime, Utc};
use kit::PageRequest;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{DisplayName, Email};

/// The keyset key of the admin listing: newest first, UUID as tie-break.
pub type UserKey = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub uuid: Uuid,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub is_active: bool,
    pub password_hash: Option<String>,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub last_login_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl UserRow {
    pub fn key(&self) -> UserKey {
        (self.created_at, self.uuid)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }

    pub fn email_verified(&self) -> bool {
        self.email_verified_at.is_some()
    }

    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == identity::ADMIN_ROLE)
    }
}

macro_rules! columns {
    () => {
        "id, uuid, email, name, roles, is_active, password_hash, email_verified_at, last_login_at, created_at, updated_at, deleted_at"
    };
}

/// The user with this (normalised) email, deleted or not.
pub async fn find_by_email(
    db: impl PgExecutor<'_>,
    email: &Email,
) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE email = $1"
    ))
    .bind(email.as_str())
    .fetch_optional(db)
    .await
}

/// The user with this UUID, deleted or not.
pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE uuid = $1"
    ))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

/// The user with this UUID, locked for the rest of the transaction.
pub async fn lock(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE uuid = $1 FOR UPDATE"
    ))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

/// The user by local key, locked for the rest of the transaction.
pub async fn lock_by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE id = $1 FOR UPDATE"
    ))
    .bind(id)
    .fetch_optional(db)
    .await
}

pub struct NewUser<'a> {
    pub uuid: Uuid,
    pub email: &'a Email,
    pub name: &'a DisplayName,
    pub roles: &'a [String],
    pub password_hash: &'a str,
    pub email_verified_at: Option<DateTime<Utc>>,
}

/// Inserts a user; a taken email violates `users_email_key`.
pub async fn insert(db: impl PgExecutor<'_>, user: &NewUser<'_>) -> sqlx::Result<UserRow> {
    sqlx::query_as(concat!(
        "INSERT INTO users (uuid, email, name, roles, password_hash, email_verified_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING ",
        columns!()
    ))
    .bind(user.uuid)
    .bind(user.email.as_str())
    .bind(user.name.as_str())
    .bind(user.roles)
    .bind(user.password_hash)
    .bind(user.email_verified_at)
    .fetch_one(db)
    .await
}

/// Inserts the user unless one with this UUID exists (seed data); `true` when inserted.
pub async fn insert_if_absent(db: impl PgExecutor<'_>, user: &NewUser<'_>) -> sqlx::Result<bool> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO users (uuid, email, name, roles, password_hash, email_verified_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (uuid) DO NOTHING
         RETURNING id",
    )
    .bind(user.uuid)
    .bind(user.email.as_str())
    .bind(user.name.as_str())
    .bind(user.roles)
    .bind(user.password_hash)
    .bind(user.email_verified_at)
    .fetch_optional(db)
    .await?;
    Ok(inserted.is_some())
}

pub async fn exists(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE uuid = $1)")
        .bind(uuid)
        .fetch_one(db)
        .await
}

pub async fn set_name(
    db: impl PgExecutor<'_>,
    id: i64,
    name: &DisplayName,
) -> sqlx::Result<UserRow> {
    sqlx::query_as(concat!(
        "UPDATE users SET name = $2, updated_at = now() WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(name.as_str())
    .fetch_one(db)
    .await
}

pub async fn set_password_hash(db: impl PgExecutor<'_>, id: i64, hash: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(id)
        .bind(hash)
        .execute(db)
        .await
        .map(|_| ())
}

/// Sets a new address, verified (the user followed a link sent to it); a taken address violates
/// `users_email_key`.
pub async fn set_email(db: impl PgExecutor<'_>, id: i64, email: &str) -> sqlx::Result<UserRow> {
    sqlx::query_as(concat!(
        "UPDATE users SET email = $2, email_verified_at = now(), updated_at = now()
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(email)
    .fetch_one(db)
    .await
}

/// Marks the email verified (kept as it was if already verified).
pub async fn mark_email_verified(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE users SET email_verified_at = COALESCE(email_verified_at, now()) WHERE id = $1",
    )
    .bind(id)
    .execute(db)
    .await
    .map(|_| ())
}

pub async fn touch_login(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE users SET last_login_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await
        .map(|_| ())
}

pub async fn set_roles_and_active(
    db: impl PgExecutor<'_>,
    id: i64,
    roles: &[String],
    is_active: bool,
) -> sqlx::Result<UserRow> {
    sqlx::query_as(concat!(
        "UPDATE users SET roles = $2, is_active = $3, updated_at = now() WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(roles)
    .bind(is_active)
    .fetch_one(db)
    .await
}

pub async fn set_deleted(db: impl PgExecutor<'_>, id: i64, deleted: bool) -> sqlx::Result<UserRow> {
    sqlx::query_as(concat!(
        "UPDATE users SET deleted_at = CASE WHEN $2 THEN now() END, updated_at = now()
         WHERE id = $1 RETURNING ",
        columns!()
    ))
    .bind(id)
    .bind(deleted)
    .fetch_one(db)
    .await
}

/// One page of users, newest first; `search` matches a part of the email or name
/// (case-insensitive); deleted users only with `include_deleted`.
pub async fn list(
    db: &PgPool,
    search: Option<&str>,
    include_deleted: bool,
    page: &PageRequest<UserKey>,
) -> sqlx::Result<Vec<UserRow>> {
    let (after_time, after_uuid) = page.after.map_or((None, None), |(t, u)| (Some(t), Some(u)));
    let pattern = search.map(|q| format!("%{}%", escape_like(q)));
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users
         WHERE ($1 OR deleted_at IS NULL)
           AND ($2::text IS NULL OR email ILIKE $2 OR name ILIKE $2)
           AND ($3::timestamptz IS NULL OR (created_at, uuid) < ($3, $4))
         ORDER BY created_at DESC, uuid DESC
         LIMIT $5"
    ))
    .bind(include_deleted)
    .bind(pattern)
    .bind(after_time)
    .bind(after_uuid)
    .bind(page.fetch_limit())
    .fetch_all(db)
    .await
}

/// `%`, `_` and `\` taken literally inside an ILIKE pattern.
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
