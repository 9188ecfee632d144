//! `/test-provider/payment_intents/{id}/authenticate`: the built-in test provider's stand-in
//! for a bank's 3-D Secure page. A payment confirmed with `pm_card_threeDSecureRequired` waits in
//! `requires_action` with `next_action.redirect_to_url.url` pointing here; the frontend (or a
//! test) posts the payment's `client_secret` and the outcome, and the provider then tells the
//! service by webhook, as a real one does.

use axum::extract::State;
use http::StatusCode;
use kit::{ApiError, ApiResult, Json, Path};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::provider::test::AuthenticateError;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(authenticate))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The customer authenticated: the payment goes on.
    Succeed,
    /// The customer failed (or abandoned) authentication: the payment fails.
    Fail,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Authenticate {
    /// The payment's `client_secret`.
    #[schema(min_length = 1, max_length = 200)]
    pub client_secret: String,
    pub outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Authenticated {
    /// The provider's payment intent id.
    pub id: String,
    /// The intent's status at the provider now (`succeeded`, `requires_capture`, or
    /// `requires_payment_method` after a failure).
    pub status: String,
}

/// Complete (or fail) the customer authentication of a test-provider payment.
#[utoipa::path(
    post, path = "/test-provider/payment_intents/{id}/authenticate", tag = "test provider",
    request_body = Authenticate,
    params(("id" = String, Path, description = "The provider's payment intent id (`pi_test_...`)")),
    responses(
        (status = 200, description = "Done; the service learns it by webhook", body = Authenticated),
        (status = 404, description = "No such intent, a wrong client secret, or the test provider is not enabled", body = kit::Problem),
        (status = 409, description = "The intent is not waiting for authentication (`authentication_not_required`)", body = kit::Problem),
    )
)]
async fn authenticate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(input): Json<Authenticate>,
) -> ApiResult<(StatusCode, Json<Authenticated>)> {
    let provider = state
        .providers
        .test
        .as_ref()
        .ok_or_else(|| ApiError::not_found("payment intent"))?;
    match provider
        .authenticate(&id, &input.client_secret, input.outcome == Outcome::Succeed)
        .await
    {
        Ok(intent) => Ok((
            StatusCode::OK,
            Json(Authenticated {
                id: intent.id,
                status: intent.status,
            }),
        )),
        Err(AuthenticateError::NotFound | AuthenticateError::Forbidden) => {
            Err(ApiError::not_found("payment intent"))
        }
        Err(AuthenticateError::NotRequired(status)) => Err(ApiError::conflict(
            "authentication_not_required",
            format!("The payment intent is {status}: nothing to authenticate."),
        )),
        Err(AuthenticateError::Unavailable(why)) => {
            Err(ApiError::internal(anyhow::anyhow!("test provider: {why}")))
        }
    }
}
