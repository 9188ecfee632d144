//! Check-in at the door: `POST /events/{id}/checkins` answers `ok`, `already_redeemed`,
//! `invalid`, `unpaid` or `canceled` with the attendee's name. Scanners retry offline, so a
//! scan is keyed by its nonce: the same nonce gets the same answer, however often it comes. A
//! mistaken `ok` can be annulled for a while (`app.annul_window`, 15 minutes).

use axum::extract::State;
use chrono::{DateTime, Utc};
use contracts::events::{CheckinAnnulled, CheckinCreated};
use identity::CurrentUser;
use kit::{ApiError, ApiResult, FieldErrors, Json, Path};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::events::visible;
use super::{AppState, CHECKIN_ROLE, runs};
use crate::domain::RegistrationStatus;
use crate::store::checkins::{self, CheckinRow, NewCheckin};
use crate::store::events::{self as event_store, EventRow};
use crate::store::registrations;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(scan))
        .routes(routes!(annul))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScanKind {
    Entry,
    Exit,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Scan {
    /// The ticket's secret (the QR code's content).
    #[schema(min_length = 1, max_length = 200)]
    pub secret: String,
    /// Chosen by the scanner for this scan; a retry sends the same one.
    #[schema(min_length = 1, max_length = 100, pattern = "^[!-~]+$")]
    pub nonce: String,
    #[serde(rename = "type")]
    pub kind: ScanKind,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Checkin {
    pub id: Uuid,
    /// `ok`, `already_redeemed`, `invalid`, `unpaid` or `canceled`.
    pub result: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The ticket holder's name (none for an `invalid` ticket).
    pub attendee: Option<String>,
    pub registration: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub annulled_at: Option<DateTime<Utc>>,
}

impl From<CheckinRow> for Checkin {
    fn from(row: CheckinRow) -> Self {
        Checkin {
            id: row.uuid,
            result: row.result,
            kind: row.kind,
            attendee: row.attendee,
            registration: row.registration,
            created_at: row.created_at,
            annulled_at: row.annulled_at,
        }
    }
}

fn may_scan(user: &CurrentUser, event: &EventRow) -> Result<(), ApiError> {
    if runs(user, event) || user.has_role(CHECKIN_ROLE) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Scanning tickets needs the event's organizer or the `checkin` role.",
        ))
    }
}

/// Scan a ticket.
#[utoipa::path(
    post, path = "/events/{id}/checkins", tag = "checkins",
    params(("id" = Uuid, Path, description = "The event's id")),
    request_body = Scan,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The answer (the first one, for a nonce seen before)", body = Checkin),
        (status = 403, description = "Not the organizer, and no `checkin` role", body = kit::Problem),
        (status = 404, description = "No such event", body = kit::Problem),
    )
)]
async fn scan(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<Scan>,
) -> ApiResult<Json<Checkin>> {
    let event = visible(&state, Some(&user), id).await?;
    may_scan(&user, &event)?;
    let mut errors = FieldErrors::default();
    if input.nonce.is_empty()
        || input.nonce.len() > 100
        || !input.nonce.bytes().all(|b| b.is_ascii_graphic())
    {
        errors.add("nonce", "must be 1 to 100 visible ASCII characters");
    }
    if input.secret.is_empty() || input.secret.len() > 200 {
        errors.add("secret", "must be 1 to 200 characters");
    }
    errors.into_result()?;
    if let Some(seen) = checkins::find_by_nonce(&state.db, event.id, &input.nonce).await? {
        return Ok(Json(seen.into()));
    }
    let kind = match input.kind {
        ScanKind::Entry => "entry",
        ScanKind::Exit => "exit",
    };
    let mut tx = state.db.begin().await?;
    let found = registrations::find_by_secret(&mut *tx, &input.secret)
        .await?
        .filter(|row| row.event_id == event.id);
    // The registration's row lock orders two scanners with the same ticket.
    let registration = match found {
        Some(row) => registrations::lock(&mut tx, row.id).await?,
        None => None,
    };
    let result = match &registration {
        None => "invalid",
        Some(row) => match row.status() {
            RegistrationStatus::Confirmed => {
                let last = checkins::last_ok_kind(&mut tx, row.id).await?;
                match (input.kind, last.as_deref()) {
                    (ScanKind::Entry, Some("entry")) => "already_redeemed",
                    _ => "ok",
                }
            }
            RegistrationStatus::PendingPayment => "unpaid",
            _ => "canceled",
        },
    };
    let uuid = Uuid::now_v7();
    let inserted = checkins::insert(
        &mut tx,
        &NewCheckin {
            uuid,
            event_id: event.id,
            registration_id: registration.as_ref().map(|r| r.id),
            nonce: &input.nonce,
            kind,
            result,
            attendee: registration.as_ref().map(|r| r.name.as_str()),
            scanned_by: user.id,
        },
    )
    .await?;
    if inserted
        && result == "ok"
        && let Some(row) = &registration
    {
        let created = CheckinCreated {
            checkin: uuid,
            event: event.uuid,
            registration: row.uuid,
            kind: kind.into(),
            at: Utc::now(),
        };
        bus::enqueue_as(&mut tx, &created, user.uuid).await?;
    }
    tx.commit().await?;
    // A concurrent retry with the same nonce may have won: answer what was stored.
    let stored = checkins::find_by_nonce(&state.db, event.id, &input.nonce)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("check-in {uuid} vanished")))?;
    if inserted && result == "ok" {
        push_counts(&state, &event).await;
    }
    Ok(Json(stored.into()))
}

async fn push_counts(state: &AppState, event: &EventRow) {
    match checkins::inside(&state.db, event.id).await {
        Ok(inside) => state.ctx.notifier.push_event(
            event.uuid,
            json!({"type": "checkins", "event": event.uuid, "inside": inside}),
            None,
        ),
        Err(err) => tracing::warn!(error = %err, "cannot count check-ins"),
    }
}

/// Annul a mistaken check-in (within `app.annul_window` of it).
#[utoipa::path(
    post, path = "/checkins/{id}/annul", tag = "checkins",
    params(("id" = Uuid, Path, description = "The check-in's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The annulled check-in", body = Checkin),
        (status = 403, description = "Not the organizer, and no `checkin` role", body = kit::Problem),
        (status = 404, description = "No such check-in", body = kit::Problem),
        (status = 409, description = "Too late (`annul_window_passed`), not an `ok` scan (`checkin_not_ok`), or annulled already (`checkin_annulled`)", body = kit::Problem),
    )
)]
async fn annul(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Checkin>> {
    let row = checkins::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("check-in"))?;
    let event = event_store::find_by_id(&state.db, row.event_id)
        .await?
        .ok_or_else(|| ApiError::not_found("check-in"))?;
    may_scan(&user, &event)?;
    if row.result != "ok" {
        return Err(ApiError::conflict(
            "checkin_not_ok",
            "Only an `ok` check-in can be annulled.",
        ));
    }
    let window = chrono::Duration::from_std(state.settings.app.annul_window).unwrap_or_default();
    if Utc::now() - row.created_at > window {
        return Err(ApiError::conflict(
            "annul_window_passed",
            "A check-in can only be annulled shortly after it.",
        ));
    }
    let mut tx = state.db.begin().await?;
    if !checkins::annul(&mut tx, row.id).await? {
        return Err(ApiError::conflict(
            "checkin_annulled",
            "This check-in was annulled already.",
        ));
    }
    if let Some(registration) = row.registration {
        let annulled = CheckinAnnulled {
            checkin: row.uuid,
            event: event.uuid,
            registration,
            at: Utc::now(),
        };
        bus::enqueue_as(&mut tx, &annulled, user.uuid).await?;
    }
    tx.commit().await?;
    push_counts(&state, &event).await;
    let row = checkins::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("check-in"))?;
    Ok(Json(row.into()))
}
