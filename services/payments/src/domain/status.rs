//! The status machine of a payment (Stripe's PaymentIntent, plus `failed`) and of a refund.
//!
//! [`PaymentStatus::can_move_to`] is the one transition table: every change of a payment's
//! status, whatever caused it (an API call, a provider's webhook, reconciliation), goes through
//! it. Statuses only move forward, so an older event arriving late never moves a payment back,
//! and terminal statuses never change.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "must be one of {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(text: String) -> Result<Self, String> {
                text.parse()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Where a payment is.
    PaymentStatus {
        /// Created; waiting for a payment method.
        RequiresPaymentMethod = "requires_payment_method",
        /// Has a payment method; waiting for confirmation.
        RequiresConfirmation = "requires_confirmation",
        /// The paying user must authenticate (3-D Secure) before it can go on.
        RequiresAction = "requires_action",
        /// The provider is working on it.
        Processing = "processing",
        /// Authorized; waiting for a manual capture.
        RequiresCapture = "requires_capture",
        /// Captured (terminal).
        Succeeded = "succeeded",
        /// Declined or failed authentication; nothing was charged (terminal).
        Failed = "failed",
        /// Canceled before it succeeded; nothing was charged (terminal).
        Canceled = "canceled",
    }
}

impl PaymentStatus {
    /// The transition table.
    pub fn can_move_to(self, to: PaymentStatus) -> bool {
        use PaymentStatus::*;
        match self {
            RequiresPaymentMethod => matches!(
                to,
                RequiresConfirmation
                    | RequiresAction
                    | Processing
                    | RequiresCapture
                    | Succeeded
                    | Failed
                    | Canceled
            ),
            RequiresConfirmation => matches!(
                to,
                RequiresAction | Processing | RequiresCapture | Succeeded | Failed | Canceled
            ),
            RequiresAction => matches!(
                to,
                Processing | RequiresCapture | Succeeded | Failed | Canceled
            ),
            Processing => matches!(to, RequiresCapture | Succeeded | Failed | Canceled),
            RequiresCapture => matches!(to, Succeeded | Failed | Canceled),
            Succeeded | Failed | Canceled => false,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::Failed | PaymentStatus::Canceled
        )
    }

    /// A payment method can be (re)given and the payment confirmed.
    pub fn is_confirmable(self) -> bool {
        matches!(
            self,
            PaymentStatus::RequiresPaymentMethod | PaymentStatus::RequiresConfirmation
        )
    }

    /// The payment can still be canceled (the provider does not cancel what it is processing).
    pub fn is_cancelable(self) -> bool {
        matches!(
            self,
            PaymentStatus::RequiresPaymentMethod
                | PaymentStatus::RequiresConfirmation
                | PaymentStatus::RequiresAction
                | PaymentStatus::RequiresCapture
        )
    }
}

text_enum! {
    /// Where a refund is.
    RefundStatus {
        /// Reserved on the payment and sent to the provider; not final yet.
        Pending = "pending",
        Succeeded = "succeeded",
        /// Its amount is refundable again.
        Failed = "failed",
    }
}

impl RefundStatus {
    pub fn can_move_to(self, to: RefundStatus) -> bool {
        self == RefundStatus::Pending && to != RefundStatus::Pending
    }
}

text_enum! {
    /// When the money is taken.
    CaptureMethod {
        /// On confirmation.
        Automatic = "automatic",
        /// Confirmation authorizes; `POST /payments/{id}/capture` takes the money.
        Manual = "manual",
    }
}

text_enum! {
    /// Why a payment was canceled (Stripe's reasons).
    CancellationReason {
        RequestedByCustomer = "requested_by_customer",
        Duplicate = "duplicate",
        Fraudulent = "fraudulent",
        Abandoned = "abandoned",
    }
}

text_enum! {
    /// Why a refund was made (Stripe's reasons).
    RefundReason {
        RequestedByCustomer = "requested_by_customer",
        Duplicate = "duplicate",
        Fraudulent = "fraudulent",
    }
}

text_enum! {
    /// A payment provider.
    ProviderName {
        /// Built in and deterministic by payment method, for local runs, the demo and tests.
        Test = "test",
        /// The Stripe API.
        Stripe = "stripe",
    }
}

text_enum! {
    /// What caused a change, as the history records it.
    Cause {
        /// A call to this service's API.
        Api = "api",
        /// A provider's webhook.
        Webhook = "webhook",
        /// The reconciliation task re-reading the provider.
        Reconciliation = "reconciliation",
        /// Seed data.
        Seed = "seed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order of the machine: every allowed move goes to a later status.
    fn rank(status: PaymentStatus) -> u8 {
        use PaymentStatus::*;
        match status {
            RequiresPaymentMethod => 0,
            RequiresConfirmation => 1,
            RequiresAction => 2,
            Processing => 3,
            RequiresCapture => 4,
            Succeeded | Failed | Canceled => 5,
        }
    }

    #[test]
    fn payments_only_move_forward_and_terminal_statuses_never_change() {
        for &from in PaymentStatus::ALL {
            assert!(!from.can_move_to(from), "{from} to itself is no move");
            for &to in PaymentStatus::ALL {
                if from.can_move_to(to) {
                    assert!(rank(to) > rank(from), "{from} -> {to} goes backwards");
                }
                if from.is_terminal() {
                    assert!(!from.can_move_to(to), "{from} is terminal");
                }
            }
        }
        use PaymentStatus::*;
        assert!(Processing.can_move_to(Succeeded));
        assert!(
            !Succeeded.can_move_to(Processing),
            "a late event never undoes success"
        );
        assert!(!RequiresAction.can_move_to(RequiresConfirmation));
        assert!(RequiresPaymentMethod.can_move_to(Failed));
        for &status in PaymentStatus::ALL {
            assert_eq!(status.as_str().parse::<PaymentStatus>(), Ok(status));
        }
    }

    #[test]
    fn refunds_settle_once() {
        use RefundStatus::*;
        assert!(Pending.can_move_to(Succeeded) && Pending.can_move_to(Failed));
        assert!(!Succeeded.can_move_to(Failed) && !Failed.can_move_to(Succeeded));
        assert!(!Pending.can_move_to(Pending));
    }
}
