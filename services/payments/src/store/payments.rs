//! Payments and their history. Rows reference users by the local key; what leaves carries
//! UUIDs.

use std::sync::{Arc, LazyLock};

use chrono::{DateTime, Utc};
use kit::PageRequest;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::{PgConnection, PgExecutor, PgPool, QueryBuilder};
use uuid::Uuid;

use crate::batch::{BatchFuture, Batcher};

use crate::domain::{CaptureMethod, Cause, PaymentStatus, ProviderName};

/// The keyset key of payment listings: newest first, UUID as tie-break.
pub type PaymentKey = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentRow {
    pub id: i64,
    pub uuid: Uuid,
    pub user_id: i64,
    pub user_uuid: Uuid,
    pub amount: i64,
    pub currency: String,
    pub description: Option<String>,
    pub metadata: Value,
    pub reference_service: String,
    pub reference_id: String,
    pub source: Uuid,
    #[sqlx(try_from = "String")]
    pub provider: ProviderName,
    pub provider_payment_id: Option<String>,
    pub client_secret: Option<String>,
    pub payment_method: Option<String>,
    #[sqlx(try_from = "String")]
    pub capture_method: CaptureMethod,
    #[sqlx(try_from = "String")]
    pub status: PaymentStatus,
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub next_action: Option<Value>,
    pub cancellation_reason: Option<String>,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    pub amount_refund_pending: i64,
    pub version: i32,
    pub request_fingerprint: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl PaymentRow {
    pub fn key(&self) -> PaymentKey {
        (self.created_at, self.uuid)
    }

    /// What can still be refunded: captured, minus refunded and pending refunds.
    pub fn refundable(&self) -> i64 {
        self.amount_captured - self.amount_refunded - self.amount_refund_pending
    }

    pub fn reference(&self) -> contracts::payments::Reference {
        contracts::payments::Reference {
            service: self.reference_service.clone(),
            id: self.reference_id.clone(),
        }
    }
}

/// The columns of [`PaymentRow`] from `payments p JOIN users u`.
macro_rules! columns {
    () => {
        "p.id, p.uuid, p.user_id, u.uuid AS user_uuid, p.amount, p.currency, p.description,
         p.metadata, p.reference_service, p.reference_id, p.source, p.provider,
         p.provider_payment_id, p.client_secret, p.payment_method, p.capture_method, p.status,
         p.decline_code, p.failure_message, p.next_action, p.cancellation_reason,
         p.amount_captured, p.amount_refunded, p.amount_refund_pending, p.version,
         p.request_fingerprint, p.created_at, p.updated_at"
    };
}

pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM payments p JOIN users u ON u.id = p.user_id WHERE p.uuid = $1"
    ))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

/// The payment, locked for the rest of the transaction: every change to a payment is made
/// under this lock (refund reservations included).
pub async fn lock(conn: &mut PgConnection, uuid: Uuid) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM payments p JOIN users u ON u.id = p.user_id WHERE p.uuid = $1 FOR UPDATE OF p"
    ))
    .bind(uuid)
    .fetch_optional(conn)
    .await
}

pub async fn lock_by_id(conn: &mut PgConnection, id: i64) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM payments p JOIN users u ON u.id = p.user_id WHERE p.id = $1 FOR UPDATE OF p"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The payment the provider knows as `provider_payment_id`, locked.
pub async fn lock_by_provider_id(
    conn: &mut PgConnection,
    provider: ProviderName,
    provider_payment_id: &str,
) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM payments p JOIN users u ON u.id = p.user_id
          WHERE p.provider = $1 AND p.provider_payment_id = $2 FOR UPDATE OF p"
    ))
    .bind(provider.as_str())
    .bind(provider_payment_id)
    .fetch_optional(conn)
    .await
}

/// The payment a create request with this (scoped, hashed) key started.
pub async fn find_by_request_key(
    db: impl PgExecutor<'_>,
    request_key: &str,
) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM payments p JOIN users u ON u.id = p.user_id WHERE p.request_key = $1"
    ))
    .bind(request_key)
    .fetch_optional(db)
    .await
}

/// The live (not failed or canceled) payment of `source` for a reference.
pub async fn find_live_by_reference(
    db: impl PgExecutor<'_>,
    source: Uuid,
    service: &str,
    id: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT uuid FROM payments
         WHERE source = $1 AND reference_service = $2 AND reference_id = $3
           AND status NOT IN ('failed', 'canceled')",
    )
    .bind(source)
    .bind(service)
    .bind(id)
    .fetch_optional(db)
    .await
}

pub struct NewPayment<'a> {
    pub uuid: Uuid,
    pub user_id: i64,
    pub amount: i64,
    pub currency: &'a str,
    pub description: Option<&'a str>,
    pub metadata: Value,
    pub reference_service: &'a str,
    pub reference_id: &'a str,
    pub source: Uuid,
    pub provider: ProviderName,
    pub payment_method: Option<&'a str>,
    pub capture_method: CaptureMethod,
    pub status: PaymentStatus,
    pub request_key: Option<&'a str>,
    pub request_fingerprint: Option<&'a [u8]>,
    pub created_at: DateTime<Utc>,
}

/// Inserts a payment (locked until the transaction ends); a live payment of the same source and
/// reference violates `payments_reference_key`.
pub async fn insert(conn: &mut PgConnection, new: &NewPayment<'_>) -> sqlx::Result<PaymentRow> {
    sqlx::query_as(concat!(
        "WITH p AS (
             INSERT INTO payments (uuid, user_id, amount, currency, description, metadata,
                 reference_service, reference_id, source, provider, payment_method, capture_method,
                 status, request_key, request_fingerprint, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16)
             RETURNING *
         )
         SELECT ",
        columns!(),
        " FROM p JOIN users u ON u.id = p.user_id"
    ))
    .bind(new.uuid)
    .bind(new.user_id)
    .bind(new.amount)
    .bind(new.currency)
    .bind(new.description)
    .bind(&new.metadata)
    .bind(new.reference_service)
    .bind(new.reference_id)
    .bind(new.source)
    .bind(new.provider.as_str())
    .bind(new.payment_method)
    .bind(new.capture_method.as_str())
    .bind(new.status.as_str())
    .bind(new.request_key)
    .bind(new.request_fingerprint)
    .bind(new.created_at)
    .fetch_one(conn)
    .await
}

/// What the provider said about a payment besides its status.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProviderNote<'a> {
    /// Recorded unless the payment has one already.
    pub provider_payment_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
    /// The payment method it was confirmed with, when there is one.
    pub payment_method: Option<&'a str>,
}

/// Locks the payment and records `note` in one statement (a payment's hot path).
pub async fn lock_and_note(
    conn: &mut PgConnection,
    uuid: Uuid,
    note: &ProviderNote<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    sqlx::query_as(concat!(
        "WITH p AS (
             UPDATE payments SET
                 provider_payment_id = COALESCE(provider_payment_id, $2),
                 client_secret = COALESCE(client_secret, $3),
                 payment_method = COALESCE($4, payment_method)
             WHERE uuid = $1
             RETURNING *
         )
         SELECT ",
        columns!(),
        " FROM p JOIN users u ON u.id = p.user_id"
    ))
    .bind(uuid)
    .bind(note.provider_payment_id)
    .bind(note.client_secret)
    .bind(note.payment_method)
    .fetch_optional(conn)
    .await
}

/// Records the provider's side of a payment (its id and client secret) once known.
pub async fn set_provider_side(
    conn: &mut PgConnection,
    id: i64,
    provider_payment_id: &str,
    client_secret: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE payments SET provider_payment_id = $2, client_secret = $3, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(provider_payment_id)
    .bind(client_secret)
    .execute(conn)
    .await?;
    Ok(())
}

/// A new status and what goes with it.
pub struct StatusWrite<'a> {
    pub status: PaymentStatus,
    pub amount_captured: i64,
    pub decline_code: Option<&'a str>,
    pub failure_message: Option<&'a str>,
    pub next_action: Option<&'a Value>,
    pub cancellation_reason: Option<&'a str>,
}

/// Writes a status change and its history entry (one statement); the new version and time.
pub async fn write_status(
    conn: &mut PgConnection,
    id: i64,
    write: &StatusWrite<'_>,
    from: PaymentStatus,
    history: &HistoryCause<'_>,
) -> sqlx::Result<(i32, DateTime<Utc>)> {
    sqlx::query_as(
        "WITH u AS (
             UPDATE payments SET status = $2, amount_captured = $3, decline_code = $4,
                 failure_message = $5, next_action = $6, cancellation_reason = $7,
                 version = version + 1, updated_at = now()
             WHERE id = $1
             RETURNING version, updated_at
         ), h AS (
             INSERT INTO payment_history (payment_id, from_status, to_status, cause,
                 provider_event_id, request_id, version)
             SELECT $1, $8, $2, $9, $10, $11, u.version FROM u
         )
         SELECT version, updated_at FROM u",
    )
    .bind(id)
    .bind(write.status.as_str())
    .bind(write.amount_captured)
    .bind(write.decline_code)
    .bind(write.failure_message)
    .bind(write.next_action)
    .bind(write.cancellation_reason)
    .bind(from.as_str())
    .bind(history.cause.as_str())
    .bind(history.provider_event_id)
    .bind(history.request_id)
    .fetch_one(conn)
    .await
}

// The hot path: the common case of each step in one statement shared by the requests
// waiting at that moment (`crate::batch`), each refusing (returning nothing, writing nothing)
// for a request whose payment is not as it last read it, so that request can take the general
// way instead.

/// The hot path's batch tasks.
#[derive(Clone)]
pub struct Hot {
    find: Batcher<Value, Option<ForRequest>>,
    insert: Batcher<Value, Option<PaymentRow>>,
    change: Batcher<Value, bool>,
    event: Batcher<Value, Option<(PaymentRow, bool)>>,
    seen: Batcher<Value, bool>,
}

/// Requests sharing one statement, at most.
const BATCH: usize = 64;

impl Hot {
    pub fn start(options: Arc<PgConnectOptions>) -> Hot {
        Hot {
            find: Batcher::start(options.clone(), BATCH, find_batch),
            insert: Batcher::start(options.clone(), BATCH, insert_batch),
            change: Batcher::start(options.clone(), BATCH, change_batch),
            event: Batcher::start(options.clone(), BATCH, event_batch),
            // A record that only spares a redelivery some work: no need to wait for the disk.
            seen: Batcher::start(
                Arc::new(
                    options
                        .as_ref()
                        .clone()
                        .options([("synchronous_commit", "off")]),
                ),
                BATCH,
                seen_batch,
            ),
        }
    }
}

/// `items` as a JSON array, each numbered (`n`) by its place: serialized as they are, with `n`
/// added on the way (no copy of the items).
fn numbered(items: &[Value]) -> sqlx::types::Json<Numbered<'_>> {
    sqlx::types::Json(Numbered(items))
}

pub struct Numbered<'a>(&'a [Value]);

impl serde::Serialize for Numbered<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Item<'a>(usize, &'a Value);
        impl serde::Serialize for Item<'_> {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let Value::Object(fields) = self.1 else {
                    return self.1.serialize(serializer);
                };
                let mut map = serializer.serialize_map(Some(fields.len() + 1))?;
                for (name, value) in fields.iter().filter(|(name, _)| *name != "n") {
                    map.serialize_entry(name, value)?;
                }
                map.serialize_entry("n", &self.0)?;
                map.end()
            }
        }
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (n, item) in self.0.iter().enumerate() {
            seq.serialize_element(&Item(n, item))?;
        }
        seq.end()
    }
}

/// Outputs in the inputs' order from rows numbered by input.
fn by_number<T>(len: usize, rows: Vec<(i32, T)>) -> Vec<Option<T>> {
    let mut outputs: Vec<Option<T>> = std::iter::repeat_with(|| None).take(len).collect();
    for (n, row) in rows {
        if let Some(slot) = usize::try_from(n).ok().and_then(|n| outputs.get_mut(n)) {
            *slot = Some(row);
        }
    }
    outputs
}

/// A payment read for a request, with the response stored for the request's key if any.
#[derive(Debug, sqlx::FromRow)]
pub struct ForRequest {
    #[sqlx(flatten)]
    pub row: PaymentRow,
    pub stored_fingerprint: Option<Vec<u8>>,
    pub stored_status: Option<i16>,
    pub stored_headers: Option<Value>,
    pub stored_body: Option<Vec<u8>>,
}

impl ForRequest {
    /// The response stored for the request's key.
    pub fn stored(&mut self) -> Option<kit::idempotency::Stored> {
        Some(kit::idempotency::Stored {
            fingerprint: self.stored_fingerprint.take()?,
            status: self.stored_status.take()?,
            headers: self.stored_headers.take()?,
            body: self.stored_body.take()?,
        })
    }
}

/// The payment `uuid` and the response stored under `key` (scoped), in one read.
pub async fn find_for_request(
    hot: &Hot,
    uuid: Uuid,
    key: &str,
) -> sqlx::Result<Option<ForRequest>> {
    hot.find.call(json!({"uuid": uuid, "key": key})).await
}

fn find_batch<'c>(
    conn: &'c mut PgConnection,
    items: &'c [Value],
) -> BatchFuture<'c, Option<ForRequest>> {
    #[derive(sqlx::FromRow)]
    struct Found {
        n: i32,
        #[sqlx(flatten)]
        found: ForRequest,
    }
    Box::pin(async move {
        let rows: Vec<Found> = sqlx::query_as(concat!(
            // Each row looked up on its own (`OFFSET 0` keeps the lookup apart), by key.
            "SELECT r.n, x.* FROM jsonb_to_recordset($1) AS r (n int, uuid uuid, key text)
             CROSS JOIN LATERAL (
                 SELECT ",
            columns!(),
            ", i.fingerprint AS stored_fingerprint, i.status AS stored_status,
                   i.headers AS stored_headers, i.body AS stored_body
                 FROM payments p JOIN users u ON u.id = p.user_id
                 LEFT JOIN idempotency i ON i.key = r.key
                     AND i.created_at > now() - make_interval(hours => $2)
                 WHERE p.uuid = r.uuid
                 OFFSET 0
             ) x"
        ))
        .bind(numbered(items))
        .bind(kit::idempotency::RETENTION_HOURS)
        .fetch_all(conn)
        .await?;
        Ok(by_number(
            items.len(),
            rows.into_iter().map(|r| (r.n, r.found)).collect(),
        ))
    })
}

/// Inserts a payment for the user `user` with its first history entry; nothing when the user
/// is not here (or deleted, or disabled) or the payment conflicts with another (the same
/// request key, a live payment of the reference).
pub async fn insert_at_once(
    hot: &Hot,
    new: &NewPayment<'_>,
    user: Uuid,
    history: &HistoryCause<'_>,
) -> sqlx::Result<Option<PaymentRow>> {
    hot.insert
        .call(json!({
            "uuid": new.uuid,
            "user_uuid": user,
            "amount": new.amount,
            "currency": new.currency,
            "description": new.description,
            "metadata": new.metadata,
            "reference_service": new.reference_service,
            "reference_id": new.reference_id,
            "source": new.source,
            "provider": new.provider.as_str(),
            "payment_method": new.payment_method,
            "capture_method": new.capture_method.as_str(),
            "status": new.status.as_str(),
            "request_key": new.request_key,
            "request_fingerprint": new.request_fingerprint.map(crate::domain::hex),
            "created_at": new.created_at,
            "cause": history.cause.as_str(),
            "provider_event_id": history.provider_event_id,
            "request_id": history.request_id,
        }))
        .await
}

fn insert_batch<'c>(
    conn: &'c mut PgConnection,
    items: &'c [Value],
) -> BatchFuture<'c, Option<PaymentRow>> {
    #[derive(sqlx::FromRow)]
    struct Inserted {
        n: i32,
        #[sqlx(flatten)]
        row: PaymentRow,
    }
    Box::pin(async move {
        let rows: Vec<Inserted> = sqlx::query_as(concat!(
            "WITH r AS (
                 SELECT * FROM jsonb_to_recordset($1) AS r (n int, uuid uuid, user_uuid uuid,
                     amount bigint, currency text, description text, metadata jsonb,
                     reference_service text, reference_id text, source uuid, provider text,
                     payment_method text, capture_method text, status text, request_key text,
                     request_fingerprint text, created_at timestamptz, cause text,
                     provider_event_id text, request_id text)
             ), p AS (
                 INSERT INTO payments (uuid, user_id, amount, currency, description, metadata,
                     reference_service, reference_id, source, provider, payment_method,
                     capture_method, status, request_key, request_fingerprint, created_at,
                     updated_at)
                 SELECT r.uuid, u.id, r.amount, r.currency, r.description, r.metadata,
                     r.reference_service, r.reference_id, r.source, r.provider, r.payment_method,
                     r.capture_method, r.status, r.request_key, decode(r.request_fingerprint, 'hex'),
                     r.created_at, r.created_at
                 FROM r JOIN users u ON u.uuid = r.user_uuid AND u.deleted_at IS NULL AND u.is_active
                 ORDER BY r.n
                 ON CONFLICT DO NOTHING
                 RETURNING *
             ), h AS (
                 INSERT INTO payment_history (payment_id, from_status, to_status, cause,
                     provider_event_id, request_id, version)
                 SELECT p.id, NULL, p.status, r.cause, r.provider_event_id, r.request_id, p.version
                 FROM p JOIN r ON r.uuid = p.uuid
             )
             SELECT r.n, ",
            columns!(),
            " FROM p JOIN r ON r.uuid = p.uuid JOIN users u ON u.id = p.user_id"
        ))
        .bind(numbered(items))
        .fetch_all(conn)
        .await?;
        Ok(by_number(
            items.len(),
            rows.into_iter().map(|r| (r.n, r.row)).collect(),
        ))
    })
}

/// A status change for [`change_at_once`]: the payment after it, and what it came from.
pub struct AtOnce<'a> {
    /// The payment's id and the version it was read at.
    pub id: i64,
    pub version: i32,
    pub note: &'a ProviderNote<'a>,
    /// The new status and what goes with it (`None`: only the note).
    pub write: Option<(
        &'a StatusWrite<'a>,
        PaymentStatus,
        &'a HistoryCause<'a>,
        DateTime<Utc>,
    )>,
    /// The bus event announcing it: written unless a partner endpoint takes it (its
    /// deliveries are queued the general way).
    pub announcement: Option<&'a bus::Serialized>,
    /// The response to keep for the request's key.
    pub stored: &'a kit::idempotency::Storable,
}

/// Records what the provider said about a payment unchanged since `change.version` (its note,
/// and its new status with the history entry and the bus event), and stores the response.
/// `false` when nothing was written: the payment changed meanwhile, or a partner endpoint takes
/// the event.
pub async fn change_at_once(hot: &Hot, change: &AtOnce<'_>) -> sqlx::Result<bool> {
    let Ok(body) = std::str::from_utf8(&change.stored.body) else {
        return Ok(false);
    };
    let write = change.write.as_ref();
    let announcement = change.announcement;
    hot.change
        .call(json!({
            "id": change.id,
            "version": change.version,
            "provider_payment_id": change.note.provider_payment_id,
            "client_secret": change.note.client_secret,
            "payment_method": change.note.payment_method,
            "changes": write.is_some(),
            "status": write.map(|(w, ..)| w.status.as_str()),
            "amount_captured": write.map(|(w, ..)| w.amount_captured),
            "decline_code": write.and_then(|(w, ..)| w.decline_code),
            "failure_message": write.and_then(|(w, ..)| w.failure_message),
            "next_action": write.and_then(|(w, ..)| w.next_action),
            "cancellation_reason": write.and_then(|(w, ..)| w.cancellation_reason),
            "updated_at": write.map(|(.., at)| *at),
            "from_status": write.map(|(_, from, ..)| from.as_str()),
            "cause": write.map(|(_, _, cause, _)| cause.cause.as_str()),
            "provider_event_id": write.and_then(|(_, _, cause, _)| cause.provider_event_id),
            "request_id": write.and_then(|(_, _, cause, _)| cause.request_id),
            "event_id": announcement.map(|a| a.id),
            "event_type": announcement.map(|a| a.event_type.as_str()),
            "envelope": announcement.map(|a| a.json.as_str()),
            "key": change.stored.key,
            "fingerprint": crate::domain::hex(&change.stored.fingerprint),
            "stored_status": change.stored.status,
            "headers": change.stored.headers,
            "body": body,
        }))
        .await
}

fn change_batch<'c>(conn: &'c mut PgConnection, items: &'c [Value]) -> BatchFuture<'c, bool> {
    static STATEMENT: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH r AS (
                 SELECT * FROM jsonb_to_recordset($1) AS r (n int, id bigint, version int,
                     provider_payment_id text, client_secret text, payment_method text,
                     changes boolean, status text, amount_captured bigint, decline_code text,
                     failure_message text, next_action jsonb, cancellation_reason text,
                     updated_at timestamptz, from_status text, cause text,
                     provider_event_id text, request_id text, event_id uuid, event_type text,
                     envelope text, key text, fingerprint text, stored_status smallint,
                     headers jsonb, body text)
             ), p AS (
                 UPDATE payments SET
                     provider_payment_id = COALESCE(payments.provider_payment_id, r.provider_payment_id),
                     client_secret = COALESCE(payments.client_secret, r.client_secret),
                     payment_method = COALESCE(r.payment_method, payments.payment_method),
                     status = CASE WHEN r.changes THEN r.status ELSE payments.status END,
                     amount_captured = CASE WHEN r.changes THEN r.amount_captured
                         ELSE payments.amount_captured END,
                     decline_code = CASE WHEN r.changes THEN r.decline_code
                         ELSE payments.decline_code END,
                     failure_message = CASE WHEN r.changes THEN r.failure_message
                         ELSE payments.failure_message END,
                     next_action = CASE WHEN r.changes THEN r.next_action
                         ELSE payments.next_action END,
                     cancellation_reason = CASE WHEN r.changes THEN r.cancellation_reason
                         ELSE payments.cancellation_reason END,
                     version = CASE WHEN r.changes THEN payments.version + 1
                         ELSE payments.version END,
                     updated_at = CASE WHEN r.changes THEN r.updated_at ELSE payments.updated_at END
                 FROM r
                 WHERE payments.id = r.id AND payments.version = r.version
                   AND payments.id = ANY (ARRAY(SELECT (jsonb_array_elements($1) ->> 'id')::bigint))
                   AND NOT EXISTS (
                       SELECT 1 FROM webhook_endpoints e
                       WHERE r.event_type IS NOT NULL AND e.deleted_at IS NULL
                         AND (e.event_types = '{{}}' OR r.event_type = ANY (e.event_types)))
                 RETURNING r.n, payments.id, payments.version
             ), h AS (
                 INSERT INTO payment_history (payment_id, from_status, to_status, cause,
                     provider_event_id, request_id, version)
                 SELECT p.id, r.from_status, r.status, r.cause, r.provider_event_id,
                     r.request_id, p.version
                 FROM p JOIN r ON r.n = p.n WHERE r.changes ORDER BY r.n
             ), o AS (
                 INSERT INTO outbox (event_id, event_type, envelope)
                 SELECT r.event_id, r.event_type, r.envelope::json
                 FROM p JOIN r ON r.n = p.n WHERE r.event_type IS NOT NULL ORDER BY r.n
             ), i AS (
                 INSERT INTO idempotency (key, fingerprint, status, headers, body, created_at)
                 SELECT r.key, decode(r.fingerprint, 'hex'), r.stored_status, r.headers,
                     convert_to(r.body, 'UTF8'), now()
                 FROM p JOIN r ON r.n = p.n
                 {}
             )
             SELECT n FROM p",
            kit::idempotency::UPSERT
        )
    });
    Box::pin(async move {
        let changed: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(STATEMENT.as_str()))
            .bind(numbered(items))
            .fetch_all(conn)
            .await?;
        Ok(
            by_number(items.len(), changed.into_iter().map(|n| (n, ())).collect())
                .into_iter()
                .map(|changed| changed.is_some())
                .collect(),
        )
    })
}

/// The payment the provider knows as `provider_payment_id`, unlocked, and whether the provider
/// event `event_id` was applied before.
pub async fn find_for_event(
    hot: &Hot,
    provider: ProviderName,
    provider_payment_id: &str,
    event_id: &str,
) -> sqlx::Result<Option<(PaymentRow, bool)>> {
    hot.event
        .call(json!({
            "provider": provider.as_str(),
            "provider_payment_id": provider_payment_id,
            "event_id": event_id,
        }))
        .await
}

/// Records provider events as seen that changed nothing; for each, `false` when it was
/// already.
pub async fn record_seen(
    hot: &Hot,
    provider: ProviderName,
    event_id: &str,
    event_type: &str,
) -> sqlx::Result<bool> {
    hot.seen
        .call(
            json!({"provider": provider.as_str(), "event_id": event_id, "event_type": event_type}),
        )
        .await
}

fn seen_batch<'c>(conn: &'c mut PgConnection, items: &'c [Value]) -> BatchFuture<'c, bool> {
    Box::pin(async move {
        let recorded: Vec<(String, String)> = sqlx::query_as(
            "INSERT INTO provider_events (provider, event_id, event_type)
             SELECT r.provider, r.event_id, r.event_type
             FROM jsonb_to_recordset($1) AS r (provider text, event_id text, event_type text)
             ON CONFLICT DO NOTHING
             RETURNING provider, event_id",
        )
        .bind(sqlx::types::Json(items))
        .fetch_all(conn)
        .await?;
        Ok(items
            .iter()
            .map(|item| {
                recorded.iter().any(|(provider, event)| {
                    item["provider"].as_str() == Some(provider.as_str())
                        && item["event_id"].as_str() == Some(event.as_str())
                })
            })
            .collect())
    })
}

fn event_batch<'c>(
    conn: &'c mut PgConnection,
    items: &'c [Value],
) -> BatchFuture<'c, Option<(PaymentRow, bool)>> {
    #[derive(sqlx::FromRow)]
    struct Found {
        n: i32,
        #[sqlx(flatten)]
        row: PaymentRow,
        seen: bool,
    }
    Box::pin(async move {
        let rows: Vec<Found> = sqlx::query_as(concat!(
            "SELECT r.n, ",
            columns!(),
            ", EXISTS (SELECT 1 FROM provider_events e
                       WHERE e.provider = r.provider AND e.event_id = r.event_id) AS seen
             FROM jsonb_to_recordset($1) AS r (n int, provider text, provider_payment_id text,
                 event_id text)
             JOIN payments p ON p.provider = r.provider
                 AND p.provider_payment_id = r.provider_payment_id
                 AND p.provider = ANY (ARRAY(SELECT jsonb_array_elements($1) ->> 'provider'))
                 AND p.provider_payment_id = ANY (
                     ARRAY(SELECT jsonb_array_elements($1) ->> 'provider_payment_id'))
             JOIN users u ON u.id = p.user_id"
        ))
        .bind(numbered(items))
        .fetch_all(conn)
        .await?;
        Ok(by_number(
            items.len(),
            rows.into_iter().map(|r| (r.n, (r.row, r.seen))).collect(),
        ))
    })
}

/// Why a change is made, as its history entry says.
pub struct HistoryCause<'a> {
    pub cause: Cause,
    pub provider_event_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
}

/// Reserves `amount` for a refund, only if what is refundable covers it: the guard that keeps
/// pending plus succeeded refunds within the captured amount, whatever runs concurrently (the
/// row is locked by the caller, and the `CHECK` constraint backs it).
pub async fn reserve_refund(conn: &mut PgConnection, id: i64, amount: i64) -> sqlx::Result<bool> {
    let reserved = sqlx::query(
        "UPDATE payments SET amount_refund_pending = amount_refund_pending + $2,
             version = version + 1, updated_at = now()
         WHERE id = $1 AND status = 'succeeded'
           AND amount_refunded + amount_refund_pending + $2 <= amount_captured",
    )
    .bind(id)
    .bind(amount)
    .execute(conn)
    .await?;
    Ok(reserved.rows_affected() == 1)
}

/// Settles a reserved refund: `succeeded` moves it to the refunded amount, `failed` releases
/// it. The new version.
pub async fn settle_refund(
    conn: &mut PgConnection,
    id: i64,
    amount: i64,
    succeeded: bool,
) -> sqlx::Result<(i32, i64)> {
    sqlx::query_as(
        "UPDATE payments SET amount_refund_pending = amount_refund_pending - $2,
             amount_refunded = amount_refunded + CASE WHEN $3 THEN $2 ELSE 0 END,
             version = version + 1, updated_at = now()
         WHERE id = $1
         RETURNING version, amount_refunded",
    )
    .bind(id)
    .bind(amount)
    .bind(succeeded)
    .fetch_one(conn)
    .await
}

pub async fn mark_reconciled(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE payments SET reconciled_at = now() WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Payments not finished that have not changed (nor been re-read) for `age`: oldest first.
pub async fn stale(
    db: &PgPool,
    age: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<PaymentRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM payments p JOIN users u ON u.id = p.user_id
          WHERE p.status NOT IN ('succeeded', 'failed', 'canceled')
            AND p.updated_at < now() - $1::interval
            AND (p.reconciled_at IS NULL OR p.reconciled_at < now() - $1::interval)
          ORDER BY p.updated_at
          LIMIT $2"
    ))
    .bind(interval(age))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A `std::time::Duration` as a Postgres interval literal.
pub fn interval(duration: std::time::Duration) -> String {
    format!("{} milliseconds", duration.as_millis())
}

/// What a listing may show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this user's (local key).
    pub user_id: Option<i64>,
    pub status: Option<PaymentStatus>,
    pub reference_service: Option<String>,
    pub reference_id: Option<String>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
}

/// One page of payments, newest first.
pub async fn list(
    db: &PgPool,
    filter: &Filter,
    page: &PageRequest<PaymentKey>,
) -> sqlx::Result<Vec<PaymentRow>> {
    let mut query = QueryBuilder::new(concat!(
        "SELECT ",
        columns!(),
        " FROM payments p JOIN users u ON u.id = p.user_id WHERE true"
    ));
    if let Some(user_id) = filter.user_id {
        query.push(" AND p.user_id = ").push_bind(user_id);
    }
    if let Some(status) = filter.status {
        query.push(" AND p.status = ").push_bind(status.as_str());
    }
    if let Some(service) = &filter.reference_service {
        query
            .push(" AND p.reference_service = ")
            .push_bind(service.clone());
    }
    if let Some(id) = &filter.reference_id {
        query.push(" AND p.reference_id = ").push_bind(id.clone());
    }
    if let Some(from) = filter.created_from {
        query.push(" AND p.created_at >= ").push_bind(from);
    }
    if let Some(before) = filter.created_before {
        query.push(" AND p.created_at < ").push_bind(before);
    }
    if let Some((time, uuid)) = page.after {
        query
            .push(" AND (p.created_at, p.uuid) < (")
            .push_bind(time)
            .push(", ")
            .push_bind(uuid)
            .push(")");
    }
    query
        .push(" ORDER BY p.created_at DESC, p.uuid DESC LIMIT ")
        .push_bind(page.fetch_limit());
    query.build_query_as().fetch_all(db).await
}

/// One entry of a payment's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    pub refund: Option<Uuid>,
    pub from_status: Option<String>,
    pub to_status: String,
    #[sqlx(try_from = "String")]
    pub cause: Cause,
    pub provider_event_id: Option<String>,
    pub request_id: Option<String>,
    pub version: i32,
    pub at: DateTime<Utc>,
}

pub struct NewHistory<'a> {
    pub payment_id: i64,
    pub refund_id: Option<i64>,
    pub from_status: Option<&'a str>,
    pub to_status: &'a str,
    pub cause: Cause,
    pub provider_event_id: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub version: i32,
}

pub async fn insert_history(conn: &mut PgConnection, entry: &NewHistory<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO payment_history (payment_id, refund_id, from_status, to_status, cause,
             provider_event_id, request_id, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.payment_id)
    .bind(entry.refund_id)
    .bind(entry.from_status)
    .bind(entry.to_status)
    .bind(entry.cause.as_str())
    .bind(entry.provider_event_id)
    .bind(entry.request_id)
    .bind(entry.version)
    .execute(conn)
    .await?;
    Ok(())
}

/// The first `limit` entries of a payment's history, oldest first.
pub async fn history(db: &PgPool, payment_id: i64, limit: i64) -> sqlx::Result<Vec<HistoryRow>> {
    sqlx::query_as(
        "SELECT r.uuid AS refund, h.from_status, h.to_status, h.cause, h.provider_event_id,
             h.request_id, h.version, h.at
         FROM payment_history h LEFT JOIN refunds r ON r.id = h.refund_id
         WHERE h.payment_id = $1
         ORDER BY h.id
         LIMIT $2",
    )
    .bind(payment_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Seed data only: sets what was captured and refunded of a payment written as it is.
pub async fn seed_amounts(
    conn: &mut PgConnection,
    id: i64,
    captured: i64,
    refunded: i64,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE payments SET amount_captured = $2, amount_refunded = $3 WHERE id = $1")
        .bind(id)
        .bind(captured)
        .bind(refunded)
        .execute(conn)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_items_are_numbered_by_their_place() {
        let items = [json!({"id": 7, "n": 99}), json!({"id": 8})];
        let sent = serde_json::to_value(numbered(&items).0).unwrap();
        assert_eq!(sent, json!([{"id": 7, "n": 0}, {"id": 8, "n": 1}]));
    }
}
