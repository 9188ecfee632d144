//! Simple users: each service's local copy of the platform users it has seen, in its `users`
//! table, defined once here ([`crate::SCHEMA`]; a service lists it in `kit::Database::shared`):
//!
//! ```sql
//! users (id bigint identity PK, uuid uuid UNIQUE, email text, name text, roles text[],
//!        is_active boolean, created_at, updated_at, deleted_at timestamptz)
//! ```
//!
//! Rows inside a service reference the local `id`; only the `uuid` leaves the service.
//!
//! The copy is kept current from two sources, both stamped by the auth service's clock: token
//! claims (at the token's `iat`) and `auth.user.*` events (at the event's `time`). `updated_at`
//! holds the time of the data a row shows, and a change older than that is ignored, so a
//! stale token or a late, out-of-order event never rolls a row back. Claims change email,
//! name and roles only; deletion and deactivation come from events alone.

use chrono::{DateTime, Utc};

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::claims::Claims;

/// One row of `users`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LocalUser {
    /// The local key: what rows of this service reference.
    pub id: i64,
    pub uuid: Uuid,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub is_active: bool,
    /// The time of the data this row shows (see the module docs).
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl LocalUser {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// The columns of [`LocalUser`], as a literal so statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, uuid, email, name, roles, is_active, updated_at, deleted_at"
    };
}

/// The row for `uuid`, deleted or not.
pub async fn find(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<LocalUser>> {
    sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE uuid = $1"
    ))
    .bind(uuid)
    .fetch_optional(db)
    .await
}

/// The local key of a live (not deleted) user.
pub async fn local_id(db: impl PgExecutor<'_>, uuid: Uuid) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar("SELECT id FROM users WHERE uuid = $1 AND deleted_at IS NULL")
        .bind(uuid)
        .fetch_optional(db)
        .await
}

/// The user a token speaks for, created on first sight and brought up to date with the
/// token's email, name and roles when they differ and the token is newer than the row. In the
/// common case (known user, nothing changed) this is one read.
///
/// The returned row may be deleted or inactive: callers decide (the `CurrentUser` extractor
/// refuses both).
pub async fn upsert_from_claims(
    conn: &mut PgConnection,
    claims: &Claims,
) -> sqlx::Result<LocalUser> {
    let seen_at = claims.issued_at();
    if let Some(user) = find(&mut *conn, claims.sub).await? {
        let same = claims.email.as_ref().is_none_or(|e| *e == user.email)
            && claims.name.as_ref().is_none_or(|n| *n == user.name)
            && claims.roles == user.roles;
        if same || user.updated_at > seen_at {
            return Ok(user);
        }
    }
    let change = Change {
        uuid: claims.sub,
        email: claims.email.as_deref(),
        name: claims.name.as_deref(),
        roles: &claims.roles,
        is_active: None,
        at: seen_at,
    };
    let written = change.apply(&mut *conn).await?;
    written_or_current(conn, claims.sub, written).await
}

/// Seed data (populator): get-or-create by UUID, never changing an existing row. Returns the
/// local key and whether the row was created.
pub async fn get_or_create(
    conn: &mut PgConnection,
    user: &NewUser<'_>,
) -> sqlx::Result<(i64, bool)> {
    let inserted: Option<i64> = sqlx::query_scalar(
        "INSERT INTO users (uuid, email, name, roles) VALUES ($1, $2, $3, $4)
         ON CONFLICT (uuid) DO NOTHING
         RETURNING id",
    )
    .bind(user.uuid)
    .bind(user.email)
    .bind(user.name)
    .bind(user.roles)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(id) => Ok((id, true)),
        None => sqlx::query_scalar("SELECT id FROM users WHERE uuid = $1")
            .bind(user.uuid)
            .fetch_one(conn)
            .await
            .map(|id| (id, false)),
    }
}

/// The local key of a user another service names by UUID (a payment made for them) before this
/// service has seen them: an existing row as it is (deleted or not: callers check), else a
/// placeholder with empty email and name stamped at the epoch, so the first token or
/// `auth.user.*` event fills it in.
pub async fn get_or_create_by_uuid(conn: &mut PgConnection, uuid: Uuid) -> sqlx::Result<LocalUser> {
    if let Some(user) = find(&mut *conn, uuid).await? {
        return Ok(user);
    }
    let inserted: Option<LocalUser> = sqlx::query_as(concat!(
        "INSERT INTO users (uuid, email, name, updated_at) VALUES ($1, '', '', 'epoch')
         ON CONFLICT (uuid) DO NOTHING
         RETURNING ",
        columns!()
    ))
    .bind(uuid)
    .fetch_optional(&mut *conn)
    .await?;
    written_or_current(conn, uuid, inserted).await
}

/// A user as seed data describes it.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub uuid: Uuid,
    pub email: &'a str,
    pub name: &'a str,
    pub roles: &'a [String],
}

/// The `users:` list of a service's seed files: the platform's demo users, with the same UUID,
/// email, name and roles in every service.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSeed {
    pub id: populator::Spanned<Uuid>,
    pub email: String,
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Gets or creates every seeded user of `sources` (each file's `users_of`), counting them in
/// `report`; returns their local ids by UUID, for the rows of the scenario that reference them.
pub async fn seed<D>(
    conn: &mut PgConnection,
    sources: &[populator::Source<D>],
    users_of: impl Fn(&D) -> &[UserSeed],
    report: &mut populator::Report,
) -> Result<populator::Keys<Uuid>, populator::Error> {
    let mut users = populator::Keys::new("user");
    for source in sources {
        for user in users_of(&source.doc) {
            let new = NewUser {
                uuid: user.id.value,
                email: &user.email,
                name: &user.name,
                roles: &user.roles,
            };
            let (local_id, created) = get_or_create(conn, &new)
                .await
                .map_err(|err| source.database_error(user.id.line(), err))?;
            users.define(user.id.value, local_id, source, user.id.line())?;
            report.record("users", created);
        }
    }
    Ok(users)
}

// The payloads are the auth service's published contracts: one definition for producer and
// consumers.
pub use contracts::auth::{UserDeleted, UserRegistered, UserRestored, UserUpdated};

/// Applies `auth.user.registered` that happened at `at` (the event's `time`); returns the row
/// (its `id` is the local key).
pub async fn apply_registered(
    conn: &mut PgConnection,
    event: &UserRegistered,
    at: DateTime<Utc>,
) -> sqlx::Result<LocalUser> {
    let change = Change {
        uuid: event.user,
        email: Some(&event.email),
        name: Some(&event.name),
        roles: &event.roles,
        is_active: None,
        at,
    };
    let written = change.apply(&mut *conn).await?;
    written_or_current(conn, event.user, written).await
}

/// Applies `auth.user.updated` that happened at `at`; creates the user if unknown.
pub async fn apply_updated(
    conn: &mut PgConnection,
    event: &UserUpdated,
    at: DateTime<Utc>,
) -> sqlx::Result<LocalUser> {
    let change = Change {
        uuid: event.user,
        email: Some(&event.email),
        name: Some(&event.name),
        roles: &event.roles,
        is_active: Some(event.is_active),
        at,
    };
    let written = change.apply(&mut *conn).await?;
    written_or_current(conn, event.user, written).await
}

/// Applies `auth.user.deleted` that happened at `at`: the row is kept, marked deleted (rows
/// referencing it stay valid). An unknown user gets a deleted placeholder row, so a
/// `registered` event arriving after it does not bring the user back.
pub async fn apply_deleted(
    conn: &mut PgConnection,
    event: &UserDeleted,
    at: DateTime<Utc>,
) -> sqlx::Result<LocalUser> {
    let written: Option<LocalUser> = sqlx::query_as(concat!(
        "INSERT INTO users (uuid, email, name, updated_at, deleted_at) VALUES ($1, '', '', $2, $2)
         ON CONFLICT (uuid) DO UPDATE
             SET deleted_at = COALESCE(users.deleted_at, EXCLUDED.deleted_at), updated_at = EXCLUDED.updated_at
             WHERE users.updated_at <= EXCLUDED.updated_at
         RETURNING ",
        columns!()
    ))
    .bind(event.user)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    written_or_current(conn, event.user, written).await
}

/// Applies `auth.user.restored` that happened at `at`. `None` when the user was never seen
/// here (it will be created when it next shows up).
pub async fn apply_restored(
    conn: &mut PgConnection,
    event: &UserRestored,
    at: DateTime<Utc>,
) -> sqlx::Result<Option<LocalUser>> {
    let written: Option<LocalUser> = sqlx::query_as(concat!(
        "UPDATE users SET deleted_at = NULL, updated_at = $2
         WHERE uuid = $1 AND updated_at <= $2
         RETURNING ",
        columns!()
    ))
    .bind(event.user)
    .bind(at)
    .fetch_optional(&mut *conn)
    .await?;
    match written {
        Some(user) => Ok(Some(user)),
        None => find(conn, event.user).await,
    }
}

/// An insert-or-update of a user's data as of `at`, ignored for rows holding newer data.
struct Change<'a> {
    uuid: Uuid,
    /// `None` keeps the stored value (a new row gets an empty one).
    email: Option<&'a str>,
    name: Option<&'a str>,
    roles: &'a [String],
    is_active: Option<bool>,
    at: DateTime<Utc>,
}

impl Change<'_> {
    /// The written row, or `None` when the stored row is newer.
    async fn apply(&self, conn: &mut PgConnection) -> sqlx::Result<Option<LocalUser>> {
        sqlx::query_as(concat!(
            "INSERT INTO users (uuid, email, name, roles, is_active, updated_at)
             VALUES ($1, COALESCE($2, ''), COALESCE($3, ''), $4, COALESCE($5, true), $6)
             ON CONFLICT (uuid) DO UPDATE SET
                 email = COALESCE($2, users.email),
                 name = COALESCE($3, users.name),
                 roles = EXCLUDED.roles,
                 is_active = COALESCE($5, users.is_active),
                 updated_at = EXCLUDED.updated_at
             WHERE users.updated_at <= EXCLUDED.updated_at
             RETURNING ",
            columns!()
        ))
        .bind(self.uuid)
        .bind(self.email)
        .bind(self.name)
        .bind(self.roles)
        .bind(self.is_active)
        .bind(self.at)
        .fetch_optional(conn)
        .await
    }
}

async fn written_or_current(
    conn: &mut PgConnection,
    uuid: Uuid,
    written: Option<LocalUser>,
) -> sqlx::Result<LocalUser> {
    match written {
        Some(user) => Ok(user),
        None => find(conn, uuid).await?.ok_or(sqlx::Error::RowNotFound),
    }
}
