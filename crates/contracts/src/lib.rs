//! The types that cross service boundaries, so that a producer and its consumers agree at
//! compile time.
//!
//! Every event payload implements [`Event`]: it names its CloudEvents `type` (which is also
//! the RabbitMQ routing key, `<service>.<entity>.<past-tense verb>`) and its `dataversion`.
//! The envelope around it (id, source, time, request id, actor, ...) is built by the `bus`
//! crate; a payload is only the `data` member.
//!
//! # Evolving a payload
//!
//! - Additive changes (a new optional field, with `#[serde(default)]` on the consumer side)
//!   keep the `DATAVERSION`.
//! - A breaking change gets a new type with the same `TYPE` and the next `DATAVERSION`
//!   (e.g. `UserRegisteredV2`); consumers register handlers for both versions for one
//!   release, then the old one is removed. A message whose `dataversion` no consumer
//!   handler accepts is parked, never dropped.
//!
//! Payloads published by one service and consumed by no other may live in the service's own
//! `src/events.rs` (the template does this, because `cargo xtask new-service` copies it); the
//! moment a second service consumes one, it moves here, into a module named after the
//! producing service.

use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub mod auth;
pub mod events;
pub mod mail;
pub mod payments;

#[doc(hidden)]
pub use uuid as __uuid;

/// An event payload: the `data` of a CloudEvent.
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The CloudEvents `type` and routing key: `<service>.<entity>.<past-tense verb>`.
    const TYPE: &'static str;
    /// The version of this payload's schema (the `dataversion` extension attribute).
    const DATAVERSION: u32;

    /// The entity the event is about (the CloudEvents `subject`), usually its UUID.
    fn subject(&self) -> Option<Uuid> {
        None
    }
}

/// Implements [`Event`] for a payload: its type, its dataversion and, optionally, the field
/// holding the UUID of the entity it is about.
///
/// ```ignore
/// contracts::event!(UserRegistered, "auth.user.registered", 1, user);
/// ```
#[macro_export]
macro_rules! event {
    ($payload:ty, $type:literal, $version:literal, $subject:ident) => {
        impl $crate::Event for $payload {
            const TYPE: &'static str = $type;
            const DATAVERSION: u32 = $version;
            fn subject(&self) -> Option<$crate::__uuid::Uuid> {
                Some(self.$subject)
            }
        }
    };
    ($payload:ty, $type:literal, $version:literal) => {
        impl $crate::Event for $payload {
            const TYPE: &'static str = $type;
            const DATAVERSION: u32 = $version;
        }
    };
}

/// The producing service of an event type: its first dotted segment
/// (`auth.user.registered` → `auth`). The CloudEvents `source` is `/<service>`.
pub fn producer(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

/// Whether `event_type` has the conventional shape `<service>.<entity>.<verb>`: at least three
/// non-empty dot-separated segments of lower-case ASCII letters, digits and `_`/`-`.
pub fn is_valid_type(event_type: &str) -> bool {
    event_type.len() <= 200
        && event_type.split('.').count() >= 3
        && event_type.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_follow_the_convention() {
        assert!(is_valid_type("auth.user.registered"));
        assert!(is_valid_type("events.rsvp.wait_listed"));
        assert!(!is_valid_type("auth.user"));
        assert!(!is_valid_type("Auth.User.Registered"));
        assert!(!is_valid_type("auth..registered"));
        assert!(!is_valid_type("auth.user.#"));
        assert_eq!(producer("auth.user.registered"), "auth");
    }

    #[test]
    fn every_contract_names_a_conventional_type() {
        for event_type in [
            auth::UserRegistered::TYPE,
            auth::UserUpdated::TYPE,
            auth::UserDeleted::TYPE,
            auth::UserRestored::TYPE,
            auth::EmailVerificationRequested::TYPE,
            auth::PasswordResetRequested::TYPE,
            auth::EmailChangeRequested::TYPE,
            auth::EmailChanged::TYPE,
        ] {
            assert!(is_valid_type(event_type), "{event_type}");
            assert_eq!(producer(event_type), "auth");
        }
        for event_type in [
            mail::MessageSent::TYPE,
            mail::MessageFailed::TYPE,
            mail::MessageSuppressed::TYPE,
        ] {
            assert!(is_valid_type(event_type), "{event_type}");
            assert_eq!(producer(event_type), "mail");
        }
        for event_type in payments::EVENT_TYPES {
            assert!(is_valid_type(event_type), "{event_type}");
            assert_eq!(producer(event_type), "payments");
        }
    }
}
