//! Which platform events become which mail (seed data, see `populate.rs`).

use sqlx::PgExecutor;

/// One mapping: event type → template, and where the recipient is in the event's `data`
/// (JSON pointers, RFC 6901).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventMail {
    pub event_type: String,
    pub template_key: String,
    pub email_pointer: String,
    pub name_pointer: Option<String>,
    pub user_pointer: Option<String>,
    pub locale_pointer: Option<String>,
    pub category: Option<String>,
}

/// Every mapping: the event types the consumer binds to at start.
pub async fn all(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<EventMail>> {
    sqlx::query_as(
        "SELECT event_type, template_key, email_pointer, name_pointer, user_pointer, locale_pointer, category
         FROM event_mails ORDER BY event_type",
    )
    .fetch_all(db)
    .await
}

pub async fn find(db: impl PgExecutor<'_>, event_type: &str) -> sqlx::Result<Option<EventMail>> {
    sqlx::query_as(
        "SELECT event_type, template_key, email_pointer, name_pointer, user_pointer, locale_pointer, category
         FROM event_mails WHERE event_type = $1",
    )
    .bind(event_type)
    .fetch_optional(db)
    .await
}

/// Seed data: get-or-create by event type, never changing an existing mapping.
pub async fn insert_if_missing(db: impl PgExecutor<'_>, mapping: &EventMail) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO event_mails (event_type, template_key, email_pointer, name_pointer, user_pointer, locale_pointer, category)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_type) DO NOTHING",
    )
    .bind(&mapping.event_type)
    .bind(&mapping.template_key)
    .bind(&mapping.email_pointer)
    .bind(&mapping.name_pointer)
    .bind(&mapping.user_pointer)
    .bind(&mapping.locale_pointer)
    .bind(&mapping.category)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
