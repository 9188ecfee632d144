//! What users and the platform do to registrations, neither HTTP nor SQL: registering,
//! cancelling, approving, expiring holds, a payment arriving, an event being cancelled. Each
//! takes a [`Ctx`] (the pool, the rules, the payments client, the notifier) so a handler, the
//! event consumer and the expiry task call the same code.

use chrono::{DateTime, Utc};
use contracts::events::{EventCancelled, EventState, RegistrationWaitlisted};
use kit::{ApiError, ApiResult, ConstraintExt};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{self, EventStatus, RegistrationStatus};
use crate::notify::{Notifier, UserPush};
use crate::payments::{Payment, Payments};
use crate::seats::{Rules, Seats};
use crate::store::events::{self as event_store, EventRow};
use crate::store::registrations::{self, NewRegistration, RegistrationRow};

#[derive(Clone)]
pub struct Ctx {
    pub db: PgPool,
    pub rules: Rules,
    pub payments: Option<Payments>,
    pub notifier: Notifier,
}

/// A registration request, parsed.
#[derive(Debug, Clone)]
pub struct Registering {
    pub user_id: i64,
    pub ticket_type: Option<Uuid>,
    pub guests: i32,
    pub answers: Value,
}

/// What a committed change means for the realtime pushes.
pub struct Changed {
    pub seats: Seats,
    pub users: Vec<UserPush>,
}

impl Ctx {
    /// Pushes availability and the users' changes; call after the commit.
    pub fn committed(&self, changed: &Changed) {
        self.notifier.availability(&changed.seats, None);
        self.notifier.users(changed.users.clone());
    }
}

fn push(seats: &Seats, registration: &RegistrationRow, status: RegistrationStatus) -> UserPush {
    UserPush {
        user: registration.user_uuid,
        registration: registration.uuid,
        event: seats.event.uuid,
        status: status.to_string(),
    }
}

/// The event's state as published on the bus.
pub fn state(rules: &Rules, event: &EventRow) -> EventState {
    EventState {
        event: rules.info(event),
        organizer: event.organizer,
        status: event.status.clone(),
        capacity: event.capacity,
        sequence: event.sequence,
    }
}

/// Locks the event with local id `id` and loads its ticket types.
pub async fn lock_seats(tx: &mut Transaction<'_, Postgres>, id: i64) -> ApiResult<Seats> {
    let event = event_store::lock(tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    Ok(Seats::load(tx, event).await?)
}

/// Registers a user for `event` inside `tx`: a seat if one fits (confirmed, or held for
/// payment), the approval queue, or the waitlist.
pub async fn register(
    ctx: &Ctx,
    tx: &mut Transaction<'_, Postgres>,
    event: &EventRow,
    input: &Registering,
    now: DateTime<Utc>,
) -> ApiResult<(RegistrationRow, Changed)> {
    if let Some(existing) = registrations::find_active(&mut **tx, event.id, input.user_id).await? {
        return Err(already_registered(existing));
    }
    let mut seats = lock_seats(tx, event.id).await?;
    let (row, users) = register_locked(ctx, tx, &mut seats, input, now).await?;
    Ok((row, Changed { seats, users }))
}

/// Registers a user for the event `seats` holds locked in `tx`.
pub async fn register_locked(
    ctx: &Ctx,
    tx: &mut Transaction<'_, Postgres>,
    seats: &mut Seats,
    input: &Registering,
    now: DateTime<Utc>,
) -> ApiResult<(RegistrationRow, Vec<UserPush>)> {
    if input.guests > seats.event.max_guests {
        return Err(ApiError::unprocessable(
            "too_many_guests",
            format!(
                "This event allows at most {} guests per registration.",
                seats.event.max_guests
            ),
        ));
    }
    match EventStatus::parse(&seats.event.status) {
        Some(EventStatus::Published) => {}
        Some(EventStatus::Cancelled) => {
            return Err(ApiError::conflict(
                "event_cancelled",
                "This event was cancelled.",
            ));
        }
        _ => {
            return Err(ApiError::conflict(
                "registration_closed",
                "This event does not take registrations.",
            ));
        }
    }
    domain::registration_open(
        seats.event.registration_opens_at,
        seats.event.registration_closes_at,
        seats.event.ends_at,
        now,
    )
    .map_err(|why| ApiError::conflict("registration_closed", why))?;
    let ticket = match input.ticket_type {
        Some(uuid) => seats.tickets.values().find(|t| t.uuid == uuid),
        None => seats.tickets.values().min_by_key(|t| (t.position, t.id)),
    }
    .cloned()
    .ok_or_else(|| {
        let mut errors = kit::FieldErrors::default();
        errors.add("ticket_type", "is not a ticket type of this event");
        ApiError::from(errors)
    })?;
    if ticket.is_paid() && ctx.payments.is_none() {
        return Err(ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "payments_unavailable",
            "Paid tickets cannot be sold right now.",
        ));
    }
    let seat_count = 1 + input.guests;
    let fits = seats.counts(ticket.id).fits(seat_count).is_ok();
    let (status, expires_at) = if seats.event.requires_approval {
        (RegistrationStatus::PendingApproval, None)
    } else if !fits {
        (RegistrationStatus::Waitlisted, None)
    } else if ticket.is_paid() {
        (
            RegistrationStatus::PendingPayment,
            Some(ctx.rules.until(now, ctx.rules.hold)),
        )
    } else {
        (RegistrationStatus::Confirmed, None)
    };
    let secret = (status == RegistrationStatus::Confirmed).then(domain::new_ticket_secret);
    let new = NewRegistration {
        uuid: Uuid::now_v7(),
        event_id: seats.event.id,
        ticket_type_id: ticket.id,
        user_id: input.user_id,
        status,
        guests: input.guests,
        answers: &input.answers,
        waitlisted: status == RegistrationStatus::Waitlisted,
        expires_at,
        ticket_secret: secret.as_deref(),
        created_at: now,
    };
    let row = registrations::insert(tx, &new)
        .await
        .on_constraint("registrations_one_active_idx", || {
            already_registered(Uuid::nil())
        })?;
    if status.holds_seats() {
        seats.add(tx, ticket.id, seat_count).await?;
    }
    match status {
        RegistrationStatus::Confirmed => {
            let registrant = ctx.rules.registrant(&seats.event, &ticket, &row);
            let confirmed = contracts::events::RegistrationConfirmed {
                registrant,
                ticket: ctx.rules.ticket(secret.as_deref().unwrap_or_default()),
                from_waitlist: false,
            };
            bus::enqueue_as(tx, &confirmed, row.user_uuid).await?;
        }
        RegistrationStatus::Waitlisted => {
            let waitlisted = RegistrationWaitlisted {
                registrant: ctx.rules.registrant(&seats.event, &ticket, &row),
                position: row.waitlist_position.unwrap_or_default(),
            };
            bus::enqueue_as(tx, &waitlisted, row.user_uuid).await?;
        }
        _ => {}
    }
    tracing::info!(event = %seats.event.uuid, registration = %row.uuid, status = %status, "registered");
    let users = vec![push(seats, &row, status)];
    Ok((row, users))
}

pub(crate) fn already_registered(existing: Uuid) -> ApiError {
    let detail = if existing.is_nil() {
        "You already have a registration for this event.".to_owned()
    } else {
        format!("You already have a registration for this event: {existing}.")
    };
    ApiError::conflict("already_registered", detail)
}

/// The payment of a registration holding a paid seat: made (once) in the payments service,
/// remembered on the registration.
pub async fn ensure_payment(ctx: &Ctx, registration: &RegistrationRow) -> ApiResult<Payment> {
    let payments = ctx.payments.as_ref().ok_or_else(|| {
        ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "payments_unavailable",
            "Paid tickets cannot be sold right now.",
        )
    })?;
    let event = event_store::find_by_id(&ctx.db, registration.event_id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    let ticket = event_store::ticket_types(&ctx.db, event.id)
        .await?
        .into_iter()
        .find(|t| t.id == registration.ticket_type_id)
        .ok_or_else(|| ApiError::not_found("ticket type"))?;
    let amount = ticket.price * i64::from(registration.seats());
    let currency = ticket.currency.clone().unwrap_or_default();
    let description = format!(
        "{} × {} — {}",
        registration.seats(),
        ticket.name,
        event.title
    );
    let payment = payments
        .create(
            registration.uuid,
            registration.user_uuid,
            amount,
            &currency,
            &description,
        )
        .await
        .map_err(|err| {
            tracing::warn!(error = %err, registration = %registration.uuid, "cannot create the payment");
            ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "payments_unavailable",
                "The payment could not be created; try again.",
            )
        })?;
    registrations::set_payment(
        &ctx.db,
        registration.id,
        payment.id,
        payment.client_secret.as_deref(),
    )
    .await?;
    Ok(payment)
}

/// Who is cancelling.
pub enum By {
    Registrant,
    Organizer(Option<String>),
}

/// Cancels an active registration: frees its seats, refunds a paid one, promotes the waitlist.
pub async fn cancel(ctx: &Ctx, registration: &RegistrationRow, by: By) -> ApiResult<Changed> {
    let mut tx = ctx.db.begin().await?;
    let mut seats = lock_seats(&mut tx, registration.event_id).await?;
    let row = registrations::lock(&mut tx, registration.id)
        .await?
        .ok_or_else(|| ApiError::not_found("registration"))?;
    if !row.status().is_active() {
        return Err(ApiError::conflict(
            "registration_not_active",
            format!("This registration is {} already.", row.status()),
        ));
    }
    let reason = match &by {
        By::Registrant => None,
        By::Organizer(reason) => Some(
            reason
                .clone()
                .unwrap_or_else(|| "Cancelled by the organizer.".into()),
        ),
    };
    let refunded = refund_if_paid(ctx, &row).await?;
    seats
        .cancel(&mut tx, &ctx.rules, &row, reason.as_deref(), refunded)
        .await?;
    let mut users = vec![push(&seats, &row, RegistrationStatus::Cancelled)];
    let now = Utc::now();
    for promoted in seats.promote(&mut tx, &ctx.rules, now).await? {
        let status = if seats.ticket(promoted.ticket_type_id)?.is_paid() {
            RegistrationStatus::PendingPayment
        } else {
            RegistrationStatus::Confirmed
        };
        users.push(push(&seats, &promoted, status));
    }
    tx.commit().await?;
    Ok(Changed { seats, users })
}

/// Refunds a confirmed paid registration's payment; whether it did.
async fn refund_if_paid(ctx: &Ctx, row: &RegistrationRow) -> ApiResult<bool> {
    let (Some(payment), RegistrationStatus::Confirmed) = (row.payment_id, row.status()) else {
        return Ok(false);
    };
    let payments = ctx.payments.as_ref().ok_or_else(|| {
        ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "payments_unavailable",
            "The refund cannot be made right now; try again.",
        )
    })?;
    payments.refund(payment, row.uuid).await.map_err(|err| {
        tracing::warn!(error = %err, registration = %row.uuid, "refund failed");
        ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "payments_unavailable",
            "The refund could not be made; try again.",
        )
    })?;
    Ok(true)
}

/// Approves (seat, hold or waitlist) or rejects a registration waiting for approval.
pub async fn decide(
    ctx: &Ctx,
    registration: &RegistrationRow,
    approve: bool,
) -> ApiResult<Changed> {
    let mut tx = ctx.db.begin().await?;
    let mut seats = lock_seats(&mut tx, registration.event_id).await?;
    let row = registrations::lock(&mut tx, registration.id)
        .await?
        .ok_or_else(|| ApiError::not_found("registration"))?;
    if row.status() != RegistrationStatus::PendingApproval {
        return Err(ApiError::conflict(
            "registration_not_pending_approval",
            format!("This registration is {}.", row.status()),
        ));
    }
    let now = Utc::now();
    let status = if !approve {
        seats
            .end(
                &mut tx,
                &row,
                RegistrationStatus::Rejected,
                Some("Not approved by the organizer."),
            )
            .await?;
        RegistrationStatus::Rejected
    } else {
        let ticket = seats.ticket(row.ticket_type_id)?.clone();
        if seats.counts(ticket.id).fits(row.seats()).is_err() {
            sqlx::query(
                "UPDATE registrations SET status = 'waitlisted',
                     waitlist_position = nextval('waitlist_positions'), updated_at = now()
                 WHERE id = $1",
            )
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
            RegistrationStatus::Waitlisted
        } else if ticket.is_paid() {
            seats.add(&mut tx, ticket.id, row.seats()).await?;
            registrations::set_status(
                &mut tx,
                row.id,
                RegistrationStatus::PendingPayment,
                Some(ctx.rules.until(now, ctx.rules.hold)),
                None,
                None,
            )
            .await?;
            RegistrationStatus::PendingPayment
        } else {
            seats.add(&mut tx, ticket.id, row.seats()).await?;
            seats.confirm(&mut tx, &ctx.rules, &row, false).await?;
            RegistrationStatus::Confirmed
        }
    };
    tx.commit().await?;
    let users = vec![push(&seats, &row, status)];
    Ok(Changed { seats, users })
}

/// Expires every hold whose deadline is before `now` (at most `batch`); how many.
pub async fn expire_holds(ctx: &Ctx, cutoff: DateTime<Utc>, batch: i64) -> anyhow::Result<usize> {
    let due = registrations::expired_holds(&ctx.db, cutoff, batch).await?;
    let now = Utc::now();
    let mut expired = 0;
    for (registration_id, event_id) in due {
        let mut tx = ctx.db.begin().await?;
        let Some(event) = event_store::lock(&mut tx, event_id).await? else {
            continue;
        };
        let mut seats = Seats::load(&mut tx, event).await?;
        let Some(row) = registrations::lock(&mut tx, registration_id).await? else {
            continue;
        };
        // Paid meanwhile, or cancelled: nothing to do.
        if row.status() != RegistrationStatus::PendingPayment
            || row.expires_at.is_none_or(|at| at > cutoff)
        {
            continue;
        }
        seats.expire(&mut tx, &ctx.rules, &row, now).await?;
        let mut users = vec![push(&seats, &row, RegistrationStatus::Expired)];
        for promoted in seats.promote(&mut tx, &ctx.rules, now).await? {
            users.push(push(&seats, &promoted, RegistrationStatus::PendingPayment));
        }
        tx.commit().await?;
        ctx.committed(&Changed { seats, users });
        expired += 1;
    }
    Ok(expired)
}

/// The expiry task: every `poll`, holds whose time (plus `grace`) is up release their seats,
/// and published events that have ended become `completed` (check-in still works; they take
/// no registrations and no edits).
pub async fn run_expiry(
    ctx: Ctx,
    poll: std::time::Duration,
    grace: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let grace = chrono::Duration::from_std(grace).unwrap_or_default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
        if let Err(err) = expire_holds(&ctx, Utc::now() - grace, 100).await {
            tracing::warn!(error = %err, "expiring holds failed; trying again");
        }
        match event_store::complete_ended(&ctx.db, Utc::now()).await {
            Ok(completed) => {
                for event in completed {
                    tracing::info!(%event, "event ended: completed");
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "completing ended events failed; trying again")
            }
        }
    }
}

/// `payments.payment.succeeded` for one of our registrations, inside the inbox transaction:
/// a live hold is confirmed; a payment for a hold that expired (or a registration that ended)
/// is refunded and the registrant told, never confirmed.
pub async fn payment_succeeded(
    ctx: &Ctx,
    tx: &mut Transaction<'static, Postgres>,
    registration: Uuid,
    payment: Uuid,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<Changed>> {
    let Some(found) = registrations::find(&mut **tx, registration).await? else {
        tracing::warn!(%registration, %payment, "a payment for an unknown registration; ignored");
        return Ok(None);
    };
    let Some(event) = event_store::lock(tx, found.event_id).await? else {
        return Ok(None);
    };
    let mut seats = Seats::load(tx, event).await?;
    let row = registrations::lock(tx, found.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("registration {registration} vanished"))?;
    let now = Utc::now();
    let mut users = Vec::new();
    match row.status() {
        RegistrationStatus::Confirmed if row.payment_id == Some(payment) => return Ok(None),
        RegistrationStatus::Confirmed => {
            // A second payment for a seat already paid: given back, the seat stays.
            let payments = ctx.payments.as_ref().ok_or_else(|| {
                anyhow::anyhow!("a duplicate payment to refund, and no payments client")
            })?;
            payments.refund(payment, row.uuid).await?;
            tracing::warn!(%registration, %payment, "a second payment for a confirmed seat: refunded");
            return Ok(None);
        }
        RegistrationStatus::PendingPayment if row.expires_at.is_some_and(|end| at <= end) => {
            if row.payment_id != Some(payment) {
                registrations::set_payment(&mut **tx, row.id, payment, None).await?;
            }
            seats.confirm(tx, &ctx.rules, &row, false).await?;
            users.push(push(&seats, &row, RegistrationStatus::Confirmed));
            tracing::info!(%registration, %payment, "paid: confirmed");
        }
        status => {
            // Too late: the hold expired (perhaps not processed yet), or the place ended.
            let payments = ctx.payments.as_ref().ok_or_else(|| {
                anyhow::anyhow!("a late payment to refund, and no payments client")
            })?;
            payments.refund(payment, row.uuid).await?;
            if status == RegistrationStatus::PendingPayment {
                seats.expire(tx, &ctx.rules, &row, now).await?;
                for promoted in seats.promote(tx, &ctx.rules, now).await? {
                    users.push(push(&seats, &promoted, RegistrationStatus::PendingPayment));
                }
            }
            let ticket = seats.ticket(row.ticket_type_id)?;
            let told = contracts::events::RegistrationCancelled {
                registrant: ctx.rules.registrant(&seats.event, ticket, &row),
                reason: Some(
                    "Your payment arrived after your seat's hold had expired, so it was refunded."
                        .into(),
                ),
                refunded: true,
            };
            bus::enqueue_as(tx, &told, row.user_uuid).await?;
            users.push(push(&seats, &row, row.status()));
            tracing::warn!(%registration, %payment, %status, "payment after the hold: refunded");
        }
    }
    Ok(Some(Changed { seats, users }))
}

/// Cancels an event: every active registration cancelled (paid ones refunded), everyone told.
pub async fn cancel_event(ctx: &Ctx, event: &EventRow, reason: Option<&str>) -> ApiResult<Changed> {
    let mut tx = ctx.db.begin().await?;
    let mut seats = lock_seats(&mut tx, event.id).await?;
    if seats.event.status == EventStatus::Cancelled.as_str() {
        return Err(ApiError::conflict(
            "event_cancelled",
            "This event was cancelled already.",
        ));
    }
    event_store::set_status(&mut tx, event.id, EventStatus::Cancelled.as_str(), reason).await?;
    seats.event.status = EventStatus::Cancelled.as_str().into();
    seats.event.sequence += 1;
    let why = reason.map_or_else(
        || "The event was cancelled.".to_owned(),
        |r| format!("The event was cancelled: {r}"),
    );
    let mut users = Vec::new();
    for row in registrations::active_of_event(&mut tx, event.id).await? {
        let refunded = refund_if_paid(ctx, &row).await?;
        seats
            .cancel(&mut tx, &ctx.rules, &row, Some(&why), refunded)
            .await?;
        users.push(push(&seats, &row, RegistrationStatus::Cancelled));
    }
    let cancelled = EventCancelled {
        state: state(&ctx.rules, &seats.event),
        reason: reason.map(str::to_owned),
    };
    bus::enqueue(&mut tx, &cancelled).await?;
    tx.commit().await?;
    Ok(Changed { seats, users })
}
