//! `/users`: account administration (role `admin`). Deleting is a soft delete: the account is
//! kept, marked deleted, its sessions ended, and it can be restored.

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Admin, AppState, Client};
use crate::domain::Roles;
use crate::events;
use crate::store::audit::{self, Entry};
use crate::store::users::{self, UserKey, UserRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(restore_user))
}

/// An account as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// The user's id: the same UUID in every service.
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub roles: Vec<String>,
    pub email_verified: bool,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// Set on deleted accounts (only administrators see them).
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            email_verified: row.email_verified(),
            id: row.uuid,
            email: row.email,
            name: row.name,
            roles: row.roles,
            is_active: row.is_active,
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_login_at: row.last_login_at,
            deleted_at: row.deleted_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Part of the email or name, case-insensitive: at most 254 characters once trimmed.
    #[param(schema_with = search_schema)]
    pub q: Option<String>,
    /// Include deleted accounts (default false).
    #[serde(default)]
    pub include_deleted: bool,
}

/// `q`: at most 254 characters once surrounding whitespace is trimmed (blank means no
/// filter), no NUL.
fn search_schema() -> utoipa::openapi::Object {
    use kit::openapi::WHITESPACE;
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(format!(
            r"^[{WHITESPACE}]*(?:[^{WHITESPACE}\x00](?:[^\x00]{{0,252}}[^{WHITESPACE}\x00])?)?[{WHITESPACE}]*$"
        )))
        .build()
}

/// The complete new set of roles: at most 20, each lower-case letters, digits, `_` and `-`,
/// starting with a letter, at most 32 characters, not `service`.
fn roles_schema() -> utoipa::openapi::Array {
    let role = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(r"^(?!service$)[a-z][a-z0-9_-]{0,31}$"))
        .build();
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(
            [utoipa::openapi::Type::Array, utoipa::openapi::Type::Null]
                .into_iter()
                .collect::<utoipa::openapi::schema::SchemaType>(),
        )
        .items(role)
        .max_items(Some(crate::domain::Roles::MAX))
        .examples([serde_json::json!(["admin"])])
        .build()
}

/// List accounts, newest first.
#[utoipa::path(
    get, path = "/users", tag = "admin",
    params(UserFilter, PageParams),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "One page of accounts", body = Page<User>),
        (status = 403, description = "Not an admin", body = kit::Problem),
        (status = 422, description = "A cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_users(
    State(state): State<AppState>,
    _admin: Admin,
    Query(filter): Query<UserFilter>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<User>>> {
    let page = paging.parse::<UserKey>()?;
    let search = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    let mut errors = FieldErrors::default();
    if search.is_some_and(|q| q.chars().count() > 254) {
        errors.add("q", "must be at most 254 characters");
    }
    // Postgres text cannot hold NUL: the query would fail (a 500) instead of matching nothing.
    if search.is_some_and(|q| q.contains('\0')) {
        errors.add("q", "must not contain NUL characters");
    }
    errors.into_result()?;
    let rows = users::list(&state.db, search, filter.include_deleted, &page).await?;
    Ok(Json(Page::from_rows(rows, &page, UserRow::key, User::from)))
}

async fn find_user(state: &AppState, id: Uuid) -> ApiResult<UserRow> {
    users::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// The user, locked until `tx` ends (concurrent changes to one account take turns).
async fn lock_user(tx: &mut sqlx::PgConnection, id: Uuid) -> ApiResult<UserRow> {
    users::lock(tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// One account (deleted ones too).
#[utoipa::path(
    get, path = "/users/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 403, description = "Not an admin", body = kit::Problem),
        (status = 404, description = "No such account", body = kit::Problem),
    )
)]
async fn get_user(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<User>> {
    Ok(Json(find_user(&state, id).await?.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// The complete new set of roles; unchanged when absent or `null`.
    #[schema(schema_with = roles_schema)]
    pub roles: Option<Vec<String>>,
    /// Unchanged when absent or `null`.
    pub is_active: Option<bool>,
}

/// Change an account's roles or disable/enable it. Removing a role or disabling the account
/// ends its sessions (the user signs in again to get a token with the new roles); adding a
/// role takes effect at the next refresh.
#[utoipa::path(
    patch, path = "/users/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id")),
    request_body = UpdateUser,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 403, description = "Not an admin", body = kit::Problem),
        (status = 404, description = "No such account, or a deleted one", body = kit::Problem),
        (status = 409, description = "An admin removing their own admin role or disabling themselves (`own_account`)", body = kit::Problem),
    )
)]
async fn update_user(
    State(state): State<AppState>,
    admin: Admin,
    client: Client,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateUser>,
) -> ApiResult<Json<User>> {
    let mut errors = FieldErrors::default();
    let roles = input.roles.as_deref().map(Roles::parse).transpose();
    let roles = errors.take("roles", roles).flatten();
    errors.into_result()?;
    let mut tx = state.db.begin().await?;
    let target = lock_user(&mut tx, id).await?;
    if target.is_deleted() {
        return Err(ApiError::not_found("user"));
    }
    let new_roles = roles.map_or_else(|| target.roles.clone(), |r| r.to_vec());
    let is_active = input.is_active.unwrap_or(target.is_active);
    if target.uuid == admin.user.uuid
        && (!is_active || !new_roles.iter().any(|r| r == identity::ADMIN_ROLE))
    {
        return Err(ApiError::conflict(
            "own_account",
            "You cannot remove your own admin role or disable your own account.",
        ));
    }
    if new_roles == target.roles && is_active == target.is_active {
        return Ok(Json(target.into()));
    }
    let removed: Vec<&String> = target
        .roles
        .iter()
        .filter(|r| !new_roles.contains(r))
        .collect();
    let row = users::set_roles_and_active(&mut *tx, target.id, &new_roles, is_active).await?;
    let ip = client.ip_text();
    let actor = Some(admin.user.uuid);
    if new_roles != target.roles {
        let entry = Entry::success("roles_changed", actor, Some(row.uuid))
            .from_ip(ip.clone())
            .with_detail(serde_json::json!({"from": target.roles, "to": new_roles}));
        audit::record(&mut *tx, &entry).await?;
    }
    if is_active != target.is_active {
        let action = if is_active {
            "user_enabled"
        } else {
            "user_disabled"
        };
        audit::record(
            &mut *tx,
            &Entry::success(action, actor, Some(row.uuid)).from_ip(ip),
        )
        .await?;
    }
    if new_roles != target.roles {
        // Websockets authenticated with this user's tokens drop what the removed roles allowed
        // (announced before the sessions end below, so they learn the precise reason first).
        let mut redis = state.redis.clone();
        identity::revocation::publish_roles_in(
            &mut redis,
            &state.settings.auth.revocation_prefix,
            row.uuid,
            &new_roles,
        )
        .await
        .context("announcing the user's new roles in Redis")?;
    }
    if !is_active || !removed.is_empty() {
        let reason = if is_active {
            "roles_removed"
        } else {
            "user_disabled"
        };
        state.sessions.end_all(&mut tx, &row, None, reason).await?;
    }
    events::updated(&mut tx, &row, admin.user.uuid).await?;
    tx.commit().await?;
    state.accounts.forget(row.uuid);
    tracing::info!(user = %row.uuid, roles = ?row.roles, is_active = row.is_active, "user updated by an admin");
    Ok(Json(row.into()))
}

/// Delete an account: it is kept, marked deleted, signed out everywhere, refused at login,
/// and announced with `auth.user.deleted`. Deleting a deleted account changes nothing.
#[utoipa::path(
    delete, path = "/users/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Deleted (or already deleted)"),
        (status = 403, description = "Not an admin", body = kit::Problem),
        (status = 404, description = "No such account", body = kit::Problem),
        (status = 409, description = "An admin deleting their own account (`own_account`)", body = kit::Problem),
    )
)]
async fn delete_user(
    State(state): State<AppState>,
    admin: Admin,
    client: Client,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let target = lock_user(&mut tx, id).await?;
    if target.uuid == admin.user.uuid {
        return Err(ApiError::conflict(
            "own_account",
            "You cannot delete your own account.",
        ));
    }
    if target.is_deleted() {
        return Ok(StatusCode::NO_CONTENT);
    }
    let row = users::set_deleted(&mut *tx, target.id, true).await?;
    let ended = state
        .sessions
        .end_all(&mut tx, &row, None, "user_deleted")
        .await?;
    audit::record(
        &mut *tx,
        &Entry::success("user_deleted", Some(admin.user.uuid), Some(row.uuid))
            .from_ip(client.ip_text())
            .with_detail(serde_json::json!({"sessions_ended": ended})),
    )
    .await?;
    events::deleted(&mut tx, &row, admin.user.uuid).await?;
    tx.commit().await?;
    state.accounts.forget(row.uuid);
    tracing::info!(user = %row.uuid, "user deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Restore a deleted account (it can sign in again; its old sessions stay ended).
#[utoipa::path(
    post, path = "/users/{id}/restore", tag = "admin",
    params(("id" = Uuid, Path, description = "The user's id")),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "The account", body = User),
        (status = 403, description = "Not an admin", body = kit::Problem),
        (status = 404, description = "No such account", body = kit::Problem),
    )
)]
async fn restore_user(
    State(state): State<AppState>,
    admin: Admin,
    client: Client,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<User>> {
    let mut tx = state.db.begin().await?;
    let target = lock_user(&mut tx, id).await?;
    if !target.is_deleted() {
        return Ok(Json(target.into()));
    }
    let row = users::set_deleted(&mut *tx, target.id, false).await?;
    audit::record(
        &mut *tx,
        &Entry::success("user_restored", Some(admin.user.uuid), Some(row.uuid))
            .from_ip(client.ip_text()),
    )
    .await?;
    events::restored(&mut tx, &row, admin.user.uuid).await?;
    tx.commit().await?;
    state.accounts.forget(row.uuid);
    tracing::info!(user = %row.uuid, "user restored");
    Ok(Json(row.into()))
}
