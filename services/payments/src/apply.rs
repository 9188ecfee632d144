//! Applying what the provider says to our payments and refunds, whoever learned it: an API call
//! that just called the provider, a provider's webhook, or reconciliation.
//!
//! Every change goes through the transition table (`PaymentStatus::can_move_to`): a status the
//! table does not allow from the current one (an older event arriving late) changes nothing.
//! A change is written in the caller's transaction together with its history entry (cause,
//! provider event id, request id), its bus event (outbox) and its partner deliveries; the
//! realtime push waits in [`Effects`] until the transaction has committed.

use chrono::Utc;
use contracts::Event;
use contracts::payments::{
    PaymentCanceled, PaymentFailed, PaymentRequiresAction, PaymentSucceeded, RefundFailed,
    RefundSucceeded,
};
use serde_json::{Value, json};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{Cause, PaymentStatus, RefundStatus};
use crate::provider::{Intent, Observed, RefundView};
use crate::store::payments::{self as payment_store, NewHistory, PaymentRow, StatusWrite};
use crate::store::refunds::{self as refund_store, RefundRow};
use crate::store::webhooks;

pub type Tx = Transaction<'static, Postgres>;

/// Why and on whose behalf a change is made, as the history records it.
#[derive(Debug, Clone)]
pub struct Context {
    pub cause: Cause,
    pub provider_event_id: Option<String>,
    pub request_id: Option<String>,
    /// The user who acted (the envelope's `actor`), when a user did.
    pub actor: Option<Uuid>,
}

impl Context {
    /// A call to our API by `actor` (a user) or a service (`None`), in the current request.
    pub fn api(actor: Option<Uuid>) -> Context {
        Context {
            cause: Cause::Api,
            provider_event_id: None,
            request_id: kit::request_id::current(),
            actor,
        }
    }

    pub fn webhook(event_id: &str) -> Context {
        Context {
            cause: Cause::Webhook,
            provider_event_id: Some(event_id.to_owned()),
            request_id: kit::request_id::current(),
            actor: None,
        }
    }

    pub fn reconciliation() -> Context {
        Context {
            cause: Cause::Reconciliation,
            provider_event_id: None,
            request_id: None,
            actor: None,
        }
    }

    pub fn seed() -> Context {
        Context {
            cause: Cause::Seed,
            provider_event_id: None,
            request_id: None,
            actor: None,
        }
    }
}

/// What to do once the transaction has committed.
#[derive(Debug, Default)]
pub struct Effects {
    /// Realtime pushes to paying users.
    pub pushes: Vec<Push>,
    /// Partner deliveries queued (the sender is woken).
    pub deliveries: usize,
}

/// A payment's new state for its user's `notifications.user_<uuid>` topic.
#[derive(Debug, Clone)]
pub struct Push {
    pub user: Uuid,
    pub payment: Uuid,
    pub version: i32,
    pub data: Value,
}

fn push(row: &PaymentRow) -> Push {
    Push {
        user: row.user_uuid,
        payment: row.uuid,
        version: row.version,
        data: json!({
            "type": "payment.updated",
            "payment": {
                "id": row.uuid,
                "status": row.status,
                "amount": row.amount,
                "currency": row.currency,
                "amount_captured": row.amount_captured,
                "amount_refunded": row.amount_refunded,
                "reference": {"service": row.reference_service, "id": row.reference_id},
                "decline_code": row.decline_code,
                "next_action": row.next_action,
                "version": row.version,
                "updated_at": row.updated_at,
            }
        }),
    }
}

/// An event about a payment or refund, ready for the outbox and for partner deliveries.
pub struct Announcement {
    pub outbox: bus::Serialized,
    /// What partners receive.
    pub payload: Value,
}

fn announcement<E: Event>(event: &E, ctx: &Context) -> sqlx::Result<Announcement> {
    let envelope = bus::CloudEvent::new(event, ctx.actor);
    let outbox =
        bus::Serialized::new(&envelope).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    let payload = json!({
        "id": envelope.id,
        "type": E::TYPE,
        "created": Utc::now(),
        "data": event,
    });
    Ok(Announcement { outbox, payload })
}

/// Writes `announcement` to the outbox and queues it for every partner endpoint that takes it.
async fn announce_written(
    tx: &mut Tx,
    announcement: &Announcement,
    effects: &mut Effects,
) -> sqlx::Result<()> {
    bus::enqueue_serialized(tx, &announcement.outbox).await?;
    effects.deliveries += webhooks::queue_deliveries(
        tx,
        announcement.outbox.id,
        &announcement.outbox.event_type,
        &announcement.payload,
    )
    .await?;
    Ok(())
}

async fn announce<E: Event>(
    tx: &mut Tx,
    event: &E,
    ctx: &Context,
    effects: &mut Effects,
) -> sqlx::Result<()> {
    announce_written(tx, &announcement(event, ctx)?, effects).await
}

/// Records the creation of a payment (from nothing to its first status).
pub async fn created(tx: &mut Tx, row: &PaymentRow, ctx: &Context) -> sqlx::Result<()> {
    payment_store::insert_history(
        tx,
        &NewHistory {
            payment_id: row.id,
            refund_id: None,
            from_status: None,
            to_status: row.status.as_str(),
            cause: ctx.cause,
            provider_event_id: ctx.provider_event_id.as_deref(),
            request_id: ctx.request_id.as_deref(),
            version: row.version,
        },
    )
    .await
}

/// The payment as `observed` leaves it (version and time still to be set by the write), or
/// `None` when that changes nothing: the same status, or one the transition table does not
/// allow from the current one (an older event arriving late).
///
/// `requested_capture`: the amount a capture call asked for, used when the provider does not
/// say what it captured.
pub fn changed(
    row: &PaymentRow,
    observed: &Observed,
    requested_capture: Option<i64>,
    ctx: &Context,
) -> Option<PaymentRow> {
    let from = row.status;
    let to = observed.status;
    if from == to {
        return None;
    }
    if !from.can_move_to(to) {
        tracing::info!(payment = %row.uuid, %from, %to, cause = %ctx.cause,
            "ignored a status that would move the payment backwards");
        return None;
    }
    let amount_captured = if to == PaymentStatus::Succeeded {
        observed
            .amount_captured
            .or(requested_capture)
            .unwrap_or(row.amount)
            .clamp(0, row.amount)
    } else {
        row.amount_captured
    };
    Some(PaymentRow {
        status: to,
        amount_captured,
        decline_code: observed.decline_code.clone(),
        failure_message: observed.failure_message.clone(),
        next_action: observed.next_action.clone(),
        cancellation_reason: observed
            .cancellation_reason
            .clone()
            .or_else(|| row.cancellation_reason.clone()),
        ..row.clone()
    })
}

/// What [`changed`] writes.
pub fn status_write(next: &PaymentRow) -> StatusWrite<'_> {
    StatusWrite {
        status: next.status,
        amount_captured: next.amount_captured,
        decline_code: next.decline_code.as_deref(),
        failure_message: next.failure_message.as_deref(),
        next_action: next.next_action.as_ref(),
        cancellation_reason: next.cancellation_reason.as_deref(),
    }
}

/// The history entry's cause for `ctx`.
pub fn history_cause(ctx: &Context) -> payment_store::HistoryCause<'_> {
    payment_store::HistoryCause {
        cause: ctx.cause,
        provider_event_id: ctx.provider_event_id.as_deref(),
        request_id: ctx.request_id.as_deref(),
    }
}

/// Logs and counts a status change once it is written, and queues its realtime push.
pub fn record_change(from: PaymentStatus, next: &PaymentRow, ctx: &Context, effects: &mut Effects) {
    let to = next.status;
    tracing::info!(payment = %next.uuid, %from, %to, cause = %ctx.cause, "payment status changed");
    metrics::counter!("payments_transitions_total", "to" => to.as_str(), "cause" => ctx.cause.as_str())
        .increment(1);
    effects.pushes.push(push(next));
}

/// Applies the provider's view to a payment locked by the caller; the payment as it is now.
pub async fn payment(
    tx: &mut Tx,
    row: PaymentRow,
    observed: &Observed,
    requested_capture: Option<i64>,
    ctx: &Context,
    effects: &mut Effects,
) -> sqlx::Result<PaymentRow> {
    let Some(mut next) = changed(&row, observed, requested_capture, ctx) else {
        return Ok(row);
    };
    let (version, updated_at) = payment_store::write_status(
        tx,
        row.id,
        &status_write(&next),
        row.status,
        &history_cause(ctx),
    )
    .await?;
    next.version = version;
    next.updated_at = updated_at;
    if let Some(announcement) = status_announcement(&next, ctx)? {
        announce_written(tx, &announcement, effects).await?;
    }
    record_change(row.status, &next, ctx, effects);
    Ok(next)
}

/// The bus event a payment's new status is announced with, if any.
pub fn status_announcement(row: &PaymentRow, ctx: &Context) -> sqlx::Result<Option<Announcement>> {
    let now = row.updated_at;
    let announced = match row.status {
        PaymentStatus::Succeeded => announcement(
            &PaymentSucceeded {
                payment: row.uuid,
                user: row.user_uuid,
                reference: row.reference(),
                amount: row.amount,
                currency: row.currency.clone(),
                amount_captured: row.amount_captured,
                succeeded_at: now,
            },
            ctx,
        )?,
        PaymentStatus::Failed => announcement(
            &PaymentFailed {
                payment: row.uuid,
                user: row.user_uuid,
                reference: row.reference(),
                amount: row.amount,
                currency: row.currency.clone(),
                decline_code: row.decline_code.clone(),
                failure_message: row.failure_message.clone(),
                failed_at: now,
            },
            ctx,
        )?,
        PaymentStatus::Canceled => announcement(
            &PaymentCanceled {
                payment: row.uuid,
                user: row.user_uuid,
                reference: row.reference(),
                amount: row.amount,
                currency: row.currency.clone(),
                cancellation_reason: row.cancellation_reason.clone(),
                canceled_at: now,
            },
            ctx,
        )?,
        PaymentStatus::RequiresAction => announcement(
            &PaymentRequiresAction {
                payment: row.uuid,
                user: row.user_uuid,
                reference: row.reference(),
                amount: row.amount,
                currency: row.currency.clone(),
                requested_at: now,
            },
            ctx,
        )?,
        PaymentStatus::RequiresPaymentMethod
        | PaymentStatus::RequiresConfirmation
        | PaymentStatus::Processing
        | PaymentStatus::RequiresCapture => return Ok(None),
    };
    Ok(Some(announced))
}

/// Records a new refund (from nothing to `pending`) on its payment's history.
pub async fn refund_created(
    tx: &mut Tx,
    payment: &PaymentRow,
    refund_id: i64,
    version: i32,
    ctx: &Context,
) -> sqlx::Result<()> {
    payment_store::insert_history(
        tx,
        &NewHistory {
            payment_id: payment.id,
            refund_id: Some(refund_id),
            from_status: None,
            to_status: RefundStatus::Pending.as_str(),
            cause: ctx.cause,
            provider_event_id: ctx.provider_event_id.as_deref(),
            request_id: ctx.request_id.as_deref(),
            version,
        },
    )
    .await
}

/// Settles a pending refund (payment and refund locked by the caller, in that order) as the
/// provider says; both as they are now.
pub async fn refund_settled(
    tx: &mut Tx,
    payment: PaymentRow,
    refund: RefundRow,
    to: RefundStatus,
    failure_reason: Option<&str>,
    ctx: &Context,
    effects: &mut Effects,
) -> sqlx::Result<(PaymentRow, RefundRow)> {
    let from = refund.status;
    if !from.can_move_to(to) {
        return Ok((payment, refund));
    }
    let succeeded = to == RefundStatus::Succeeded;
    let updated_at = refund_store::write_status(tx, refund.id, to, failure_reason).await?;
    let (version, amount_refunded) =
        payment_store::settle_refund(tx, payment.id, refund.amount, succeeded).await?;
    let payment = PaymentRow {
        amount_refunded,
        amount_refund_pending: payment.amount_refund_pending - refund.amount,
        version,
        updated_at,
        ..payment
    };
    let refund = RefundRow {
        status: to,
        failure_reason: failure_reason.map(str::to_owned),
        updated_at,
        ..refund
    };
    payment_store::insert_history(
        tx,
        &NewHistory {
            payment_id: payment.id,
            refund_id: Some(refund.id),
            from_status: Some(from.as_str()),
            to_status: to.as_str(),
            cause: ctx.cause,
            provider_event_id: ctx.provider_event_id.as_deref(),
            request_id: ctx.request_id.as_deref(),
            version,
        },
    )
    .await?;
    if succeeded {
        let event = RefundSucceeded {
            refund: refund.uuid,
            payment: payment.uuid,
            user: payment.user_uuid,
            reference: payment.reference(),
            amount: refund.amount,
            currency: payment.currency.clone(),
            payment_amount_refunded: amount_refunded,
            succeeded_at: updated_at,
        };
        announce(tx, &event, ctx, effects).await?;
    } else {
        let event = RefundFailed {
            refund: refund.uuid,
            payment: payment.uuid,
            user: payment.user_uuid,
            reference: payment.reference(),
            amount: refund.amount,
            currency: payment.currency.clone(),
            failure_reason: refund.failure_reason.clone(),
            failed_at: updated_at,
        };
        announce(tx, &event, ctx, effects).await?;
    }
    tracing::info!(refund = %refund.uuid, payment = %payment.uuid, %to, cause = %ctx.cause,
        "refund settled");
    metrics::counter!("payments_refunds_settled_total", "to" => to.as_str()).increment(1);
    effects.pushes.push(push(&payment));
    Ok((payment, refund))
}

/// Applies the provider's view of a refund (payment, then refund, locked in that order); the
/// refund as it is now.
pub async fn settle_refund(
    tx: &mut Tx,
    payment_id: i64,
    refund_id: i64,
    view: &RefundView,
    ctx: &Context,
    effects: &mut Effects,
) -> sqlx::Result<RefundRow> {
    let payment = payment_store::lock_by_id(tx, payment_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    let mut refund = refund_store::lock(tx, refund_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    if refund.provider_refund_id.is_none() && !view.id.is_empty() {
        refund_store::set_provider_id(tx, refund.id, &view.id).await?;
        refund.provider_refund_id = Some(view.id.clone());
    }
    if view.status == RefundStatus::Pending {
        return Ok(refund);
    }
    let (_, refund) = refund_settled(
        tx,
        payment,
        refund,
        view.status,
        view.failure_reason.as_deref(),
        ctx,
        effects,
    )
    .await?;
    Ok(refund)
}

/// What `intent` says about a payment besides its status.
pub fn note(intent: &Intent) -> payment_store::ProviderNote<'_> {
    payment_store::ProviderNote {
        provider_payment_id: Some(&intent.id)
            .filter(|id| !id.is_empty())
            .map(String::as_str),
        client_secret: intent.client_secret.as_deref(),
        payment_method: intent.payment_method.as_deref(),
    }
}

/// `row` with `note` recorded, as `lock_and_note` records it.
pub fn noted(row: PaymentRow, note: &payment_store::ProviderNote<'_>) -> PaymentRow {
    PaymentRow {
        provider_payment_id: row
            .provider_payment_id
            .or_else(|| note.provider_payment_id.map(str::to_owned)),
        client_secret: row
            .client_secret
            .or_else(|| note.client_secret.map(str::to_owned)),
        payment_method: note
            .payment_method
            .map(str::to_owned)
            .or(row.payment_method),
        ..row
    }
}

/// Applies an intent the provider answered; an intent in a status we do not know changes
/// nothing (and is logged).
pub async fn intent(
    tx: &mut Tx,
    row: PaymentRow,
    intent: &Intent,
    requested_capture: Option<i64>,
    ctx: &Context,
    effects: &mut Effects,
) -> sqlx::Result<PaymentRow> {
    match intent.observed() {
        Some(observed) => payment(tx, row, &observed, requested_capture, ctx, effects).await,
        None => {
            tracing::warn!(payment = %row.uuid, status = %intent.status,
                "the provider answered a status this service does not know");
            Ok(row)
        }
    }
}
