//! `/webhook-endpoints`: partners' endpoints for outgoing webhooks (admins only). Each endpoint
//! gets every event it subscribes to, signed with its secret (`Hatchery-Signature`, Stripe's
//! scheme), retried with exponential backoff for up to `app.webhooks.max_age`; after
//! `app.webhooks.disable_after` failed attempts in a row it is disabled until an admin enables
//! it again. Deliveries are listed with every attempt and can be replayed.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use http::header::LOCATION;
use identity::{Admin, RequireRole};
use kit::idempotency::{self, Idempotent};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, ArrayBuilder, SchemaType};
use utoipa::openapi::{Object, ObjectBuilder, Type};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, IdempotencyKeyHeader, Keyed};
use crate::domain::fields::parse_event_types;
use crate::domain::{Description, EndpointUrl, random_hex};
use crate::store::webhooks::{
    self as store, AttemptRow, DeliveryKey, DeliveryRow, EndpointChanges, EndpointKey, EndpointRow,
    NewEndpoint,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_endpoints, create_endpoint))
        .routes(routes!(get_endpoint, update_endpoint, delete_endpoint))
        .routes(routes!(list_deliveries))
        .routes(routes!(get_delivery))
        .routes(routes!(replay_delivery))
}

/// A partner's endpoint. The secret is shown once, when it is created.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    /// The event types it receives; empty: all of them.
    pub event_types: Vec<String>,
    pub enabled: bool,
    /// Why it was disabled (after repeated failures).
    pub disabled_reason: Option<String>,
    pub consecutive_failures: i32,
    /// Only in the answer to its creation: verify `Hatchery-Signature` with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Endpoint {
    fn from_row(row: EndpointRow, with_secret: bool) -> Endpoint {
        Endpoint {
            id: row.uuid,
            url: row.url,
            description: row.description,
            event_types: row.event_types,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            consecutive_failures: row.consecutive_failures,
            secret: with_secret.then_some(row.secret),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

fn event_types(nullable: bool) -> Array {
    let schema_type: SchemaType = if nullable {
        [Type::Array, Type::Null].into_iter().collect()
    } else {
        Type::Array.into()
    };
    ArrayBuilder::new()
        .schema_type(schema_type)
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(contracts::payments::EVENT_TYPES))
                .build(),
        )
        .max_items(Some(contracts::payments::EVENT_TYPES.len() * 4))
        .description(Some("Event types to receive; empty or absent: all."))
        .build()
}

fn event_types_schema() -> Array {
    event_types(false)
}

fn optional_event_types_schema() -> Array {
    event_types(true)
}

/// An http(s) URL with a DNS name or IPv4 host, an optional port and path: what
/// [`EndpointUrl`] takes, narrowed to what a schema can say exactly.
const URL_PATTERN: &str = r"^https?://[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(?::[1-9][0-9]{0,3})?(?:/[!-~]*)?$";

fn url_schema(nullable: bool) -> Object {
    let schema_type: SchemaType = if nullable {
        [Type::String, Type::Null].into_iter().collect()
    } else {
        Type::String.into()
    };
    ObjectBuilder::new()
        .schema_type(schema_type)
        .max_length(Some(crate::domain::fields::URL_MAX_CHARS))
        .pattern(Some(URL_PATTERN))
        .description(Some("An absolute http or https URL without credentials."))
        .build()
}

fn required_url() -> Object {
    url_schema(false)
}

fn optional_url() -> Object {
    url_schema(true)
}

fn description_schema() -> Object {
    kit::openapi::free_text(crate::domain::fields::DESCRIPTION_MAX_CHARS, true)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    #[schema(schema_with = required_url, example = "https://partner.example/hatchery-webhooks")]
    pub url: String,
    #[serde(default)]
    #[schema(schema_with = description_schema)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(schema_with = event_types_schema)]
    pub event_types: Vec<String>,
}

/// Register a partner's endpoint. The answer holds its signing secret, shown only here.
#[utoipa::path(
    post, path = "/webhook-endpoints", tag = "webhook endpoints",
    request_body = CreateEndpoint,
    params(IdempotencyKeyHeader),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered (or, for a repeated `Idempotency-Key`, the endpoint registered the first time)", body = Endpoint,
            headers(("Location" = String, description = "The endpoint's URL")),
            links(
                ("GetEndpoint" = (operation_id = "get_endpoint", parameters(("id" = "$response.body#/id")))),
                ("ListDeliveries" = (operation_id = "list_deliveries", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "No `Idempotency-Key` (`idempotency_key_required`), or a malformed request", body = kit::Problem),
        (status = 409, description = "This `Idempotency-Key` is still being processed", body = kit::Problem),
        (status = 422, description = "Invalid fields, or the key used with another request", body = kit::Problem),
    )
)]
async fn create_endpoint(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    request: Idempotent<CreateEndpoint>,
) -> ApiResult<Response> {
    let Idempotent { body, key } = request;
    let keyed = Keyed::require(key, "webhook_endpoints.create", admin.uuid)?;
    let mut errors = FieldErrors::default();
    let url = errors.take("url", EndpointUrl::parse(&body.url));
    let description = body
        .description
        .as_deref()
        .map(Description::parse)
        .transpose();
    let description = errors.take("description", description).flatten();
    let event_types = errors.take("event_types", parse_event_types(&body.event_types));
    let (Some(url), Some(event_types)) = (url, event_types) else {
        return Err(errors.into());
    };
    errors.into_result()?;
    let (mut tx, key) = match keyed.claim(&state.db).await? {
        idempotency::Claim::Replay(stored) => return Ok(stored),
        idempotency::Claim::Fresh { tx, key, .. } => (tx, key),
    };
    let secret = format!("whsec_{}", random_hex(24));
    let row = store::insert_endpoint(
        &mut tx,
        &NewEndpoint {
            uuid: Uuid::now_v7(),
            url: url.as_str(),
            description: description.as_ref().map(Description::as_str),
            secret: &secret,
            event_types: &event_types,
        },
    )
    .await?;
    tracing::info!(endpoint = %row.uuid, url = %row.url, "webhook endpoint registered");
    let location = format!("/api/payments/v1/webhook-endpoints/{}", row.uuid);
    let response = (
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(Endpoint::from_row(row, true)),
    )
        .into_response();
    idempotency::complete(tx, key.as_ref(), response).await
}

/// The registered endpoints, newest first.
#[utoipa::path(
    get, path = "/webhook-endpoints", tag = "webhook endpoints",
    params(PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of endpoints", body = Page<Endpoint>),
        (status = 422, description = "A cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_endpoints(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Endpoint>>> {
    let page = paging.parse::<EndpointKey>()?;
    let rows = store::list_endpoints(&state.db, &page).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        EndpointRow::key,
        |row| Endpoint::from_row(row, false),
    )))
}

async fn endpoint(state: &AppState, id: Uuid) -> ApiResult<EndpointRow> {
    store::find_endpoint(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook endpoint"))
}

/// One endpoint.
#[utoipa::path(
    get, path = "/webhook-endpoints/{id}", tag = "webhook endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoint", body = Endpoint),
        (status = 404, description = "No such endpoint", body = kit::Problem),
    )
)]
async fn get_endpoint(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Endpoint>> {
    Ok(Json(Endpoint::from_row(endpoint(&state, id).await?, false)))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    /// Unchanged when absent or `null`.
    #[serde(default)]
    #[schema(schema_with = optional_url)]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(schema_with = description_schema)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(schema_with = optional_event_types_schema)]
    pub event_types: Option<Vec<String>>,
    /// `true` enables a disabled endpoint again (its failure count starts over); `false`
    /// disables it (its deliveries wait).
    #[serde(default)]
    #[schema(nullable)]
    pub enabled: Option<bool>,
}

/// Change an endpoint, or enable it again after it was disabled.
#[utoipa::path(
    patch, path = "/webhook-endpoints/{id}", tag = "webhook endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    request_body = UpdateEndpoint,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed endpoint", body = Endpoint),
        (status = 404, description = "No such endpoint", body = kit::Problem),
    )
)]
async fn update_endpoint(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(id): Path<Uuid>,
    Json(input): Json<UpdateEndpoint>,
) -> ApiResult<Json<Endpoint>> {
    let mut errors = FieldErrors::default();
    let url = input.url.as_deref().map(EndpointUrl::parse).transpose();
    let url = errors.take("url", url).flatten();
    let description = input
        .description
        .as_deref()
        .map(Description::parse)
        .transpose();
    let description = errors.take("description", description).flatten();
    let event_types = input
        .event_types
        .as_deref()
        .map(parse_event_types)
        .transpose();
    let event_types = errors.take("event_types", event_types).flatten();
    errors.into_result()?;
    let row = store::update_endpoint(
        &state.db,
        id,
        &EndpointChanges {
            url: url.as_ref().map(EndpointUrl::as_str),
            description: description.as_ref().map(Description::as_str),
            event_types: event_types.as_deref(),
            enabled: input.enabled,
        },
    )
    .await?
    .ok_or_else(|| ApiError::not_found("webhook endpoint"))?;
    if input.enabled == Some(true) {
        tracing::info!(endpoint = %row.uuid, by = %admin.uuid, "webhook endpoint enabled");
        state.notifier.committed(crate::apply::Effects {
            pushes: Vec::new(),
            deliveries: 1,
        });
    }
    Ok(Json(Endpoint::from_row(row, false)))
}

/// Remove an endpoint (kept, marked deleted; nothing more is sent to it).
#[utoipa::path(
    delete, path = "/webhook-endpoints/{id}", tag = "webhook endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such endpoint", body = kit::Problem),
    )
)]
async fn delete_endpoint(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    if store::delete_endpoint(&state.db, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("webhook endpoint"))
    }
}

/// A delivery of one event to one endpoint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    pub id: Uuid,
    pub endpoint: Uuid,
    /// The event's id (the same as on the bus): partners de-duplicate by it.
    pub event_id: Uuid,
    pub event_type: String,
    /// `pending` (more attempts to come), `succeeded` or `failed` (given up).
    pub status: String,
    pub attempts: i32,
    /// When the next attempt is due (pending deliveries).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The delivery this one replays.
    pub replay_of: Option<Uuid>,
    /// The body sent.
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every attempt with the endpoint's answer (only when fetching one delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<AttemptLog>>,
}

/// One attempt of a delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptLog {
    pub attempted_at: DateTime<Utc>,
    /// The endpoint's HTTP status; `null` when it could not be reached.
    pub status_code: Option<i32>,
    /// Why it could not be reached (connection refused, timed out...).
    pub error: Option<String>,
    /// The start of the endpoint's answer (at most 1 KiB).
    pub response_body: Option<String>,
    pub duration_ms: i32,
}

impl From<AttemptRow> for AttemptLog {
    fn from(row: AttemptRow) -> Self {
        AttemptLog {
            attempted_at: row.attempted_at,
            status_code: row.status_code,
            error: row.error,
            response_body: row.response_body,
            duration_ms: row.duration_ms,
        }
    }
}

fn delivery(row: DeliveryRow, endpoint: Uuid, log: Option<Vec<AttemptLog>>) -> Delivery {
    Delivery {
        id: row.uuid,
        endpoint,
        event_id: row.event_id,
        event_type: row.event_type,
        next_attempt_at: (row.status == "pending").then_some(row.next_attempt_at),
        status: row.status,
        attempts: row.attempts,
        replay_of: row.replay_of,
        payload: row.payload,
        created_at: row.created_at,
        updated_at: row.updated_at,
        log,
    }
}

/// An endpoint's deliveries, newest first.
#[utoipa::path(
    get, path = "/webhook-endpoints/{id}/deliveries", tag = "webhook endpoints",
    params(("id" = Uuid, Path, description = "The endpoint's id"), PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of deliveries", body = Page<Delivery>),
        (status = 404, description = "No such endpoint", body = kit::Problem),
        (status = 422, description = "A cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_deliveries(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Path(id): Path<Uuid>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Delivery>>> {
    let page = paging.parse::<DeliveryKey>()?;
    let endpoint = endpoint(&state, id).await?;
    let rows = store::list_deliveries(&state.db, endpoint.id, &page).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        DeliveryRow::key,
        |row| delivery(row, endpoint.uuid, None),
    )))
}

/// One delivery with its log: every attempt and what the endpoint answered.
#[utoipa::path(
    get, path = "/webhook-endpoints/{id}/deliveries/{delivery}", tag = "webhook endpoints",
    params(
        ("id" = Uuid, Path, description = "The endpoint's id"),
        ("delivery" = Uuid, Path, description = "The delivery's id"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The delivery and its attempts (the first 100)", body = Delivery),
        (status = 404, description = "No such endpoint or delivery", body = kit::Problem),
    )
)]
async fn get_delivery(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Path((id, delivery_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<Delivery>> {
    let endpoint = endpoint(&state, id).await?;
    let row = store::find_delivery(&state.db, endpoint.id, delivery_id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let log = store::attempts(&state.db, row.id, 100).await?;
    Ok(Json(delivery(
        row,
        endpoint.uuid,
        Some(log.into_iter().map(AttemptLog::from).collect()),
    )))
}

/// Nothing to say: send `{}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayDelivery {}

/// Send a delivery's event again, as a new delivery due now (the original keeps its log).
#[utoipa::path(
    post, path = "/webhook-endpoints/{id}/deliveries/{delivery}/replay", tag = "webhook endpoints",
    request_body = ReplayDelivery,
    params(
        ("id" = Uuid, Path, description = "The endpoint's id"),
        ("delivery" = Uuid, Path, description = "The delivery to replay"),
        IdempotencyKeyHeader,
    ),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "The new delivery (or, for a repeated `Idempotency-Key`, the one made the first time)", body = Delivery),
        (status = 400, description = "No `Idempotency-Key` (`idempotency_key_required`)", body = kit::Problem),
        (status = 404, description = "No such endpoint or delivery", body = kit::Problem),
        (status = 409, description = "This `Idempotency-Key` is still being processed", body = kit::Problem),
        (status = 422, description = "The key used with another request", body = kit::Problem),
    )
)]
async fn replay_delivery(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path((id, delivery_id)): Path<(Uuid, Uuid)>,
    request: Idempotent<ReplayDelivery>,
) -> ApiResult<Response> {
    let keyed = Keyed::require(request.key, "webhook_deliveries.replay", admin.uuid)?;
    let endpoint = endpoint(&state, id).await?;
    let (mut tx, key) = match keyed.claim(&state.db).await? {
        idempotency::Claim::Replay(stored) => return Ok(stored),
        idempotency::Claim::Fresh { tx, key, .. } => (tx, key),
    };
    let original = store::find_delivery(&mut *tx, endpoint.id, delivery_id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    let replayed = store::replay(&mut tx, &original).await?;
    tracing::info!(delivery = %original.uuid, replay = %replayed.uuid, "webhook delivery replayed");
    let response = (
        StatusCode::ACCEPTED,
        Json(delivery(replayed, endpoint.uuid, None)),
    )
        .into_response();
    let response = idempotency::complete(tx, key.as_ref(), response).await?;
    state.notifier.committed(crate::apply::Effects {
        pushes: Vec::new(),
        deliveries: 1,
    });
    Ok(response)
}
