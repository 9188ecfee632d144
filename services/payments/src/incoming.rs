//! Applying a provider's webhook event, once its signature was verified: recorded by event id
//! in the transaction that applies it (a redelivered event changes nothing), then applied to
//! the payment or refund it is about through the transition table (an older event never moves
//! a payment back).

use sqlx::PgPool;

use crate::apply::{self, Context, Effects};
use crate::domain::ProviderName;
use crate::provider::{EventObject, ProviderEvent};
use crate::store::{payments, refunds, webhooks};

/// What became of an event.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Seen before: nothing was done.
    pub duplicate: bool,
    /// It is about a payment or refund this service does not have (made elsewhere with the
    /// same provider account): acknowledged, ignored.
    pub unmatched: bool,
    pub effects: Effects,
}

/// What becomes of an event about a payment that it can no longer change, found in one read:
/// one seen before (a redelivery), or one about a payment in a final status that it leaves as
/// it is (the provider's own word on a change an API call already made), which is only
/// recorded as seen. `None`: the general way decides.
async fn without_writing(
    hot: &payments::Hot,
    provider: ProviderName,
    event: &ProviderEvent,
) -> sqlx::Result<Option<Outcome>> {
    let EventObject::Intent(intent) = &event.object else {
        return Ok(None);
    };
    let Some((row, seen)) = payments::find_for_event(hot, provider, &intent.id, &event.id).await?
    else {
        return Ok(None);
    };
    let unchanged = || {
        let Some(observed) = intent.observed() else {
            return false;
        };
        let noted = apply::noted(row.clone(), &apply::note(intent));
        noted.client_secret == row.client_secret
            && noted.payment_method == row.payment_method
            && apply::changed(&row, &observed, None, &Context::webhook(&event.id)).is_none()
    };
    if seen {
        return Ok(Some(Outcome {
            duplicate: true,
            ..Outcome::default()
        }));
    }
    if !(row.status.is_terminal() && unchanged()) {
        return Ok(None);
    }
    let first = payments::record_seen(hot, provider, &event.id, &event.event_type).await?;
    Ok(Some(Outcome {
        duplicate: !first,
        ..Outcome::default()
    }))
}

pub async fn apply_event(
    db: &PgPool,
    hot: &payments::Hot,
    provider: ProviderName,
    event: &ProviderEvent,
) -> sqlx::Result<Outcome> {
    if let Some(outcome) = without_writing(hot, provider, event).await? {
        return Ok(outcome);
    }
    let mut tx = db.begin().await?;
    let mut outcome = Outcome::default();
    if !webhooks::record_provider_event(&mut tx, provider, &event.id, &event.event_type).await? {
        outcome.duplicate = true;
        return Ok(outcome);
    }
    let ctx = Context::webhook(&event.id);
    match &event.object {
        EventObject::Intent(intent) => {
            let mut row = payments::lock_by_provider_id(&mut tx, provider, &intent.id).await?;
            // Sent before we recorded the provider's id: found by our id in its metadata.
            if row.is_none()
                && let Some(ours) = intent.our_payment
            {
                row = payments::lock_and_note(&mut tx, ours, &apply::note(intent))
                    .await?
                    .filter(|row| {
                        row.provider == provider
                            && row.provider_payment_id.as_deref() == Some(intent.id.as_str())
                    });
            }
            match row {
                None => outcome.unmatched = true,
                Some(row) => {
                    apply::intent(&mut tx, row, intent, None, &ctx, &mut outcome.effects).await?;
                }
            }
        }
        EventObject::Refund(view) => {
            let mut refund = refunds::find_by_provider_id(&mut *tx, &view.id).await?;
            if refund.is_none()
                && let Some(ours) = view.our_refund
            {
                refund = refunds::find(&mut *tx, ours).await?.filter(|refund| {
                    refund.provider_refund_id.is_none()
                        || refund.provider_refund_id.as_deref() == Some(view.id.as_str())
                });
            }
            match refund {
                None => outcome.unmatched = true,
                Some(refund) => {
                    apply::settle_refund(
                        &mut tx,
                        refund.payment_id,
                        refund.id,
                        view,
                        &ctx,
                        &mut outcome.effects,
                    )
                    .await?;
                }
            }
        }
        EventObject::Other(_) => {}
    }
    if outcome.effects.pushes.is_empty() {
        // Nothing changed but the event's record, which only spares a redelivery some work:
        // no need to wait for the disk.
        sqlx::query("SET LOCAL synchronous_commit TO off")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}
