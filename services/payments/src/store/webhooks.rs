//! Webhooks: provider events already seen (incoming), partner endpoints, their deliveries and
//! the log of every delivery attempt (outgoing).

use chrono::{DateTime, Utc};
use kit::PageRequest;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::ProviderName;

/// Records a provider event as seen; `false` when it was already (a redelivery).
pub async fn record_provider_event(
    conn: &mut PgConnection,
    provider: ProviderName,
    event_id: &str,
    event_type: &str,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO provider_events (provider, event_id, event_type) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
    )
    .bind(provider.as_str())
    .bind(event_id)
    .bind(event_type)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Forgets provider events older than `retention`; how many.
pub async fn prune_provider_events(
    db: &PgPool,
    retention: std::time::Duration,
) -> sqlx::Result<u64> {
    let deleted =
        sqlx::query("DELETE FROM provider_events WHERE received_at < now() - $1::interval")
            .bind(super::payments::interval(retention))
            .execute(db)
            .await?;
    Ok(deleted.rows_affected())
}

pub type EndpointKey = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: i64,
    pub uuid: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub secret: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EndpointRow {
    pub fn key(&self) -> EndpointKey {
        (self.created_at, self.uuid)
    }
}

macro_rules! endpoint_columns {
    () => {
        "id, uuid, url, description, secret, event_types, enabled, disabled_reason,
         consecutive_failures, created_at, updated_at"
    };
}

pub struct NewEndpoint<'a> {
    pub uuid: Uuid,
    pub url: &'a str,
    pub description: Option<&'a str>,
    pub secret: &'a str,
    pub event_types: &'a [String],
}

pub async fn insert_endpoint(
    conn: &mut PgConnection,
    new: &NewEndpoint<'_>,
) -> sqlx::Result<EndpointRow> {
    sqlx::query_as(concat!(
        "INSERT INTO webhook_endpoints (uuid, url, description, secret, event_types)
         VALUES ($1, $2, $3, $4, $5) RETURNING ",
        endpoint_columns!()
    ))
    .bind(new.uuid)
    .bind(new.url)
    .bind(new.description)
    .bind(new.secret)
    .bind(new.event_types)
    .fetch_one(conn)
    .await
}

pub async fn find_endpoint(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
) -> sqlx::Result<Option<EndpointRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints WHERE uuid = $1 AND deleted_at IS NULL"
    ))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

pub async fn list_endpoints(
    db: &PgPool,
    page: &PageRequest<EndpointKey>,
) -> sqlx::Result<Vec<EndpointRow>> {
    let (after_time, after_uuid) = page.after.map_or((None, None), |(t, u)| (Some(t), Some(u)));
    sqlx::query_as(concat!(
        "SELECT ",
        endpoint_columns!(),
        " FROM webhook_endpoints
          WHERE deleted_at IS NULL
            AND ($1::timestamptz IS NULL OR (created_at, uuid) < ($1, $2))
          ORDER BY created_at DESC, uuid DESC
          LIMIT $3"
    ))
    .bind(after_time)
    .bind(after_uuid)
    .bind(page.fetch_limit())
    .fetch_all(db)
    .await
}

pub struct EndpointChanges<'a> {
    pub url: Option<&'a str>,
    pub description: Option<&'a str>,
    pub event_types: Option<&'a [String]>,
    pub enabled: Option<bool>,
}

/// Applies the changes; enabling an endpoint clears its failure count and reason.
pub async fn update_endpoint(
    db: &PgPool,
    uuid: Uuid,
    changes: &EndpointChanges<'_>,
) -> sqlx::Result<Option<EndpointRow>> {
    sqlx::query_as(concat!(
        "UPDATE webhook_endpoints SET
             url = COALESCE($2, url),
             description = COALESCE($3, description),
             event_types = COALESCE($4, event_types),
             enabled = COALESCE($5, enabled),
             disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END,
             consecutive_failures = CASE WHEN $5 THEN 0 ELSE consecutive_failures END,
             updated_at = now()
         WHERE uuid = $1 AND deleted_at IS NULL
         RETURNING ",
        endpoint_columns!()
    ))
    .bind(uuid)
    .bind(changes.url)
    .bind(changes.description)
    .bind(changes.event_types)
    .bind(changes.enabled)
    .fetch_optional(db)
    .await
}

/// Marks an endpoint deleted; its pending deliveries are never attempted.
pub async fn delete_endpoint(db: &PgPool, uuid: Uuid) -> sqlx::Result<bool> {
    let deleted = sqlx::query(
        "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false, updated_at = now()
         WHERE uuid = $1 AND deleted_at IS NULL",
    )
    .bind(uuid)
    .execute(db)
    .await?;
    Ok(deleted.rows_affected() == 1)
}

/// Queues `payload` for every live endpoint taking `event_type` (a disabled one keeps it until
/// it is enabled again, within the delivery's age limit). How many deliveries.
pub async fn queue_deliveries(
    conn: &mut PgConnection,
    event_id: Uuid,
    event_type: &str,
    payload: &Value,
) -> sqlx::Result<usize> {
    let endpoints: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM webhook_endpoints
         WHERE deleted_at IS NULL AND (event_types = '{}' OR $1 = ANY (event_types))",
    )
    .bind(event_type)
    .fetch_all(&mut *conn)
    .await?;
    if endpoints.is_empty() {
        return Ok(0);
    }
    let uuids: Vec<Uuid> = endpoints.iter().map(|_| Uuid::now_v7()).collect();
    sqlx::query(
        "INSERT INTO webhook_deliveries (uuid, endpoint_id, event_id, event_type, payload, status)
         SELECT u, e, $3, $4, $5, 'pending' FROM UNNEST($1::uuid[], $2::bigint[]) AS t (u, e)",
    )
    .bind(&uuids)
    .bind(&endpoints)
    .bind(event_id)
    .bind(event_type)
    .bind(payload)
    .execute(conn)
    .await?;
    Ok(endpoints.len())
}

pub type DeliveryKey = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub uuid: Uuid,
    pub endpoint_id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: Value,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub replay_of: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl DeliveryRow {
    pub fn key(&self) -> DeliveryKey {
        (self.created_at, self.uuid)
    }
}

macro_rules! delivery_columns {
    () => {
        "d.id, d.uuid, d.endpoint_id, d.event_id, d.event_type, d.payload, d.status, d.attempts,
         d.next_attempt_at, d.replay_of, d.created_at, d.updated_at"
    };
}

/// A delivery due for sending, with where to send it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: i64,
    pub uuid: Uuid,
    pub endpoint_id: i64,
    pub event_id: Uuid,
    pub payload: Value,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub url: String,
    pub secret: String,
}

/// Takes up to `limit` due deliveries of enabled endpoints and leases them for `lease` (another
/// instance skips them meanwhile; a sender that dies leaves them due again after it).
pub async fn take_due(
    db: &PgPool,
    limit: i64,
    lease: std::time::Duration,
) -> sqlx::Result<Vec<DueDelivery>> {
    sqlx::query_as(
        "WITH due AS (
             SELECT d.id FROM webhook_deliveries d
             JOIN webhook_endpoints e ON e.id = d.endpoint_id
             WHERE d.status = 'pending' AND d.next_attempt_at <= now()
               AND e.enabled AND e.deleted_at IS NULL
             ORDER BY d.next_attempt_at
             LIMIT $1
             FOR UPDATE OF d SKIP LOCKED
         ), leased AS (
             UPDATE webhook_deliveries d SET next_attempt_at = now() + $2::interval
             FROM due WHERE d.id = due.id
             RETURNING d.id, d.uuid, d.endpoint_id, d.event_id, d.payload, d.attempts, d.created_at
         )
         SELECT l.*, e.url, e.secret FROM leased l JOIN webhook_endpoints e ON e.id = l.endpoint_id",
    )
    .bind(limit)
    .bind(super::payments::interval(lease))
    .fetch_all(db)
    .await
}

/// One attempt's outcome, as the log keeps it.
pub struct Attempt<'a> {
    pub status_code: Option<i32>,
    pub error: Option<&'a str>,
    pub response_body: Option<&'a str>,
    pub duration_ms: i32,
}

/// What follows an attempt.
pub enum Next {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// Logs an attempt and moves the delivery and its endpoint on. Returns `true` when this
/// failure disabled the endpoint.
pub async fn record_attempt(
    db: &PgPool,
    delivery: &DueDelivery,
    attempt: &Attempt<'_>,
    next: &Next,
    disable_after: u32,
) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (delivery_id, status_code, error, response_body, duration_ms)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(delivery.id)
    .bind(attempt.status_code)
    .bind(attempt.error)
    .bind(attempt.response_body)
    .bind(attempt.duration_ms)
    .execute(&mut *tx)
    .await?;
    let (status, next_at) = match next {
        Next::Delivered => ("succeeded", None),
        Next::RetryAt(at) => ("pending", Some(*at)),
        Next::GiveUp => ("failed", None),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1,
             next_attempt_at = COALESCE($3, next_attempt_at), updated_at = now()
         WHERE id = $1",
    )
    .bind(delivery.id)
    .bind(status)
    .bind(next_at)
    .execute(&mut *tx)
    .await?;
    let disabled = if matches!(next, Next::Delivered) {
        sqlx::query("UPDATE webhook_endpoints SET consecutive_failures = 0 WHERE id = $1")
            .bind(delivery.endpoint_id)
            .execute(&mut *tx)
            .await?;
        false
    } else {
        let disabled: Option<bool> = sqlx::query_scalar(
            "UPDATE webhook_endpoints SET consecutive_failures = consecutive_failures + 1,
                 enabled = enabled AND consecutive_failures + 1 < $2,
                 disabled_reason = CASE WHEN enabled AND consecutive_failures + 1 >= $2
                     THEN format('disabled after %s failed deliveries in a row', consecutive_failures + 1)
                     ELSE disabled_reason END,
                 updated_at = now()
             WHERE id = $1
             RETURNING NOT enabled AND consecutive_failures = $2",
        )
        .bind(delivery.endpoint_id)
        .bind(i32::try_from(disable_after).unwrap_or(i32::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        disabled.unwrap_or(false)
    };
    tx.commit().await?;
    Ok(disabled)
}

/// Gives up every pending delivery older than `max_age` (those of disabled endpoints
/// included); how many.
pub async fn expire_deliveries(db: &PgPool, max_age: std::time::Duration) -> sqlx::Result<u64> {
    let expired = sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', updated_at = now()
         WHERE status = 'pending' AND created_at < now() - $1::interval",
    )
    .bind(super::payments::interval(max_age))
    .execute(db)
    .await?;
    Ok(expired.rows_affected())
}

pub async fn list_deliveries(
    db: &PgPool,
    endpoint_id: i64,
    page: &PageRequest<DeliveryKey>,
) -> sqlx::Result<Vec<DeliveryRow>> {
    let (after_time, after_uuid) = page.after.map_or((None, None), |(t, u)| (Some(t), Some(u)));
    sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM webhook_deliveries d
          WHERE d.endpoint_id = $1
            AND ($2::timestamptz IS NULL OR (d.created_at, d.uuid) < ($2, $3))
          ORDER BY d.created_at DESC, d.uuid DESC
          LIMIT $4"
    ))
    .bind(endpoint_id)
    .bind(after_time)
    .bind(after_uuid)
    .bind(page.fetch_limit())
    .fetch_all(db)
    .await
}

pub async fn find_delivery(
    db: impl PgExecutor<'_>,
    endpoint_id: i64,
    uuid: Uuid,
) -> sqlx::Result<Option<DeliveryRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        delivery_columns!(),
        " FROM webhook_deliveries d WHERE d.endpoint_id = $1 AND d.uuid = $2"
    ))
    .bind(endpoint_id)
    .bind(uuid)
    .fetch_optional(db)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub response_body: Option<String>,
    pub duration_ms: i32,
}

/// The attempts of a delivery, oldest first (at most `limit`: the newest ones beyond are cut).
pub async fn attempts(db: &PgPool, delivery_id: i64, limit: i64) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as(
        "SELECT attempted_at, status_code, error, response_body, duration_ms
         FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id LIMIT $2",
    )
    .bind(delivery_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A new delivery of a delivered (or given up) event: due now.
pub async fn replay(conn: &mut PgConnection, original: &DeliveryRow) -> sqlx::Result<DeliveryRow> {
    sqlx::query_as(concat!(
        "INSERT INTO webhook_deliveries AS d (uuid, endpoint_id, event_id, event_type, payload,
             status, replay_of)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6)
         RETURNING ",
        delivery_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(original.endpoint_id)
    .bind(original.event_id)
    .bind(&original.event_type)
    .bind(&original.payload)
    .bind(original.uuid)
    .fetch_one(conn)
    .await
}
