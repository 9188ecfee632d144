//! The `events` and `ticket_types` tables.

use chrono::{DateTime, Utc};
use kit::PageRequest;
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The keyset key of the public listing: upcoming first, UUID as tie-break.
pub type EventKey = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub id: i64,
    pub uuid: Uuid,
    pub organizer_id: i64,
    pub organizer: Uuid,
    pub title: String,
    pub description: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub time_zone: String,
    pub venue: Option<String>,
    pub online_url: Option<String>,
    pub status: String,
    pub visibility: String,
    pub registration_opens_at: Option<DateTime<Utc>>,
    pub registration_closes_at: Option<DateTime<Utc>>,
    pub capacity: i32,
    pub taken: i32,
    pub max_guests: i32,
    pub requires_approval: bool,
    pub questions: Value,
    pub sequence: i32,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl EventRow {
    pub fn key(&self) -> EventKey {
        (self.starts_at, self.uuid)
    }
}

const COLUMNS: &str = "e.id, e.uuid, e.organizer_id, u.uuid AS organizer, e.title, e.description,
    e.starts_at, e.ends_at, e.time_zone, e.venue, e.online_url, e.status, e.visibility,
    e.registration_opens_at, e.registration_closes_at, e.capacity, e.taken, e.max_guests,
    e.requires_approval, e.questions, e.sequence, e.cancel_reason, e.created_at, e.updated_at";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketTypeRow {
    pub id: i64,
    pub uuid: Uuid,
    pub event_id: i64,
    pub name: String,
    pub price: i64,
    pub currency: Option<String>,
    pub capacity: i32,
    pub taken: i32,
    pub position: i32,
}

impl TicketTypeRow {
    pub fn is_paid(&self) -> bool {
        self.price > 0
    }
}

pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events e JOIN users u ON u.id = e.organizer_id
         WHERE e.uuid = $1 AND e.deleted_at IS NULL"
    )))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

pub async fn find_by_id(db: impl PgExecutor<'_>, id: i64) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events e JOIN users u ON u.id = e.organizer_id WHERE e.id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The event, locked until the transaction ends: every change of its seats happens under it.
pub async fn lock(db: &mut PgConnection, id: i64) -> sqlx::Result<Option<EventRow>> {
    sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events e JOIN users u ON u.id = e.organizer_id
         WHERE e.id = $1 FOR UPDATE OF e"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// One page of published public events starting after `from`, soonest first.
pub async fn list_public(
    db: impl PgExecutor<'_>,
    from: DateTime<Utc>,
    page: &PageRequest<EventKey>,
) -> sqlx::Result<Vec<EventRow>> {
    let (after_time, after_uuid) = page.after.map_or((None, None), |(t, u)| (Some(t), Some(u)));
    sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events e JOIN users u ON u.id = e.organizer_id
         WHERE e.status = 'published' AND e.visibility = 'public' AND e.deleted_at IS NULL
           AND e.ends_at >= $1
           AND ($2::timestamptz IS NULL OR (e.starts_at, e.uuid) > ($2, $3))
         ORDER BY e.starts_at, e.uuid
         LIMIT $4"
    )))
    .bind(from)
    .bind(after_time)
    .bind(after_uuid)
    .bind(page.fetch_limit())
    .fetch_all(db)
    .await
}

/// Published (and cancelled) public events for the public calendar: recent and upcoming, at
/// most `limit`.
pub async fn calendar_public(
    db: impl PgExecutor<'_>,
    since: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as::<_, EventRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events e JOIN users u ON u.id = e.organizer_id
         WHERE e.status IN ('published', 'cancelled', 'completed') AND e.visibility = 'public'
           AND e.deleted_at IS NULL AND e.ends_at >= $1
         ORDER BY e.starts_at, e.uuid LIMIT $2"
    )))
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Events a user registered for (any registration not rejected), for their calendar.
pub async fn calendar_of_user(
    db: impl PgExecutor<'_>,
    user_id: i64,
    since: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<(EventRow, String)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        event: EventRow,
        registration_status: String,
    }
    let rows = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (e.starts_at, e.uuid) {COLUMNS}, r.status AS registration_status
         FROM registrations r JOIN events e ON e.id = r.event_id
         JOIN users u ON u.id = e.organizer_id
         WHERE r.user_id = $1 AND r.status <> 'rejected' AND e.status <> 'draft'
           AND e.deleted_at IS NULL AND e.ends_at >= $2
         ORDER BY e.starts_at, e.uuid, r.id DESC LIMIT $3"
    )))
    .bind(user_id)
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.event, row.registration_status))
        .collect())
}

pub struct NewEvent<'a> {
    pub uuid: Uuid,
    pub organizer_id: i64,
    pub title: &'a str,
    pub description: &'a str,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub time_zone: &'a str,
    pub venue: Option<&'a str>,
    pub online_url: Option<&'a str>,
    pub status: &'a str,
    pub visibility: &'a str,
    pub registration_opens_at: Option<DateTime<Utc>>,
    pub registration_closes_at: Option<DateTime<Utc>>,
    pub capacity: i32,
    pub max_guests: i32,
    pub requires_approval: bool,
    pub questions: &'a Value,
}

/// Inserts an event unless one with this UUID exists; its local id, `None` when it existed.
pub async fn insert(db: &mut PgConnection, event: &NewEvent<'_>) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO events (uuid, organizer_id, title, description, starts_at, ends_at,
             time_zone, venue, online_url, status, visibility, registration_opens_at,
             registration_closes_at, capacity, max_guests, requires_approval, questions)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT (uuid) DO NOTHING RETURNING id",
    )
    .bind(event.uuid)
    .bind(event.organizer_id)
    .bind(event.title)
    .bind(event.description)
    .bind(event.starts_at)
    .bind(event.ends_at)
    .bind(event.time_zone)
    .bind(event.venue)
    .bind(event.online_url)
    .bind(event.status)
    .bind(event.visibility)
    .bind(event.registration_opens_at)
    .bind(event.registration_closes_at)
    .bind(event.capacity)
    .bind(event.max_guests)
    .bind(event.requires_approval)
    .bind(event.questions)
    .fetch_optional(db)
    .await
}

pub struct NewTicketType<'a> {
    pub uuid: Uuid,
    pub event_id: i64,
    pub name: &'a str,
    pub price: i64,
    pub currency: Option<&'a str>,
    pub capacity: i32,
    pub position: i32,
}

pub async fn insert_ticket_type(
    db: &mut PgConnection,
    ticket: &NewTicketType<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ticket_types (uuid, event_id, name, price, currency, capacity, position)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(ticket.uuid)
    .bind(ticket.event_id)
    .bind(ticket.name)
    .bind(ticket.price)
    .bind(ticket.currency)
    .bind(ticket.capacity)
    .bind(ticket.position)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn ticket_types(
    db: impl PgExecutor<'_>,
    event_id: i64,
) -> sqlx::Result<Vec<TicketTypeRow>> {
    sqlx::query_as::<_, TicketTypeRow>(
        "SELECT id, uuid, event_id, name, price, currency, capacity, taken, position
         FROM ticket_types WHERE event_id = $1 ORDER BY position, id",
    )
    .bind(event_id)
    .fetch_all(db)
    .await
}

/// Adds `seats` (negative to free them) to the event's and the ticket type's taken seats.
pub async fn add_taken(
    db: &mut PgConnection,
    event_id: i64,
    ticket_type_id: i64,
    seats: i32,
) -> sqlx::Result<()> {
    sqlx::query(
        "WITH t AS (UPDATE ticket_types SET taken = taken + $3 WHERE id = $2)
         UPDATE events SET taken = taken + $3 WHERE id = $1",
    )
    .bind(event_id)
    .bind(ticket_type_id)
    .bind(seats)
    .execute(db)
    .await?;
    Ok(())
}

/// Marks published events that have ended as `completed`; their ids.
pub async fn complete_ended(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "UPDATE events SET status = 'completed', updated_at = now()
         WHERE status = 'published' AND ends_at <= $1
         RETURNING uuid",
    )
    .bind(now)
    .fetch_all(db)
    .await
}

pub async fn set_status(
    db: &mut PgConnection,
    id: i64,
    status: &str,
    cancel_reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE events SET status = $2, cancel_reason = COALESCE($3, cancel_reason),
             sequence = sequence + CASE WHEN $2 = 'cancelled' THEN 1 ELSE 0 END,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(cancel_reason)
    .execute(db)
    .await?;
    Ok(())
}

/// The changeable fields of an event, all set at once (the caller merged the changes).
pub struct EventChanges<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub time_zone: &'a str,
    pub venue: Option<&'a str>,
    pub online_url: Option<&'a str>,
    pub visibility: &'a str,
    pub registration_opens_at: Option<DateTime<Utc>>,
    pub registration_closes_at: Option<DateTime<Utc>>,
    pub capacity: i32,
    pub max_guests: i32,
    pub requires_approval: bool,
    /// Attendees see the change (iCalendar `SEQUENCE` grows).
    pub bump_sequence: bool,
}

pub async fn update(db: &mut PgConnection, id: i64, c: &EventChanges<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE events SET title = $2, description = $3, starts_at = $4, ends_at = $5,
             time_zone = $6, venue = $7, online_url = $8, visibility = $9,
             registration_opens_at = $10, registration_closes_at = $11, capacity = $12,
             max_guests = $13, requires_approval = $14,
             sequence = sequence + CASE WHEN $15 THEN 1 ELSE 0 END, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(c.title)
    .bind(c.description)
    .bind(c.starts_at)
    .bind(c.ends_at)
    .bind(c.time_zone)
    .bind(c.venue)
    .bind(c.online_url)
    .bind(c.visibility)
    .bind(c.registration_opens_at)
    .bind(c.registration_closes_at)
    .bind(c.capacity)
    .bind(c.max_guests)
    .bind(c.requires_approval)
    .bind(c.bump_sequence)
    .execute(db)
    .await?;
    Ok(())
}

/// Confirmed seats, held seats and waitlisted registrations, per ticket type.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
pub struct Tally {
    pub ticket_type_id: i64,
    pub confirmed: i64,
    pub held: i64,
    pub waitlisted: i64,
}

pub async fn tally(db: impl PgExecutor<'_>, event_id: i64) -> sqlx::Result<Vec<Tally>> {
    sqlx::query_as::<_, Tally>(
        "SELECT ticket_type_id,
             COALESCE(sum(1 + guests) FILTER (WHERE status = 'confirmed'), 0)::bigint AS confirmed,
             COALESCE(sum(1 + guests) FILTER (WHERE status = 'pending_payment'), 0)::bigint AS held,
             count(*) FILTER (WHERE status = 'waitlisted') AS waitlisted
         FROM registrations WHERE event_id = $1
           AND status IN ('confirmed', 'pending_payment', 'waitlisted')
         GROUP BY ticket_type_id",
    )
    .bind(event_id)
    .fetch_all(db)
    .await
}
