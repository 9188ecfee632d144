//! What the service publishes and consumes.
//!
//! Published (through the outbox, in the transaction of the change):
//! - `template.note.created` ([`NoteCreated`]) when a note is created.
//!
//! Consumed: `auth.user.*`, keeping the local `users` table current
//! ([`identity::events::user_handlers`]). To consume more, add one handler per event type
//! (payloads from `contracts`) in [`consumers`]; each runs in a transaction together with the
//! inbox row that makes redeliveries harmless.
//!
//! Payloads another service consumes live in `crates/contracts`; this one stays here because
//! `cargo xtask new-service` copies this file into every new service, renamed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use kit::Parts;
use kit::health::Check;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Config;

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
    const TYPE: &'static str = "template.note.created";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.note)
    }
}

/// The event handlers of this service.
pub fn consumers() -> bus::Consumers {
    identity::events::user_handlers(bus::Consumers::new())
}

/// The `start` hook: the outbox relay and the consumers, with the `bus` readiness check.
pub fn start(parts: &Parts<Config>) -> BoxFuture<'_, anyhow::Result<Vec<Arc<dyn Check>>>> {
    Box::pin(bus::start(parts, Some(consumers())))
}

/// The `events parked | replay | outbox` subcommands.
pub fn commands() -> kit::Commands<Config> {
    kit::Commands {
        define: bus::ops::define,
        run: bus::ops::run,
    }
}
