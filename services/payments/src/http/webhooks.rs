//! `/webhooks/{provider}`: the providers' webhooks. No token: the signature over the raw body
//! (`Stripe-Signature: t=…,v1=…`, HMAC-SHA256 with the provider's webhook secret, at most the
//! configured tolerance old) is the credential. Anything unsigned, forged, tampered with or
//! too old is refused with 400 and changes nothing.

use axum::body::Bytes;
use axum::extract::State;
use chrono::Utc;
use http::HeaderMap;
use kit::{ApiError, ApiResult, Json, Path};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::domain::{ProviderName, signature};
use crate::incoming;
use crate::provider::ProviderEvent;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive_webhook))
}

/// The answer to a provider (it only reads the status).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Received {
    pub received: bool,
    /// The event was applied before (a redelivery): nothing changed.
    pub duplicate: bool,
}

/// A provider's event (Stripe's Event object).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookEvent {
    #[schema(example = "evt_1PqR...")]
    pub id: String,
    #[serde(rename = "type")]
    #[schema(example = "payment_intent.succeeded")]
    pub event_type: String,
    pub created: i64,
    /// `{"object": {...}}`: the payment intent or refund as it is now.
    pub data: serde_json::Value,
}

/// Receive a provider's webhook (`stripe`, or the built-in `test` provider). Signed with the
/// provider's webhook secret in `Stripe-Signature`.
#[utoipa::path(
    post, path = "/webhooks/{provider}", tag = "webhooks",
    request_body = WebhookEvent,
    params(
        ("provider" = ProviderName, Path, description = "Who sends it"),
        ("Stripe-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">`"),
    ),
    responses(
        (status = 200, description = "Received (applied, or recognised as a redelivery)", body = Received),
        (status = 400, description = "No, a malformed, a wrong or a too old signature (`invalid_signature`), or not an event (`invalid_event`)", body = kit::Problem),
        (status = 404, description = "No such provider here, or its webhooks are not configured", body = kit::Problem),
    )
)]
async fn receive_webhook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Received>> {
    let name: ProviderName = provider
        .parse()
        .map_err(|_| ApiError::not_found("provider"))?;
    let secret = state
        .providers
        .get(name)
        .and_then(|p| p.webhook_secret())
        .ok_or_else(|| ApiError::not_found("provider"))?;
    let header = headers
        .get(signature::PROVIDER_HEADER)
        .and_then(|value| value.to_str().ok());
    let tolerance = i64::try_from(state.settings.app.webhook_tolerance.as_secs()).unwrap_or(300);
    if let Err(why) = signature::verify(
        secret.expose().as_bytes(),
        header,
        &body,
        Utc::now().timestamp(),
        tolerance,
    ) {
        tracing::warn!(provider = %name, reason = %why, "refused a webhook");
        metrics::counter!("payments_webhooks_refused_total", "provider" => name.as_str())
            .increment(1);
        return Err(ApiError::bad_request(
            "invalid_signature",
            format!("The webhook's signature is not valid: {why}."),
        ));
    }
    let event = ProviderEvent::parse(&body).map_err(|why| {
        ApiError::bad_request("invalid_event", format!("Not a provider event: {why}."))
    })?;
    let outcome = incoming::apply_event(&state.db, &state.hot, name, &event).await?;
    if outcome.unmatched {
        tracing::info!(provider = %name, event = %event.id, "a webhook about nothing of ours");
    }
    metrics::counter!("payments_webhooks_received_total", "provider" => name.as_str(),
        "duplicate" => if outcome.duplicate { "true" } else { "false" })
    .increment(1);
    let duplicate = outcome.duplicate;
    state.notifier.committed(outcome.effects);
    Ok(Json(Received {
        received: true,
        duplicate,
    }))
}
