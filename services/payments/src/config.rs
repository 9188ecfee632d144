//! The service's own settings: the `[app]` section of its config file, or
//! `PAYMENTS__APP__<KEY>` in the environment (`PAYMENTS__APP__STRIPE__API_KEY`, ...).

use std::collections::BTreeMap;
use std::time::Duration;

use kit::Secret;
use serde::{Deserialize, Serialize};

use crate::domain::ProviderName;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where new payments are made: `test` (built in, deterministic; local runs, the demo and
    /// tests) or `stripe`. Existing payments stay with the provider that made them.
    pub provider: ProviderName,
    /// Largest amount of one payment, in major units of its currency: 1 000 000 EUR is
    /// 100 000 000 minor units, 1 000 000 JPY is 1 000 000, 1 000 000 KWD is 1 000 000 000.
    pub max_amount: u64,
    /// Per-currency exceptions to `max_amount` (major units), e.g. `{ JPY = 50000000 }`.
    pub max_amounts: BTreeMap<String, u64>,
    /// A provider's webhook is refused when its signature's timestamp is further than this from
    /// now (Stripe's own tolerance is 5 minutes).
    #[serde(with = "humantime_serde")]
    pub webhook_tolerance: Duration,
    /// Prepended to the Redis channel of every realtime push; must match the broker's
    /// `channel_prefix` (tests use a unique one).
    pub realtime_prefix: String,
    pub stripe: StripeConfig,
    pub test_provider: TestProviderConfig,
    pub reconcile: ReconcileConfig,
    pub webhooks: PartnerWebhooksConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            provider: ProviderName::Test,
            max_amount: 1_000_000,
            max_amounts: BTreeMap::new(),
            webhook_tolerance: Duration::from_secs(300),
            realtime_prefix: String::new(),
            stripe: StripeConfig::default(),
            test_provider: TestProviderConfig::default(),
            reconcile: ReconcileConfig::default(),
            webhooks: PartnerWebhooksConfig::default(),
        }
    }
}

/// The real Stripe API (or anything speaking it, such as localstripe).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    /// Secret API key (`sk_live_...` / `sk_test_...`): set it to enable the provider.
    pub api_key: Option<Secret>,
    pub api_base: String,
    /// Signing secret of the webhook endpoint registered at Stripe (`whsec_...`): without it,
    /// `/webhooks/stripe` refuses everything.
    pub webhook_secret: Option<Secret>,
    /// Each call to Stripe is abandoned after this long (and answered 503 to the client, who
    /// retries with the same `Idempotency-Key`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Where Stripe sends the customer back after a redirect-based authentication; sent on
    /// confirmation when set.
    pub return_url: Option<String>,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            api_base: "https://api.stripe.com".into(),
            webhook_secret: None,
            timeout: Duration::from_secs(20),
            return_url: None,
        }
    }
}

/// The built-in `test` provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestProviderConfig {
    /// Whether the provider can be used at all (never in production).
    pub enabled: bool,
    /// The secret its webhooks are signed with (and `/webhooks/test` verifies).
    pub webhook_secret: Secret,
    /// Where it sends its webhooks; default: this service's own `/webhooks/test` on
    /// `http.host`:`http.port`.
    pub webhook_url: Option<String>,
    /// Send webhooks at all (off, only reconciliation learns what the provider did).
    pub send_webhooks: bool,
    /// How long after a change its webhook is sent. A provider's webhooks arrive after its
    /// API's answer, as Stripe's do; the answer an API call got is applied first, and the
    /// webhook about it is then only a confirmation.
    #[serde(with = "humantime_serde")]
    pub webhook_delay: Duration,
}

impl Default for TestProviderConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            webhook_secret: Secret::new("whsec_hatchery_test_provider"),
            webhook_url: None,
            send_webhooks: true,
            webhook_delay: Duration::from_millis(500),
        }
    }
}

/// The background task that re-reads from the provider what stayed unfinished.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    pub enabled: bool,
    /// How often it looks.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A payment or refund is re-read once it has not changed for this long (and at most once
    /// per this period).
    #[serde(with = "humantime_serde")]
    pub age: Duration,
    /// Payments (and refunds) re-read per round.
    pub batch: u32,
    /// How long provider event ids are kept to recognise a redelivered webhook.
    #[serde(with = "humantime_serde")]
    pub event_retention: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            age: Duration::from_secs(5 * 60),
            batch: 100,
            event_retention: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Outgoing webhooks to partner endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartnerWebhooksConfig {
    /// How often due deliveries are looked for (a new event wakes the sender at once).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// How long an endpoint has to answer.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Wait before the first retry; doubled after each failed attempt.
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// The longest wait between two attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// A delivery is given up this long after its event.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// An endpoint is disabled after this many failed attempts in a row (an admin enables it
    /// again).
    pub disable_after: u32,
    /// Deliveries sent at the same time.
    pub concurrency: usize,
}

impl Default for PartnerWebhooksConfig {
    fn default() -> Self {
        Self {
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(6 * 3600),
            max_age: Duration::from_secs(3 * 24 * 3600),
            disable_after: 50,
            concurrency: 8,
        }
    }
}
