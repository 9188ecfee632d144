//! `/events`: organizers create, change, publish and cancel events with their ticket types;
//! anyone lists published public events (upcoming first) and reads one with its availability.

use std::collections::{BTreeSet, HashMap};

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use contracts::events::{EventPublished, EventUpdated, RegistrationChanged};
use identity::{CurrentUser, MaybeUser};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, ORGANIZER_ROLE, require_runs, runs};
use crate::actions;
use crate::domain::{self, EventStatus, TimeZone, Visibility};
use crate::store::events::{self as store, EventKey, EventRow, Tally, TicketTypeRow};
use crate::store::registrations;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_events, create_event))
        .routes(routes!(get_event, update_event))
        .routes(routes!(publish_event))
        .routes(routes!(cancel_event))
}

/// Money: integer minor units and an ISO 4217 code.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Price {
    #[schema(minimum = 1)]
    pub amount: i64,
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
}

/// Seats of an event or a ticket type.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Availability {
    pub capacity: i32,
    /// Seats of confirmed registrations (guests included).
    pub confirmed: i64,
    /// Seats held for registrants who are paying.
    pub held: i64,
    /// Registrations on the waitlist.
    pub waitlisted: i64,
    /// Seats anyone can still have.
    pub left: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TicketType {
    pub id: Uuid,
    pub name: String,
    /// `null` for a free ticket.
    pub price: Option<Price>,
    pub availability: Availability,
}

/// A question registrants answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// The key of the answer: 1 to 40 of `a-z`, `0-9`, `_`.
    #[schema(pattern = "^[a-z0-9_]{1,40}$")]
    pub id: String,
    #[schema(schema_with = label_schema)]
    pub label: String,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    pub id: Uuid,
    pub organizer: Uuid,
    pub title: String,
    pub description: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// IANA time zone the event is held in.
    pub time_zone: String,
    pub venue: Option<String>,
    pub online_url: Option<String>,
    pub status: EventStatus,
    pub visibility: Visibility,
    pub registration_opens_at: Option<DateTime<Utc>>,
    pub registration_closes_at: Option<DateTime<Utc>>,
    pub max_guests: i32,
    pub requires_approval: bool,
    pub questions: Vec<Question>,
    /// Grows with every change attendees should see (the calendar's `SEQUENCE`).
    pub sequence: i32,
    pub cancel_reason: Option<String>,
    pub availability: Availability,
    pub ticket_types: Vec<TicketType>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn availability(capacity: i32, taken: i32, tally: &Tally) -> Availability {
    Availability {
        capacity,
        confirmed: tally.confirmed,
        held: tally.held,
        waitlisted: tally.waitlisted,
        left: i64::from((capacity - taken).max(0)),
    }
}

impl Event {
    pub fn build(row: &EventRow, tickets: &[TicketTypeRow], tallies: &[Tally]) -> Event {
        let by_ticket: HashMap<i64, &Tally> =
            tallies.iter().map(|t| (t.ticket_type_id, t)).collect();
        let empty = Tally::default();
        let total = Tally {
            ticket_type_id: 0,
            confirmed: tallies.iter().map(|t| t.confirmed).sum(),
            held: tallies.iter().map(|t| t.held).sum(),
            waitlisted: tallies.iter().map(|t| t.waitlisted).sum(),
        };
        let event_left = (row.capacity - row.taken).max(0);
        let ticket_types = tickets
            .iter()
            .map(|ticket| {
                let tally = by_ticket.get(&ticket.id).copied().unwrap_or(&empty);
                let mut seats = availability(ticket.capacity, ticket.taken, tally);
                seats.left = seats.left.min(i64::from(event_left));
                TicketType {
                    id: ticket.uuid,
                    name: ticket.name.clone(),
                    price: ticket.currency.clone().map(|currency| Price {
                        amount: ticket.price,
                        currency,
                    }),
                    availability: seats,
                }
            })
            .collect();
        Event {
            id: row.uuid,
            organizer: row.organizer,
            title: row.title.clone(),
            description: row.description.clone(),
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            time_zone: row.time_zone.clone(),
            venue: row.venue.clone(),
            online_url: row.online_url.clone(),
            status: EventStatus::parse(&row.status).unwrap_or(EventStatus::Draft),
            visibility: if row.visibility == "unlisted" {
                Visibility::Unlisted
            } else {
                Visibility::Public
            },
            registration_opens_at: row.registration_opens_at,
            registration_closes_at: row.registration_closes_at,
            max_guests: row.max_guests,
            requires_approval: row.requires_approval,
            questions: serde_json::from_value(row.questions.clone()).unwrap_or_default(),
            sequence: row.sequence,
            cancel_reason: row.cancel_reason.clone(),
            availability: availability(row.capacity, row.taken, &total),
            ticket_types,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The event as clients see it, read now.
pub async fn load(db: &sqlx::PgPool, row: &EventRow) -> ApiResult<Event> {
    let tickets = store::ticket_types(db, row.id).await?;
    let tallies = store::tally(db, row.id).await?;
    Ok(Event::build(row, &tickets, &tallies))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTicketType {
    #[schema(schema_with = ticket_name_schema, example = "Standard")]
    pub name: String,
    /// Leave out (or `null`) for a free ticket.
    #[serde(default)]
    pub price: Option<Price>,
    /// Seats of this type, within the event's capacity.
    #[schema(minimum = 0, maximum = 1000000)]
    pub capacity: i32,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    #[schema(schema_with = title_schema, example = "Rust meetup")]
    pub title: String,
    #[serde(default)]
    #[schema(schema_with = description_schema)]
    pub description: String,
    pub starts_at: DateTime<Utc>,
    /// After `starts_at`.
    pub ends_at: DateTime<Utc>,
    /// An IANA time zone (`Europe/Madrid`).
    #[schema(example = "Europe/Madrid")]
    pub time_zone: String,
    /// A venue, an online URL, or both.
    #[serde(default)]
    #[schema(schema_with = venue_schema)]
    pub venue: Option<String>,
    #[serde(default)]
    #[schema(format = "uri")]
    pub online_url: Option<String>,
    #[serde(default)]
    pub visibility: Visibility,
    #[serde(default)]
    pub registration_opens_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub registration_closes_at: Option<DateTime<Utc>>,
    #[schema(minimum = 0, maximum = 1000000)]
    pub capacity: i32,
    /// Guests one registrant may bring (0 to 20).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 20)]
    pub max_guests: i32,
    #[serde(default)]
    pub requires_approval: bool,
    #[serde(default)]
    pub questions: Vec<Question>,
    /// Ticket types (at most 20); one free "General admission" for the whole capacity when
    /// none are given.
    #[serde(default)]
    pub ticket_types: Vec<NewTicketType>,
}

/// Checked fields shared by creating and changing an event.
struct Checked {
    title: String,
    description: String,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    time_zone: TimeZone,
    venue: Option<String>,
    online_url: Option<String>,
    capacity: i32,
    max_guests: i32,
    registration_opens_at: Option<DateTime<Utc>>,
    registration_closes_at: Option<DateTime<Utc>>,
}

#[allow(clippy::too_many_arguments)]
fn check(
    errors: &mut FieldErrors,
    max_description: usize,
    title: &str,
    description: &str,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    time_zone: &str,
    venue: Option<&str>,
    online_url: Option<&str>,
    capacity: i32,
    max_guests: i32,
    registration_opens_at: Option<DateTime<Utc>>,
    registration_closes_at: Option<DateTime<Utc>>,
) -> Option<Checked> {
    let title = errors.take("title", domain::line(title, domain::TITLE_MAX));
    let description = errors.take(
        "description",
        domain::free_text(description, max_description),
    );
    let time_zone = errors.take("time_zone", TimeZone::parse(time_zone));
    if ends_at <= starts_at {
        errors.add("ends_at", "must be after starts_at");
    }
    let venue = venue
        .map(|v| domain::line(v, domain::VENUE_MAX))
        .transpose();
    let venue = errors.take("venue", venue).flatten();
    let online_url = online_url.map(domain::online_url).transpose();
    let online_url = errors.take("online_url", online_url).flatten();
    if !(0..=domain::MAX_CAPACITY).contains(&capacity) {
        errors.add(
            "capacity",
            format!("must be between 0 and {}", domain::MAX_CAPACITY),
        );
    }
    if !(0..=domain::MAX_GUESTS).contains(&max_guests) {
        errors.add(
            "max_guests",
            format!("must be between 0 and {}", domain::MAX_GUESTS),
        );
    }
    if let (Some(opens), Some(closes)) = (registration_opens_at, registration_closes_at)
        && closes <= opens
    {
        errors.add(
            "registration_closes_at",
            "must be after registration_opens_at",
        );
    }
    Some(Checked {
        title: title?,
        description: description?,
        starts_at,
        ends_at,
        time_zone: time_zone?,
        venue,
        online_url,
        capacity,
        max_guests,
        registration_opens_at,
        registration_closes_at,
    })
}

fn check_questions(errors: &mut FieldErrors, questions: &[Question]) {
    let mut seen = BTreeSet::new();
    if questions.len() > 20 {
        errors.add("questions", "at most 20 questions");
    }
    for question in questions {
        let id_ok = (1..=40).contains(&question.id.len())
            && question
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !id_ok {
            errors.add(
                "questions",
                format!("id {:?} must be 1 to 40 of a-z, 0-9, _", question.id),
            );
        }
        if !seen.insert(question.id.clone()) {
            errors.add("questions", format!("id {:?} is used twice", question.id));
        }
        if domain::line(&question.label, 200).is_err() {
            errors.add(
                "questions",
                format!("label of {:?} must be 1 to 200 characters", question.id),
            );
        }
    }
}

/// Create an event (a draft until published). Needs the `organizer` (or `admin`) role.
#[utoipa::path(
    post, path = "/events", tag = "events",
    request_body = CreateEvent,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created, as a draft", body = Event,
            headers(("Location" = String, description = "The event's URL"))),
        (status = 403, description = "Not an organizer", body = kit::Problem),
        (status = 422, description = "Invalid fields (`validation_failed`): end before start, unknown time zone, ticket capacities beyond the event's...", body = kit::Problem),
    )
)]
async fn create_event(
    State(state): State<AppState>,
    user: CurrentUser,
    Json(input): Json<CreateEvent>,
) -> ApiResult<Response> {
    if !(user.has_role(ORGANIZER_ROLE) || user.is_admin()) {
        return Err(ApiError::forbidden(
            "Creating events needs the `organizer` role.",
        ));
    }
    let mut errors = FieldErrors::default();
    let checked = check(
        &mut errors,
        state.settings.app.max_description_chars,
        &input.title,
        &input.description,
        input.starts_at,
        input.ends_at,
        &input.time_zone,
        input.venue.as_deref(),
        input.online_url.as_deref(),
        input.capacity,
        input.max_guests,
        input.registration_opens_at,
        input.registration_closes_at,
    );
    check_questions(&mut errors, &input.questions);
    if input.ticket_types.len() > domain::MAX_TICKET_TYPES {
        errors.add(
            "ticket_types",
            format!("at most {}", domain::MAX_TICKET_TYPES),
        );
    }
    let mut tickets = Vec::new();
    for (index, ticket) in input.ticket_types.iter().enumerate() {
        let field = format!("ticket_types[{index}]");
        let name = errors.take(
            &format!("{field}.name"),
            domain::line(&ticket.name, domain::TICKET_NAME_MAX),
        );
        if !(0..=input.capacity.max(0)).contains(&ticket.capacity) {
            errors.add(
                format!("{field}.capacity"),
                "must be between 0 and the event's capacity",
            );
        }
        let price = match &ticket.price {
            None => Some((0, None)),
            Some(price) => {
                let currency = errors.take(
                    &format!("{field}.price.currency"),
                    domain::currency(&price.currency),
                );
                if !(1..=100_000_000).contains(&price.amount) {
                    errors.add(
                        format!("{field}.price.amount"),
                        "must be between 1 and 100000000 minor units",
                    );
                }
                currency.map(|c| (price.amount, Some(c)))
            }
        };
        if let (Some(name), Some((amount, currency))) = (name, price) {
            tickets.push((name, amount, currency, ticket.capacity));
        }
    }
    let Some(checked) = checked else {
        return Err(errors.into());
    };
    errors.into_result()?;
    if tickets.is_empty() {
        tickets.push(("General admission".into(), 0, None, checked.capacity));
    }
    let uuid = Uuid::now_v7();
    let questions = serde_json::to_value(&input.questions).unwrap_or(Value::Array(Vec::new()));
    let mut tx = state.db.begin().await?;
    let new = store::NewEvent {
        uuid,
        organizer_id: user.id,
        title: &checked.title,
        description: &checked.description,
        starts_at: checked.starts_at,
        ends_at: checked.ends_at,
        time_zone: checked.time_zone.name(),
        venue: checked.venue.as_deref(),
        online_url: checked.online_url.as_deref(),
        status: EventStatus::Draft.as_str(),
        visibility: input.visibility.as_str(),
        registration_opens_at: checked.registration_opens_at,
        registration_closes_at: checked.registration_closes_at,
        capacity: checked.capacity,
        max_guests: checked.max_guests,
        requires_approval: input.requires_approval,
        questions: &questions,
    };
    let id = store::insert(&mut tx, &new)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("event {uuid} exists already")))?;
    for (position, (name, price, currency, capacity)) in tickets.iter().enumerate() {
        store::insert_ticket_type(
            &mut tx,
            &store::NewTicketType {
                uuid: Uuid::now_v7(),
                event_id: id,
                name,
                price: *price,
                currency: currency.as_deref(),
                capacity: *capacity,
                position: i32::try_from(position).unwrap_or(i32::MAX),
            },
        )
        .await?;
    }
    tx.commit().await?;
    let row = store::find(&state.db, uuid)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("event {uuid} vanished")))?;
    tracing::info!(event = %uuid, "event created");
    let event = load(&state.db, &row).await?;
    Ok((
        StatusCode::CREATED,
        [(LOCATION, format!("/api/events/v1/events/{uuid}"))],
        Json(event),
    )
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
    /// Events ending after this time (default: now), soonest first.
    pub from: Option<DateTime<Utc>>,
}

/// Published public events, upcoming first (keyset pages).
#[utoipa::path(
    get, path = "/events", tag = "events",
    params(ListFilter, PageParams),
    responses(
        (status = 200, description = "One page of events", body = Page<Event>),
        (status = 422, description = "A cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_events(
    State(state): State<AppState>,
    Query(filter): Query<ListFilter>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Event>>> {
    let page = paging.parse::<EventKey>()?;
    let rows = store::list_public(&state.db, filter.from.unwrap_or_else(Utc::now), &page).await?;
    let mut events = Vec::with_capacity(rows.len());
    let keep = rows.len().min(page.limit as usize);
    for row in &rows[..keep] {
        events.push(load(&state.db, row).await?);
    }
    let mut loaded = events.into_iter();
    Ok(Json(Page::from_rows(rows, &page, EventRow::key, |_| {
        loaded.next().expect("one event per kept row")
    })))
}

/// Finds an event the caller may see: published or cancelled ones for anyone, drafts for the
/// people who run them.
pub async fn visible(
    state: &AppState,
    user: Option<&CurrentUser>,
    id: Uuid,
) -> ApiResult<EventRow> {
    let row = store::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    if row.status == EventStatus::Draft.as_str() && !user.is_some_and(|u| runs(u, &row)) {
        return Err(ApiError::not_found("event"));
    }
    Ok(row)
}

/// One event with its availability (capacity, confirmed, held, waitlisted, left; per ticket
/// type and in total).
#[utoipa::path(
    get, path = "/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "The event's id")),
    responses(
        (status = 200, description = "The event", body = Event),
        (status = 404, description = "No such event (or a draft that is not yours)", body = kit::Problem),
    )
)]
async fn get_event(
    State(state): State<AppState>,
    MaybeUser(user): MaybeUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Event>> {
    let row = visible(&state, user.as_ref(), id).await?;
    Ok(Json(load(&state.db, &row).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEvent {
    #[schema(schema_with = optional_title_schema)]
    pub title: Option<String>,
    #[schema(schema_with = optional_description_schema)]
    pub description: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub time_zone: Option<String>,
    #[schema(schema_with = venue_schema)]
    pub venue: Option<String>,
    #[schema(format = "uri")]
    pub online_url: Option<String>,
    pub visibility: Option<Visibility>,
    pub registration_opens_at: Option<DateTime<Utc>>,
    pub registration_closes_at: Option<DateTime<Utc>>,
    /// Not below the seats already taken (`capacity_below_taken`).
    #[schema(minimum = 0, maximum = 1000000)]
    pub capacity: Option<i32>,
    #[schema(minimum = 0, maximum = 20)]
    pub max_guests: Option<i32>,
    pub requires_approval: Option<bool>,
}

/// Change an event. Registrants of a published event are told when its time or place changes;
/// a larger capacity goes to the waitlist at once.
#[utoipa::path(
    patch, path = "/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "The event's id")),
    request_body = UpdateEvent,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed event", body = Event),
        (status = 403, description = "Not the event's organizer", body = kit::Problem),
        (status = 404, description = "No such event", body = kit::Problem),
        (status = 409, description = "The event is cancelled or completed (`event_closed`)", body = kit::Problem),
        (status = 422, description = "Invalid fields (`validation_failed`), or a capacity below the seats taken (`capacity_below_taken`)", body = kit::Problem),
    )
)]
async fn update_event(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateEvent>,
) -> ApiResult<Json<Event>> {
    let found = visible(&state, Some(&user), id).await?;
    require_runs(&user, &found)?;
    let ctx = &state.ctx;
    let mut tx = state.db.begin().await?;
    let mut seats = actions::lock_seats(&mut tx, found.id).await?;
    let old = seats.event.clone();
    if matches!(old.status.as_str(), "cancelled" | "completed") {
        return Err(ApiError::conflict(
            "event_closed",
            format!("The event is {}.", old.status),
        ));
    }
    let mut errors = FieldErrors::default();
    let venue = input.venue.as_deref().or(old.venue.as_deref());
    let online_url = input.online_url.as_deref().or(old.online_url.as_deref());
    let capacity = input.capacity.unwrap_or(old.capacity);
    let checked = check(
        &mut errors,
        state.settings.app.max_description_chars,
        input.title.as_deref().unwrap_or(&old.title),
        input.description.as_deref().unwrap_or(&old.description),
        input.starts_at.unwrap_or(old.starts_at),
        input.ends_at.unwrap_or(old.ends_at),
        input.time_zone.as_deref().unwrap_or(&old.time_zone),
        venue,
        online_url,
        capacity,
        input.max_guests.unwrap_or(old.max_guests),
        input.registration_opens_at.or(old.registration_opens_at),
        input.registration_closes_at.or(old.registration_closes_at),
    );
    let Some(checked) = checked else {
        return Err(errors.into());
    };
    errors.into_result()?;
    if capacity < old.taken {
        return Err(ApiError::unprocessable(
            "capacity_below_taken",
            format!(
                "{} seats are taken (confirmed or held); the capacity cannot be lower.",
                old.taken
            ),
        ));
    }
    let mut changes = Vec::new();
    if checked.starts_at != old.starts_at
        || checked.ends_at != old.ends_at
        || checked.time_zone.name() != old.time_zone
    {
        changes.push(format!(
            "it now runs from {} to {} ({})",
            checked.starts_at.format("%Y-%m-%d %H:%M UTC"),
            checked.ends_at.format("%Y-%m-%d %H:%M UTC"),
            checked.time_zone.name()
        ));
    }
    if checked.venue != old.venue || checked.online_url != old.online_url {
        let place = checked
            .venue
            .clone()
            .or_else(|| checked.online_url.clone())
            .unwrap_or_else(|| "to be announced".into());
        changes.push(format!("it now takes place at {place}"));
    }
    let visible_change = !changes.is_empty() || checked.title != old.title;
    let visibility = input
        .visibility
        .map_or_else(|| old.visibility.clone(), |v| v.as_str().to_owned());
    store::update(
        &mut tx,
        old.id,
        &store::EventChanges {
            title: &checked.title,
            description: &checked.description,
            starts_at: checked.starts_at,
            ends_at: checked.ends_at,
            time_zone: checked.time_zone.name(),
            venue: checked.venue.as_deref(),
            online_url: checked.online_url.as_deref(),
            visibility: &visibility,
            registration_opens_at: checked.registration_opens_at,
            registration_closes_at: checked.registration_closes_at,
            capacity: checked.capacity,
            max_guests: checked.max_guests,
            requires_approval: input.requires_approval.unwrap_or(old.requires_approval),
            bump_sequence: visible_change,
        },
    )
    .await?;
    let row = store::find_by_id(&mut *tx, old.id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    seats.event = row.clone();
    let mut promoted = Vec::new();
    if row.status == EventStatus::Published.as_str() {
        bus::enqueue_as(
            &mut tx,
            &EventUpdated(actions::state(&ctx.rules, &row)),
            user.uuid,
        )
        .await?;
        if !changes.is_empty() {
            let said = changes.join("; ");
            for registration in registrations::active_of_event(&mut tx, row.id).await? {
                let Some(ticket) = seats.tickets.get(&registration.ticket_type_id) else {
                    continue;
                };
                let changed = RegistrationChanged {
                    registrant: ctx.rules.registrant(&row, ticket, &registration),
                    changes: format!("{}{}.", said[..1].to_uppercase(), &said[1..]),
                };
                bus::enqueue_as(&mut tx, &changed, user.uuid).await?;
            }
        }
        promoted = seats.promote(&mut tx, &ctx.rules, Utc::now()).await?;
    }
    tx.commit().await?;
    if !promoted.is_empty() || capacity != old.capacity {
        ctx.notifier.availability(&seats, None);
    }
    tracing::info!(event = %row.uuid, changes = changes.len(), "event changed");
    Ok(Json(load(&state.db, &row).await?))
}

/// Publish a draft: it is listed (when public) and takes registrations.
#[utoipa::path(
    post, path = "/events/{id}/publish", tag = "events",
    params(("id" = Uuid, Path, description = "The event's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The published event", body = Event),
        (status = 403, description = "Not the event's organizer", body = kit::Problem),
        (status = 404, description = "No such event", body = kit::Problem),
        (status = 409, description = "Not a draft (`event_not_draft`)", body = kit::Problem),
    )
)]
async fn publish_event(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Event>> {
    let found = visible(&state, Some(&user), id).await?;
    require_runs(&user, &found)?;
    let mut tx = state.db.begin().await?;
    let seats = actions::lock_seats(&mut tx, found.id).await?;
    if seats.event.status != EventStatus::Draft.as_str() {
        return Err(ApiError::conflict(
            "event_not_draft",
            format!("The event is {} already.", seats.event.status),
        ));
    }
    store::set_status(&mut tx, found.id, EventStatus::Published.as_str(), None).await?;
    let row = store::find_by_id(&mut *tx, found.id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    bus::enqueue_as(
        &mut tx,
        &EventPublished(actions::state(&state.ctx.rules, &row)),
        user.uuid,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(event = %row.uuid, "event published");
    Ok(Json(load(&state.db, &row).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelEvent {
    /// Told to every registrant.
    #[serde(default)]
    #[schema(schema_with = super::reason_schema)]
    pub reason: Option<String>,
}

/// Cancel an event: every registration is cancelled, paid ones refunded, everyone told.
#[utoipa::path(
    post, path = "/events/{id}/cancel", tag = "events",
    params(("id" = Uuid, Path, description = "The event's id")),
    request_body = CancelEvent,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The cancelled event", body = Event),
        (status = 403, description = "Not the event's organizer", body = kit::Problem),
        (status = 404, description = "No such event", body = kit::Problem),
        (status = 409, description = "Cancelled already (`event_cancelled`)", body = kit::Problem),
        (status = 503, description = "A refund could not be made (`payments_unavailable`): nothing changed, try again", body = kit::Problem),
    )
)]
async fn cancel_event(
    State(state): State<AppState>,
    user: CurrentUser,
    Path(id): Path<Uuid>,
    Json(input): Json<CancelEvent>,
) -> ApiResult<Json<Event>> {
    let found = visible(&state, Some(&user), id).await?;
    require_runs(&user, &found)?;
    let reason = super::reason(input.reason.as_deref())?;
    let changed = actions::cancel_event(&state.ctx, &found, reason.as_deref()).await?;
    state.ctx.committed(&changed);
    tracing::info!(event = %found.uuid, registrations = changed.users.len(), "event cancelled");
    let row = store::find_by_id(&state.db, found.id)
        .await?
        .ok_or_else(|| ApiError::not_found("event"))?;
    Ok(Json(load(&state.db, &row).await?))
}

fn title_schema() -> utoipa::openapi::Object {
    kit::openapi::trimmed_text(domain::TITLE_MAX, false)
}

fn optional_title_schema() -> utoipa::openapi::Object {
    kit::openapi::trimmed_text(domain::TITLE_MAX, true)
}

fn label_schema() -> utoipa::openapi::Object {
    kit::openapi::trimmed_text(200, false)
}

fn ticket_name_schema() -> utoipa::openapi::Object {
    kit::openapi::trimmed_text(domain::TICKET_NAME_MAX, false)
}

fn venue_schema() -> utoipa::openapi::Object {
    kit::openapi::trimmed_text(domain::VENUE_MAX, true)
}

/// With the default `app.max_description_chars`.
fn description_schema() -> utoipa::openapi::Object {
    kit::openapi::free_text(
        crate::config::Config::default().max_description_chars,
        false,
    )
}

fn optional_description_schema() -> utoipa::openapi::Object {
    kit::openapi::free_text(crate::config::Config::default().max_description_chars, true)
}
