//! Registrations: `POST /events/{id}/registrations` (a seat, a held paid seat, the approval
//! queue or the waitlist), reading, cancelling, paying, approving, and the ticket.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use identity::CurrentUser;
use kit::idempotency::{self, Claim, Idempotent};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::events::{Question, visible};
use super::{AppState, require_runs, runs};
use crate::actions::{self, By, Registering};
use crate::domain::{self, RegistrationStatus};
use crate::store::events as event_store;
use crate::store::registrations::{self, RegistrationRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(list_mine))
        .routes(routes!(get_registration))
        .routes(routes!(cancel_registration))
        .routes(routes!(pay))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(get_ticket))
        .routes(routes!(ticket_qr))
}

/// The payment of a held paid seat, for the frontend's payment form.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PaymentInfo {
    /// The payment in the payments service.
    pub id: Uuid,
    /// For the provider's library (Stripe.js) to confirm the payment.
    pub client_secret: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Registration {
    pub id: Uuid,
    pub event: Uuid,
    pub user: Uuid,
    pub ticket_type: Uuid,
    pub status: RegistrationStatus,
    pub guests: i32,
    /// The registrant and their guests.
    pub seats: i32,
    pub answers: Value,
    /// Place in the waitlist's order (lower goes first), while waitlisted.
    pub waitlist_position: Option<i64>,
    /// While `pending_payment`: the seat is held until then.
    pub expires_at: Option<DateTime<Utc>>,
    pub payment: Option<PaymentInfo>,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&RegistrationRow> for Registration {
    fn from(row: &RegistrationRow) -> Self {
        let status = row.status();
        Registration {
            id: row.uuid,
            event: row.event_uuid,
            user: row.user_uuid,
            ticket_type: row.ticket_type_uuid,
            status,
            guests: row.guests,
            seats: row.seats(),
            answers: row.answers.clone(),
            waitlist_position: (status == RegistrationStatus::Waitlisted)
                .then_some(row.waitlist_position)
                .flatten(),
            expires_at: (status == RegistrationStatus::PendingPayment)
                .then_some(row.expires_at)
                .flatten(),
            payment: row.payment_id.map(|id| PaymentInfo {
                id,
                client_secret: (status == RegistrationStatus::PendingPayment)
                    .then(|| row.client_secret.clone())
                    .flatten(),
            }),
            cancel_reason: row.cancel_reason.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    /// The ticket type; the event's first when absent.
    #[serde(default)]
    pub ticket_type: Option<Uuid>,
    /// Guests coming along (at most the event's `max_guests`: `too_many_guests`).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 20)]
    pub guests: i32,
    /// Answers to the event's questions, by question id (at most 1000 characters each).
    #[serde(default)]
    pub answers: BTreeMap<String, String>,
}

fn check_answers(
    questions: &[Question],
    answers: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let mut errors = FieldErrors::default();
    for (id, answer) in answers {
        if !questions.iter().any(|q| &q.id == id) {
            errors.add(format!("answers.{id}"), "is not a question of this event");
        } else if answer.chars().count() > 1000 || answer.contains('\0') {
            errors.add(format!("answers.{id}"), "must be at most 1000 characters");
        }
    }
    for question in questions.iter().filter(|q| q.required) {
        if answers
            .get(&question.id)
            .is_none_or(|a| a.trim().is_empty())
        {
            errors.add(format!("answers.{}", question.id), "is required");
        }
    }
    errors.into_result()?;
    Ok(serde_json::to_value(answers).unwrap_or_default())
}

/// Register for an event. The answer says where the place is: `confirmed`,
/// `pending_approval`, `pending_payment` (the seat is held until `expires_at`; pay with
/// `payment.client_secret`) or `waitlisted`. With an `Idempotency-Key`, a retry gets the
/// first answer again.
#[utoipa::path(
    post, path = "/events/{id}/registrations", tag = "registrations",
    request_body = Register,
    params(("id" = Uuid, Path, description = "The event's id"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
        pattern = r"^[!-~]+$", description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = Registration,
            headers(("Location" = String, description = "The registration's URL"))),
        (status = 404, description = "No such event", body = kit::Problem),
        (status = 409, description = "Registered already (`already_registered`), registration closed (`registration_closed`), the event cancelled (`event_cancelled`), or the key still in use", body = kit::Problem),
        (status = 422, description = "Too many guests (`too_many_guests`), invalid answers or ticket type (`validation_failed`), or the key reused", body = kit::Problem),
        (status = 503, description = "Paid seats cannot be sold now (`payments_unavailable`)", body = kit::Problem),
    )
)]
async fn register(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    request: Idempotent<Register>,
) -> ApiResult<Response> {
    let event = visible(&state, Some(&user), id).await?;
    let questions: Vec<Question> =
        serde_json::from_value(event.questions.clone()).unwrap_or_default();
    let answers = check_answers(&questions, &request.body.answers)?;
    if !(0..=domain::MAX_GUESTS).contains(&request.body.guests) {
        return Err(ApiError::unprocessable(
            "too_many_guests",
            format!(
                "This event allows at most {} guests per registration.",
                event.max_guests
            ),
        ));
    }
    let (row, changed, response) = if request.key.is_none() {
        // Decided together with the other registrations for this event arriving now.
        let registering = Registering {
            user_id: user.id,
            ticket_type: request.body.ticket_type,
            guests: request.body.guests,
            answers,
        };
        let (row, changed) = state.desk.register(&state.ctx, &event, registering).await?;
        let response = created(&row);
        (row, changed, response)
    } else {
        let scope = format!("registrations.create:{}:{}", user.uuid, id);
        let (mut tx, input, key) = match request.claim(&state.db, &scope).await? {
            Claim::Replay(stored) => return Ok(stored),
            Claim::Fresh { tx, body, key } => (tx, body, key),
        };
        let registering = Registering {
            user_id: user.id,
            ticket_type: input.ticket_type,
            guests: input.guests,
            answers,
        };
        let (row, changed) =
            actions::register(&state.ctx, &mut tx, &event, &registering, Utc::now()).await?;
        let response = idempotency::complete(tx, key.as_ref(), created(&row)).await?;
        (row, changed, response)
    };
    let location = format!("/api/events/v1/registrations/{}", row.uuid);
    state.ctx.committed(&changed);
    if row.status() != RegistrationStatus::PendingPayment {
        return Ok(response);
    }
    // The payment is made after the seat is committed (never while the event is locked); a
    // replay of this request, or `GET` of the registration, shows it once made.
    let mut body = Registration::from(&row);
    match actions::ensure_payment(&state.ctx, &row).await {
        Ok(payment) => {
            body.payment = Some(PaymentInfo {
                id: payment.id,
                client_secret: payment.client_secret,
            });
        }
        Err(err) => {
            tracing::warn!(error = %err, registration = %row.uuid, "payment not made yet; the registrant can retry");
        }
    }
    Ok((StatusCode::CREATED, [(LOCATION, location)], Json(body)).into_response())
}

fn created(row: &RegistrationRow) -> Response {
    let location = format!("/api/events/v1/registrations/{}", row.uuid);
    (
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(Registration::from(row)),
    )
        .into_response()
}

/// A registration the caller may see: their own, or one of an event they run.
async fn reachable(state: &AppState, user: &CurrentUser, id: Uuid) -> ApiResult<RegistrationRow> {
    let row = registrations::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("registration"))?;
    if row.user_id == user.id || user.is_admin() {
        return Ok(row);
    }
    let event = event_store::find_by_id(&state.db, row.event_id).await?;
    if event.is_some_and(|e| runs(user, &e)) {
        Ok(row)
    } else {
        Err(ApiError::not_found("registration"))
    }
}

/// Your registrations, newest first.
#[utoipa::path(
    get, path = "/registrations", tag = "registrations",
    params(PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of your registrations", body = Page<Registration>),
        (status = 422, description = "A cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_mine(
    State(state): State<AppState>,
    user: CurrentUser,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Registration>>> {
    let page = paging.parse::<Uuid>()?;
    let rows =
        registrations::list_of_user(&state.db, user.id, page.after, page.fetch_limit()).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        |row| row.uuid,
        |row| Registration::from(&row),
    )))
}

/// One registration (yours, or of an event you run).
#[utoipa::path(
    get, path = "/registrations/{id}", tag = "registrations",
    params(("id" = Uuid, Path, description = "The registration's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The registration", body = Registration),
        (status = 404, description = "No such registration, or not yours", body = kit::Problem),
    )
)]
async fn get_registration(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Registration>> {
    let row = reachable(&state, &user, id).await?;
    Ok(Json(Registration::from(&row)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRegistration {
    /// The organizer's reason, told to the registrant.
    #[serde(default)]
    #[schema(schema_with = super::reason_schema)]
    pub reason: Option<String>,
}

/// Cancel a registration (yours, or as the event's organizer): its seats go to the waitlist,
/// a paid seat is refunded.
#[utoipa::path(
    post, path = "/registrations/{id}/cancel", tag = "registrations",
    params(("id" = Uuid, Path, description = "The registration's id")),
    request_body = CancelRegistration,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cancelled registration", body = Registration),
        (status = 404, description = "No such registration, or not yours", body = kit::Problem),
        (status = 409, description = "Not active (`registration_not_active`)", body = kit::Problem),
        (status = 503, description = "The refund could not be made (`payments_unavailable`): nothing changed", body = kit::Problem),
    )
)]
async fn cancel_registration(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<CancelRegistration>,
) -> ApiResult<Json<Registration>> {
    // Checked whoever cancels, so a request the schema refuses is refused here too.
    let reason = super::reason(input.reason.as_deref())?;
    let row = reachable(&state, &user, id).await?;
    let by = if row.user_id == user.id {
        By::Registrant
    } else {
        By::Organizer(reason)
    };
    let changed = actions::cancel(&state.ctx, &row, by).await?;
    state.ctx.committed(&changed);
    let row = registrations::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("registration"))?;
    Ok(Json(Registration::from(&row)))
}

/// The payment of a held paid seat (made once; the same on every call): pay it with
/// `payment.client_secret` before `expires_at`.
#[utoipa::path(
    post, path = "/registrations/{id}/payment", tag = "registrations",
    params(("id" = Uuid, Path, description = "The registration's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The registration with its payment", body = Registration),
        (status = 404, description = "No such registration, or not yours", body = kit::Problem),
        (status = 409, description = "No seat is held for payment (`registration_not_pending_payment`)", body = kit::Problem),
        (status = 503, description = "The payment could not be made (`payments_unavailable`): try again", body = kit::Problem),
    )
)]
async fn pay(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Registration>> {
    let row = reachable(&state, &user, id).await?;
    if row.user_id != user.id {
        return Err(ApiError::not_found("registration"));
    }
    if row.status() != RegistrationStatus::PendingPayment {
        return Err(ApiError::conflict(
            "registration_not_pending_payment",
            format!("This registration is {}.", row.status()),
        ));
    }
    let payment = actions::ensure_payment(&state.ctx, &row).await?;
    let mut body = Registration::from(&row);
    body.payment = Some(PaymentInfo {
        id: payment.id,
        client_secret: payment.client_secret,
    });
    Ok(Json(body))
}

async fn decide(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    approve: bool,
) -> ApiResult<Json<Registration>> {
    let row = reachable(state, user, id).await?;
    let event = event_store::find_by_id(&state.db, row.event_id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    require_runs(user, &event)?;
    let changed = actions::decide(&state.ctx, &row, approve).await?;
    state.ctx.committed(&changed);
    let row = registrations::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("registration"))?;
    Ok(Json(Registration::from(&row)))
}

/// Approve a registration waiting for approval: a seat (held for payment on a paid ticket), or
/// the waitlist when full.
#[utoipa::path(
    post, path = "/registrations/{id}/approve", tag = "registrations",
    params(("id" = Uuid, Path, description = "The registration's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The registration after approval", body = Registration),
        (status = 403, description = "Not the event's organizer", body = kit::Problem),
        (status = 404, description = "No such registration", body = kit::Problem),
        (status = 409, description = "Not waiting for approval (`registration_not_pending_approval`)", body = kit::Problem),
    )
)]
async fn approve(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Registration>> {
    decide(&state, &user, id, true).await
}

/// Reject a registration waiting for approval.
#[utoipa::path(
    post, path = "/registrations/{id}/reject", tag = "registrations",
    params(("id" = Uuid, Path, description = "The registration's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The rejected registration", body = Registration),
        (status = 403, description = "Not the event's organizer", body = kit::Problem),
        (status = 404, description = "No such registration", body = kit::Problem),
        (status = 409, description = "Not waiting for approval (`registration_not_pending_approval`)", body = kit::Problem),
    )
)]
async fn reject(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Registration>> {
    decide(&state, &user, id, false).await
}

/// A confirmed registration's ticket.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TicketView {
    /// The QR code's content: show it at the door.
    pub secret: String,
    /// A short code to read out.
    pub code: String,
    /// The QR code as an SVG document.
    pub qr_svg: String,
    /// The QR code image's URL (no sign-in needed: the URL holds the secret).
    pub qr_url: String,
}

/// Your ticket (confirmed registrations only).
#[utoipa::path(
    get, path = "/registrations/{id}/ticket", tag = "registrations",
    params(("id" = Uuid, Path, description = "The registration's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The ticket", body = TicketView),
        (status = 404, description = "No such registration, or not yours", body = kit::Problem),
        (status = 409, description = "Not confirmed (`registration_not_confirmed`)", body = kit::Problem),
    )
)]
async fn get_ticket(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<TicketView>> {
    let row = reachable(&state, &user, id).await?;
    let (RegistrationStatus::Confirmed, Some(secret)) = (row.status(), row.ticket_secret.clone())
    else {
        return Err(ApiError::conflict(
            "registration_not_confirmed",
            format!("This registration is {}: it has no ticket.", row.status()),
        ));
    };
    let qr_svg = domain::qr_svg(&secret).map_err(|why| ApiError::internal(anyhow::anyhow!(why)))?;
    Ok(Json(TicketView {
        code: domain::ticket_code(&secret),
        qr_url: state.ctx.rules.qr_url(&secret),
        qr_svg,
        secret,
    }))
}

/// A ticket's QR code as an SVG image (for mails; the URL itself is the secret).
#[utoipa::path(
    get, path = "/tickets/{secret}/qr.svg", tag = "registrations",
    params(("secret" = String, Path, description = "The ticket's secret", pattern = "^[A-Za-z0-9_-]{43}$")),
    responses(
        (status = 200, description = "The QR code", content_type = "image/svg+xml", body = String),
        (status = 404, description = "No such ticket", body = kit::Problem),
    )
)]
async fn ticket_qr(
    State(state): State<AppState>,
    Path(secret): Path<String>,
) -> ApiResult<Response> {
    if secret.len() != 43
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::not_found("ticket"));
    }
    let row = registrations::find_by_secret(&state.db, &secret)
        .await?
        .filter(|row| row.status() == RegistrationStatus::Confirmed)
        .ok_or_else(|| ApiError::not_found("ticket"))?;
    let svg = domain::qr_svg(row.ticket_secret.as_deref().unwrap_or_default())
        .map_err(|why| ApiError::internal(anyhow::anyhow!(why)))?;
    Ok((
        [
            (CONTENT_TYPE, "image/svg+xml"),
            (CACHE_CONTROL, "private, max-age=3600"),
        ],
        svg,
    )
        .into_response())
}
