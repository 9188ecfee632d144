//! `/notes`: notes owned by users. Handlers stay thin: parse into domain types, call the
//! store, answer.
//!
//! Every route needs a bearer token ([`CurrentUser`]). A user sees and changes their own
//! notes; an admin every note. Someone else's note is answered 404, as if it did not exist.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use identity::CurrentUser;
use kit::idempotency::{self, Claim, Idempotent};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::{NoteBody, NoteTitle};
use crate::store::{self, Access, NoteKey, NoteRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_notes, create_note))
        .routes(routes!(get_note, update_note, delete_note))
}

/// A note as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Note {
    pub id: Uuid,
    /// The owner's user id (the same UUID in every service).
    pub owner: Uuid,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<NoteRow> for Note {
    fn from(row: NoteRow) -> Self {
        Note {
            id: row.uuid,
            owner: row.owner,
            title: row.title,
            body: row.body,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct NoteFilter {
    /// Whose notes: yours when absent; another user's id or `all` for admins.
    #[param(
        value_type = Option<String>,
        example = "all",
        pattern = r"^(all|[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})$"
    )]
    pub owner: Option<OwnerFilter>,
}

/// `?owner=`: a user's id, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerFilter {
    All,
    User(Uuid),
}

impl<'de> Deserialize<'de> for OwnerFilter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "all" {
            return Ok(OwnerFilter::All);
        }
        Uuid::parse_str(&text)
            .map(OwnerFilter::User)
            .map_err(|_| serde::de::Error::custom("must be a user id or `all`"))
    }
}

/// Admins reach every note; anyone else only their own.
fn access(user: &CurrentUser) -> Access {
    if user.is_admin() {
        Access::Any
    } else {
        Access::Owner(user.id)
    }
}

/// List your notes (admins: anyone's, or all), newest first.
#[utoipa::path(
    get, path = "/notes", tag = "notes",
    params(NoteFilter, PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of notes", body = Page<Note>),
        (status = 403, description = "Another user's notes, and not an admin", body = kit::Problem),
        (status = 422, description = "A cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_notes(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(filter): Query<NoteFilter>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Note>>> {
    let page = paging.parse::<NoteKey>()?;
    let owner_id = match filter.owner {
        None => Some(user.id),
        Some(OwnerFilter::User(owner)) if owner == user.uuid => Some(user.id),
        Some(other) => {
            user.require_role(identity::ADMIN_ROLE)?;
            match other {
                OwnerFilter::All => None,
                OwnerFilter::User(owner) => {
                    match identity::users::local_id(&state.db, owner).await? {
                        Some(id) => Some(id),
                        // A user never seen here has no notes.
                        None => {
                            return Ok(Json(Page {
                                items: Vec::new(),
                                next_cursor: None,
                            }));
                        }
                    }
                }
            }
        }
    };
    let rows = store::list_notes(&state.db, owner_id, &page).await?;
    Ok(Json(Page::from_rows(rows, &page, NoteRow::key, Note::from)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNote {
    #[schema(schema_with = title_schema, example = "Groceries")]
    pub title: String,
    #[serde(default)]
    #[schema(schema_with = body_schema)]
    pub body: String,
}

/// [`NoteTitle`]'s rule.
fn title_schema() -> utoipa::openapi::Object {
    kit::openapi::trimmed_text(NoteTitle::MAX_CHARS, false)
}

/// [`NoteBody`]'s rule with the default `app.max_body_chars` (a service configured for longer
/// bodies accepts more than the document says).
fn body_schema() -> utoipa::openapi::Object {
    kit::openapi::free_text(crate::config::Config::default().max_body_chars, false)
}

/// Create a note owned by the caller. With an `Idempotency-Key`, a retry of the same request
/// returns the same note instead of creating another.
#[utoipa::path(
    post, path = "/notes", tag = "notes",
    request_body = CreateNote,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
        pattern = r"^[!-~]+$",
        description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created (or, for a repeated `Idempotency-Key`, the note created the first time)", body = Note,
            headers(("Location" = String, description = "The note's URL")),
            links(
                ("GetNote" = (operation_id = "get_note", parameters(("id" = "$response.body#/id")))),
                ("UpdateNote" = (operation_id = "update_note", parameters(("id" = "$response.body#/id")))),
                ("DeleteNote" = (operation_id = "delete_note", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 409, description = "A request with this `Idempotency-Key` is still running (`idempotency_key_in_use`)", body = kit::Problem),
        (status = 422, description = "Invalid fields (`validation_failed`), or the key was used with another request (`idempotency_key_reused`)", body = kit::Problem),
    )
)]
async fn create_note(
    State(state): State<AppState>,
    user: CurrentUser,
    request: Idempotent<CreateNote>,
) -> ApiResult<Response> {
    // Keys are per caller: two users choosing the same key never see each other's notes.
    let scope = format!("notes.create:{}", user.uuid);
    let (mut tx, input, key) = match request.claim(&state.db, &scope).await? {
        Claim::Replay(stored) => return Ok(stored),
        Claim::Fresh { tx, body, key } => (tx, body, key),
    };
    let mut errors = FieldErrors::default();
    let title = errors.take("title", NoteTitle::parse(&input.title));
    let body = errors.take(
        "body",
        NoteBody::parse(&input.body, state.settings.app.max_body_chars),
    );
    let (Some(title), Some(body)) = (title, body) else {
        return Err(errors.into());
    };
    let uuid = Uuid::now_v7();
    let new = store::NewNote {
        uuid,
        owner_id: user.id,
        title: &title,
        body: &body,
        created_at: Utc::now(),
    };
    store::insert_note(&mut tx, &new).await?;
    let row = store::find_note(&mut *tx, uuid, Access::Any)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("note {uuid} vanished after insert")))?;
    let created = crate::events::NoteCreated {
        note: uuid,
        owner: row.owner,
        title: row.title.clone(),
        created_at: row.created_at,
    };
    bus::enqueue_as(&mut tx, &created, user.uuid).await?;
    tracing::info!(note = %uuid, "note created");
    let location = format!("/api/mail/v1/notes/{uuid}");
    let response = (
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(Note::from(row)),
    )
        .into_response();
    idempotency::complete(tx, key.as_ref(), response).await
}

/// Fetch one note.
#[utoipa::path(
    get, path = "/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "The note's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The note", body = Note),
        (status = 404, description = "No such note, or not yours", body = kit::Problem),
    )
)]
async fn get_note(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Note>> {
    let row = store::find_note(&state.db, id, access(&user))
        .await?
        .ok_or_else(|| ApiError::not_found("note"))?;
    Ok(Json(row.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNote {
    /// Unchanged when absent or `null`.
    #[schema(schema_with = optional_title_schema)]
    pub title: Option<String>,
    /// Unchanged when absent or `null`.
    #[schema(schema_with = optional_body_schema)]
    pub body: Option<String>,
}

fn optional_title_schema() -> utoipa::openapi::Object {
    kit::openapi::trimmed_text(NoteTitle::MAX_CHARS, true)
}

fn optional_body_schema() -> utoipa::openapi::Object {
    kit::openapi::free_text(crate::config::Config::default().max_body_chars, true)
}

/// Change a note's title or body.
#[utoipa::path(
    patch, path = "/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "The note's id")),
    request_body = UpdateNote,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed note", body = Note),
        (status = 404, description = "No such note, or not yours", body = kit::Problem),
    )
)]
async fn update_note(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateNote>,
) -> ApiResult<Json<Note>> {
    let mut errors = FieldErrors::default();
    let title = input.title.as_deref().map(NoteTitle::parse).transpose();
    let title = errors.take("title", title).flatten();
    let max = state.settings.app.max_body_chars;
    let body = input
        .body
        .as_deref()
        .map(|b| NoteBody::parse(b, max))
        .transpose();
    let body = errors.take("body", body).flatten();
    errors.into_result()?;
    let row = store::update_note(&state.db, id, access(&user), title.as_ref(), body.as_ref())
        .await?
        .ok_or_else(|| ApiError::not_found("note"))?;
    Ok(Json(row.into()))
}

/// Delete a note (it is kept, marked deleted, and no longer listed or served).
#[utoipa::path(
    delete, path = "/notes/{id}", tag = "notes",
    params(("id" = Uuid, Path, description = "The note's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such note, or not yours", body = kit::Problem),
    )
)]
async fn delete_note(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if store::soft_delete_note(&state.db, id, access(&user)).await? {
        tracing::info!(note = %id, "note deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("note"))
    }
}
