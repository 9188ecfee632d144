//! `/payments`: create, read, list, confirm, cancel, capture, and each payment's history.
//!
//! Who may do what: a service token with `payments:create` creates payments for a user and
//! confirms, cancels or captures them; one with `payments:read` reads them. A signed-in user
//! creates, reads, confirms and cancels their own payments (anyone else's are "not found").
//! Admins read and act on every payment.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SubsecRound, Utc};
use contracts::payments::{SCOPE_CREATE, SCOPE_READ, SCOPE_REFUND};
use http::StatusCode;
use http::header::LOCATION;
use kit::idempotency::{self, Claim, Idempotent};
use kit::{ApiError, ApiResult, ConstraintExt, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::AdditionalProperties;
use utoipa::openapi::{Object, ObjectBuilder, RefOr, Schema, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, Caller, IdempotencyKeyHeader, Keyed, fingerprint, key_reused};
use crate::apply::{self, Context, Effects};
use crate::config::Config;
use crate::domain::fields::{
    DESCRIPTION_MAX_CHARS, METADATA_KEY_PATTERN, METADATA_MAX_KEYS, METADATA_MAX_VALUE_CHARS,
    PAYMENT_METHOD_PATTERN,
};
use crate::domain::{
    AmountLimits, CancellationReason, CaptureMethod, Currency, Description, Metadata, Money,
    PaymentMethodId, PaymentStatus, ProviderName, Reference,
};
use crate::provider::{self, Intent, Provider, ProviderError};
use crate::store::payments::{self as store, HistoryRow, NewPayment, PaymentKey, PaymentRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_payments, create_payment))
        .routes(routes!(get_payment))
        .routes(routes!(confirm_payment))
        .routes(routes!(cancel_payment))
        .routes(routes!(capture_payment))
        .routes(routes!(payment_history))
}

/// What a payment pays for, named by the service (or user) that created it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentReference {
    /// The service the reference belongs to (`events`).
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,29}$", example = "events")]
    pub service: String,
    /// Its id there (a registration's id): 1 to 200 visible ASCII characters.
    #[schema(
        pattern = "^[!-~]{1,200}$",
        example = "0193a000-0000-7000-8000-0000000e0001"
    )]
    pub id: String,
}

/// A payment as clients see it. Amounts are integer minor units of `currency`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Payment {
    pub id: Uuid,
    pub amount: i64,
    /// Upper-case ISO 4217 code.
    pub currency: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The paying user.
    pub user: Uuid,
    pub reference: PaymentReference,
    pub provider: ProviderName,
    /// The provider's id (`pi_...`); `null` while the provider has not made it yet.
    pub provider_payment_id: Option<String>,
    /// For the frontend's provider library (Stripe.js), to confirm or authenticate.
    pub client_secret: Option<String>,
    pub payment_method: Option<String>,
    pub capture_method: CaptureMethod,
    pub status: PaymentStatus,
    /// Why it failed (`insufficient_funds`, `generic_decline`...).
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    /// What the paying user must do while `requires_action` (the provider's instructions).
    pub next_action: Option<Value>,
    pub cancellation_reason: Option<String>,
    pub amount_captured: i64,
    pub amount_refunded: i64,
    /// Refunds sent to the provider and not final yet.
    pub amount_refund_pending: i64,
    /// What can still be refunded.
    pub amount_refundable: i64,
    /// Grows with every change.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<PaymentRow> for Payment {
    fn from(row: PaymentRow) -> Self {
        Payment {
            id: row.uuid,
            amount: row.amount,
            amount_refundable: row.refundable(),
            currency: row.currency,
            description: row.description,
            metadata: serde_json::from_value(row.metadata).unwrap_or_default(),
            user: row.user_uuid,
            reference: PaymentReference {
                service: row.reference_service,
                id: row.reference_id,
            },
            provider: row.provider,
            provider_payment_id: row.provider_payment_id,
            client_secret: row.client_secret,
            payment_method: row.payment_method,
            capture_method: row.capture_method,
            status: row.status,
            decline_code: row.decline_code,
            failure_message: row.failure_message,
            next_action: row.next_action,
            cancellation_reason: row.cancellation_reason,
            amount_captured: row.amount_captured,
            amount_refunded: row.amount_refunded,
            amount_refund_pending: row.amount_refund_pending,
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// What a caller may do with a payment it can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Read,
    /// Confirm or cancel.
    Pay,
    Capture,
    Refund,
}

/// Checks `caller` against `row`: a user's view of someone else's payment is "not found".
pub fn check_access(caller: &Caller, row: &PaymentRow, need: Need) -> ApiResult<()> {
    match caller {
        Caller::User(user) if user.is_admin() => Ok(()),
        Caller::User(user) if user.uuid != row.user_uuid => Err(ApiError::not_found("payment")),
        Caller::User(_) => match need {
            Need::Read | Need::Pay => Ok(()),
            Need::Capture | Need::Refund => Err(ApiError::forbidden(
                "Only an admin or a service can do this with a payment.",
            )),
        },
        Caller::Service(service) => {
            let allowed = match need {
                Need::Read => [SCOPE_READ, SCOPE_CREATE, SCOPE_REFUND]
                    .iter()
                    .any(|scope| service.has_scope(scope)),
                Need::Pay | Need::Capture => service.has_scope(SCOPE_CREATE),
                Need::Refund => service.has_scope(SCOPE_REFUND),
            };
            if allowed {
                Ok(())
            } else {
                service.require_scope(match need {
                    Need::Read => SCOPE_READ,
                    Need::Pay | Need::Capture => SCOPE_CREATE,
                    Need::Refund => SCOPE_REFUND,
                })
            }
        }
    }
}

/// The payment `id` as `caller` may see it.
pub async fn visible(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    need: Need,
) -> ApiResult<PaymentRow> {
    let row = store::find(&state.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    check_access(caller, &row, need)?;
    Ok(row)
}

fn currency_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(Currency::codes()))
        .description(Some("Upper-case ISO 4217 code."))
        .build()
}

/// The largest amount any currency allows with the default settings (KWD's, exponent 3);
/// smaller currencies allow less, which the document cannot say per currency.
fn amount_schema() -> Object {
    let config = Config::default();
    let limits = AmountLimits {
        max_major: config.max_amount,
        per_currency: config.max_amounts,
    };
    let max = Currency::codes()
        .filter_map(|code| Currency::parse(code).ok())
        .map(|currency| limits.max_minor(currency))
        .max()
        .unwrap_or(i64::MAX);
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(max))
        .description(Some(format!(
            "Integer minor units of `currency` (1250 EUR is 12.50 EUR), at most {} major units of the currency by default.",
            config.max_amount
        )))
        .build()
}

fn optional_string(max_chars: usize, pattern: &str, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(
            [Type::String, Type::Null]
                .into_iter()
                .collect::<utoipa::openapi::schema::SchemaType>(),
        )
        .max_length(Some(max_chars))
        .pattern(Some(pattern))
        .description(Some(description))
        .build()
}

fn description_schema() -> Object {
    optional_string(
        DESCRIPTION_MAX_CHARS,
        r"^[^\x00]*$",
        "Free text, at most 1000 characters, no NUL.",
    )
}

fn payment_method_schema() -> Object {
    optional_string(
        104,
        PAYMENT_METHOD_PATTERN,
        "A provider payment method id (`pm_card_visa` with the test provider).",
    )
}

/// Bounded string pairs.
pub fn metadata_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(METADATA_MAX_KEYS))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(METADATA_KEY_PATTERN))
                .build(),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(METADATA_MAX_VALUE_CHARS))
                .pattern(Some(r"^[^\x00]*$"))
                .build(),
        )))))
        .description(Some(
            "At most 50 keys of 1 to 40 characters (A-Z a-z 0-9 _ . : -), values up to 500 characters.",
        ))
        .build()
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePayment {
    #[schema(schema_with = amount_schema, example = 1250)]
    pub amount: serde_json::Number,
    #[schema(schema_with = currency_schema, example = "EUR")]
    pub currency: String,
    #[serde(default)]
    #[schema(schema_with = description_schema)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: BTreeMap<String, String>,
    pub reference: PaymentReference,
    /// The paying user: required when a service creates the payment; a user pays for
    /// themselves (leave it out, or give your own id).
    #[serde(default)]
    pub user: Option<Uuid>,
    /// Attach a payment method now (the payment then waits for confirmation).
    #[serde(default)]
    #[schema(schema_with = payment_method_schema)]
    pub payment_method: Option<String>,
    /// `automatic` (default) or `manual` (confirmation only authorizes; capture later).
    #[serde(default)]
    #[schema(nullable)]
    pub capture_method: Option<CaptureMethod>,
}

/// A create request parsed into domain types.
struct NewInput {
    money: Money,
    description: Option<Description>,
    metadata: Metadata,
    reference: Reference,
    payment_method: Option<PaymentMethodId>,
    capture_method: CaptureMethod,
}

fn parse_create(state: &AppState, input: &CreatePayment) -> ApiResult<NewInput> {
    let mut errors = FieldErrors::default();
    let currency = errors.take("currency", Currency::parse(&input.currency));
    let money = currency.and_then(|currency| {
        errors.take(
            "amount",
            Money::parse(&input.amount, currency, &state.limits),
        )
    });
    let description = input
        .description
        .as_deref()
        .map(Description::parse)
        .transpose();
    let description = errors.take("description", description).flatten();
    let metadata = errors.take("metadata", Metadata::parse(input.metadata.clone()));
    let reference = match Reference::parse(&input.reference.service, &input.reference.id) {
        Ok(reference) => Some(reference),
        Err(problems) => {
            for (field, message) in problems {
                errors.add(field, message);
            }
            None
        }
    };
    let payment_method = input
        .payment_method
        .as_deref()
        .map(PaymentMethodId::parse)
        .transpose();
    let payment_method = errors.take("payment_method", payment_method).flatten();
    if let Some(method) = &payment_method
        && state.providers.default == ProviderName::Test
        && !provider::test::knows_payment_method(method.as_str())
    {
        errors.add(
            "payment_method",
            "is not a payment method the provider knows",
        );
    }
    let (Some(money), Some(metadata), Some(reference)) = (money, metadata, reference) else {
        return Err(errors.into());
    };
    errors.into_result()?;
    Ok(NewInput {
        money,
        description,
        metadata,
        reference,
        payment_method,
        capture_method: input.capture_method.unwrap_or(CaptureMethod::Automatic),
    })
}

/// The local user a payment is for: the caller itself, or (for a service) the user it names.
async fn payer(tx: &mut apply::Tx, caller: &Caller, named: Option<Uuid>) -> ApiResult<(i64, Uuid)> {
    match caller {
        Caller::User(user) => match named {
            Some(other) if other != user.uuid => Err(ApiError::forbidden(
                "A user pays for themselves: leave `user` out or give your own id.",
            )),
            _ => Ok((user.id, user.uuid)),
        },
        Caller::Service(_) => {
            let Some(uuid) = named else {
                let mut errors = FieldErrors::default();
                errors.add("user", "is required when a service creates a payment");
                return Err(errors.into());
            };
            let user = identity::users::get_or_create_by_uuid(tx, uuid).await?;
            if user.is_deleted() || !user.is_active {
                let mut errors = FieldErrors::default();
                errors.add("user", "is a deleted or disabled user");
                return Err(errors.into());
            }
            Ok((user.id, uuid))
        }
    }
}

fn reference_in_use(existing: Uuid) -> ApiError {
    ApiError::conflict(
        "reference_in_use",
        format!(
            "This reference already has a live payment, {existing}: one payment per order, even with a new Idempotency-Key."
        ),
    )
    .with_header(
        LOCATION,
        http::HeaderValue::from_str(&format!("/api/payments/v1/payments/{existing}"))
            .unwrap_or(http::HeaderValue::from_static("/api/payments/v1/payments")),
    )
}

/// Create a payment for a user, paying for `reference`. With the `test` provider it can be
/// confirmed at once with a test payment method; with Stripe the frontend confirms it with
/// `client_secret`.
#[utoipa::path(
    post, path = "/payments", tag = "payments",
    request_body = CreatePayment,
    params(IdempotencyKeyHeader),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created (or, for a repeated `Idempotency-Key`, the payment created the first time)", body = Payment,
            headers(("Location" = String, description = "The payment's URL")),
            links(
                ("GetPayment" = (operation_id = "get_payment", parameters(("id" = "$response.body#/id")))),
                ("ConfirmPayment" = (operation_id = "confirm_payment", parameters(("id" = "$response.body#/id")))),
                ("CancelPayment" = (operation_id = "cancel_payment", parameters(("id" = "$response.body#/id")))),
                ("PaymentHistory" = (operation_id = "payment_history", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 400, description = "No `Idempotency-Key` (`idempotency_key_required`), or a malformed request", body = kit::Problem),
        (status = 403, description = "A user naming another user, or a service token without `payments:create`", body = kit::Problem),
        (status = 409, description = "The reference already has a live payment (`reference_in_use`, its URL in `Location`), or this `Idempotency-Key` is still being processed (`idempotency_key_in_use`)", body = kit::Problem),
        (status = 422, description = "Invalid fields (`validation_failed`), the key used with another request (`idempotency_key_reused`), or refused by the provider (`provider_rejected`)", body = kit::Problem),
        (status = 503, description = "The provider cannot be reached (`provider_unavailable`): retry with the same key", body = kit::Problem),
    )
)]
async fn create_payment(
    State(state): State<AppState>,
    caller: Caller,
    request: Idempotent<CreatePayment>,
) -> ApiResult<Response> {
    if let Caller::Service(service) = &caller {
        service.require_scope(SCOPE_CREATE)?;
    }
    let Idempotent { body, key } = request;
    let keyed = Keyed::require(key, "payments.create", caller.source())?;
    let input = parse_create(&state, &body)?;
    let fingerprint = fingerprint(&body);
    let request_key = keyed.digest();

    // (1) Record the payment: at once for a user known here, the general way otherwise.
    let source = caller.source();
    let uuid = Uuid::now_v7();
    let new_payment = |user_id| NewPayment {
        uuid,
        user_id,
        amount: input.money.amount(),
        currency: input.money.currency().code(),
        description: input.description.as_ref().map(Description::as_str),
        metadata: input.metadata.to_json(),
        reference_service: &input.reference.service,
        reference_id: &input.reference.id,
        source,
        provider: state.providers.default,
        payment_method: input.payment_method.as_ref().map(PaymentMethodId::as_str),
        capture_method: input.capture_method,
        status: PaymentStatus::RequiresPaymentMethod,
        request_key: Some(&request_key),
        request_fingerprint: Some(&fingerprint),
        created_at: Utc::now(),
    };
    let known_user = match &caller {
        Caller::User(user) if body.user.is_none_or(|named| named == user.uuid) => Some(user.uuid),
        Caller::User(_) => None,
        Caller::Service(_) => body.user,
    };
    let ctx = Context::api(caller.actor());
    let inserted = match known_user {
        Some(user) => {
            store::insert_at_once(
                &state.hot,
                &new_payment(0),
                user,
                &apply::history_cause(&ctx),
            )
            .await?
        }
        None => None,
    };
    let row = match inserted {
        Some(row) => row,
        None => {
            let mut tx = match keyed.claim(&state.db).await? {
                Claim::Replay(stored) => return Ok(stored),
                Claim::Fresh { tx, .. } => tx,
            };
            match store::find_by_request_key(&mut *tx, &request_key).await? {
                Some(started) => {
                    tx.rollback().await?;
                    if started.request_fingerprint.as_deref() != Some(fingerprint.as_slice()) {
                        return Err(key_reused());
                    }
                    started
                }
                None => {
                    let (user_id, _) = payer(&mut tx, &caller, body.user).await?;
                    let new = new_payment(user_id);
                    let inserted = store::insert(&mut tx, &new).await;
                    if let Err(err) = &inserted
                        && kit::error::violated_constraint(err) == Some("payments_reference_key")
                    {
                        // One live payment per reference: name it.
                        drop(tx);
                        let existing = store::find_live_by_reference(
                            &state.db,
                            source,
                            &input.reference.service,
                            &input.reference.id,
                        )
                        .await?;
                        return Err(existing.map_or_else(
                            || {
                                ApiError::conflict(
                                    "reference_in_use",
                                    "This reference already has a live payment.",
                                )
                            },
                            reference_in_use,
                        ));
                    }
                    let row = inserted.on_constraint("payments_request_key_key", key_reused)?;
                    apply::created(&mut tx, &row, &ctx).await?;
                    tx.commit().await?;
                    row
                }
            }
        }
    };

    // (2) The provider's side, unless it exists already (a retry after it was made).
    let made = match &row.provider_payment_id {
        Some(_) => None,
        None if row.status.is_terminal() => None,
        None => {
            let provider = state
                .providers
                .get(row.provider)
                .ok_or_else(|| missing_provider(row.provider))?;
            Some(match provider::intent_request(&row) {
                Ok(request) => provider.create_intent(&request).await,
                Err(refused) => Err(refused),
            })
        }
    };

    // (3) Apply it and answer: at once when nothing changed meanwhile.
    if let Some(Ok(intent)) = &made
        && let Some(response) = at_once(
            &state,
            &caller,
            &keyed,
            &row,
            intent,
            None,
            created_response,
        )
        .await?
    {
        return Ok(response);
    }
    let (mut tx, key) = match keyed.claim(&state.db).await? {
        Claim::Replay(stored) => return Ok(stored),
        Claim::Fresh { tx, key, .. } => (tx, key),
    };
    let note = match &made {
        Some(Ok(intent)) => apply::note(intent),
        _ => store::ProviderNote::default(),
    };
    let locked = store::lock_and_note(&mut tx, row.uuid, &note)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("payment {} vanished", row.uuid)))?;
    let mut effects = Effects::default();
    let response = match made {
        None => created_response(locked),
        Some(Ok(intent)) => {
            let row = apply::intent(&mut tx, locked, &intent, None, &ctx, &mut effects).await?;
            created_response(row)
        }
        Some(Err(ProviderError::Unavailable(why))) => {
            tracing::warn!(error = %why, payment = %row.uuid, "creating the payment at the provider failed; a retry or reconciliation finishes it");
            return Err(super::provider_unavailable());
        }
        Some(Err(ProviderError::InFlight)) => {
            return Err(super::provider_error(ProviderError::InFlight));
        }
        Some(Err(refused)) => {
            // The provider will not make it: the payment fails, and the answer is kept for
            // the key like any other.
            let failure = crate::provider::Observed {
                status: PaymentStatus::Failed,
                amount_captured: None,
                decline_code: Some("provider_rejected".into()),
                failure_message: Some(refused.to_string()),
                next_action: None,
                cancellation_reason: None,
            };
            apply::payment(&mut tx, locked, &failure, None, &ctx, &mut effects).await?;
            super::provider_error(refused).into_response()
        }
    };
    let response = idempotency::complete(tx, key.as_ref(), response).await?;
    state.notifier.committed(effects);
    Ok(response)
}

fn created_response(row: PaymentRow) -> Response {
    let location = format!("/api/payments/v1/payments/{}", row.uuid);
    (
        StatusCode::CREATED,
        [(LOCATION, location)],
        Json(Payment::from(row)),
    )
        .into_response()
}

fn missing_provider(name: ProviderName) -> ApiError {
    ApiError::internal(anyhow::anyhow!(
        "the payment's provider {name} is not configured on this instance"
    ))
}

/// Fetch one payment.
#[utoipa::path(
    get, path = "/payments/{id}", tag = "payments",
    params(("id" = Uuid, Path, description = "The payment's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment", body = Payment),
        (status = 404, description = "No such payment, or not yours", body = kit::Problem),
    )
)]
async fn get_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Payment>> {
    visible(&state, &caller, id, Need::Read)
        .await
        .map(|row| Json(row.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentFilter {
    /// Only payments in this status.
    pub status: Option<PaymentStatus>,
    /// Only payments for references of this service.
    #[param(pattern = "^[a-z][a-z0-9_-]{0,29}$")]
    pub reference_service: Option<String>,
    /// Only payments for this reference id (with `reference_service`, one reference).
    #[param(pattern = "^[!-~]{1,200}$")]
    pub reference_id: Option<String>,
    /// Only this user's payments (yours when you are not an admin).
    pub user: Option<Uuid>,
    /// Created at or after this time (RFC 3339).
    pub created_from: Option<DateTime<Utc>>,
    /// Created before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
}

/// List payments, newest first: your own, or (admins, services with `payments:read`) anyone's.
#[utoipa::path(
    get, path = "/payments", tag = "payments",
    params(PaymentFilter, PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of payments", body = Page<Payment>),
        (status = 403, description = "Another user's payments, and not an admin", body = kit::Problem),
        (status = 422, description = "An invalid filter or a cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_payments(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<PaymentFilter>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Payment>>> {
    let page = paging.parse::<PaymentKey>()?;
    let mut errors = FieldErrors::default();
    if let Some(service) = &query.reference_service
        && Reference::parse(service, "x").is_err()
    {
        errors.add("reference_service", "must be a service name");
    }
    if let Some(id) = &query.reference_id
        && Reference::parse("x", id).is_err()
    {
        errors.add("reference_id", "must be 1 to 200 visible ASCII characters");
    }
    errors.into_result()?;
    let user_id = match (&caller, query.user) {
        (Caller::User(user), None) if !user.is_admin() => Some(user.id),
        (Caller::User(user), Some(named)) if named == user.uuid => Some(user.id),
        (Caller::User(user), Some(_)) if !user.is_admin() => {
            return Err(ApiError::forbidden(
                "Only admins list other users' payments.",
            ));
        }
        (Caller::Service(service), _) if !service.has_scope(SCOPE_READ) => {
            return Err(service
                .require_scope(SCOPE_READ)
                .err()
                .unwrap_or_else(|| ApiError::forbidden("This needs `payments:read`.")));
        }
        (_, None) => None,
        (_, Some(named)) => match identity::users::local_id(&state.db, named).await? {
            Some(id) => Some(id),
            // A user never seen here has no payments.
            None => {
                return Ok(Json(Page {
                    items: Vec::new(),
                    next_cursor: None,
                }));
            }
        },
    };
    let filter = store::Filter {
        user_id,
        status: query.status,
        reference_service: query.reference_service,
        reference_id: query.reference_id,
        created_from: query.created_from,
        created_before: query.created_before,
    };
    let rows = store::list(&state.db, &filter, &page).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        PaymentRow::key,
        Payment::from,
    )))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPayment {
    /// The payment method to pay with (required unless given at creation): with the test
    /// provider `pm_card_visa` succeeds, `pm_card_chargeDeclined` fails,
    /// `pm_card_threeDSecureRequired` requires action.
    #[serde(default)]
    #[schema(schema_with = payment_method_schema, example = "pm_card_visa")]
    pub payment_method: Option<String>,
}

/// The payment `id` for an operation, checked in the claim's transaction (so a replay is
/// answered before any check).
async fn checked(
    tx: &mut apply::Tx,
    caller: &Caller,
    id: Uuid,
    need: Need,
) -> ApiResult<PaymentRow> {
    let row = store::find(&mut **tx, id)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    check_access(caller, &row, need)?;
    Ok(row)
}

fn wrong_state(row: &PaymentRow, action: &str) -> ApiError {
    ApiError::conflict(
        format!("payment_not_{action}"),
        format!("The payment is {}: it cannot be {action} now.", row.status),
    )
}

fn still_creating() -> ApiError {
    ApiError::conflict(
        "payment_not_ready",
        "The provider has not finished creating this payment yet; retry shortly.",
    )
}

/// Step (1) of an operation calling the provider: the stored answer of a repeated key
/// (`Err`), or the payment, checked for `caller` (`Ok`).
async fn begin(
    state: &AppState,
    caller: &Caller,
    keyed: &Keyed,
    id: Uuid,
    need: Need,
) -> ApiResult<Result<PaymentRow, Response>> {
    // One read: the payment and the key's stored response. A payment not found goes the
    // general way, which answers it.
    if let Some(mut found) = store::find_for_request(&state.hot, id, &keyed.scoped()).await? {
        if let Some(stored) = found.stored() {
            return keyed.answer(stored).map(Err);
        }
        check_access(caller, &found.row, need)?;
        return Ok(Ok(found.row));
    }
    let mut tx = match keyed.claim(&state.db).await? {
        Claim::Replay(stored) => return Ok(Err(stored)),
        Claim::Fresh { tx, .. } => tx,
    };
    let row = checked(&mut tx, caller, id, need).await?;
    tx.rollback().await?;
    Ok(Ok(row))
}

fn provider_for<'a>(state: &'a AppState, row: &PaymentRow) -> ApiResult<&'a dyn Provider> {
    state
        .providers
        .get(row.provider)
        .ok_or_else(|| missing_provider(row.provider))
}

fn answered(row: PaymentRow) -> Response {
    super::respond(StatusCode::OK, &Payment::from(row))
}

/// A time as Postgres keeps it (microseconds).
fn now_stored() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Step (3) at once: the provider's answer applied to `row` (as step (1) read it) and the
/// response stored, in one statement. `None` when the payment changed meanwhile (or a partner
/// endpoint takes the event it announces), for the general way to do it.
async fn at_once(
    state: &AppState,
    caller: &Caller,
    keyed: &Keyed,
    row: &PaymentRow,
    intent: &Intent,
    requested_capture: Option<i64>,
    answer: fn(PaymentRow) -> Response,
) -> ApiResult<Option<Response>> {
    let Some(observed) = intent.observed() else {
        return Ok(None);
    };
    let note = apply::note(intent);
    let noted = apply::noted(row.clone(), &note);
    let ctx = Context::api(caller.actor());
    let next = apply::changed(&noted, &observed, requested_capture, &ctx).map(|next| PaymentRow {
        version: row.version + 1,
        updated_at: now_stored(),
        ..next
    });
    let announcement = match &next {
        Some(next) => apply::status_announcement(next, &ctx)?,
        None => None,
    };
    let write = next.as_ref().map(apply::status_write);
    let cause = apply::history_cause(&ctx);
    let stored = keyed
        .storable(answer(next.clone().unwrap_or(noted)))
        .await?;
    let change = store::AtOnce {
        id: row.id,
        version: row.version,
        note: &note,
        write: write
            .as_ref()
            .zip(next.as_ref())
            .map(|(write, next)| (write, row.status, &cause, next.updated_at)),
        announcement: announcement.as_ref().map(|a| &a.outbox),
        stored: &stored,
    };
    if !store::change_at_once(&state.hot, &change).await? {
        return Ok(None);
    }
    if let Some(next) = &next {
        let mut effects = Effects::default();
        apply::record_change(row.status, next, &ctx, &mut effects);
        state.notifier.committed(effects);
    }
    Ok(Some(stored.into_response()))
}

/// Step (3): apply the provider's answer to the payment `row` (as step (1) read it) and answer
/// 200 with the payment, kept for the key.
async fn finish(
    state: &AppState,
    caller: &Caller,
    keyed: &Keyed,
    row: &PaymentRow,
    intent: &Intent,
    requested_capture: Option<i64>,
) -> ApiResult<Response> {
    if let Some(response) = at_once(
        state,
        caller,
        keyed,
        row,
        intent,
        requested_capture,
        answered,
    )
    .await?
    {
        return Ok(response);
    }
    let (mut tx, key) = match keyed.claim(&state.db).await? {
        Claim::Replay(stored) => return Ok(stored),
        Claim::Fresh { tx, key, .. } => (tx, key),
    };
    let row = store::lock_and_note(&mut tx, row.uuid, &apply::note(intent))
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    let mut effects = Effects::default();
    let ctx = Context::api(caller.actor());
    let row = apply::intent(&mut tx, row, intent, requested_capture, &ctx, &mut effects).await?;
    let response = answered(row);
    let response = idempotency::complete(tx, key.as_ref(), response).await?;
    state.notifier.committed(effects);
    Ok(response)
}

/// Confirm a payment with a payment method. The answer is the payment as it is after the
/// attempt: `succeeded`, `requires_capture` (manual capture), `requires_action` (the user must
/// authenticate: see `next_action`), or `failed` with a `decline_code`.
#[utoipa::path(
    post, path = "/payments/{id}/confirm", tag = "payments",
    request_body = ConfirmPayment,
    params(("id" = Uuid, Path, description = "The payment's id"), IdempotencyKeyHeader),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment after the attempt (or, for a repeated `Idempotency-Key`, the first answer)", body = Payment),
        (status = 400, description = "No `Idempotency-Key` (`idempotency_key_required`), or a malformed request", body = kit::Problem),
        (status = 404, description = "No such payment, or not yours", body = kit::Problem),
        (status = 409, description = "The payment cannot be confirmed in its status (`payment_not_confirmable`, `payment_state_conflict`, `payment_not_ready`), or the key is still being processed", body = kit::Problem),
        (status = 422, description = "No or an unknown payment method (`validation_failed`), or the key used with another request", body = kit::Problem),
        (status = 503, description = "The provider cannot be reached (`provider_unavailable`): retry with the same key", body = kit::Problem),
    )
)]
async fn confirm_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    request: Idempotent<ConfirmPayment>,
) -> ApiResult<Response> {
    let Idempotent { body, key } = request;
    let keyed = Keyed::require(key, "payments.confirm", caller.source())?;
    let given = body
        .payment_method
        .as_deref()
        .map(PaymentMethodId::parse)
        .transpose()
        .map_err(|why| {
            let mut errors = FieldErrors::default();
            errors.add("payment_method", why);
            ApiError::from(errors)
        })?;
    let row = match begin(&state, &caller, &keyed, id, Need::Pay).await? {
        Ok(row) => row,
        Err(stored) => return Ok(stored),
    };
    if !row.status.is_confirmable() {
        return Err(wrong_state(&row, "confirmable"));
    }
    let Some(provider_id) = row.provider_payment_id.as_deref() else {
        return Err(still_creating());
    };
    let Some(method) = given
        .map(|m| m.as_str().to_owned())
        .or_else(|| row.payment_method.clone())
    else {
        let mut errors = FieldErrors::default();
        errors.add("payment_method", "is required: the payment has none yet");
        return Err(errors.into());
    };
    let provider = provider_for(&state, &row)?;
    let call_key = provider::call_key(row.uuid, "confirm", &keyed.digest());
    let intent = provider
        .confirm_intent(provider_id, &method, &call_key)
        .await
        .map_err(super::provider_error)?;
    finish(&state, &caller, &keyed, &row, &intent, None).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelPayment {
    #[serde(default)]
    #[schema(nullable)]
    pub cancellation_reason: Option<CancellationReason>,
}

/// Cancel a payment that has not succeeded (nothing is charged; an authorization is released).
/// Send `{}` for no reason.
#[utoipa::path(
    post, path = "/payments/{id}/cancel", tag = "payments",
    request_body = CancelPayment,
    params(("id" = Uuid, Path, description = "The payment's id"), IdempotencyKeyHeader),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The canceled payment (or, for a repeated `Idempotency-Key`, the first answer)", body = Payment),
        (status = 400, description = "No `Idempotency-Key` (`idempotency_key_required`), or a malformed request", body = kit::Problem),
        (status = 404, description = "No such payment, or not yours", body = kit::Problem),
        (status = 409, description = "The payment cannot be canceled in its status (`payment_not_cancelable`, `payment_state_conflict`), or the key is still being processed", body = kit::Problem),
        (status = 422, description = "The key used with another request (`idempotency_key_reused`)", body = kit::Problem),
        (status = 503, description = "The provider cannot be reached (`provider_unavailable`): retry with the same key", body = kit::Problem),
    )
)]
async fn cancel_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    request: Idempotent<CancelPayment>,
) -> ApiResult<Response> {
    let Idempotent { body, key } = request;
    let keyed = Keyed::require(key, "payments.cancel", caller.source())?;
    let row = match begin(&state, &caller, &keyed, id, Need::Pay).await? {
        Ok(row) => row,
        Err(stored) => return Ok(stored),
    };
    if !row.status.is_cancelable() {
        return Err(wrong_state(&row, "cancelable"));
    }
    let intent = match row.provider_payment_id.as_deref() {
        Some(provider_id) => {
            let provider = provider_for(&state, &row)?;
            let call_key = provider::call_key(row.uuid, "cancel", &keyed.digest());
            provider
                .cancel_intent(provider_id, body.cancellation_reason, &call_key)
                .await
                .map_err(super::provider_error)?
        }
        // The provider never made it (and, canceled, never will): nothing to cancel there.
        None => Intent {
            id: String::new(),
            status: "canceled".into(),
            amount: row.amount,
            amount_received: None,
            client_secret: None,
            payment_method: None,
            last_error: None,
            next_action: None,
            cancellation_reason: body.cancellation_reason.map(|r| r.as_str().to_owned()),
            our_payment: Some(row.uuid),
        },
    };
    finish(&state, &caller, &keyed, &row, &intent, None).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePayment {
    /// What to capture, in minor units (all when absent); the rest of the authorization is
    /// released.
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 1, nullable)]
    pub amount_to_capture: Option<serde_json::Number>,
}

/// Capture an authorized payment (`capture_method: manual`, status `requires_capture`). Admins
/// and services with `payments:create`.
#[utoipa::path(
    post, path = "/payments/{id}/capture", tag = "payments",
    request_body = CapturePayment,
    params(("id" = Uuid, Path, description = "The payment's id"), IdempotencyKeyHeader),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The captured payment (or, for a repeated `Idempotency-Key`, the first answer)", body = Payment),
        (status = 400, description = "No `Idempotency-Key` (`idempotency_key_required`), or a malformed request", body = kit::Problem),
        (status = 404, description = "No such payment, or not yours", body = kit::Problem),
        (status = 409, description = "The payment is not waiting for a capture (`payment_not_capturable`, `payment_state_conflict`), or the key is still being processed", body = kit::Problem),
        (status = 422, description = "An amount above the authorized one (`validation_failed`), or the key used with another request", body = kit::Problem),
        (status = 503, description = "The provider cannot be reached (`provider_unavailable`): retry with the same key", body = kit::Problem),
    )
)]
async fn capture_payment(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    request: Idempotent<CapturePayment>,
) -> ApiResult<Response> {
    let Idempotent { body, key } = request;
    let keyed = Keyed::require(key, "payments.capture", caller.source())?;
    let row = match begin(&state, &caller, &keyed, id, Need::Capture).await? {
        Ok(row) => row,
        Err(stored) => return Ok(stored),
    };
    if row.status != PaymentStatus::RequiresCapture {
        return Err(wrong_state(&row, "capturable"));
    }
    let currency = Currency::parse(&row.currency)
        .map_err(|why| ApiError::internal(anyhow::anyhow!("stored currency: {why}")))?;
    let amount = match &body.amount_to_capture {
        None => None,
        Some(number) => {
            // At most what was authorized.
            let captured = number
                .as_i64()
                .ok_or_else(|| {
                    format!(
                        "must be a whole number of minor units, at most {}",
                        row.amount
                    )
                })
                .and_then(|value| Money::new(value, currency, row.amount));
            match captured {
                Ok(money) => Some(money.amount()),
                Err(why) => {
                    let mut errors = FieldErrors::default();
                    errors.add("amount_to_capture", why);
                    return Err(errors.into());
                }
            }
        }
    };
    let Some(provider_id) = row.provider_payment_id.as_deref() else {
        return Err(still_creating());
    };
    let provider = provider_for(&state, &row)?;
    let call_key = provider::call_key(row.uuid, "capture", &keyed.digest());
    let intent = provider
        .capture_intent(provider_id, amount, &call_key)
        .await
        .map_err(super::provider_error)?;
    finish(
        &state,
        &caller,
        &keyed,
        &row,
        &intent,
        amount.or(Some(row.amount)),
    )
    .await
}

/// One entry of a payment's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HistoryEntry {
    /// Set when the entry is about one of the payment's refunds.
    pub refund: Option<Uuid>,
    /// `null` for the creation.
    pub from_status: Option<String>,
    pub to_status: String,
    /// `api`, `webhook`, `reconciliation` or `seed`.
    pub cause: crate::domain::Cause,
    pub provider_event_id: Option<String>,
    pub request_id: Option<String>,
    pub version: i32,
    pub at: DateTime<Utc>,
}

impl From<HistoryRow> for HistoryEntry {
    fn from(row: HistoryRow) -> Self {
        HistoryEntry {
            refund: row.refund,
            from_status: row.from_status,
            to_status: row.to_status,
            cause: row.cause,
            provider_event_id: row.provider_event_id,
            request_id: row.request_id,
            version: row.version,
            at: row.at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// Oldest first (at most the first 200).
    pub items: Vec<HistoryEntry>,
}

/// Every transition of a payment and of its refunds, with what caused it (an API call, a
/// provider's webhook, reconciliation) and the request id.
#[utoipa::path(
    get, path = "/payments/{id}/history", tag = "payments",
    params(("id" = Uuid, Path, description = "The payment's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The payment's history", body = History),
        (status = 404, description = "No such payment, or not yours", body = kit::Problem),
    )
)]
async fn payment_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<History>> {
    let row = visible(&state, &caller, id, Need::Read).await?;
    let items = store::history(&state.db, row.id, 200).await?;
    Ok(Json(History {
        items: items.into_iter().map(HistoryEntry::from).collect(),
    }))
}
