//! What the service publishes and consumes.
//!
//! Published (through the outbox, in the transaction of the change):
//! - `mail.note.created` ([`NoteCreated`]) when a note is created.
//!
//! Consumed: `auth.user.*`, keeping the local `users` table current
//! ([`identity::events::user_handlers`]). To consume more, add one handler per event type
//! (payloads from `contracts`) in [`consumers`]; each runs in a transaction together with the
//! inbox row that makes redeliveries harmless.
//!
//! Payloads another service consumes live in `crates/contracts`; this one stays here because
//! `cargo xtask new-service` copies this file into every new service, renamed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A note was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteCreated {
    pub note: Uuid,
    /// The owner's user id.
    pub owner: Uuid,
    pub title: String,
    pub created_at: DateTime<Utc>,
}

impl contracts::Event for NoteCreated {
    const TYPE: &'static str = "mail.note.created";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.note)
    }
}

/// The event handlers of this service (run by `bus::wire` in the service's `start`).
pub fn consumers() -> bus::Consumers {
    identity::events::user_handlers(bus::Consumers::new())
}
