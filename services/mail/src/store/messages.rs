//! Sends, messages, their timelines, and the delivery queue (claim, outcome).

use chrono::{DateTime, Utc};
use kit::PageRequest;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use super::Access;

/// What the messages of one send share.
pub struct NewSend<'a> {
    pub template_version_id: i64,
    pub data: &'a serde_json::Value,
    pub headers: &'a serde_json::Value,
    pub attachments: &'a [NewAttachment],
}

#[derive(Debug, Clone)]
pub struct NewAttachment {
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

/// The messages of one send, column by column (inserted with one statement).
#[derive(Debug, Default)]
pub struct NewMessages {
    pub uuid: Vec<Uuid>,
    pub to_email: Vec<String>,
    pub to_name: Vec<String>,
    pub user_id: Vec<Option<i64>>,
    pub status: Vec<String>,
    pub next_attempt_at: Vec<Option<DateTime<Utc>>>,
    pub message_id: Vec<String>,
    /// The timeline detail of a message suppressed at once (none for a queued one).
    pub suppressed: Vec<Option<String>>,
}

/// What all messages of a send have in common.
pub struct Common<'a> {
    pub template_key: &'a str,
    pub template_version: i32,
    pub locale: &'a str,
    pub category: &'a str,
    pub send_at: Option<DateTime<Utc>>,
    pub tags: &'a [String],
    pub metadata: &'a serde_json::Value,
    pub request_id: Option<&'a str>,
    pub event_id: Option<Uuid>,
    pub event_type: Option<&'a str>,
    pub sender: Option<Uuid>,
    /// The detail of every message's `queued` timeline entry.
    pub queued_detail: Option<&'a str>,
}

/// Stores a send, its messages and their first timeline entries (`queued`, and `suppressed`
/// for those suppressed at once) in one statement; the send's id and each message's local id
/// by UUID. Attachments follow with [`insert_attachments`].
pub async fn insert_send(
    conn: &mut PgConnection,
    send: &NewSend<'_>,
    common: &Common<'_>,
    new: &NewMessages,
) -> sqlx::Result<(i64, Vec<(i64, Uuid)>)> {
    let rows: Vec<(i64, i64, Uuid)> = sqlx::query_as(
        "WITH send AS (
             INSERT INTO sends (template_version_id, data, headers, has_attachments)
             VALUES ($1, $2, $3, $4) RETURNING id
         ), n AS (
             SELECT * FROM unnest($5::uuid[], $6::text[], $7::text[], $8::bigint[], $9::text[],
                                  $10::timestamptz[], $11::text[], $12::text[])
                 WITH ORDINALITY AS n(uuid, to_email, to_name, user_id, status, next_attempt_at,
                                      message_id, suppressed, position)
         ), inserted AS (
             INSERT INTO messages (uuid, send_id, template_key, template_version, locale, category,
                 to_email, to_name, user_id, status, next_attempt_at, send_at, message_id, tags,
                 metadata, request_id, event_id, event_type, sender, finished_at)
             SELECT n.uuid, send.id, $13, $14, $15, $16, n.to_email, n.to_name, n.user_id, n.status,
                 n.next_attempt_at, $17, n.message_id, $18, $19, $20, $21, $22, $23,
                 CASE WHEN n.status = 'suppressed' THEN now() END
             FROM send, n ORDER BY n.position
             RETURNING id, uuid, send_id
         ), timeline AS (
             INSERT INTO message_events (message_id, kind, detail)
             SELECT e.id, e.kind, e.detail FROM (
                 SELECT i.id, 'queued' AS kind, $24::text AS detail, 0 AS step FROM inserted i
                 UNION ALL
                 SELECT i.id, 'suppressed', n.suppressed, 1
                 FROM inserted i JOIN n ON n.uuid = i.uuid WHERE n.suppressed IS NOT NULL
             ) e ORDER BY e.id, e.step
         )
         SELECT send_id, id, uuid FROM inserted",
    )
    .bind(send.template_version_id)
    .bind(send.data)
    .bind(send.headers)
    .bind(!send.attachments.is_empty())
    .bind(&new.uuid)
    .bind(&new.to_email)
    .bind(&new.to_name)
    .bind(&new.user_id)
    .bind(&new.status)
    .bind(&new.next_attempt_at)
    .bind(&new.message_id)
    .bind(&new.suppressed)
    .bind(common.template_key)
    .bind(common.template_version)
    .bind(common.locale)
    .bind(common.category)
    .bind(common.send_at)
    .bind(common.tags)
    .bind(common.metadata)
    .bind(common.request_id)
    .bind(common.event_id)
    .bind(common.event_type)
    .bind(common.sender)
    .bind(common.queued_detail)
    .fetch_all(&mut *conn)
    .await?;
    let send_id = rows.first().map_or(0, |(send_id, _, _)| *send_id);
    let ids = rows.into_iter().map(|(_, id, uuid)| (id, uuid)).collect();
    if !send.attachments.is_empty() {
        insert_attachments(conn, send_id, send.attachments).await?;
    }
    Ok((send_id, ids))
}

async fn insert_attachments(
    conn: &mut PgConnection,
    send_id: i64,
    attachments: &[NewAttachment],
) -> sqlx::Result<()> {
    for (position, attachment) in attachments.iter().enumerate() {
        sqlx::query(
            "INSERT INTO attachments (send_id, position, filename, content_type, content)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(send_id)
        .bind(position as i16)
        .bind(&attachment.filename)
        .bind(&attachment.content_type)
        .bind(&attachment.content)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Timeline entries, column by column.
#[derive(Debug, Default)]
pub struct NewEvents {
    pub message_id: Vec<i64>,
    pub kind: Vec<&'static str>,
    pub attempt: Vec<Option<i32>>,
    pub reply: Vec<Option<String>>,
    pub detail: Vec<Option<String>>,
}

impl NewEvents {
    pub fn push(
        &mut self,
        message_id: i64,
        kind: &'static str,
        attempt: Option<i32>,
        reply: Option<String>,
        detail: Option<String>,
    ) {
        self.message_id.push(message_id);
        self.kind.push(kind);
        self.attempt.push(attempt);
        self.reply.push(reply);
        self.detail.push(detail);
    }

    pub fn is_empty(&self) -> bool {
        self.message_id.is_empty()
    }
}

pub async fn insert_events(db: impl PgExecutor<'_>, events: &NewEvents) -> sqlx::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO message_events (message_id, kind, attempt, reply, detail)
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::text[])",
    )
    .bind(&events.message_id)
    .bind(&events.kind)
    .bind(&events.attempt)
    .bind(&events.reply)
    .bind(&events.detail)
    .execute(db)
    .await?;
    Ok(())
}

/// A message as readers see it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MessageRow {
    pub id: i64,
    pub uuid: Uuid,
    pub template_key: String,
    pub template_version: i32,
    pub locale: String,
    pub category: String,
    pub to_email: String,
    pub to_name: String,
    pub user_uuid: Option<Uuid>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub send_at: Option<DateTime<Utc>>,
    pub message_id: String,
    pub last_reply: Option<String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    pub request_id: Option<String>,
    pub event_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub sender: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl MessageRow {
    /// Keyset key of listings (newest first).
    pub fn key(&self) -> (DateTime<Utc>, Uuid) {
        (self.created_at, self.uuid)
    }
}

/// The columns of [`MessageRow`] over `messages m LEFT JOIN users u`.
macro_rules! columns {
    () => {
        "m.id, m.uuid, m.template_key, m.template_version, m.locale, m.category, m.to_email,
         m.to_name, u.uuid AS user_uuid, m.status, m.attempts, m.next_attempt_at, m.send_at,
         m.message_id, m.last_reply, m.tags, m.metadata, m.request_id, m.event_id, m.event_type,
         m.sender, m.created_at, m.updated_at, m.finished_at"
    };
}

pub async fn find(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    access: Access,
) -> sqlx::Result<Option<MessageRow>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM messages m LEFT JOIN users u ON u.id = m.user_id
          WHERE m.uuid = $1 AND ($2::uuid IS NULL OR m.sender = $2)"
    ))
    .bind(uuid)
    .bind(access.sender())
    .fetch_optional(db)
    .await
}

/// One entry of a message's timeline.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub attempt: Option<i32>,
    pub reply: Option<String>,
    pub detail: Option<String>,
}

pub async fn timeline(db: impl PgExecutor<'_>, message_id: i64) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(
        "SELECT at, kind, attempt, reply, detail FROM message_events
         WHERE message_id = $1 ORDER BY id",
    )
    .bind(message_id)
    .fetch_all(db)
    .await
}

/// Filters of a listing; `None` = any.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Lower-cased address.
    pub recipient: Option<String>,
    pub status: Option<&'static str>,
    pub template: Option<String>,
    /// A local user id (`Some(None)`: a user never seen here, who has no messages).
    pub user_id: Option<Option<i64>>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// Newest first, after the page's cursor.
pub async fn list(
    db: impl PgExecutor<'_>,
    access: Access,
    filter: &Filter,
    page: &PageRequest<(DateTime<Utc>, Uuid)>,
) -> sqlx::Result<Vec<MessageRow>> {
    if matches!(filter.user_id, Some(None)) {
        return Ok(Vec::new());
    }
    let (after_at, after_id) = page.after.unzip();
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM messages m LEFT JOIN users u ON u.id = m.user_id
          WHERE ($1::uuid IS NULL OR m.sender = $1)
            AND ($2::text IS NULL OR lower(m.to_email) = $2)
            AND ($3::text IS NULL OR m.status = $3)
            AND ($4::text IS NULL OR m.template_key = $4)
            AND ($5::bigint IS NULL OR m.user_id = $5)
            AND ($6::timestamptz IS NULL OR m.created_at >= $6)
            AND ($7::timestamptz IS NULL OR m.created_at < $7)
            AND ($8::timestamptz IS NULL OR (m.created_at, m.uuid) < ($8, $9))
          ORDER BY m.created_at DESC, m.uuid DESC LIMIT $10"
    ))
    .bind(access.sender())
    .bind(filter.recipient.as_deref())
    .bind(filter.status)
    .bind(filter.template.as_deref())
    .bind(filter.user_id.flatten())
    .bind(filter.since)
    .bind(filter.until)
    .bind(after_at)
    .bind(after_id)
    .bind(page.fetch_limit())
    .fetch_all(db)
    .await
}

/// Cancels a message not yet being sent; the row after the change, or `Err` with its current
/// status when it cannot be canceled (`None` when there is no such message).
pub async fn cancel(
    conn: &mut PgConnection,
    uuid: Uuid,
    access: Access,
) -> sqlx::Result<Option<Result<MessageRow, String>>> {
    let canceled: Option<i64> = sqlx::query_scalar(
        "UPDATE messages SET status = 'canceled', next_attempt_at = NULL, finished_at = now(),
             updated_at = now()
         WHERE uuid = $1 AND ($2::uuid IS NULL OR sender = $2) AND status IN ('queued', 'deferred')
         RETURNING id",
    )
    .bind(uuid)
    .bind(access.sender())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = canceled {
        let mut events = NewEvents::default();
        events.push(id, "canceled", None, None, None);
        insert_events(&mut *conn, &events).await?;
    }
    let Some(row) = find(&mut *conn, uuid, access).await? else {
        return Ok(None);
    };
    Ok(Some(if canceled.is_some() {
        Ok(row)
    } else {
        Err(row.status)
    }))
}

/// A message claimed for sending, with what its send says.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub uuid: Uuid,
    pub send_id: i64,
    pub template_key: String,
    pub template_version: i32,
    pub template_version_id: i64,
    pub locale: String,
    pub category: String,
    pub to_email: String,
    pub to_name: String,
    pub user_uuid: Option<Uuid>,
    /// This attempt's number (1 for the first).
    pub attempts: i32,
    pub message_id: String,
    pub request_id: Option<String>,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// When it was due first (`send_at`, else when it was queued).
    pub due_since: DateTime<Utc>,
    pub data: serde_json::Value,
    pub headers: serde_json::Value,
    pub has_attachments: bool,
    /// It was being sent when its worker stopped (its lease ran out).
    pub interrupted: bool,
    /// The reason its address is suppressed (for its category) now, if it is.
    pub suppressed: Option<String>,
}

/// Claims up to `limit` due messages (and those whose lease ran out) for `lease`: marks them
/// `sending`, counts the attempt, and notes on the timeline of a message taken over from a
/// worker that stopped. Concurrent claimers skip each other's rows. Each comes with its send's
/// data and whether its address is suppressed now.
pub async fn claim(
    pool: &PgPool,
    limit: i64,
    lease: std::time::Duration,
) -> sqlx::Result<Vec<Claimed>> {
    sqlx::query_as(
        "WITH due AS (
             SELECT id, status FROM messages
             WHERE status IN ('queued', 'sending', 'deferred') AND next_attempt_at <= now()
             ORDER BY next_attempt_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED
         ), claimed AS (
             UPDATE messages m
             SET status = 'sending', attempts = m.attempts + 1,
                 next_attempt_at = now() + make_interval(secs => $2), updated_at = now()
             FROM due WHERE m.id = due.id
             RETURNING m.id, m.uuid, m.send_id, m.template_key, m.template_version, m.locale,
                 m.category, m.to_email, m.to_name, m.user_id, m.attempts, m.message_id,
                 m.request_id, m.tags, m.metadata, m.created_at,
                 COALESCE(m.send_at, m.created_at) AS due_since,
                 due.status = 'sending' AS interrupted
         ), noted AS (
             INSERT INTO message_events (message_id, kind, attempt, detail)
             SELECT id, 'interrupted', attempts - 1,
                 'the worker sending it stopped before recording the outcome; sending again with the same Message-ID'
             FROM claimed WHERE interrupted
         )
         SELECT c.id, c.uuid, c.send_id, c.template_key, c.template_version,
             s.template_version_id, c.locale, c.category, c.to_email, c.to_name,
             u.uuid AS user_uuid, c.attempts, c.message_id, c.request_id, c.tags, c.metadata,
             c.created_at, c.due_since, s.data, s.headers, s.has_attachments, c.interrupted,
             (SELECT x.reason FROM suppressions x
              WHERE x.email = lower(c.to_email) AND x.released_at IS NULL
                AND (x.expires_at IS NULL OR x.expires_at > now())
                AND (x.category IS NULL OR x.category = c.category)
              ORDER BY x.created_at LIMIT 1) AS suppressed
         FROM claimed c JOIN sends s ON s.id = c.send_id LEFT JOIN users u ON u.id = c.user_id",
    )
    .bind(limit)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// When the next message falls due (or a lease runs out), if any is waiting.
pub async fn next_due(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM messages WHERE status IN ('queued', 'sending', 'deferred')",
    )
    .fetch_one(pool)
    .await
}

/// The oldest due message's due time: how far delivery is behind.
pub async fn oldest_due(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM messages
         WHERE status IN ('queued', 'deferred') AND next_attempt_at <= now()",
    )
    .fetch_one(pool)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttachmentRow {
    pub send_id: i64,
    pub filename: String,
    pub content_type: String,
    pub content: Vec<u8>,
}

pub async fn attachments(pool: &PgPool, send_ids: &[i64]) -> sqlx::Result<Vec<AttachmentRow>> {
    sqlx::query_as(
        "SELECT send_id, filename, content_type, content FROM attachments
         WHERE send_id = ANY($1) ORDER BY send_id, position",
    )
    .bind(send_ids)
    .fetch_all(pool)
    .await
}

/// The outcomes of one batch of attempts, column by column.
#[derive(Debug, Default)]
pub struct Outcomes {
    pub id: Vec<i64>,
    pub attempt: Vec<i32>,
    pub status: Vec<&'static str>,
    pub reply: Vec<Option<String>>,
    pub next_attempt_at: Vec<Option<DateTime<Utc>>>,
}

/// Writes the outcomes of attempts still held (status `sending` at the same attempt: a message
/// whose lease ran out and that another worker took over is left to that worker). The ids
/// written.
pub async fn record(conn: &mut PgConnection, outcomes: &Outcomes) -> sqlx::Result<Vec<i64>> {
    sqlx::query_scalar(
        "UPDATE messages m
         SET status = o.status, last_reply = COALESCE(o.reply, m.last_reply),
             -- A suppressed message was never attempted.
             attempts = CASE WHEN o.status = 'suppressed' THEN m.attempts - 1 ELSE m.attempts END,
             next_attempt_at = o.next_at, updated_at = now(),
             finished_at = CASE WHEN o.status IN ('sent', 'failed', 'suppressed') THEN now() END
         FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::timestamptz[])
             AS o(id, attempt, status, reply, next_at)
         WHERE m.id = o.id AND m.status = 'sending' AND m.attempts = o.attempt
         RETURNING m.id",
    )
    .bind(&outcomes.id)
    .bind(&outcomes.attempt)
    .bind(&outcomes.status)
    .bind(&outcomes.reply)
    .bind(&outcomes.next_attempt_at)
    .fetch_all(conn)
    .await
}

/// Counts by status (for the metrics and tests).
pub async fn count_by_status(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT status, count(*) FROM messages GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
}
