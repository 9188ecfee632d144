//! Seats: taking them, releasing them and promoting the waitlist. Every function here runs in
//! a transaction that holds the event's row lock (`store::events::lock`), which is what makes
//! capacity exact across requests and processes; the counters they change are the event's and
//! the ticket type's `taken`.
//!
//! Waitlist promotion is deterministic: waitlisted registrations in order of position, then
//! time; each that fits gets its seats (a free ticket is confirmed, a paid one is offered a
//! hold until a deadline), each that does not is skipped with its reason logged, until no seat
//! is left.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use contracts::events::{
    EventInfo, Offer, Registrant, RegistrationCancelled, RegistrationConfirmed,
    RegistrationExpired, RegistrationPromoted, Ticket,
};
use sqlx::{Postgres, Transaction};

use crate::domain::{self, Counts, RegistrationStatus};
use crate::store::events::{self as event_store, EventRow, TicketTypeRow};
use crate::store::registrations::{self, RegistrationRow};

/// What seat decisions depend on besides the rows.
#[derive(Debug, Clone)]
pub struct Rules {
    pub public_url: String,
    pub hold: Duration,
    pub offer: Duration,
}

impl Rules {
    pub fn event_url(&self, event: &EventRow) -> String {
        format!("{}/api/events/v1/events/{}", self.public_url, event.uuid)
    }

    pub fn qr_url(&self, secret: &str) -> String {
        format!("{}/api/events/v1/tickets/{secret}/qr.svg", self.public_url)
    }

    pub fn offer_url(&self, registration: &RegistrationRow) -> String {
        format!(
            "{}/api/events/v1/registrations/{}",
            self.public_url, registration.uuid
        )
    }

    pub fn until(&self, now: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
        now + chrono::Duration::from_std(span).unwrap_or(chrono::Duration::MAX)
    }

    pub fn info(&self, event: &EventRow) -> EventInfo {
        let venue = match (&event.venue, &event.online_url) {
            (Some(venue), _) => venue.clone(),
            (None, Some(url)) => format!("Online: {url}"),
            (None, None) => "To be announced".into(),
        };
        EventInfo {
            id: event.uuid,
            title: event.title.clone(),
            starts_at: event.starts_at,
            ends_at: event.ends_at,
            time_zone: event.time_zone.clone(),
            venue,
            url: self.event_url(event),
        }
    }

    pub fn registrant(
        &self,
        event: &EventRow,
        ticket: &TicketTypeRow,
        registration: &RegistrationRow,
    ) -> Registrant {
        Registrant {
            registration: registration.uuid,
            user: registration.user_uuid,
            email: registration.email.clone(),
            name: registration.name.clone(),
            event: self.info(event),
            ticket_type: ticket.name.clone(),
            seats: registration.seats(),
        }
    }

    pub fn ticket(&self, secret: &str) -> Ticket {
        Ticket {
            code: domain::ticket_code(secret),
            qr_url: self.qr_url(secret),
        }
    }
}

/// The event's ticket types by local id, with counters kept current as seats move.
#[derive(Debug, Clone)]
pub struct Seats {
    pub event: EventRow,
    pub tickets: HashMap<i64, TicketTypeRow>,
}

impl Seats {
    /// Loads the ticket types of `event` (which the caller has locked).
    pub async fn load(tx: &mut Transaction<'_, Postgres>, event: EventRow) -> sqlx::Result<Seats> {
        let tickets = event_store::ticket_types(&mut **tx, event.id)
            .await?
            .into_iter()
            .map(|ticket| (ticket.id, ticket))
            .collect();
        Ok(Seats { event, tickets })
    }

    pub fn counts(&self, ticket_type_id: i64) -> Counts {
        let ticket = self.tickets.get(&ticket_type_id);
        Counts {
            event_capacity: self.event.capacity,
            event_taken: self.event.taken,
            ticket_capacity: ticket.map_or(0, |t| t.capacity),
            ticket_taken: ticket.map_or(0, |t| t.taken),
        }
    }

    pub fn ticket(&self, id: i64) -> anyhow::Result<&TicketTypeRow> {
        self.tickets.get(&id).ok_or_else(|| {
            anyhow::anyhow!("ticket type {id} of event {} vanished", self.event.uuid)
        })
    }

    /// Takes (positive) or frees (negative) `seats` of `ticket_type_id`.
    pub async fn add(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        ticket_type_id: i64,
        seats: i32,
    ) -> sqlx::Result<()> {
        event_store::add_taken(tx, self.event.id, ticket_type_id, seats).await?;
        self.event.taken += seats;
        if let Some(ticket) = self.tickets.get_mut(&ticket_type_id) {
            ticket.taken += seats;
        }
        Ok(())
    }

    /// Ends a registration (`cancelled`, `expired`, `rejected`): frees its seats if it held
    /// any. The caller publishes what happened and then calls [`Seats::promote`].
    pub async fn end(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        registration: &RegistrationRow,
        status: RegistrationStatus,
        reason: Option<&str>,
    ) -> sqlx::Result<()> {
        if registration.status().holds_seats() {
            self.add(tx, registration.ticket_type_id, -registration.seats())
                .await?;
        }
        registrations::set_status(tx, registration.id, status, None, None, reason).await
    }

    /// Confirms a registration that holds (or is given) its seats: a ticket, and the event.
    pub async fn confirm(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        rules: &Rules,
        registration: &RegistrationRow,
        from_waitlist: bool,
    ) -> anyhow::Result<()> {
        let secret = registration
            .ticket_secret
            .clone()
            .unwrap_or_else(domain::new_ticket_secret);
        registrations::set_status(
            tx,
            registration.id,
            RegistrationStatus::Confirmed,
            None,
            Some(&secret),
            None,
        )
        .await?;
        let ticket = self.ticket(registration.ticket_type_id)?;
        let confirmed = RegistrationConfirmed {
            registrant: rules.registrant(&self.event, ticket, registration),
            ticket: rules.ticket(&secret),
            from_waitlist,
        };
        bus::enqueue_as(tx, &confirmed, registration.user_uuid).await?;
        Ok(())
    }

    /// Gives free seats to the waitlist, in order, until none is left; the registrations
    /// promoted.
    pub async fn promote(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<RegistrationRow>> {
        let mut promoted = Vec::new();
        if self.event.status != "published" || self.event.taken >= self.event.capacity {
            return Ok(promoted);
        }
        let waitlist = registrations::waitlist(tx, self.event.id).await?;
        for registration in waitlist {
            if self.event.taken >= self.event.capacity {
                break;
            }
            let seats = registration.seats();
            if let Err(why) = self.counts(registration.ticket_type_id).fits(seats) {
                tracing::info!(
                    event = %self.event.uuid,
                    registration = %registration.uuid,
                    position = registration.waitlist_position,
                    reason = %why,
                    "waitlist: skipped"
                );
                continue;
            }
            self.add(tx, registration.ticket_type_id, seats).await?;
            let ticket = self.ticket(registration.ticket_type_id)?.clone();
            if ticket.is_paid() {
                let expires_at = rules.until(now, rules.offer);
                registrations::set_status(
                    tx,
                    registration.id,
                    RegistrationStatus::PendingPayment,
                    Some(expires_at),
                    None,
                    None,
                )
                .await?;
                let offer = RegistrationPromoted {
                    registrant: rules.registrant(&self.event, &ticket, &registration),
                    offer: Offer {
                        url: rules.offer_url(&registration),
                        expires_at,
                    },
                };
                bus::enqueue_as(tx, &offer, registration.user_uuid).await?;
                tracing::info!(
                    event = %self.event.uuid,
                    registration = %registration.uuid,
                    position = registration.waitlist_position,
                    %expires_at,
                    "waitlist: offered a held seat"
                );
            } else {
                self.confirm(tx, rules, &registration, true).await?;
                tracing::info!(
                    event = %self.event.uuid,
                    registration = %registration.uuid,
                    position = registration.waitlist_position,
                    "waitlist: confirmed"
                );
            }
            promoted.push(registration);
        }
        Ok(promoted)
    }

    /// Cancels `registration` with `reason` and publishes it; `refunded` says whether its
    /// payment was given back.
    pub async fn cancel(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        rules: &Rules,
        registration: &RegistrationRow,
        reason: Option<&str>,
        refunded: bool,
    ) -> anyhow::Result<()> {
        self.end(tx, registration, RegistrationStatus::Cancelled, reason)
            .await?;
        let ticket = self.ticket(registration.ticket_type_id)?;
        let cancelled = RegistrationCancelled {
            registrant: rules.registrant(&self.event, ticket, registration),
            reason: reason.map(str::to_owned),
            refunded,
        };
        bus::enqueue_as(tx, &cancelled, registration.user_uuid).await?;
        Ok(())
    }

    /// Expires a hold that ran out, and publishes it.
    pub async fn expire(
        &mut self,
        tx: &mut Transaction<'_, Postgres>,
        rules: &Rules,
        registration: &RegistrationRow,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.end(tx, registration, RegistrationStatus::Expired, None)
            .await?;
        let ticket = self.ticket(registration.ticket_type_id)?;
        let expired = RegistrationExpired {
            registrant: rules.registrant(&self.event, ticket, registration),
            expired_at: now,
        };
        bus::enqueue_as(tx, &expired, registration.user_uuid).await?;
        tracing::info!(
            event = %self.event.uuid,
            registration = %registration.uuid,
            "hold expired: seats released"
        );
        Ok(())
    }

    /// Availability as the public sees it.
    pub fn left(&self) -> i32 {
        (self.event.capacity - self.event.taken).max(0)
    }
}
