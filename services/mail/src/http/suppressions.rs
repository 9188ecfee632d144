//! `/suppressions`: addresses mail is not sent to (admins only). Releasing an entry keeps it,
//! marked released, for the record.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use identity::{Admin, RequireRole};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::domain::{Category, EmailAddress, SuppressionReason};
use crate::store::suppressions::{self, NewSuppression, SuppressionRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_suppressions, add_suppression))
        .routes(routes!(get_suppression, release_suppression))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Suppression {
    pub id: Uuid,
    /// Lower-cased.
    pub email: String,
    /// The category it blocks; none = all mail.
    pub category: Option<Category>,
    pub reason: SuppressionReason,
    pub note: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// In force: not released and not expired.
    pub active: bool,
    /// The admin who added it (none when the service did: a bounce, an unsubscribe).
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    pub released_by: Option<Uuid>,
}

impl From<SuppressionRow> for Suppression {
    fn from(row: SuppressionRow) -> Self {
        let active = row.released_at.is_none() && row.expires_at.is_none_or(|at| at > Utc::now());
        Suppression {
            id: row.uuid,
            email: row.email,
            category: row.category.as_deref().and_then(Category::parse),
            reason: SuppressionReason::parse(&row.reason).unwrap_or(SuppressionReason::Manual),
            note: row.note,
            expires_at: row.expires_at,
            active,
            created_by: row.created_by,
            created_at: row.created_at,
            released_at: row.released_at,
            released_by: row.released_by,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddSuppression {
    #[schema(format = "email", max_length = 254, example = "bounced@example.com")]
    pub email: String,
    #[serde(default = "manual")]
    pub reason: SuppressionReason,
    /// Block only this category (none: all mail).
    #[serde(default)]
    pub category: Option<Category>,
    #[serde(default)]
    #[schema(
        max_length = 500,
        pattern = r"^[^\x00]*$",
        example = "Asked by phone not to get mail"
    )]
    pub note: String,
    /// In force until then (none: until released).
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

fn manual() -> SuppressionReason {
    SuppressionReason::Manual
}

/// Suppress an address: mail to it (of `category`, or all) is not sent but recorded as
/// `suppressed`.
#[utoipa::path(
    post, path = "/suppressions", tag = "suppressions",
    request_body = AddSuppression,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Added", body = Suppression,
            headers(("Location" = String, description = "The entry's URL")),
            links(
                ("GetSuppression" = (operation_id = "get_suppression", parameters(("id" = "$response.body#/id")))),
                ("ReleaseSuppression" = (operation_id = "release_suppression", parameters(("id" = "$response.body#/id")))),
            )),
    )
)]
async fn add_suppression(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Json(input): Json<AddSuppression>,
) -> ApiResult<Response> {
    let mut errors = FieldErrors::default();
    let email = errors.take("email", EmailAddress::parse(&input.email));
    if input.note.chars().count() > 500 || input.note.contains('\0') {
        errors.add("note", "must be at most 500 characters, without NUL");
    }
    errors.into_result()?;
    let email = email.ok_or_else(|| ApiError::internal(anyhow::anyhow!("checked above")))?;
    let row = suppressions::insert(
        &state.db,
        &NewSuppression {
            email: &email.normalized(),
            category: input.category,
            reason: input.reason,
            note: &input.note,
            expires_at: input.expires_at,
            created_by: Some(admin.uuid),
        },
    )
    .await?;
    tracing::info!(suppression = %row.uuid, reason = %row.reason, "address suppressed");
    let location = format!("/api/mail/v1/suppressions/{}", row.uuid);
    Ok((
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(Suppression::from(row)),
    )
        .into_response())
}

/// One entry not released (a released entry is listed with `?active=false`).
#[utoipa::path(
    get, path = "/suppressions/{id}", tag = "suppressions",
    params(("id" = Uuid, Path, description = "The entry's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The entry", body = Suppression),
        (status = 404, description = "No such entry, or released", body = kit::Problem),
    )
)]
async fn get_suppression(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Suppression>> {
    let row = suppressions::find(&state.db, id)
        .await?
        .filter(|row| row.released_at.is_none())
        .ok_or_else(|| ApiError::not_found("suppression"))?;
    Ok(Json(row.into()))
}

/// Release an entry: mail to the address is sent again. The entry stays on record, marked
/// released (listed with `?active=false`).
#[utoipa::path(
    delete, path = "/suppressions/{id}", tag = "suppressions",
    params(("id" = Uuid, Path, description = "The entry's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Released"),
        (status = 404, description = "No such entry in force", body = kit::Problem),
    )
)]
async fn release_suppression(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    match suppressions::release(&state.db, id, admin.uuid).await? {
        Some(_) => {
            tracing::info!(suppression = %id, "suppression released");
            Ok(StatusCode::NO_CONTENT)
        }
        None => Err(ApiError::not_found("suppression")),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SuppressionFilter {
    /// One address (case-insensitive).
    #[param(
        max_length = 254,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$",
        example = "bounced@example.com"
    )]
    pub email: Option<String>,
    /// Only entries in force (`true`) or only released and expired ones (`false`).
    pub active: Option<bool>,
}

/// List entries, newest first.
#[utoipa::path(
    get, path = "/suppressions", tag = "suppressions",
    params(SuppressionFilter, PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of entries", body = Page<Suppression>),
        (status = 422, description = "A cursor this listing did not issue, or an address longer than any (`validation_failed`)", body = kit::Problem),
    )
)]
async fn list_suppressions(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Query(filter): Query<SuppressionFilter>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Suppression>>> {
    if filter.email.as_ref().is_some_and(|e| {
        e.chars().count() > EmailAddress::MAX_LEN || e.chars().any(char::is_control)
    }) {
        let mut errors = FieldErrors::default();
        errors.add(
            "email",
            format!(
                "must be at most {} characters, without control characters",
                EmailAddress::MAX_LEN
            ),
        );
        return Err(errors.into());
    }
    let page = paging.parse::<(DateTime<Utc>, Uuid)>()?;
    let email = filter.email.map(|e| e.trim().to_lowercase());
    let rows = suppressions::list(&state.db, email.as_deref(), filter.active, &page).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        SuppressionRow::key,
        Suppression::from,
    )))
}
