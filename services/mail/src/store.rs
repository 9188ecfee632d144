//! Queries. Rows reference users by the local key; everything returned carries UUIDs only.
//! The users table itself is `identity::users`' (created on first sight, kept from events).

use chrono::{DateTime, Utc};
use kit::PageRequest;
use sqlx::{PgConnection, PgExecutor, PgPool};
use uuid::Uuid;

use crate::domain::{NoteBody, NoteTitle};

/// The keyset key of the note listings: newest first, UUID as tie-break.
pub type NoteKey = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NoteRow {
    pub uuid: Uuid,
    pub owner: Uuid,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl NoteRow {
    pub fn key(&self) -> NoteKey {
        (self.created_at, self.uuid)
    }
}

/// Which notes a lookup may find: a user's own, or (admins) every one. A note outside it is
/// "not found", so ids of other users' notes do not leak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Notes of this owner (local user key).
    Owner(i64),
    Any,
}

impl Access {
    fn owner_id(self) -> Option<i64> {
        match self {
            Access::Owner(id) => Some(id),
            Access::Any => None,
        }
    }
}

/// One page of live notes (of one owner, when given), newest first.
pub async fn list_notes(
    db: &PgPool,
    owner_id: Option<i64>,
    page: &PageRequest<NoteKey>,
) -> sqlx::Result<Vec<NoteRow>> {
    let (after_time, after_uuid) = page.after.map_or((None, None), |(t, u)| (Some(t), Some(u)));
    // Two statements rather than one with `$1 IS NULL OR ...`, so each keeps its index plan.
    let sql = if owner_id.is_some() {
        LIST_OWNER_NOTES
    } else {
        LIST_ALL_NOTES
    };
    sqlx::query_as::<_, NoteRow>(sql)
        .bind(owner_id)
        .bind(after_time)
        .bind(after_uuid)
        .bind(page.fetch_limit())
        .fetch_all(db)
        .await
}

const LIST_OWNER_NOTES: &str =
    "SELECT n.uuid, u.uuid AS owner, n.title, n.body, n.created_at, n.updated_at
     FROM notes n JOIN users u ON u.id = n.owner_id
     WHERE n.deleted_at IS NULL AND n.owner_id = $1
       AND ($2::timestamptz IS NULL OR (n.created_at, n.uuid) < ($2, $3))
     ORDER BY n.created_at DESC, n.uuid DESC
     LIMIT $4";

const LIST_ALL_NOTES: &str =
    "SELECT n.uuid, u.uuid AS owner, n.title, n.body, n.created_at, n.updated_at
     FROM notes n JOIN users u ON u.id = n.owner_id
     WHERE n.deleted_at IS NULL AND $1::bigint IS NULL
       AND ($2::timestamptz IS NULL OR (n.created_at, n.uuid) < ($2, $3))
     ORDER BY n.created_at DESC, n.uuid DESC
     LIMIT $4";

pub async fn find_note(
    db: impl PgExecutor<'_>,
    uuid: Uuid,
    access: Access,
) -> sqlx::Result<Option<NoteRow>> {
    sqlx::query_as::<_, NoteRow>(
        "SELECT n.uuid, u.uuid AS owner, n.title, n.body, n.created_at, n.updated_at
         FROM notes n JOIN users u ON u.id = n.owner_id
         WHERE n.uuid = $1 AND n.deleted_at IS NULL
           AND ($2::bigint IS NULL OR n.owner_id = $2)",
    )
    .bind(uuid)
    .bind(access.owner_id())
    .fetch_optional(db)
    .await
}

pub struct NewNote<'a> {
    pub uuid: Uuid,
    pub owner_id: i64,
    pub title: &'a NoteTitle,
    pub body: &'a NoteBody,
    pub created_at: DateTime<Utc>,
}

/// Inserts a note unless one with this UUID exists; `true` when inserted.
pub async fn insert_note(db: &mut PgConnection, note: &NewNote<'_>) -> sqlx::Result<bool> {
    let inserted = sqlx::query(
        "INSERT INTO notes (uuid, owner_id, title, body, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)
         ON CONFLICT (uuid) DO NOTHING",
    )
    .bind(note.uuid)
    .bind(note.owner_id)
    .bind(note.title.as_str())
    .bind(note.body.as_str())
    .bind(note.created_at)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// Applies the given changes to a live note; `None` when there is no such note.
pub async fn update_note(
    db: &PgPool,
    uuid: Uuid,
    access: Access,
    title: Option<&NoteTitle>,
    body: Option<&NoteBody>,
) -> sqlx::Result<Option<NoteRow>> {
    sqlx::query_as::<_, NoteRow>(
        "WITH updated AS (
             UPDATE notes
             SET title = COALESCE($2, title), body = COALESCE($3, body), updated_at = now()
             WHERE uuid = $1 AND deleted_at IS NULL AND ($4::bigint IS NULL OR owner_id = $4)
             RETURNING *
         )
         SELECT n.uuid, u.uuid AS owner, n.title, n.body, n.created_at, n.updated_at
         FROM updated n JOIN users u ON u.id = n.owner_id",
    )
    .bind(uuid)
    .bind(title.map(NoteTitle::as_str))
    .bind(body.map(NoteBody::as_str))
    .bind(access.owner_id())
    .fetch_optional(db)
    .await
}

/// Marks a live note deleted; `false` when there was none.
pub async fn soft_delete_note(db: &PgPool, uuid: Uuid, access: Access) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE notes SET deleted_at = now(), updated_at = now()
         WHERE uuid = $1 AND deleted_at IS NULL AND ($2::bigint IS NULL OR owner_id = $2)",
    )
    .bind(uuid)
    .bind(access.owner_id())
    .execute(db)
    .await?;
    Ok(result.rows_affected() == 1)
}
