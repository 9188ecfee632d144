//! The `checkins` table and the personal calendar tokens.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CheckinRow {
    pub id: i64,
    pub uuid: Uuid,
    pub event_id: i64,
    pub registration_id: Option<i64>,
    pub registration: Option<Uuid>,
    pub nonce: String,
    pub kind: String,
    pub result: String,
    pub attendee: Option<String>,
    pub created_at: DateTime<Utc>,
    pub annulled_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "c.id, c.uuid, c.event_id, c.registration_id,
    (SELECT uuid FROM registrations WHERE id = c.registration_id) AS registration,
    c.nonce, c.kind, c.result, c.attendee, c.created_at, c.annulled_at";

pub async fn find_by_nonce(
    db: impl PgExecutor<'_>,
    event_id: i64,
    nonce: &str,
) -> sqlx::Result<Option<CheckinRow>> {
    sqlx::query_as::<_, CheckinRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checkins c WHERE c.event_id = $1 AND c.nonce = $2"
    )))
    .bind(event_id)
    .bind(nonce)
    .fetch_optional(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<CheckinRow>> {
    sqlx::query_as::<_, CheckinRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM checkins c WHERE c.uuid = $1"
    )))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

/// The kind of the registration's last valid (`ok`, not annulled) scan.
pub async fn last_ok_kind(
    db: &mut PgConnection,
    registration_id: i64,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "SELECT kind FROM checkins WHERE registration_id = $1 AND result = 'ok'
           AND annulled_at IS NULL ORDER BY id DESC LIMIT 1",
    )
    .bind(registration_id)
    .fetch_optional(db)
    .await
}

pub struct NewCheckin<'a> {
    pub uuid: Uuid,
    pub event_id: i64,
    pub registration_id: Option<i64>,
    pub nonce: &'a str,
    pub kind: &'a str,
    pub result: &'a str,
    pub attendee: Option<&'a str>,
    pub scanned_by: i64,
}

/// Records a scan unless its nonce was seen; `false` when it was.
pub async fn insert(db: &mut PgConnection, new: &NewCheckin<'_>) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO checkins (uuid, event_id, registration_id, nonce, kind, result, attendee, scanned_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id, nonce) DO NOTHING",
    )
    .bind(new.uuid)
    .bind(new.event_id)
    .bind(new.registration_id)
    .bind(new.nonce)
    .bind(new.kind)
    .bind(new.result)
    .bind(new.attendee)
    .bind(new.scanned_by)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn annul(db: &mut PgConnection, id: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE checkins SET annulled_at = now() WHERE id = $1 AND annulled_at IS NULL",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// People inside: registrations whose last valid scan is an entry.
pub async fn inside(db: impl PgExecutor<'_>, event_id: i64) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT DISTINCT ON (registration_id) kind FROM checkins
             WHERE event_id = $1 AND result = 'ok' AND annulled_at IS NULL
             ORDER BY registration_id, id DESC
         ) last WHERE kind = 'entry'",
    )
    .bind(event_id)
    .fetch_one(db)
    .await
}

/// The user's calendar token, made on first use.
pub async fn calendar_token(
    db: impl PgExecutor<'_>,
    user_id: i64,
    fresh: &str,
) -> sqlx::Result<String> {
    sqlx::query_scalar(
        "INSERT INTO calendar_tokens (user_id, token) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id
         RETURNING token",
    )
    .bind(user_id)
    .bind(fresh)
    .fetch_one(db)
    .await
}

pub async fn user_of_token(db: impl PgExecutor<'_>, token: &str) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT user_id FROM calendar_tokens WHERE token = $1")
        .bind(token)
        .fetch_optional(db)
        .await
}
