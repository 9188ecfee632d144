//! Events published by the payments service. Each names the payment's `reference`, so the
//! service that asked for the payment (events, for a paid seat) reacts without polling.
//!
//! Amounts are integer minor units of `currency` (an upper-case ISO 4217 code): `1250` `EUR` is
//! 12.50 EUR, `500` `JPY` is 500 JPY.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// What a payment pays for, named by the service that asked for it: `{"service": "events",
/// "id": "<registration id>"}`. Unique per source: one live payment per reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub service: String,
    pub id: String,
}

/// A payment succeeded: the money is captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    pub payment: Uuid,
    /// The paying user.
    pub user: Uuid,
    pub reference: Reference,
    pub amount: i64,
    pub currency: String,
    /// What was captured (the amount, or less after a partial manual capture).
    pub amount_captured: i64,
    pub succeeded_at: DateTime<Utc>,
}

impl Event for PaymentSucceeded {
    const TYPE: &'static str = "payments.payment.succeeded";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.payment)
    }
}

/// A payment failed for good (declined, authentication failed): nothing was charged. The
/// reference is free again for a new payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub payment: Uuid,
    pub user: Uuid,
    pub reference: Reference,
    pub amount: i64,
    pub currency: String,
    /// Why, as the provider says it (`insufficient_funds`, `generic_decline`, ...).
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub failed_at: DateTime<Utc>,
}

impl Event for PaymentFailed {
    const TYPE: &'static str = "payments.payment.failed";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.payment)
    }
}

/// A payment was canceled before it succeeded: nothing was charged (an authorization held for
/// a manual capture is released). The reference is free again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCanceled {
    pub payment: Uuid,
    pub user: Uuid,
    pub reference: Reference,
    pub amount: i64,
    pub currency: String,
    /// `requested_by_customer`, `duplicate`, `fraudulent`, `abandoned`, or none given.
    pub cancellation_reason: Option<String>,
    pub canceled_at: DateTime<Utc>,
}

impl Event for PaymentCanceled {
    const TYPE: &'static str = "payments.payment.canceled";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.payment)
    }
}

/// The paying user must act (authenticate with their bank, 3-D Secure) before the payment can
/// go on; the frontend completes it with the payment's `client_secret`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequiresAction {
    pub payment: Uuid,
    pub user: Uuid,
    pub reference: Reference,
    pub amount: i64,
    pub currency: String,
    pub requested_at: DateTime<Utc>,
}

impl Event for PaymentRequiresAction {
    const TYPE: &'static str = "payments.payment.requires_action";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.payment)
    }
}

/// A refund reached the paying user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundSucceeded {
    pub refund: Uuid,
    pub payment: Uuid,
    pub user: Uuid,
    pub reference: Reference,
    /// This refund's amount.
    pub amount: i64,
    pub currency: String,
    /// Everything refunded on the payment so far, this refund included.
    pub payment_amount_refunded: i64,
    pub succeeded_at: DateTime<Utc>,
}

impl Event for RefundSucceeded {
    const TYPE: &'static str = "payments.refund.succeeded";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.refund)
    }
}

/// A refund failed (the card was closed, ...): its amount can be refunded again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundFailed {
    pub refund: Uuid,
    pub payment: Uuid,
    pub user: Uuid,
    pub reference: Reference,
    pub amount: i64,
    pub currency: String,
    pub failure_reason: Option<String>,
    pub failed_at: DateTime<Utc>,
}

impl Event for RefundFailed {
    const TYPE: &'static str = "payments.refund.failed";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.refund)
    }
}

/// Every event type the payments service publishes (the types partner webhook endpoints can
/// subscribe to).
pub const EVENT_TYPES: [&str; 6] = [
    PaymentSucceeded::TYPE,
    PaymentFailed::TYPE,
    PaymentCanceled::TYPE,
    PaymentRequiresAction::TYPE,
    RefundSucceeded::TYPE,
    RefundFailed::TYPE,
];

/// The scope a service token needs to create payments (and confirm, cancel or capture them).
pub const SCOPE_CREATE: &str = "payments:create";
/// The scope a service token needs to read payments and refunds.
pub const SCOPE_READ: &str = "payments:read";
/// The scope a service token needs to refund payments.
pub const SCOPE_REFUND: &str = "payments:refund";
