//! The service's HTTP API under `/api/payments/v1`: one module per resource, each with its own
//! `router()`; plus what they share: the handlers' state, who is calling ([`Caller`]), keyed
//! requests served around a provider call ([`Keyed`]) and how provider errors are answered.
//!
//! # Provider calls and `Idempotency-Key`
//!
//! A mutating call is served in two transactions with the provider call between them, never
//! inside one: (1) claim the key (a stored response is replayed; a request still running is a
//! 409), check what the request may do and record what it starts (a payment, a refund
//! reservation), commit; (2) call the provider with an idempotency key derived from the
//! client's; (3) claim the key again, apply the provider's answer through the transition table
//! and store the response with it. A retry after a crash between (2) and (3) finds what (1)
//! recorded and repeats the provider call with the same derived key, which the provider answers
//! without acting twice; if nobody retries, reconciliation repairs it.
//!
//! The common case of (1) and (3) is one statement shared with the requests waiting at that
//! moment (`store::payments::Hot`): (3) then writes only if the payment is still at the
//! version (1) read. Whatever the hot path declines goes the way above.

mod endpoints;
mod payments;
mod refunds;
mod test_provider;
mod webhooks;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode};
use identity::{Authenticated, CurrentUser, Identity, ServiceCaller};
use kit::idempotency::{Claim, IdempotencyKey, Idempotent};
use kit::{ApiError, ApiResult, FieldErrors, Settings};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{AmountLimits, hex};
use crate::notify::Notifier;
use crate::provider::{ProviderError, Providers};

/// What handlers share, built once by the service's `start`.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    /// The hot path's shared statements.
    pub hot: crate::store::payments::Hot,
    pub settings: Arc<Settings<Config>>,
    /// Token verification, revocation and the local users.
    pub identity: Identity,
    pub providers: Providers,
    pub notifier: Notifier,
    pub limits: Arc<AmountLimits>,
}

impl FromRef<AppState> for Identity {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

/// Every route under `/api/payments/v1`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().nest(
        "/api/payments/v1",
        payments::router()
            .merge(refunds::router())
            .merge(webhooks::router())
            .merge(endpoints::router())
            .merge(test_provider::router()),
    )
}

/// Who calls: a signed-in user, or another service with a service token.
#[derive(Debug, Clone)]
pub enum Caller {
    User(CurrentUser),
    Service(ServiceCaller),
}

impl Caller {
    /// The user's or the client's UUID: the source a payment's reference is unique within, and
    /// whose `Idempotency-Key`s are kept apart from everyone else's.
    pub fn source(&self) -> Uuid {
        match self {
            Caller::User(user) => user.uuid,
            Caller::Service(service) => service.client_id,
        }
    }

    /// The user acting, for event envelopes (`actor`).
    pub fn actor(&self) -> Option<Uuid> {
        match self {
            Caller::User(user) => Some(user.uuid),
            Caller::Service(_) => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Caller::User(user) if user.is_admin())
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Identity: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // The token is verified once; the extractor for its kind reuses the verification.
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        if claims.is_service() {
            ServiceCaller::from_request_parts(parts, state)
                .await
                .map(Caller::Service)
        } else {
            CurrentUser::from_request_parts(parts, state)
                .await
                .map(Caller::User)
        }
    }
}

/// A request's `Idempotency-Key` (required on every POST here), scoped to the operation and
/// the caller.
pub struct Keyed {
    key: IdempotencyKey,
    scope: String,
}

impl Keyed {
    /// 400 `idempotency_key_required` without a key.
    pub fn require(key: Option<IdempotencyKey>, operation: &str, caller: Uuid) -> ApiResult<Keyed> {
        let key = key.ok_or_else(|| {
            ApiError::bad_request(
                "idempotency_key_required",
                "This call needs an `Idempotency-Key` header (1 to 255 visible ASCII characters), so a retry never acts twice.",
            )
        })?;
        Ok(Keyed {
            key,
            scope: format!("{operation}:{caller}"),
        })
    }

    /// Opens a transaction holding the key (see the module documentation).
    pub async fn claim(&self, db: &PgPool) -> ApiResult<Claim<()>> {
        Idempotent {
            body: (),
            key: Some(self.key.clone()),
        }
        .claim(db, &self.scope)
        .await
    }

    /// The key as stored with its response.
    pub fn scoped(&self) -> String {
        self.key.scoped(&self.scope)
    }

    /// The answer to this request when its key has `stored`: the first response, or 422.
    pub fn answer(&self, stored: kit::idempotency::Stored) -> ApiResult<Response> {
        self.key.answer(stored)
    }

    /// `response`, ready to be stored under the key by a statement of the caller's.
    pub async fn storable(&self, response: Response) -> ApiResult<kit::idempotency::Storable> {
        kit::idempotency::Storable::new(&self.key, &self.scope, response).await
    }

    /// The scoped key, hashed: what rows started by this request remember it by, and the seed
    /// of the idempotency keys sent to the provider.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.scope.as_bytes());
        hash.update([0x1f]);
        hash.update(self.key.as_str().as_bytes());
        hex(&hash.finalize())
    }
}

/// A fingerprint of a request body, to tell a retry from another request with the same key.
pub fn fingerprint<T: Serialize>(body: &T) -> Vec<u8> {
    Sha256::digest(serde_json::to_vec(body).unwrap_or_default()).to_vec()
}

/// 422 `idempotency_key_reused`, as kit answers it.
pub fn key_reused() -> ApiError {
    ApiError::unprocessable(
        "idempotency_key_reused",
        "This Idempotency-Key was used with a different request.",
    )
}

/// How a provider's refusal is answered.
pub fn provider_error(err: ProviderError) -> ApiError {
    match err {
        ProviderError::InvalidPaymentMethod(_) => {
            let mut errors = FieldErrors::default();
            errors.add(
                "payment_method",
                "is not a payment method the provider knows",
            );
            errors.into()
        }
        ProviderError::UnexpectedState(why) => ApiError::conflict(
            "payment_state_conflict",
            format!("The provider refused in the payment's state: {why}."),
        ),
        ProviderError::Rejected { code, message } => ApiError::unprocessable(
            "provider_rejected",
            match code {
                Some(code) => format!("The provider refused ({code}): {message}"),
                None => format!("The provider refused: {message}"),
            },
        ),
        ProviderError::InFlight => ApiError::conflict(
            "idempotency_key_in_use",
            "A request with this Idempotency-Key is still being processed; retry later.",
        ),
        ProviderError::NotFound => ApiError::internal(anyhow::anyhow!(
            "the provider does not know an object this service created there"
        )),
        ProviderError::Unavailable(why) => {
            tracing::warn!(error = %why, "payment provider unavailable");
            provider_unavailable()
        }
    }
}

/// 503 `provider_unavailable`: nothing was lost; retry with the same key.
pub fn provider_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "provider_unavailable",
        "The payment provider cannot be reached right now. Retry with the same Idempotency-Key: nothing is done twice.",
    )
    .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("2"))
}

/// A JSON response with a status.
pub fn respond<T: Serialize>(status: StatusCode, body: &T) -> Response {
    (status, kit::Json(body)).into_response()
}

/// The `Idempotency-Key` parameter as documented on every POST here.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct IdempotencyKeyHeader {
    /// Required: 1 to 255 visible ASCII characters. A retry with the same key and body gets
    /// the first response again; the same key with another body is refused (422); while the
    /// first is still running, 409.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = r"^[!-~]+$"
    )]
    pub idempotency_key: String,
}
