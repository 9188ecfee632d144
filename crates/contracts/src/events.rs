//! Events published by the events service. The registration ones carry what a mail needs (the
//! registrant's address and name, the event as people read it), so the mail service maps them
//! to templates without calling back: `events.registration.confirmed` (the ticket),
//! `events.registration.promoted` (a waitlist offer with its deadline),
//! `events.registration.cancelled` (with the reason) and `events.registration.changed` (one per
//! registrant when an event's time or place changes).
//!
//! A free event's waitlist promotion confirms the seat at once: it publishes
//! `events.registration.confirmed` with `from_waitlist: true`, not `promoted`, so the person
//! gets one mail (with the ticket). `promoted` is an offer of a held paid seat.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event as registrants read it in a mail or a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInfo {
    pub id: Uuid,
    pub title: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// IANA time zone the event is held in (`Europe/Madrid`).
    pub time_zone: String,
    /// The venue, or `Online` with the URL for an online event.
    pub venue: String,
    /// The event's page.
    pub url: String,
}

/// Who a registration event is about, and where to write to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registrant {
    pub registration: Uuid,
    pub user: Uuid,
    pub email: String,
    pub name: String,
    pub event: EventInfo,
    pub ticket_type: String,
    /// Seats: the registrant and their guests.
    pub seats: i32,
}

/// The ticket of a confirmed registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// Short code people can read out (the QR code's text is the secret itself).
    pub code: String,
    /// An SVG image of the ticket's QR code.
    pub qr_url: String,
}

/// A seat is confirmed (free seat, approved, paid, or promoted from a free event's waitlist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationConfirmed {
    #[serde(flatten)]
    pub registrant: Registrant,
    pub ticket: Ticket,
    #[serde(default)]
    pub from_waitlist: bool,
}

/// The event was full: the registrant is on the waitlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationWaitlisted {
    #[serde(flatten)]
    pub registrant: Registrant,
    pub position: i64,
}

/// An offer made to someone on a paid event's waitlist: a seat held until `offer.expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationPromoted {
    #[serde(flatten)]
    pub registrant: Registrant,
    pub offer: Offer,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Where to accept (and pay for) the seat.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// A registration was cancelled: by the registrant, by the organizer, with the event, or
/// because a payment came after its hold expired (then `refunded`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationCancelled {
    #[serde(flatten)]
    pub registrant: Registrant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub refunded: bool,
}

/// A held seat was not paid in time: it went back to the event (and the waitlist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationExpired {
    #[serde(flatten)]
    pub registrant: Registrant,
    pub expired_at: DateTime<Utc>,
}

/// An event the registrant holds a place at changed in a way that matters (time, place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationChanged {
    #[serde(flatten)]
    pub registrant: Registrant,
    /// What changed, in words.
    pub changes: String,
}

/// An event as organizers and other services see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventState {
    #[serde(flatten)]
    pub event: EventInfo,
    pub organizer: Uuid,
    pub status: String,
    pub capacity: i32,
    /// iCalendar `SEQUENCE`: grows with every change attendees should see.
    pub sequence: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventPublished(pub EventState);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventUpdated(pub EventState);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCancelled {
    #[serde(flatten)]
    pub state: EventState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A ticket was scanned at the door (`kind`: `entry` or `exit`) with the answer `ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinCreated {
    pub checkin: Uuid,
    pub event: Uuid,
    pub registration: Uuid,
    pub kind: String,
    pub at: DateTime<Utc>,
}

/// A check-in was annulled (a mistaken scan), within minutes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckinAnnulled {
    pub checkin: Uuid,
    pub event: Uuid,
    pub registration: Uuid,
    pub at: DateTime<Utc>,
}

macro_rules! registrant_event {
    ($payload:ty, $type:literal) => {
        impl crate::Event for $payload {
            const TYPE: &'static str = $type;
            const DATAVERSION: u32 = 1;
            fn subject(&self) -> Option<Uuid> {
                Some(self.registrant.registration)
            }
        }
    };
}

registrant_event!(RegistrationConfirmed, "events.registration.confirmed");
registrant_event!(RegistrationWaitlisted, "events.registration.waitlisted");
registrant_event!(RegistrationPromoted, "events.registration.promoted");
registrant_event!(RegistrationCancelled, "events.registration.cancelled");
registrant_event!(RegistrationExpired, "events.registration.expired");
registrant_event!(RegistrationChanged, "events.registration.changed");

impl crate::Event for EventPublished {
    const TYPE: &'static str = "events.event.published";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.0.event.id)
    }
}

impl crate::Event for EventUpdated {
    const TYPE: &'static str = "events.event.updated";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.0.event.id)
    }
}

impl crate::Event for EventCancelled {
    const TYPE: &'static str = "events.event.cancelled";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.state.event.id)
    }
}

crate::event!(CheckinCreated, "events.checkin.created", 1, checkin);
crate::event!(CheckinAnnulled, "events.checkin.annulled", 1, checkin);

/// The realtime topic of an event's public availability: `events.event_<uuid>`.
pub fn event_topic(event: Uuid) -> String {
    format!("event_{event}")
}
