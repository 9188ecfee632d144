//! `/payments/{id}/refunds`: partial and multiple refunds of a succeeded payment, by admins and
//! services with `payments:refund`.
//!
//! A refund's amount is reserved on the payment (a guarded update under the payment's row
//! lock) in the transaction that creates it `pending`, before the provider is called: the sum of
//! pending and succeeded refunds never exceeds what was captured, however many refunds run at
//! once. A failed refund releases its amount.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use kit::idempotency::{self, Claim, Idempotent};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::payments::{Need, check_access, metadata_schema, visible};
use super::{AppState, Caller, IdempotencyKeyHeader, Keyed, fingerprint, key_reused};
use crate::apply::{self, Context, Effects};
use crate::domain::{Currency, Metadata, Money, PaymentStatus, RefundReason, RefundStatus};
use crate::provider::{self, ProviderError, RefundView};
use crate::store::payments as payment_store;
use crate::store::refunds::{self as store, NewRefund, RefundKey, RefundRow};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_refunds, create_refund))
}

/// A refund as clients see it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Refund {
    pub id: Uuid,
    pub payment: Uuid,
    /// Minor units of the payment's currency.
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// `pending` until the provider settles it, then `succeeded` or `failed`.
    pub status: RefundStatus,
    pub failure_reason: Option<String>,
    pub provider_refund_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<RefundRow> for Refund {
    fn from(row: RefundRow) -> Self {
        Refund {
            id: row.uuid,
            payment: row.payment_uuid,
            amount: row.amount,
            currency: row.currency,
            reason: row.reason,
            metadata: serde_json::from_value(row.metadata).unwrap_or_default(),
            status: row.status,
            failure_reason: row.failure_reason,
            provider_refund_id: row.provider_refund_id,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefund {
    /// Minor units to give back; everything still refundable when absent.
    #[serde(default)]
    #[schema(value_type = Option<i64>, minimum = 1, nullable)]
    pub amount: Option<serde_json::Number>,
    #[serde(default)]
    #[schema(nullable)]
    pub reason: Option<RefundReason>,
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: BTreeMap<String, String>,
}

fn refund_exceeds(payment: &payment_store::PaymentRow, asked: i64) -> ApiError {
    ApiError::unprocessable(
        "refund_exceeds_available",
        format!(
            "A refund of {asked} is more than the {} still refundable ({} captured, {} refunded, {} pending).",
            payment.refundable(),
            payment.amount_captured,
            payment.amount_refunded,
            payment.amount_refund_pending
        ),
    )
}

/// Refund a succeeded payment, in part or in full; several refunds may follow each other.
#[utoipa::path(
    post, path = "/payments/{id}/refunds", tag = "refunds",
    request_body = CreateRefund,
    params(("id" = Uuid, Path, description = "The payment's id"), IdempotencyKeyHeader),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The refund as the provider answered it (or, for a repeated `Idempotency-Key`, the first answer)", body = Refund),
        (status = 400, description = "No `Idempotency-Key` (`idempotency_key_required`), or a malformed request", body = kit::Problem),
        (status = 403, description = "Neither an admin nor a service with `payments:refund`", body = kit::Problem),
        (status = 404, description = "No such payment", body = kit::Problem),
        (status = 409, description = "The payment has not succeeded (`payment_not_refundable`), or the key is still being processed", body = kit::Problem),
        (status = 422, description = "More than is still refundable (`refund_exceeds_available`), invalid fields, or the key used with another request", body = kit::Problem),
        (status = 503, description = "The provider cannot be reached (`provider_unavailable`): the refund stays pending; retry with the same key", body = kit::Problem),
    )
)]
async fn create_refund(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    request: Idempotent<CreateRefund>,
) -> ApiResult<Response> {
    let Idempotent { body, key } = request;
    let keyed = Keyed::require(key, "payments.refund", caller.source())?;
    let mut errors = FieldErrors::default();
    let metadata = errors.take("metadata", Metadata::parse(body.metadata.clone()));
    errors.into_result()?;
    let metadata = metadata.unwrap_or_default();
    let fingerprint = fingerprint(&body);
    let request_key = keyed.digest();

    // (1) Reserve the amount and record the refund.
    let mut tx = match keyed.claim(&state.db).await? {
        Claim::Replay(stored) => return Ok(stored),
        Claim::Fresh { tx, .. } => tx,
    };
    let (payment, refund) = match store::find_by_request_key(&mut *tx, &request_key).await? {
        Some(started) => {
            tx.rollback().await?;
            if started.request_fingerprint.as_deref() != Some(fingerprint.as_slice()) {
                return Err(key_reused());
            }
            let payment = visible(&state, &caller, started.payment_uuid, Need::Refund).await?;
            (payment, started)
        }
        None => {
            let payment = payment_store::lock(&mut tx, id)
                .await?
                .ok_or_else(|| ApiError::not_found("payment"))?;
            check_access(&caller, &payment, Need::Refund)?;
            if payment.status != PaymentStatus::Succeeded {
                return Err(ApiError::conflict(
                    "payment_not_refundable",
                    format!(
                        "The payment is {}: only a succeeded payment is refunded.",
                        payment.status
                    ),
                ));
            }
            let currency = Currency::parse(&payment.currency)
                .map_err(|why| ApiError::internal(anyhow::anyhow!("stored currency: {why}")))?;
            let amount = match &body.amount {
                None if payment.refundable() > 0 => payment.refundable(),
                None => return Err(refund_exceeds(&payment, 0)),
                Some(number) => {
                    let parsed = number
                        .as_i64()
                        .ok_or_else(|| "must be a whole number of minor units".to_owned())
                        .and_then(|value| Money::new(value, currency, i64::MAX));
                    match parsed {
                        Ok(money) => money.amount(),
                        Err(why) => {
                            let mut errors = FieldErrors::default();
                            errors.add("amount", why);
                            return Err(errors.into());
                        }
                    }
                }
            };
            if !payment_store::reserve_refund(&mut tx, payment.id, amount).await? {
                return Err(refund_exceeds(&payment, amount));
            }
            let uuid = Uuid::now_v7();
            let refund_id = store::insert(
                &mut tx,
                &NewRefund {
                    uuid,
                    payment_id: payment.id,
                    amount,
                    reason: body.reason,
                    metadata: metadata.to_json(),
                    status: RefundStatus::Pending,
                    provider_refund_id: None,
                    source: caller.source(),
                    request_key: Some(&request_key),
                    request_fingerprint: Some(&fingerprint),
                    created_at: Utc::now(),
                },
            )
            .await?;
            let payment = payment_store::lock_by_id(&mut tx, payment.id)
                .await?
                .ok_or_else(|| ApiError::not_found("payment"))?;
            apply::refund_created(
                &mut tx,
                &payment,
                refund_id,
                payment.version,
                &Context::api(caller.actor()),
            )
            .await?;
            let refund = store::lock(&mut tx, refund_id)
                .await?
                .ok_or_else(|| ApiError::internal(anyhow::anyhow!("refund {uuid} vanished")))?;
            tx.commit().await?;
            (payment, refund)
        }
    };

    // (2) The provider, unless the refund is settled already.
    let answer = if refund.status == RefundStatus::Pending {
        let provider = state.providers.get(payment.provider).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "provider {} not configured",
                payment.provider
            ))
        })?;
        let request = provider::refund_request(&payment, &refund).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!("a succeeded payment without a provider id"))
        })?;
        Some(settlement(provider.create_refund(&request).await)?)
    } else {
        None
    };

    // (3) Settle it and answer.
    let (mut tx, key) = match keyed.claim(&state.db).await? {
        Claim::Replay(stored) => return Ok(stored),
        Claim::Fresh { tx, key, .. } => (tx, key),
    };
    let mut effects = Effects::default();
    let refund = match answer {
        None => refund,
        Some(view) => {
            let ctx = Context::api(caller.actor());
            apply::settle_refund(&mut tx, payment.id, refund.id, &view, &ctx, &mut effects).await?
        }
    };
    let response = (StatusCode::CREATED, Json(Refund::from(refund))).into_response();
    let response = idempotency::complete(tx, key.as_ref(), response).await?;
    state.notifier.committed(effects);
    Ok(response)
}

/// What a provider's answer to a refund means: settled, still pending, or (unreachable) an
/// error for the client, the refund staying pending for a retry or reconciliation.
fn settlement(answer: Result<RefundView, ProviderError>) -> ApiResult<RefundView> {
    match answer {
        Ok(view) => Ok(view),
        Err(ProviderError::Unavailable(why)) => {
            tracing::warn!(error = %why, "refund not sent; a retry or reconciliation finishes it");
            Err(super::provider_unavailable())
        }
        Err(ProviderError::InFlight) => Err(super::provider_error(ProviderError::InFlight)),
        // Refused: the money does not go back, and the reservation is released.
        Err(refused) => Ok(RefundView {
            id: String::new(),
            status: RefundStatus::Failed,
            amount: 0,
            failure_reason: Some(refused.to_string()),
            our_refund: None,
        }),
    }
}

/// A payment's refunds, newest first.
#[utoipa::path(
    get, path = "/payments/{id}/refunds", tag = "refunds",
    params(("id" = Uuid, Path, description = "The payment's id"), PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of refunds", body = Page<Refund>),
        (status = 404, description = "No such payment, or not yours", body = kit::Problem),
        (status = 422, description = "A cursor this listing did not issue", body = kit::Problem),
    )
)]
async fn list_refunds(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<Refund>>> {
    let page = paging.parse::<RefundKey>()?;
    let payment = visible(&state, &caller, id, Need::Read).await?;
    let rows = store::list(&state.db, payment.id, &page).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        RefundRow::key,
        Refund::from,
    )))
}
