//! The service's HTTP API: one module per resource, each with its own `router()`.

mod calendar;
mod checkins;
mod events;
mod registrations;

use std::sync::Arc;

use axum::extract::FromRef;
use identity::{CurrentUser, Identity};
use kit::{ApiError, Settings};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;

use crate::actions::Ctx;
use crate::config::Config;
use crate::store::events::EventRow;

pub use events::{Availability, Event, TicketType};
pub use registrations::Registration;

/// What handlers share, built once by the service's `start`.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub settings: Arc<Settings<Config>>,
    /// Token verification, revocation and the local users: what `identity::CurrentUser`
    /// and the other identity extractors need.
    pub identity: Identity,
    /// What the service's logic needs (the pool, the rules, payments, realtime).
    pub ctx: Ctx,
    /// Registrations for one event arriving together, decided in one transaction.
    pub desk: crate::desk::Desk,
}

impl FromRef<AppState> for Identity {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

/// Every route under `/api/events/v1`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().nest(
        "/api/events/v1",
        events::router()
            .merge(registrations::router())
            .merge(checkins::router())
            .merge(calendar::router()),
    )
}

/// The role that may create events.
pub const ORGANIZER_ROLE: &str = "organizer";
/// The role that may scan tickets at the door.
pub const CHECKIN_ROLE: &str = "checkin";

/// Whether `user` runs `event` (its organizer, or an admin).
pub fn runs(user: &CurrentUser, event: &EventRow) -> bool {
    user.is_admin() || event.organizer_id == user.id
}

/// 403 unless `user` runs `event`.
pub fn require_runs(user: &CurrentUser, event: &EventRow) -> Result<(), ApiError> {
    if runs(user, event) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "Only the event's organizer or an admin can do this.",
        ))
    }
}

/// The most characters of a cancellation's reason.
pub const MAX_REASON_CHARS: usize = 500;

/// A cancellation's reason, when one is given: one line of 1 to [`MAX_REASON_CHARS`]
/// characters once trimmed, or a 422 naming `reason`.
pub fn reason(input: Option<&str>) -> Result<Option<String>, ApiError> {
    input
        .map(|text| crate::domain::line(text, MAX_REASON_CHARS))
        .transpose()
        .map_err(|why| {
            let mut errors = kit::FieldErrors::default();
            errors.add("reason", why);
            ApiError::from(errors)
        })
}

/// [`reason`]'s rule, for the document.
pub fn reason_schema() -> utoipa::openapi::Object {
    kit::openapi::trimmed_text(MAX_REASON_CHARS, true)
}
