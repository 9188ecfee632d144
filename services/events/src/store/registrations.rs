//! The `registrations` table.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::RegistrationStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegistrationRow {
    pub id: i64,
    pub uuid: Uuid,
    pub event_id: i64,
    pub event_uuid: Uuid,
    pub ticket_type_id: i64,
    pub ticket_type_uuid: Uuid,
    pub user_id: i64,
    pub user_uuid: Uuid,
    pub email: String,
    pub name: String,
    pub status: String,
    pub guests: i32,
    pub answers: Value,
    pub waitlist_position: Option<i64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub payment_id: Option<Uuid>,
    pub client_secret: Option<String>,
    pub ticket_secret: Option<String>,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RegistrationRow {
    pub fn status(&self) -> RegistrationStatus {
        RegistrationStatus::parse(&self.status).unwrap_or(RegistrationStatus::Cancelled)
    }

    /// The registrant and their guests.
    pub fn seats(&self) -> i32 {
        1 + self.guests
    }
}

const COLUMNS: &str = "r.id, r.uuid, r.event_id, r.ticket_type_id, r.user_id, u.uuid AS user_uuid,
    (SELECT uuid FROM events WHERE id = r.event_id) AS event_uuid,
    (SELECT uuid FROM ticket_types WHERE id = r.ticket_type_id) AS ticket_type_uuid,
    u.email, u.name, r.status, r.guests, r.answers, r.waitlist_position, r.expires_at,
    r.payment_id, r.client_secret, r.ticket_secret, r.cancel_reason, r.created_at, r.updated_at";

pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<RegistrationRow>> {
    sqlx::query_as::<_, RegistrationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM registrations r JOIN users u ON u.id = r.user_id WHERE r.uuid = $1"
    )))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

pub async fn find_by_secret(
    db: impl PgExecutor<'_>,
    secret: &str,
) -> sqlx::Result<Option<RegistrationRow>> {
    sqlx::query_as::<_, RegistrationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM registrations r JOIN users u ON u.id = r.user_id
         WHERE r.ticket_secret = $1"
    )))
    .bind(secret)
    .fetch_optional(db)
    .await
}

/// Locks the registration (its event must be locked first).
pub async fn lock(db: &mut PgConnection, id: i64) -> sqlx::Result<Option<RegistrationRow>> {
    sqlx::query_as::<_, RegistrationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM registrations r JOIN users u ON u.id = r.user_id
         WHERE r.id = $1 FOR UPDATE OF r"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// The user's active registration for the event, if any.
pub async fn find_active(
    db: impl PgExecutor<'_>,
    event_id: i64,
    user_id: i64,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT uuid FROM registrations WHERE event_id = $1 AND user_id = $2
           AND status IN ('pending_approval', 'pending_payment', 'confirmed', 'waitlisted')",
    )
    .bind(event_id)
    .bind(user_id)
    .fetch_optional(db)
    .await
}

/// The waitlist of an event in promotion order: position, then time.
pub async fn waitlist(db: &mut PgConnection, event_id: i64) -> sqlx::Result<Vec<RegistrationRow>> {
    sqlx::query_as::<_, RegistrationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM registrations r JOIN users u ON u.id = r.user_id
         WHERE r.event_id = $1 AND r.status = 'waitlisted'
         ORDER BY r.waitlist_position, r.created_at, r.id
         FOR UPDATE OF r"
    )))
    .bind(event_id)
    .fetch_all(db)
    .await
}

/// Every active registration of an event (to cancel or notify them all).
pub async fn active_of_event(
    db: &mut PgConnection,
    event_id: i64,
) -> sqlx::Result<Vec<RegistrationRow>> {
    sqlx::query_as::<_, RegistrationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM registrations r JOIN users u ON u.id = r.user_id
         WHERE r.event_id = $1
           AND r.status IN ('pending_approval', 'pending_payment', 'confirmed', 'waitlisted')
         ORDER BY r.id FOR UPDATE OF r"
    )))
    .bind(event_id)
    .fetch_all(db)
    .await
}

/// Holds whose time is up: (registration id, event id), oldest first.
pub async fn expired_holds(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as(
        "SELECT id, event_id FROM registrations
         WHERE status = 'pending_payment' AND expires_at <= $1
         ORDER BY expires_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A user's registrations, newest first (keyset on the local id).
pub async fn list_of_user(
    db: impl PgExecutor<'_>,
    user_id: i64,
    before: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<RegistrationRow>> {
    sqlx::query_as::<_, RegistrationRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM registrations r JOIN users u ON u.id = r.user_id
         WHERE r.user_id = $1
           AND ($2::uuid IS NULL OR r.id < (SELECT id FROM registrations WHERE uuid = $2))
         ORDER BY r.id DESC LIMIT $3"
    )))
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

pub struct NewRegistration<'a> {
    pub uuid: Uuid,
    pub event_id: i64,
    pub ticket_type_id: i64,
    pub user_id: i64,
    pub status: RegistrationStatus,
    pub guests: i32,
    pub answers: &'a Value,
    pub waitlisted: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub ticket_secret: Option<&'a str>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(
    db: &mut PgConnection,
    new: &NewRegistration<'_>,
) -> sqlx::Result<RegistrationRow> {
    sqlx::query_as::<_, RegistrationRow>(sqlx::AssertSqlSafe(format!(
        "WITH r AS (
             INSERT INTO registrations (uuid, event_id, ticket_type_id, user_id, status, guests,
                 answers, waitlist_position, expires_at, ticket_secret, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7,
                 CASE WHEN $8 THEN nextval('waitlist_positions') END, $9, $10, $11, $11)
             RETURNING *
         )
         SELECT {COLUMNS} FROM r JOIN users u ON u.id = r.user_id"
    )))
    .bind(new.uuid)
    .bind(new.event_id)
    .bind(new.ticket_type_id)
    .bind(new.user_id)
    .bind(new.status.as_str())
    .bind(new.guests)
    .bind(new.answers)
    .bind(new.waitlisted)
    .bind(new.expires_at)
    .bind(new.ticket_secret)
    .bind(new.created_at)
    .fetch_one(db)
    .await
}

/// Moves a registration to `status`: the hold deadline and ticket as given (kept when `None`),
/// the cancellation reason when cancelled.
pub async fn set_status(
    db: &mut PgConnection,
    id: i64,
    status: RegistrationStatus,
    expires_at: Option<DateTime<Utc>>,
    ticket_secret: Option<&str>,
    cancel_reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE registrations SET status = $2,
             expires_at = CASE WHEN $2 = 'pending_payment' THEN COALESCE($3, expires_at) END,
             ticket_secret = COALESCE($4, ticket_secret),
             cancel_reason = COALESCE($5, cancel_reason),
             cancelled_at = CASE WHEN $2 IN ('cancelled', 'expired', 'rejected') THEN now() END,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(expires_at)
    .bind(ticket_secret)
    .bind(cancel_reason)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_payment(
    db: impl PgExecutor<'_>,
    id: i64,
    payment_id: Uuid,
    client_secret: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE registrations SET payment_id = $2, client_secret = $3, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(payment_id)
    .bind(client_secret)
    .execute(db)
    .await?;
    Ok(())
}
