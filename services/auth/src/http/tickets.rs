//! `/tickets`: single-use tickets for the websocket broker (socketshark's `ticket` auth
//! method). A signed-in client asks for one and hands it to the broker; the broker exchanges
//! it here for the user's identity, once, within `app.ticket_ttl` (30 s).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use identity::ServiceCaller;
use kit::{ApiError, ApiResult, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::no_store;
use super::{AppState, SignedIn};
use crate::tickets::Holder;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_ticket))
        .routes(routes!(validate_ticket))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Ticket {
    pub ticket: String,
    /// Seconds the ticket stays valid.
    pub expires_in: u64,
}

/// Get a ticket for the websocket broker.
#[utoipa::path(
    post, path = "/tickets", tag = "tickets",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 201, description = "A single-use ticket (`Cache-Control: no-store`)", body = Ticket),
        (status = 403, description = "A service token (`forbidden`), or a disabled account (`account_disabled`)", body = kit::Problem),
    )
)]
async fn create_ticket(State(state): State<AppState>, signed_in: SignedIn) -> ApiResult<Response> {
    let holder = Holder {
        user_id: signed_in.user.uuid,
        session_id: signed_in.claims.sid,
        roles: signed_in.user.roles.clone(),
    };
    let ttl = state.settings.app.ticket_ttl;
    let ticket = state.tickets.issue(&holder, ttl).await?;
    let body = Ticket {
        ticket: ticket.into_string(),
        expires_in: ttl.as_secs(),
    };
    Ok((StatusCode::CREATED, no_store(), Json(body)).into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ValidateTicket {
    /// The ticket the websocket client presented (anything else than a ticket string gets the
    /// `error` answer).
    #[serde(default)]
    pub ticket: serde_json::Value,
}

/// The answer to a ticket validation, in socketshark's shape.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TicketCheck {
    /// `ok` or `error`.
    #[schema(pattern = "^(ok|error)$")]
    pub status: String,
    /// The ticket's user (`ok` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_id: Option<uuid::Uuid>,
    /// The session the ticket was issued in (`ok` only; `null` for a session-less user).
    #[serde(default)]
    pub session_id: Option<uuid::Uuid>,
    /// The user's roles (`ok` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub roles: Option<Vec<String>>,
    /// `Authentication failed.` (`error` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// socketshark's exact failure text: the broker passes it on to the websocket client.
const AUTH_FAILED: &str = "Authentication failed.";

/// Exchange a ticket for its user (for the broker; needs a service token unless
/// `app.ticket_validation_requires_service_token` is off). Answers 200 either way, in
/// socketshark's shape: `{"status":"ok","user_id","session_id","roles"}` or
/// `{"status":"error","error":"Authentication failed."}`.
#[utoipa::path(
    post, path = "/tickets/validate", tag = "tickets",
    request_body = ValidateTicket,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "`{\"status\":\"ok\",\"user_id\",\"session_id\",\"roles\"}` or `{\"status\":\"error\",\"error\":\"Authentication failed.\"}`", body = TicketCheck),
        (status = 403, description = "A user token (`forbidden`): this endpoint is for the broker's service token", body = kit::Problem),
    )
)]
async fn validate_ticket(
    State(state): State<AppState>,
    caller: Result<ServiceCaller, ApiError>,
    Json(input): Json<ValidateTicket>,
) -> ApiResult<Json<serde_json::Value>> {
    if state.settings.app.ticket_validation_requires_service_token {
        caller?;
    }
    let failed = || Json(json!({"status": "error", "error": AUTH_FAILED}));
    let Some(ticket) = input
        .ticket
        .as_str()
        .filter(|t| !t.is_empty() && t.len() <= 256)
    else {
        return Ok(failed());
    };
    let Some(holder) = state.tickets.redeem(ticket).await? else {
        return Ok(failed());
    };
    // The session may have ended in the seconds since the ticket was issued.
    if let Some(sid) = holder.session_id
        && !crate::store::sessions::is_live(&state.db, sid).await?
    {
        return Ok(failed());
    }
    Ok(Json(json!({
        "status": "ok",
        "user_id": holder.user_id,
        "session_id": holder.session_id,
        "roles": holder.roles,
    })))
}
