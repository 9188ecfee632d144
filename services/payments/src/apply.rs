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

/// Writes `event` to the outbox and queues it for every partner endpoint that takes it.
async fn announce<E: Event>(
    tx: &mut Tx,
    event: &E,
    ctx: &Context,
    effects: &mut Effects,
) -> sqlx::Result<()> {
    let id = match ctx.actor {
        Some(actor) => bus::enqueue_as(tx, event, actor).await?,
        None => bus::enqueue(tx, event).await?,
    };
    let payload = json!({
        "id": id,
        "type": E::TYPE,
        "created": Utc::now(),
        "data": event,
    });
    effects.deliveries += webhooks::queue_deliveries(tx, id, E::TYPE, &payload).await?;
    Ok(())
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

/// Applies the provider's view to a payment locked by the caller; the payment as it is now.
///
/// `requested_capture`: the amount a capture call asked for, used when the provider does not
/// say what it captured.
pub async fn payment(
    tx: &mut Tx,
    row: PaymentRow,
    observed: &Observed,
    requested_capture: Option<i64>,
    ctx: &Context,
    effects: &mut Effects,
) -> sqlx::Result<PaymentRow> {
    let from = row.status;
    let to = observed.status;
    if from == to {
        return Ok(row);
    }
    if !from.can_move_to(to) {
        tracing::info!(payment = %row.uuid, %from, %to, cause = %ctx.cause,
            "ignored a status that would move the payment backwards");
        return Ok(row);
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
    let write = StatusWrite {
        status: to,
        amount_captured,
        decline_code: observed.decline_code.as_deref(),
        failure_message: observed.failure_message.as_deref(),
        next_action: observed.next_action.as_ref(),
        cancellation_reason: observed
            .cancellation_reason
            .as_deref()
            .or(row.cancellation_reason.as_deref()),
    };
    let history = payment_store::HistoryCause {
        cause: ctx.cause,
        provider_event_id: ctx.provider_event_id.as_deref(),
        request_id: ctx.request_id.as_deref(),
    };
    let (version, updated_at) =
        payment_store::write_status(tx, row.id, &write, from, &history).await?;
    let row = PaymentRow {
        status: to,
        amount_captured,
        decline_code: observed.decline_code.clone(),
        failure_message: observed.failure_message.clone(),
        next_action: observed.next_action.clone(),
        cancellation_reason: write.cancellation_reason.map(str::to_owned),
        version,
        updated_at,
        ..row
    };
    announce_status(tx, &row, ctx, effects).await?;
    tracing::info!(payment = %row.uuid, %from, %to, cause = %ctx.cause, "payment status changed");
    metrics::counter!("payments_transitions_total", "to" => to.as_str(), "cause" => ctx.cause.as_str())
        .increment(1);
    effects.pushes.push(push(&row));
    Ok(row)
}

async fn announce_status(
    tx: &mut Tx,
    row: &PaymentRow,
    ctx: &Context,
    effects: &mut Effects,
) -> sqlx::Result<()> {
    let now = row.updated_at;
    match row.status {
        PaymentStatus::Succeeded => {
            let event = PaymentSucceeded {
                payment: row.uuid,
                user: row.user_uuid,
                reference: row.reference(),
                amount: row.amount,
                currency: row.currency.clone(),
                amount_captured: row.amount_captured,
                succeeded_at: now,
            };
            announce(tx, &event, ctx, effects).await
        }
        PaymentStatus::Failed => {
            let event = PaymentFailed {
                payment: row.uuid,
                user: row.user_uuid,
                reference: row.reference(),
                amount: row.amount,
                currency: row.currency.clone(),
                decline_code: row.decline_code.clone(),
                failure_message: row.failure_message.clone(),
                failed_at: now,
            };
            announce(tx, &event, ctx, effects).await
        }
        PaymentStatus::Canceled => {
            let event = PaymentCanceled {
                payment: row.uuid,
                user: row.user_uuid,
                reference: row.reference(),
                amount: row.amount,
                currency: row.currency.clone(),
                cancellation_reason: row.cancellation_reason.clone(),
                canceled_at: now,
            };
            announce(tx, &event, ctx, effects).await
        }
        PaymentStatus::RequiresAction => {
            let event = PaymentRequiresAction {
                payment: row.uuid,
                user: row.user_uuid,
                reference: row.reference(),
                amount: row.amount,
                currency: row.currency.clone(),
                requested_at: now,
            };
            announce(tx, &event, ctx, effects).await
        }
        PaymentStatus::RequiresPaymentMethod
        | PaymentStatus::RequiresConfirmation
        | PaymentStatus::Processing
        | PaymentStatus::RequiresCapture => Ok(()),
    }
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
