//! What the service publishes and consumes.
//!
//! Published (through the outbox, in the transaction of the change; payloads in
//! `contracts::payments`, each naming the payment's `reference`):
//! `payments.payment.succeeded`, `.failed`, `.canceled`, `.requires_action`,
//! `payments.refund.succeeded`, `.failed` (see `crate::apply`). The same events go to partner
//! webhook endpoints (`crate::deliveries`).
//!
//! Consumed: `auth.user.*`, keeping the local `users` table current
//! ([`identity::events::user_handlers`]).

/// The event handlers of this service (run by `bus::wire` in the service's `start`).
pub fn consumers() -> bus::Consumers {
    identity::events::user_handlers(bus::Consumers::new())
}
