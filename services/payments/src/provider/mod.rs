//! Payment providers: the [`Provider`] trait, the provider's view of a payment ([`Intent`]) and
//! of a refund ([`RefundView`]), and the webhook events they send.
//!
//! Both implementations speak Stripe's object shapes (PaymentIntent, Refund, Event): `stripe`
//! because it is Stripe, `test` because then one parser reads both and the built-in provider
//! behaves like the real one. Every mutating call carries an idempotency key derived from the
//! client's own (or from the payment's id), so a retried call never acts twice at the provider.
//!
//! Calls are made outside any database transaction of ours; what the provider did is applied
//! afterwards (`crate::apply`), and a crash in between is repaired by reconciliation.

pub mod stripe;
pub mod test;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use kit::Secret;
use serde_json::Value;

use crate::domain::{
    CancellationReason, CaptureMethod, Currency, PaymentStatus, ProviderName, RefundReason,
    RefundStatus,
};
use crate::store::payments::PaymentRow;
use crate::store::refunds::RefundRow;

pub use stripe::StripeProvider;
pub use test::TestProvider;

/// Why a provider call did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider does not know this payment method (a 422 for the client).
    #[error("unknown payment method: {0}")]
    InvalidPaymentMethod(String),
    /// The provider's object is not in a state allowing this (already paid, canceled...).
    #[error("the provider refused in this state: {0}")]
    UnexpectedState(String),
    /// The provider refused the request itself.
    #[error("the provider refused: {message}")]
    Rejected {
        code: Option<String>,
        message: String,
    },
    /// The same idempotency key is still being processed at the provider.
    #[error("the same request is still running at the provider")]
    InFlight,
    #[error("the provider has no such object")]
    NotFound,
    /// Unreachable, timed out, rate limited or failing: try again (with the same key).
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
}

/// The last error of an intent (a decline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
}

/// A payment as the provider sees it (Stripe's PaymentIntent).
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub id: String,
    /// Stripe's status string.
    pub status: String,
    pub amount: i64,
    /// What was captured, when the provider says (localstripe does not).
    pub amount_received: Option<i64>,
    pub client_secret: Option<String>,
    pub payment_method: Option<String>,
    pub last_error: Option<LastError>,
    pub next_action: Option<Value>,
    pub cancellation_reason: Option<String>,
    /// Our payment's id, from the metadata we created it with: how a webhook arriving before
    /// we recorded the provider's id finds its payment.
    pub our_payment: Option<uuid::Uuid>,
}

/// What the provider's view means for our payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub status: PaymentStatus,
    /// `None`: the provider does not say; the payment keeps its own figure (or, on success,
    /// the captured amount it asked for).
    pub amount_captured: Option<i64>,
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub next_action: Option<Value>,
    pub cancellation_reason: Option<String>,
}

fn string(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// A UUID we put in an object's metadata under `key`.
fn our_id(value: &Value, key: &str) -> Option<uuid::Uuid> {
    value
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
}

fn payment_method_id(value: &Value) -> Option<String> {
    match value.get("payment_method") {
        Some(Value::String(id)) => Some(id.clone()),
        Some(Value::Object(object)) => object.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl Intent {
    /// Reads a PaymentIntent object.
    pub fn from_json(value: &Value) -> Result<Intent, String> {
        let id = string(value, "id").ok_or("a payment intent without an id")?;
        let status = string(value, "status").ok_or("a payment intent without a status")?;
        let amount = value
            .get("amount")
            .and_then(Value::as_i64)
            .ok_or("a payment intent without an amount")?;
        let last_error = value
            .get("last_payment_error")
            .filter(|e| e.is_object())
            .map(|error| LastError {
                code: string(error, "code"),
                decline_code: string(error, "decline_code"),
                message: string(error, "message"),
            });
        Ok(Intent {
            id,
            status,
            amount,
            amount_received: value.get("amount_received").and_then(Value::as_i64),
            client_secret: string(value, "client_secret"),
            payment_method: payment_method_id(value),
            last_error,
            next_action: value.get("next_action").filter(|a| !a.is_null()).cloned(),
            cancellation_reason: string(value, "cancellation_reason"),
            our_payment: our_id(value, "hatchery_payment"),
        })
    }

    /// Our reading of the provider's status; `None` for a status we do not know.
    ///
    /// Stripe returns a declined intent to `requires_payment_method` with a
    /// `last_payment_error` (so another card can be tried); for us that attempt is over: the
    /// payment is `failed`, and the reference is free for a new one.
    pub fn observed(&self) -> Option<Observed> {
        let status = match self.status.as_str() {
            "requires_payment_method" if self.last_error.is_some() => PaymentStatus::Failed,
            "requires_payment_method" => PaymentStatus::RequiresPaymentMethod,
            "requires_confirmation" => PaymentStatus::RequiresConfirmation,
            "requires_action" => PaymentStatus::RequiresAction,
            "processing" => PaymentStatus::Processing,
            "requires_capture" => PaymentStatus::RequiresCapture,
            "succeeded" => PaymentStatus::Succeeded,
            "canceled" => PaymentStatus::Canceled,
            _ => return None,
        };
        let failed = status == PaymentStatus::Failed;
        let error = self.last_error.as_ref().filter(|_| failed);
        Some(Observed {
            status,
            amount_captured: if status == PaymentStatus::Succeeded {
                self.amount_received
            } else {
                None
            },
            decline_code: error.and_then(|e| e.decline_code.clone().or_else(|| e.code.clone())),
            failure_message: error.and_then(|e| e.message.clone()),
            next_action: self
                .next_action
                .clone()
                .filter(|_| status == PaymentStatus::RequiresAction),
            cancellation_reason: self.cancellation_reason.clone(),
        })
    }
}

/// A refund as the provider sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundView {
    pub id: String,
    pub status: RefundStatus,
    pub amount: i64,
    pub failure_reason: Option<String>,
    /// Our refund's id, from the metadata we created it with.
    pub our_refund: Option<uuid::Uuid>,
}

impl RefundView {
    /// Reads a Refund object (`pending` and `requires_action` are pending for us, `canceled`
    /// is a failure: the money did not go back).
    pub fn from_json(value: &Value) -> Result<RefundView, String> {
        let id = string(value, "id").ok_or("a refund without an id")?;
        let status = match value.get("status").and_then(Value::as_str) {
            Some("succeeded") => RefundStatus::Succeeded,
            Some("failed" | "canceled") => RefundStatus::Failed,
            Some("pending" | "requires_action") => RefundStatus::Pending,
            other => return Err(format!("a refund with an unknown status {other:?}")),
        };
        Ok(RefundView {
            id,
            status,
            amount: value.get("amount").and_then(Value::as_i64).unwrap_or(0),
            failure_reason: string(value, "failure_reason"),
            our_refund: our_id(value, "hatchery_refund"),
        })
    }
}

/// A webhook event (Stripe's Event).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderEvent {
    pub id: String,
    pub event_type: String,
    pub created: i64,
    pub object: EventObject,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventObject {
    Intent(Intent),
    Refund(RefundView),
    /// An object this service does not follow (customers, charges...): acknowledged, ignored.
    Other(String),
}

impl ProviderEvent {
    pub fn parse(body: &[u8]) -> Result<ProviderEvent, String> {
        let value: Value =
            serde_json::from_slice(body).map_err(|err| format!("not JSON: {err}"))?;
        let id = string(&value, "id").ok_or("an event without an id")?;
        let event_type = string(&value, "type").ok_or("an event without a type")?;
        let created = value.get("created").and_then(Value::as_i64).unwrap_or(0);
        let object = value
            .get("data")
            .and_then(|data| data.get("object"))
            .ok_or("an event without data.object")?;
        let object = match object.get("object").and_then(Value::as_str) {
            Some("payment_intent") => EventObject::Intent(Intent::from_json(object)?),
            Some("refund") => EventObject::Refund(RefundView::from_json(object)?),
            other => EventObject::Other(other.unwrap_or("unknown").to_owned()),
        };
        Ok(ProviderEvent {
            id,
            event_type,
            created,
            object,
        })
    }
}

/// What creating an intent needs.
#[derive(Debug, Clone)]
pub struct CreateIntent {
    pub amount: i64,
    pub currency: Currency,
    pub capture_method: CaptureMethod,
    pub payment_method: Option<String>,
    /// Our payment id and reference, so the provider's dashboard points back to us.
    pub metadata: Vec<(String, String)>,
    pub idempotency_key: String,
}

/// What creating a refund needs.
#[derive(Debug, Clone)]
pub struct CreateRefund {
    pub payment_intent: String,
    pub amount: i64,
    pub reason: Option<RefundReason>,
    pub metadata: Vec<(String, String)>,
    pub idempotency_key: String,
}

pub type Call<'a, T> = BoxFuture<'a, Result<T, ProviderError>>;

/// The provider-side idempotency key of an operation on a payment, from the client's scoped
/// key: the same request retried, the same key at the provider.
pub fn call_key(payment: uuid::Uuid, operation: &str, request_digest: &str) -> String {
    let digest = request_digest.get(..32).unwrap_or(request_digest);
    format!("hatchery-{payment}-{operation}-{digest}")
}

/// Creating the provider's side of `payment`: always the same key for the same payment, so a
/// retry or reconciliation after a crash finds the intent made the first time.
pub fn intent_request(payment: &PaymentRow) -> Result<CreateIntent, ProviderError> {
    let currency = Currency::parse(&payment.currency).map_err(|why| ProviderError::Rejected {
        code: Some("invalid_currency".into()),
        message: format!("the stored currency {}: {why}", payment.currency),
    })?;
    Ok(CreateIntent {
        amount: payment.amount,
        currency,
        capture_method: payment.capture_method,
        payment_method: payment.payment_method.clone(),
        metadata: vec![
            ("hatchery_payment".into(), payment.uuid.to_string()),
            (
                "reference_service".into(),
                payment.reference_service.clone(),
            ),
            ("reference_id".into(), payment.reference_id.clone()),
        ],
        idempotency_key: format!("hatchery-{}-create", payment.uuid),
    })
}

/// Creating `refund` at the provider, under a key of its own.
pub fn refund_request(payment: &PaymentRow, refund: &RefundRow) -> Option<CreateRefund> {
    Some(CreateRefund {
        payment_intent: payment.provider_payment_id.clone()?,
        amount: refund.amount,
        reason: refund.reason.as_deref().and_then(|r| r.parse().ok()),
        metadata: vec![
            ("hatchery_payment".into(), payment.uuid.to_string()),
            ("hatchery_refund".into(), refund.uuid.to_string()),
        ],
        idempotency_key: format!("hatchery-refund-{}", refund.uuid),
    })
}

/// A payment provider. Every mutating call takes an idempotency key: the same key gives the
/// same result without acting twice.
pub trait Provider: Send + Sync {
    fn name(&self) -> ProviderName;
    /// The secret its webhooks are signed with (`None`: webhooks are refused).
    fn webhook_secret(&self) -> Option<&Secret>;
    fn create_intent<'a>(&'a self, request: &'a CreateIntent) -> Call<'a, Intent>;
    /// Attaches `payment_method` and confirms.
    fn confirm_intent<'a>(
        &'a self,
        id: &'a str,
        payment_method: &'a str,
        key: &'a str,
    ) -> Call<'a, Intent>;
    fn cancel_intent<'a>(
        &'a self,
        id: &'a str,
        reason: Option<CancellationReason>,
        key: &'a str,
    ) -> Call<'a, Intent>;
    /// Captures `amount` (all when `None`) of an authorized intent.
    fn capture_intent<'a>(
        &'a self,
        id: &'a str,
        amount: Option<i64>,
        key: &'a str,
    ) -> Call<'a, Intent>;
    fn retrieve_intent<'a>(&'a self, id: &'a str) -> Call<'a, Intent>;
    fn create_refund<'a>(&'a self, request: &'a CreateRefund) -> Call<'a, RefundView>;
    fn retrieve_refund<'a>(&'a self, id: &'a str) -> Call<'a, RefundView>;
}

/// The providers this instance can use, and the one new payments go to.
#[derive(Clone)]
pub struct Providers {
    pub default: ProviderName,
    pub test: Option<Arc<TestProvider>>,
    pub stripe: Option<Arc<StripeProvider>>,
}

impl Providers {
    pub fn get(&self, name: ProviderName) -> Option<&dyn Provider> {
        match name {
            ProviderName::Test => self.test.as_deref().map(|p| p as &dyn Provider),
            ProviderName::Stripe => self.stripe.as_deref().map(|p| p as &dyn Provider),
        }
    }

    /// The provider of new payments (present: checked at start).
    pub fn default_provider(&self) -> Option<&dyn Provider> {
        self.get(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_declined_intent_is_a_failed_payment() {
        let declined = Intent::from_json(&json!({
            "id": "pi_1", "object": "payment_intent", "status": "requires_payment_method",
            "amount": 100, "last_payment_error": {"code": "card_declined",
            "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."}
        }))
        .unwrap();
        let observed = declined.observed().unwrap();
        assert_eq!(observed.status, PaymentStatus::Failed);
        assert_eq!(observed.decline_code.as_deref(), Some("insufficient_funds"));
        let fresh = Intent::from_json(&json!({"id": "pi_2", "status": "requires_payment_method",
            "amount": 100, "last_payment_error": null}))
        .unwrap();
        assert_eq!(
            fresh.observed().unwrap().status,
            PaymentStatus::RequiresPaymentMethod
        );
        let odd =
            Intent::from_json(&json!({"id": "pi_3", "status": "teleported", "amount": 1})).unwrap();
        assert_eq!(odd.observed(), None);
    }

    #[test]
    fn events_carry_their_object() {
        let body = json!({"id": "evt_1", "type": "refund.updated", "created": 5,
            "data": {"object": {"id": "re_1", "object": "refund", "status": "failed",
            "amount": 40, "failure_reason": "expired_or_canceled_card"}}});
        let event = ProviderEvent::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            event.object,
            EventObject::Refund(RefundView {
                id: "re_1".into(),
                status: RefundStatus::Failed,
                amount: 40,
                failure_reason: Some("expired_or_canceled_card".into()),
                our_refund: None,
            })
        );
        assert!(ProviderEvent::parse(b"{}").is_err());
        assert!(ProviderEvent::parse(b"not json").is_err());
    }
}
