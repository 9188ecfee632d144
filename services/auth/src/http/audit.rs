//! `/audit`: the audit log for administrators (role `admin`): who did what, when, from where,
//! filtered by user, action, outcome and time, newest first, in keyset pages.

use axum::extract::State;
use chrono::{DateTime, Utc};
use kit::{ApiResult, FieldErrors, Json, Page, PageParams, Query};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Admin, AppState};
use crate::store::audit::{self, AuditFilter, AuditKey, AuditRow, Outcome};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_audit))
}

/// One entry of the audit log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// What happened: `signup`, `login`, `logout`, `logout_global`, `refresh`,
    /// `password_changed`, `password_reset_requested`, `password_reset`, `email_verified`,
    /// `email_change_requested`, `email_changed`, `profile_updated`, `roles_changed`,
    /// `user_disabled`, `user_enabled`, `user_deleted`, `user_restored`, `client_token`.
    pub action: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// Why it failed (`wrong_password`, `rate_limited`, ...), or why a session ended.
    pub reason: Option<String>,
    /// The user or service client who acted (none when unknown, e.g. a login with an unknown
    /// email).
    pub actor: Option<Uuid>,
    /// The user it concerns.
    pub subject: Option<Uuid>,
    /// The client address.
    pub ip: Option<String>,
    pub request_id: Option<String>,
    /// More about it, e.g. `{"from": [...], "to": [...]}` for `roles_changed`.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl From<AuditRow> for AuditEntry {
    fn from(row: AuditRow) -> Self {
        AuditEntry {
            at: row.at,
            action: row.action,
            outcome: row.outcome,
            reason: row.reason,
            actor: row.actor,
            subject: row.subject,
            ip: row.ip,
            request_id: row.request_id,
            detail: row.detail,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries this user did or that concern them (their UUID).
    #[param(format = Uuid, value_type = Option<String>)]
    pub user: Option<String>,
    /// One action, e.g. `login`.
    #[param(pattern = r"^[a-z][a-z_]{0,63}$")]
    pub action: Option<String>,
    /// `success` or `failure`.
    #[param(schema_with = outcome_schema)]
    pub outcome: Option<String>,
    /// Entries at or after this time (RFC 3339).
    #[param(format = DateTime, value_type = Option<String>)]
    pub since: Option<String>,
    /// Entries before this time (RFC 3339).
    #[param(format = DateTime, value_type = Option<String>)]
    pub until: Option<String>,
}

/// `outcome`: `success` or `failure`.
fn outcome_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(["success", "failure"]))
        .build()
}

impl AuditQuery {
    /// The filter, or 422 with every bad field. A parameter given is a filter: an empty one
    /// is refused like any other value that does not parse.
    fn parse(&self) -> Result<AuditFilter, kit::ApiError> {
        let mut errors = FieldErrors::default();
        let user = self
            .user
            .as_deref()
            .map(|u| Uuid::parse_str(u.trim()).map_err(|_| "must be a user's UUID"));
        let user = errors.take("user", user.transpose()).flatten();
        let action = self.action.as_deref().map(str::trim);
        if let Some(action) = action
            && !(!action.is_empty()
                && action.len() <= 64
                && action.starts_with(|c: char| c.is_ascii_lowercase())
                && action.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        {
            errors.add("action", "must be an action name such as `login`");
        }
        let outcome = match self.outcome.as_deref().map(str::trim) {
            None => None,
            Some("success") => Some(Outcome::Success),
            Some("failure") => Some(Outcome::Failure),
            Some(_) => {
                errors.add("outcome", "must be `success` or `failure`");
                None
            }
        };
        let mut time = |name: &str, value: &Option<String>| {
            let value = value.as_deref()?.trim();
            match DateTime::parse_from_rfc3339(value) {
                Ok(at) => Some(at.with_timezone(&Utc)),
                Err(_) => {
                    errors.add(name, "must be an RFC 3339 time, e.g. 2026-12-01T09:00:00Z");
                    None
                }
            }
        };
        // `until` before `since` is a range with nothing in it, not an error.
        let since = time("since", &self.since);
        let until = time("until", &self.until);
        errors.into_result()?;
        Ok(AuditFilter {
            user,
            action: action.map(str::to_owned),
            outcome,
            since,
            until,
        })
    }
}

/// The audit log, newest first: sign-ins and their failures, sign-outs, password and email
/// changes, role changes, deletions, service-client tokens.
#[utoipa::path(
    get, path = "/audit", tag = "admin",
    params(AuditQuery, PageParams),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "One page of entries", body = Page<AuditEntry>),
        (status = 403, description = "Not an admin", body = kit::Problem),
        (status = 422, description = "A filter that does not parse, or a cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_audit(
    State(state): State<AppState>,
    _admin: Admin,
    Query(query): Query<AuditQuery>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let page = paging.parse::<AuditKey>()?;
    let filter = query.parse()?;
    let rows = audit::list(&state.db, &filter, &page).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        AuditRow::key,
        AuditEntry::from,
    )))
}
