//! Keeping the local user copy current from the auth service's `auth.user.*` events.
//!
//! Every service with a `users` table registers these handlers with its event consumer:
//!
//! ```ignore
//! pub fn consumers() -> bus::Consumers {
//!     identity::events::user_handlers(bus::Consumers::new())
//! }
//! ```
//!
//! Each handler runs in the consumer's transaction (with the inbox row), and the `apply_*`
//! functions ignore data older than what the row already has, so redeliveries and late
//! events are harmless.

use chrono::Utc;
use contracts::auth::{UserDeleted, UserRegistered, UserRestored, UserUpdated};

use crate::users;

/// Adds handlers for `auth.user.registered|updated|deleted|restored` to `consumers`.
pub fn user_handlers(consumers: bus::Consumers) -> bus::Consumers {
    consumers
        .on::<UserRegistered, _>(|tx, event| {
            Box::pin(async move {
                let at = event.time.unwrap_or_else(Utc::now);
                users::apply_registered(tx, &event.data, at).await?;
                Ok(())
            })
        })
        .on::<UserUpdated, _>(|tx, event| {
            Box::pin(async move {
                let at = event.time.unwrap_or_else(Utc::now);
                users::apply_updated(tx, &event.data, at).await?;
                Ok(())
            })
        })
        .on::<UserDeleted, _>(|tx, event| {
            Box::pin(async move {
                let at = event.time.unwrap_or_else(Utc::now);
                users::apply_deleted(tx, &event.data, at).await?;
                Ok(())
            })
        })
        .on::<UserRestored, _>(|tx, event| {
            Box::pin(async move {
                let at = event.time.unwrap_or_else(Utc::now);
                users::apply_restored(tx, &event.data, at).await?;
                Ok(())
            })
        })
}
