//! The suppression list. Addresses are kept lower-cased; an entry is active until it expires
//! or is released (released entries stay, for the record).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use kit::PageRequest;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{Category, SuppressionReason};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SuppressionRow {
    pub uuid: Uuid,
    pub email: String,
    pub category: Option<String>,
    pub reason: String,
    pub note: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    pub released_by: Option<Uuid>,
}

impl SuppressionRow {
    pub fn key(&self) -> (DateTime<Utc>, Uuid) {
        (self.created_at, self.uuid)
    }
}

/// The columns of [`SuppressionRow`], as a literal so statements stay `&'static str`.
macro_rules! columns {
    () => {
        "uuid, email, category, reason, note, expires_at, created_by, created_at, released_at, released_by"
    };
}

/// Of `emails` (lower-cased), those suppressed for mail of `category`, with the reason.
pub async fn active_for(
    db: impl PgExecutor<'_>,
    emails: &[String],
    category: Category,
) -> sqlx::Result<HashMap<String, String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (email) email, reason FROM suppressions
         WHERE email = ANY($1) AND released_at IS NULL
           AND (expires_at IS NULL OR expires_at > now())
           AND (category IS NULL OR category = $2)
         ORDER BY email, created_at",
    )
    .bind(emails)
    .bind(category.as_str())
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().collect())
}

pub struct NewSuppression<'a> {
    pub email: &'a str,
    pub category: Option<Category>,
    pub reason: SuppressionReason,
    pub note: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    new: &NewSuppression<'_>,
) -> sqlx::Result<SuppressionRow> {
    sqlx::query_as(concat!(
        "INSERT INTO suppressions (uuid, email, category, reason, note, expires_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ",
        columns!(),
        ""
    ))
    .bind(Uuid::now_v7())
    .bind(new.email)
    .bind(new.category.map(Category::as_str))
    .bind(new.reason.as_str())
    .bind(new.note)
    .bind(new.expires_at)
    .bind(new.created_by)
    .fetch_one(db)
    .await
}

/// Adds an entry unless an active one already covers `email` for `category`; `true` when added.
pub async fn insert_unless_active(
    db: impl PgExecutor<'_>,
    new: &NewSuppression<'_>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO suppressions (uuid, email, category, reason, note, expires_at, created_by)
         SELECT $1, $2, $3, $4, $5, $6, $7
         WHERE NOT EXISTS (
             SELECT 1 FROM suppressions
             WHERE email = $2 AND released_at IS NULL
               AND (expires_at IS NULL OR expires_at > now())
               AND (category IS NULL OR category IS NOT DISTINCT FROM $3))",
    )
    .bind(Uuid::now_v7())
    .bind(new.email)
    .bind(new.category.map(Category::as_str))
    .bind(new.reason.as_str())
    .bind(new.note)
    .bind(new.expires_at)
    .bind(new.created_by)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Hard bounces, several at once: each address (lower-cased) not yet suppressed for all mail.
pub async fn insert_hard_bounces(
    db: impl PgExecutor<'_>,
    bounces: &[(String, String)],
) -> sqlx::Result<u64> {
    if bounces.is_empty() {
        return Ok(0);
    }
    let (emails, notes): (Vec<String>, Vec<String>) = bounces.iter().cloned().unzip();
    let uuids: Vec<Uuid> = bounces.iter().map(|_| Uuid::now_v7()).collect();
    let done = sqlx::query(
        "INSERT INTO suppressions (uuid, email, reason, note)
         SELECT DISTINCT ON (n.email) n.uuid, n.email, 'hard_bounce', n.note
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS n(uuid, email, note)
         WHERE NOT EXISTS (
             SELECT 1 FROM suppressions s
             WHERE s.email = n.email AND s.released_at IS NULL AND s.category IS NULL
               AND (s.expires_at IS NULL OR s.expires_at > now()))",
    )
    .bind(&uuids)
    .bind(&emails)
    .bind(&notes)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Releases an active entry; `None` when there is no such entry or it was released already.
pub async fn release(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    by: Uuid,
) -> sqlx::Result<Option<SuppressionRow>> {
    sqlx::query_as(concat!(
        "UPDATE suppressions SET released_at = now(), released_by = $2
         WHERE uuid = $1 AND released_at IS NULL RETURNING ",
        columns!(),
        ""
    ))
    .bind(uuid)
    .bind(by)
    .fetch_optional(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<SuppressionRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM suppressions WHERE uuid = $1"
    ))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

/// Newest first; `email` (lower-cased) narrows to one address, `active` to entries in force.
pub async fn list(
    db: impl PgExecutor<'_>,
    email: Option<&str>,
    active: Option<bool>,
    page: &PageRequest<(DateTime<Utc>, Uuid)>,
) -> sqlx::Result<Vec<SuppressionRow>> {
    let (after_at, after_id) = page.after.unzip();
    sqlx::query_as(concat!(
        "SELECT ", columns!(), " FROM suppressions
         WHERE ($1::text IS NULL OR email = $1)
           AND ($2::boolean IS NULL OR $2 = (released_at IS NULL AND (expires_at IS NULL OR expires_at > now())))
           AND ($3::timestamptz IS NULL OR (created_at, uuid) < ($3, $4))
         ORDER BY created_at DESC, uuid DESC LIMIT $5"
    ))
    .bind(email)
    .bind(active)
    .bind(after_at)
    .bind(after_id)
    .bind(page.fetch_limit())
    .fetch_all(db)
    .await
}
