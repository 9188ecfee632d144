//! Calendar feeds: `GET /calendar.ics` (published public events) and a personal feed of the
//! events a user registered for, behind a secret token (calendar apps cannot sign in).

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, Utc};
use identity::CurrentUser;
use kit::{ApiError, ApiResult, Json, Path};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::calendar::{self, Entry};
use crate::domain;
use crate::store::{checkins, events as event_store};

/// Events in a feed at most.
const FEED_LIMIT: i64 = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(public_calendar))
        .routes(routes!(my_feed))
        .routes(routes!(personal_calendar))
}

fn ics(body: String) -> Response {
    (
        [
            (CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Published public events (from 30 days ago on) as iCalendar.
#[utoipa::path(
    get, path = "/calendar.ics", tag = "calendar",
    responses((status = 200, description = "The calendar", content_type = "text/calendar", body = String))
)]
async fn public_calendar(State(state): State<AppState>) -> ApiResult<Response> {
    let now = Utc::now();
    let rows =
        event_store::calendar_public(&state.db, now - Duration::days(30), FEED_LIMIT).await?;
    let entries: Vec<Entry<'_>> = rows
        .iter()
        .map(|event| Entry {
            event,
            url: state.ctx.rules.event_url(event),
            note: None,
        })
        .collect();
    Ok(ics(calendar::render("Hatchery events", &entries, now)))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Feed {
    /// Subscribe to this URL in a calendar app; keep it secret.
    pub url: String,
}

/// Your personal calendar feed's URL (made on first use).
#[utoipa::path(
    get, path = "/calendar/feed", tag = "calendar",
    security(("bearer" = [])),
    responses((status = 200, description = "The feed's URL", body = Feed))
)]
async fn my_feed(State(state): State<AppState>, user: CurrentUser) -> ApiResult<Json<Feed>> {
    let token = checkins::calendar_token(&state.db, user.id, &domain::new_ticket_secret()).await?;
    Ok(Json(Feed {
        url: format!(
            "{}/api/events/v1/calendar/feeds/{token}",
            state.ctx.rules.public_url
        ),
    }))
}

/// The events a user registered for, as iCalendar (the token is the feed's secret).
#[utoipa::path(
    get, path = "/calendar/feeds/{token}", tag = "calendar",
    params(("token" = String, Path, description = "The feed's secret", pattern = "^[A-Za-z0-9_-]{43}$")),
    responses(
        (status = 200, description = "The calendar", content_type = "text/calendar", body = String),
        (status = 404, description = "No such feed", body = kit::Problem),
    )
)]
async fn personal_calendar(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> ApiResult<Response> {
    if token.len() != 43 {
        return Err(ApiError::not_found("feed"));
    }
    let user_id = checkins::user_of_token(&state.db, &token)
        .await?
        .ok_or_else(|| ApiError::not_found("feed"))?;
    let now = Utc::now();
    let rows =
        event_store::calendar_of_user(&state.db, user_id, now - Duration::days(30), FEED_LIMIT)
            .await?;
    let entries: Vec<Entry<'_>> = rows
        .iter()
        .map(|(event, status)| Entry {
            event,
            url: state.ctx.rules.event_url(event),
            note: match status.as_str() {
                "confirmed" => None,
                "pending_payment" => Some("awaiting payment"),
                "pending_approval" => Some("awaiting approval"),
                "waitlisted" => Some("waitlisted"),
                _ => Some("not attending"),
            },
        })
        .collect();
    Ok(ics(calendar::render("My Hatchery events", &entries, now)))
}
