//! The service's own settings: the `[app]` section of its config file, or
//! `EVENTS__APP__<KEY>` in the environment (`EVENTS__APP__HOLD`, ...).

use std::time::Duration;

use identity::ClientCredentials;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How long a paid seat is held for its registrant to pay.
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
    /// How long a waitlist offer of a paid seat stays open.
    #[serde(with = "humantime_serde")]
    pub offer: Duration,
    /// A hold is released this long after its deadline, so a payment made just in time whose
    /// news is still on its way is not refunded (it counts by the payment's own time).
    #[serde(with = "humantime_serde")]
    pub expiry_grace: Duration,
    /// How often expired holds are looked for.
    #[serde(with = "humantime_serde")]
    pub expiry_poll: Duration,
    /// How long after a check-in it can be annulled.
    #[serde(with = "humantime_serde")]
    pub annul_window: Duration,
    /// The public address links in mails and calendars point at.
    pub public_url: String,
    /// The payments service's API (`.../api/payments/v1`).
    pub payments_url: String,
    /// This service's client at auth, for its calls to payments. Without it, paid ticket types
    /// cannot be registered for (`payments_unavailable`).
    pub client: Option<ClientCredentials>,
    /// Prepended to the Redis channel of every realtime push; must match the broker's
    /// `channel_prefix` (tests use a unique one).
    pub realtime_prefix: String,
    /// Longest event description accepted, in characters.
    pub max_description_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(15 * 60),
            offer: Duration::from_secs(12 * 60 * 60),
            expiry_grace: Duration::from_secs(60),
            expiry_poll: Duration::from_secs(1),
            annul_window: Duration::from_secs(15 * 60),
            public_url: "http://127.0.0.1:8004".into(),
            payments_url: "http://127.0.0.1:8003/api/payments/v1".into(),
            client: None,
            realtime_prefix: String::new(),
            max_description_chars: 20_000,
        }
    }
}
