//! Paid seats through the payments service: creating a registration's payment and refunding
//! it, as this service (a service token from auth through `identity::ServiceClient`). Both calls
//! are idempotent on the payments side (the key is the registration's id), so a retry after a
//! lost answer never makes a second payment or refund.

use std::sync::Arc;

use identity::ServiceClient;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

/// The payments service, as this service calls it.
#[derive(Clone)]
pub struct Payments {
    client: Arc<ServiceClient>,
    base: String,
}

/// The part of a payment this service keeps.
#[derive(Debug, Clone, Deserialize)]
pub struct Payment {
    pub id: Uuid,
    pub client_secret: Option<String>,
    pub status: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("payments cannot be reached: {0}")]
    Unreachable(#[from] identity::client::CallError),
    #[error("payments answered {status}: {body}")]
    Refused { status: u16, body: String },
}

impl Payments {
    pub fn new(client: Arc<ServiceClient>, base: &str) -> Self {
        Payments {
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The payment for `registration` (the same one on every call).
    pub async fn create(
        &self,
        registration: Uuid,
        user: Uuid,
        amount: i64,
        currency: &str,
        description: &str,
    ) -> Result<Payment, PaymentsError> {
        let body = json!({
            "amount": amount,
            "currency": currency,
            "description": description,
            "reference": {"service": "events", "id": registration.to_string()},
            "user": user,
        });
        let url = format!("{}/payments", self.base);
        let key = registration.to_string();
        let response = self
            .client
            .send(|http| http.post(&url).header("idempotency-key", &key).json(&body))
            .await?;
        read(response).await
    }

    /// Refunds everything still refundable of `payment` (once per registration and payment).
    pub async fn refund(&self, payment: Uuid, registration: Uuid) -> Result<(), PaymentsError> {
        let url = format!("{}/payments/{payment}/refunds", self.base);
        let key = format!("refund-{registration}-{payment}");
        let body = json!({"reason": "requested_by_customer"});
        let response = self
            .client
            .send(|http| http.post(&url).header("idempotency-key", &key).json(&body))
            .await?;
        let status = response.status();
        // 409/422 `refund_exceeds_available` / nothing refundable: already refunded in full.
        if status.is_success() || status.as_u16() == 422 || status.as_u16() == 409 {
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                tracing::warn!(%payment, %status, answer = %text, "refund refused; taking it as done");
            }
            return Ok(());
        }
        Err(PaymentsError::Refused {
            status: status.as_u16(),
            body: response.text().await.unwrap_or_default(),
        })
    }
}

async fn read(response: reqwest::Response) -> Result<Payment, PaymentsError> {
    let status = response.status();
    if !status.is_success() {
        return Err(PaymentsError::Refused {
            status: status.as_u16(),
            body: response.text().await.unwrap_or_default(),
        });
    }
    response
        .json::<Payment>()
        .await
        .map_err(|err| PaymentsError::Refused {
            status: status.as_u16(),
            body: format!("not a payment: {err}"),
        })
}
