//! The `stripe` provider: Stripe's REST API (PaymentIntents, Refunds), form-encoded, with the
//! secret key as bearer token and Stripe's own `Idempotency-Key` on every mutating call.
//!
//! Confirmation attaches the payment method with an update, then confirms (two calls, each
//! with its own key derived from ours): Stripe also takes both in one call, but the update
//! keeps the provider usable against localstripe, whose confirm does not accept a payment
//! method. For the same reason a description, a cancellation reason or a refund reason is sent
//! only when there is one.

use std::time::Duration;

use kit::Secret;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{Call, CreateIntent, CreateRefund, Intent, Provider, ProviderError, RefundView};
use crate::domain::{CancellationReason, ProviderName};

/// The API version responses are read as.
pub const API_VERSION: &str = "2024-06-20";

pub struct StripeProvider {
    http: reqwest::Client,
    api_base: String,
    api_key: Secret,
    webhook_secret: Option<Secret>,
    return_url: Option<String>,
}

impl StripeProvider {
    pub fn new(
        api_base: &str,
        api_key: Secret,
        webhook_secret: Option<Secret>,
        timeout: Duration,
        return_url: Option<String>,
    ) -> anyhow::Result<StripeProvider> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("hatchery-payments/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(StripeProvider {
            http,
            api_base: api_base.trim_end_matches('/').to_owned(),
            api_key,
            webhook_secret,
            return_url,
        })
    }

    /// One call; the JSON answer, or the error it means.
    async fn call(
        &self,
        method: Method,
        path: &str,
        form: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Result<Value, ProviderError> {
        let url = format!("{}{path}", self.api_base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(self.api_key.expose())
            .header("Stripe-Version", API_VERSION);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if method != Method::GET {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .finish();
            request = request
                .header(
                    http::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(body);
        }
        let response = request
            .send()
            .await
            .map_err(|err| ProviderError::Unavailable(format!("{method} {path}: {err}")))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|err| ProviderError::Unavailable(format!("{method} {path}: {err}")))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(error_for(status, &body, &format!("{method} {path}")))
    }
}

/// What a Stripe error answer means.
fn error_for(status: StatusCode, body: &Value, call: &str) -> ProviderError {
    let error = body.get("error").cloned().unwrap_or(Value::Null);
    let text = |key: &str| error.get(key).and_then(Value::as_str).map(str::to_owned);
    let message = text("message").unwrap_or_else(|| format!("{call} answered {status}"));
    let code = text("code");
    match (status, code.as_deref(), text("param").as_deref()) {
        (StatusCode::TOO_MANY_REQUESTS, _, _) => ProviderError::Unavailable(message),
        (status, _, _) if status.is_server_error() => ProviderError::Unavailable(message),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _, _) => {
            tracing::error!(%status, "Stripe refused the API key: check app.stripe.api_key");
            ProviderError::Unavailable(format!("{call}: the API key was refused"))
        }
        (StatusCode::CONFLICT, Some("idempotency_key_in_use"), _) => ProviderError::InFlight,
        (_, Some("payment_intent_unexpected_state" | "charge_already_refunded"), _) => {
            ProviderError::UnexpectedState(message)
        }
        (_, Some("resource_missing"), Some("payment_method")) => {
            ProviderError::InvalidPaymentMethod(message)
        }
        (StatusCode::NOT_FOUND, _, _) => ProviderError::NotFound,
        (_, code, _) => ProviderError::Rejected {
            code: code.map(str::to_owned),
            message,
        },
    }
}

fn pair(key: impl Into<String>, value: impl Into<String>) -> (String, String) {
    (key.into(), value.into())
}

fn metadata(pairs: &[(String, String)]) -> impl Iterator<Item = (String, String)> + '_ {
    pairs
        .iter()
        .map(|(key, value)| pair(format!("metadata[{key}]"), value.clone()))
}

fn intent(value: &Value) -> Result<Intent, ProviderError> {
    Intent::from_json(value).map_err(|why| {
        ProviderError::Unavailable(format!(
            "Stripe answered an unreadable payment intent: {why}"
        ))
    })
}

impl Provider for StripeProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Stripe
    }

    fn webhook_secret(&self) -> Option<&Secret> {
        self.webhook_secret.as_ref()
    }

    fn create_intent<'a>(&'a self, request: &'a CreateIntent) -> Call<'a, Intent> {
        Box::pin(async move {
            let mut form = vec![
                pair("amount", request.amount.to_string()),
                pair("currency", request.currency.code().to_ascii_lowercase()),
                pair("capture_method", request.capture_method.as_str()),
            ];
            if let Some(method) = &request.payment_method {
                form.push(pair("payment_method", method.clone()));
            }
            form.extend(metadata(&request.metadata));
            let created = self
                .call(
                    Method::POST,
                    "/v1/payment_intents",
                    &form,
                    Some(&request.idempotency_key),
                )
                .await;
            match created {
                // Creating with an unknown payment method.
                Err(ProviderError::NotFound) if request.payment_method.is_some() => {
                    Err(ProviderError::InvalidPaymentMethod(
                        request.payment_method.clone().unwrap_or_default(),
                    ))
                }
                other => intent(&other?),
            }
        })
    }

    fn confirm_intent<'a>(
        &'a self,
        id: &'a str,
        payment_method: &'a str,
        key: &'a str,
    ) -> Call<'a, Intent> {
        Box::pin(async move {
            let path = format!("/v1/payment_intents/{id}");
            let current = intent(&self.call(Method::GET, &path, &[], None).await?)?;
            if current.payment_method.as_deref() != Some(payment_method) {
                let attach = [pair("payment_method", payment_method)];
                self.call(Method::POST, &path, &attach, Some(&format!("{key}-pm")))
                    .await
                    .map_err(|err| match err {
                        ProviderError::NotFound => {
                            ProviderError::InvalidPaymentMethod(payment_method.to_owned())
                        }
                        other => other,
                    })?;
            }
            let mut form = Vec::new();
            if let Some(url) = &self.return_url {
                form.push(pair("return_url", url.clone()));
            }
            let confirmed = self
                .call(
                    Method::POST,
                    &format!("{path}/confirm"),
                    &form,
                    Some(&format!("{key}-confirm")),
                )
                .await;
            match confirmed {
                Ok(value) => intent(&value),
                // A decline is an answer about the payment, not a failed call: the intent says
                // what happened (back to `requires_payment_method` with the error).
                Err(ProviderError::Rejected { .. }) | Err(ProviderError::NotFound) => {
                    let after = intent(&self.call(Method::GET, &path, &[], None).await?)?;
                    if after.last_error.is_some() {
                        Ok(after)
                    } else if after.payment_method.as_deref() == Some(payment_method)
                        && after.status == "requires_confirmation"
                    {
                        // Nothing happened: the provider could not use the payment method.
                        Err(ProviderError::InvalidPaymentMethod(
                            payment_method.to_owned(),
                        ))
                    } else {
                        Err(ProviderError::UnexpectedState(format!(
                            "the payment intent is {}",
                            after.status
                        )))
                    }
                }
                Err(other) => Err(other),
            }
        })
    }

    fn cancel_intent<'a>(
        &'a self,
        id: &'a str,
        reason: Option<CancellationReason>,
        key: &'a str,
    ) -> Call<'a, Intent> {
        Box::pin(async move {
            let form: Vec<(String, String)> = reason
                .map(|r| pair("cancellation_reason", r.as_str()))
                .into_iter()
                .collect();
            let path = format!("/v1/payment_intents/{id}/cancel");
            let canceled = self.call(Method::POST, &path, &form, Some(key)).await;
            self.state_change(id, canceled).await
        })
    }

    fn capture_intent<'a>(
        &'a self,
        id: &'a str,
        amount: Option<i64>,
        key: &'a str,
    ) -> Call<'a, Intent> {
        Box::pin(async move {
            let form: Vec<(String, String)> = amount
                .map(|a| pair("amount_to_capture", a.to_string()))
                .into_iter()
                .collect();
            let path = format!("/v1/payment_intents/{id}/capture");
            let captured = self.call(Method::POST, &path, &form, Some(key)).await;
            self.state_change(id, captured).await
        })
    }

    fn retrieve_intent<'a>(&'a self, id: &'a str) -> Call<'a, Intent> {
        Box::pin(async move {
            let path = format!("/v1/payment_intents/{id}");
            intent(&self.call(Method::GET, &path, &[], None).await?)
        })
    }

    fn create_refund<'a>(&'a self, request: &'a CreateRefund) -> Call<'a, RefundView> {
        Box::pin(async move {
            let mut form = vec![
                pair("payment_intent", request.payment_intent.clone()),
                pair("amount", request.amount.to_string()),
            ];
            if let Some(reason) = request.reason {
                form.push(pair("reason", reason.as_str()));
            }
            form.extend(metadata(&request.metadata));
            let created = self
                .call(
                    Method::POST,
                    "/v1/refunds",
                    &form,
                    Some(&request.idempotency_key),
                )
                .await?;
            RefundView::from_json(&created).map_err(ProviderError::Unavailable)
        })
    }

    fn retrieve_refund<'a>(&'a self, id: &'a str) -> Call<'a, RefundView> {
        Box::pin(async move {
            let path = format!("/v1/refunds/{id}");
            let value = self.call(Method::GET, &path, &[], None).await?;
            RefundView::from_json(&value).map_err(ProviderError::Unavailable)
        })
    }
}

impl StripeProvider {
    /// A cancel or capture answer; a refusal because of the intent's state is reported as
    /// such (Stripe says `payment_intent_unexpected_state`; localstripe only "Bad request").
    async fn state_change(
        &self,
        id: &str,
        answer: Result<Value, ProviderError>,
    ) -> Result<Intent, ProviderError> {
        match answer {
            Ok(value) => intent(&value),
            Err(ProviderError::Rejected { code: None, .. }) => {
                let now = self.retrieve_intent(id).await?;
                Err(ProviderError::UnexpectedState(format!(
                    "the payment intent is {}",
                    now.status
                )))
            }
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stripe_errors_mean_what_they_say() {
        let error = |status: u16, body: Value| {
            error_for(StatusCode::from_u16(status).unwrap(), &body, "POST /v1/x")
        };
        assert!(matches!(
            error(503, Value::Null),
            ProviderError::Unavailable(_)
        ));
        assert!(matches!(
            error(429, Value::Null),
            ProviderError::Unavailable(_)
        ));
        assert_eq!(
            error(409, json!({"error": {"code": "idempotency_key_in_use"}})),
            ProviderError::InFlight
        );
        assert!(matches!(
            error(
                400,
                json!({"error": {"code": "payment_intent_unexpected_state", "message": "m"}})
            ),
            ProviderError::UnexpectedState(_)
        ));
        assert!(matches!(
            error(
                400,
                json!({"error": {"code": "resource_missing", "param": "payment_method"}})
            ),
            ProviderError::InvalidPaymentMethod(_)
        ));
        assert_eq!(error(404, json!({"error": {}})), ProviderError::NotFound);
        assert!(matches!(
            error(400, json!({"error": {"message": "Bad request"}})),
            ProviderError::Rejected { code: None, .. }
        ));
    }
}
