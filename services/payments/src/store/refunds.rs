//! Refunds. A refund is created `pending` in the transaction that reserves its amount on the
//! payment (see `payments::reserve_refund`), then settled once the provider answers.

use chrono::{DateTime, Utc};
use kit::PageRequest;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{RefundReason, RefundStatus};

/// The keyset key of refund listings: newest first.
pub type RefundKey = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RefundRow {
    pub id: i64,
    pub uuid: Uuid,
    pub payment_id: i64,
    pub payment_uuid: Uuid,
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub metadata: Value,
    #[sqlx(try_from = "String")]
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
    pub provider_refund_id: Option<String>,
    pub request_fingerprint: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RefundRow {
    pub fn key(&self) -> RefundKey {
        (self.created_at, self.uuid)
    }
}

macro_rules! columns {
    () => {
        "r.id, r.uuid, r.payment_id, p.uuid AS payment_uuid, r.amount, p.currency, r.reason,
         r.metadata, r.status, r.failure_reason, r.provider_refund_id, r.request_fingerprint,
         r.created_at, r.updated_at"
    };
}

pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<RefundRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.uuid = $1"
    ))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

/// The refund, locked (lock its payment first: payments before refunds, always).
pub async fn lock(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<RefundRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.id = $1 FOR UPDATE OF r"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The refund the provider knows as `provider_refund_id`, and its payment's local key.
pub async fn find_by_provider_id(
    db: impl PgExecutor<'_>,
    provider_refund_id: &str,
) -> sqlx::Result<Option<RefundRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.provider_refund_id = $1"
    ))
    .bind(provider_refund_id)
    .fetch_optional(db)
    .await
}

pub async fn find_by_request_key(
    db: impl PgExecutor<'_>,
    request_key: &str,
) -> sqlx::Result<Option<RefundRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM refunds r JOIN payments p ON p.id = r.payment_id WHERE r.request_key = $1"
    ))
    .bind(request_key)
    .fetch_optional(db)
    .await
}

pub struct NewRefund<'a> {
    pub uuid: Uuid,
    pub payment_id: i64,
    pub amount: i64,
    pub reason: Option<RefundReason>,
    pub metadata: Value,
    pub status: RefundStatus,
    pub provider_refund_id: Option<&'a str>,
    pub source: Uuid,
    pub request_key: Option<&'a str>,
    pub request_fingerprint: Option<&'a [u8]>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(conn: &mut PgConnection, new: &NewRefund<'_>) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO refunds (uuid, payment_id, amount, reason, metadata, status,
             provider_refund_id, source, request_key, request_fingerprint, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)
         RETURNING id",
    )
    .bind(new.uuid)
    .bind(new.payment_id)
    .bind(new.amount)
    .bind(new.reason.map(RefundReason::as_str))
    .bind(&new.metadata)
    .bind(new.status.as_str())
    .bind(new.provider_refund_id)
    .bind(new.source)
    .bind(new.request_key)
    .bind(new.request_fingerprint)
    .bind(new.created_at)
    .fetch_one(conn)
    .await
}

pub async fn set_provider_id(
    conn: &mut PgConnection,
    id: i64,
    provider_refund_id: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE refunds SET provider_refund_id = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(provider_refund_id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn write_status(
    conn: &mut PgConnection,
    id: i64,
    status: RefundStatus,
    failure_reason: Option<&str>,
) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar(
        "UPDATE refunds SET status = $2, failure_reason = $3, updated_at = now()
         WHERE id = $1 RETURNING updated_at",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(failure_reason)
    .fetch_one(conn)
    .await
}

pub async fn mark_reconciled(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE refunds SET reconciled_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Pending refunds that have not changed (nor been re-read) for `age`.
pub async fn stale(
    db: &PgPool,
    age: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<RefundRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM refunds r JOIN payments p ON p.id = r.payment_id
          WHERE r.status = 'pending' AND r.updated_at < now() - $1::interval
            AND (r.reconciled_at IS NULL OR r.reconciled_at < now() - $1::interval)
          ORDER BY r.updated_at
          LIMIT $2"
    ))
    .bind(super::payments::interval(age))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One page of a payment's refunds, newest first.
pub async fn list(
    db: &PgPool,
    payment_id: i64,
    page: &PageRequest<RefundKey>,
) -> sqlx::Result<Vec<RefundRow>> {
    let (after_time, after_uuid) = page.after.map_or((None, None), |(t, u)| (Some(t), Some(u)));
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM refunds r JOIN payments p ON p.id = r.payment_id
          WHERE r.payment_id = $1
            AND ($2::timestamptz IS NULL OR (r.created_at, r.uuid) < ($2, $3))
          ORDER BY r.created_at DESC, r.uuid DESC
          LIMIT $4"
    ))
    .bind(payment_id)
    .bind(after_time)
    .bind(after_uuid)
    .bind(page.fetch_limit())
    .fetch_all(db)
    .await
}
