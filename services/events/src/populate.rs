//! Seed data: `populator/<scenario>/events/*.yaml` → rows, get-or-create by UUID.
//!
//! ```yaml
//! events:
//!   - id: 0193a000-0000-7000-8000-0000000e0001
//!     organizer: 0193a000-0000-7000-8000-000000000001
//!     title: Rust meetup
//!     starts_at: !in 7d
//!     ends_at: !in 7d 2h
//!     time_zone: Europe/Madrid
//!     venue: The Hatchery
//!     status: published
//!     capacity: 40
//!     ticket_types:
//!       - {id: 0193a000-0000-7000-8000-0000000e0101, name: Standard, capacity: 40}
//! registrations:
//!   - {id: 0193a000-0000-7000-8000-0000000e1001, event: ..., user: ..., status: confirmed}
//! ```
//!
//! Registrations are seeded `confirmed` (a seat and a ticket) or `waitlisted`; the event's seat
//! counters follow them.

use chrono::Utc;
use futures_util::future::BoxFuture;
use populator::{Error, Keys, Report, Scenario, Spanned, When};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{self, EventStatus, RegistrationStatus, TimeZone};
use crate::store::events as event_store;
use crate::store::registrations::{self, NewRegistration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub users: Vec<identity::users::UserSeed>,
    #[serde(default)]
    pub events: Vec<EventSeed>,
    #[serde(default)]
    pub registrations: Vec<RegistrationSeed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketSeed {
    pub id: Uuid,
    pub name: String,
    #[serde(default)]
    pub price: i64,
    #[serde(default)]
    pub currency: Option<String>,
    pub capacity: i32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSeed {
    pub id: Spanned<Uuid>,
    pub organizer: Spanned<Uuid>,
    pub title: Spanned<String>,
    #[serde(default)]
    pub description: String,
    pub starts_at: When,
    pub ends_at: When,
    pub time_zone: Spanned<String>,
    #[serde(default)]
    pub venue: Option<String>,
    #[serde(default)]
    pub online_url: Option<String>,
    pub status: Spanned<String>,
    pub capacity: i32,
    #[serde(default)]
    pub max_guests: i32,
    #[serde(default)]
    pub requires_approval: bool,
    pub ticket_types: Vec<TicketSeed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationSeed {
    pub id: Spanned<Uuid>,
    pub event: Spanned<Uuid>,
    pub user: Spanned<Uuid>,
    /// The event's first ticket type when absent.
    #[serde(default)]
    pub ticket_type: Option<Uuid>,
    pub status: Spanned<String>,
    #[serde(default)]
    pub guests: i32,
}

/// Loads the scenario's files for this service: users, events, then registrations.
pub fn load<'a>(
    conn: &'a mut PgConnection,
    scenario: &'a Scenario,
) -> BoxFuture<'a, Result<Report, Error>> {
    Box::pin(async move {
        let sources = scenario.read::<Document>(<crate::Events as kit::Service>::NAME)?;
        let now = Utc::now();
        let max_description = Config::default().max_description_chars;
        let mut report = Report::default();
        let users = identity::users::seed(conn, &sources, |doc| &doc.users, &mut report).await?;
        let mut events = Keys::new("event");
        for source in &sources {
            for event in &source.doc.events {
                let line = event.id.line();
                let organizer_id =
                    users.resolve(&event.organizer.value, source, event.organizer.line())?;
                let title = domain::line(&event.title.value, domain::TITLE_MAX)
                    .map_err(|why| source.error_at(event.title.line(), format!("title {why}")))?;
                let description = domain::free_text(&event.description, max_description)
                    .map_err(|why| source.error_at(line, format!("description {why}")))?;
                let time_zone = TimeZone::parse(&event.time_zone.value)
                    .map_err(|why| source.error_at(event.time_zone.line(), why))?;
                let status = EventStatus::parse(&event.status.value).ok_or_else(|| {
                    source.error_at(
                        event.status.line(),
                        "status must be draft, published, cancelled or completed",
                    )
                })?;
                let (starts_at, ends_at) =
                    (event.starts_at.resolve(now), event.ends_at.resolve(now));
                if ends_at <= starts_at {
                    return Err(source.error_at(line, "ends_at must be after starts_at"));
                }
                let questions = serde_json::json!([]);
                let new = event_store::NewEvent {
                    uuid: event.id.value,
                    organizer_id,
                    title: &title,
                    description: &description,
                    starts_at,
                    ends_at,
                    time_zone: time_zone.name(),
                    venue: event.venue.as_deref(),
                    online_url: event.online_url.as_deref(),
                    status: status.as_str(),
                    visibility: "public",
                    registration_opens_at: None,
                    registration_closes_at: None,
                    capacity: event.capacity,
                    max_guests: event.max_guests,
                    requires_approval: event.requires_approval,
                    questions: &questions,
                };
                let inserted = event_store::insert(conn, &new)
                    .await
                    .map_err(|err| source.database_error(line, err))?;
                let id = match inserted {
                    Some(id) => id,
                    None => sqlx::query_scalar("SELECT id FROM events WHERE uuid = $1")
                        .bind(event.id.value)
                        .fetch_one(&mut *conn)
                        .await
                        .map_err(|err| source.database_error(line, err))?,
                };
                for (position, ticket) in event.ticket_types.iter().enumerate() {
                    let currency = (ticket.price > 0)
                        .then(|| ticket.currency.clone().unwrap_or_else(|| "EUR".into()));
                    event_store::insert_ticket_type(
                        conn,
                        &event_store::NewTicketType {
                            uuid: ticket.id,
                            event_id: id,
                            name: &ticket.name,
                            price: ticket.price,
                            currency: currency.as_deref(),
                            capacity: ticket.capacity,
                            position: i32::try_from(position).unwrap_or(i32::MAX),
                        },
                    )
                    .await
                    .map_err(|err| source.database_error(line, err))?;
                }
                events.define(event.id.value, id, source, line)?;
                report.record("events", inserted.is_some());
            }
        }
        for source in &sources {
            for seed in &source.doc.registrations {
                let line = seed.id.line();
                let event_id = events.resolve(&seed.event.value, source, seed.event.line())?;
                let user_id = users.resolve(&seed.user.value, source, seed.user.line())?;
                let status = match RegistrationStatus::parse(&seed.status.value) {
                    Some(s @ (RegistrationStatus::Confirmed | RegistrationStatus::Waitlisted)) => s,
                    _ => {
                        return Err(source.error_at(
                            seed.status.line(),
                            "status must be confirmed or waitlisted",
                        ));
                    }
                };
                if registrations::find(&mut *conn, seed.id.value)
                    .await
                    .map_err(|err| source.database_error(line, err))?
                    .is_some()
                {
                    report.record("registrations", false);
                    continue;
                }
                let tickets = event_store::ticket_types(&mut *conn, event_id)
                    .await
                    .map_err(|err| source.database_error(line, err))?;
                let ticket = match seed.ticket_type {
                    Some(uuid) => tickets.iter().find(|t| t.uuid == uuid),
                    None => tickets.first(),
                }
                .ok_or_else(|| source.error_at(line, "no such ticket type for this event"))?;
                let secret =
                    (status == RegistrationStatus::Confirmed).then(domain::new_ticket_secret);
                let answers = serde_json::json!({});
                registrations::insert(
                    conn,
                    &NewRegistration {
                        uuid: seed.id.value,
                        event_id,
                        ticket_type_id: ticket.id,
                        user_id,
                        status,
                        guests: seed.guests,
                        answers: &answers,
                        waitlisted: status == RegistrationStatus::Waitlisted,
                        expires_at: None,
                        ticket_secret: secret.as_deref(),
                        created_at: now,
                    },
                )
                .await
                .map_err(|err| source.database_error(line, err))?;
                if status == RegistrationStatus::Confirmed {
                    event_store::add_taken(conn, event_id, ticket.id, 1 + seed.guests)
                        .await
                        .map_err(|err| source.database_error(line, err))?;
                }
                report.record("registrations", true);
            }
        }
        Ok(report)
    })
}
