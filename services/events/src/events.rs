//! What the service publishes and consumes.
//!
//! Published (through the outbox, in the transaction of the change; payloads in
//! `contracts::events`): `events.event.published|updated|cancelled`,
//! `events.registration.confirmed|waitlisted|promoted|cancelled|expired|changed`,
//! `events.checkin.created|annulled`.
//!
//! Consumed:
//! - `auth.user.*`, keeping the local `users` table current ([`identity::events::user_handlers`]);
//! - `payments.payment.succeeded` for a registration (reference `{service: events}`): confirms
//!   a live hold, or refunds a payment that came after its hold expired. Handled once, through
//!   the inbox.

use contracts::payments::PaymentSucceeded;
use uuid::Uuid;

use crate::actions::{self, Ctx};

/// The event handlers of this service (run by `bus::wire` in the service's `start`).
pub fn consumers(ctx: Ctx) -> bus::Consumers {
    identity::events::user_handlers(bus::Consumers::new()).on::<PaymentSucceeded, _>(
        move |tx: &mut bus::Tx, event: bus::Received<PaymentSucceeded>| {
            let ctx = ctx.clone();
            Box::pin(async move {
                let paid = &event.data;
                if paid.reference.service != "events" {
                    return Ok(());
                }
                let Ok(registration) = Uuid::parse_str(&paid.reference.id) else {
                    tracing::warn!(reference = %paid.reference.id, "a payment for a reference that is not a registration; ignored");
                    return Ok(());
                };
                if let Some(changed) =
                    actions::payment_succeeded(&ctx, tx, registration, paid.payment, paid.succeeded_at)
                        .await?
                {
                    // Pushed before the inbox transaction commits: at worst a push about a
                    // change that is retried, which the page reads again.
                    ctx.committed(&changed);
                }
                Ok(())
            }) as futures_util::future::BoxFuture<'_, anyhow::Result<()>>
        },
    )
}
