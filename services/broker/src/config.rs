//! The broker's own settings: the `[app]` section of its config file, or `BROKER__APP__<KEY>`
//! in the environment (nested keys with `__`, e.g.
//! `BROKER__APP__SERVICES__NOTIFICATIONS__AUTHORIZATION=owner`).
//!
//! `services` plays the part of socketshark's `SERVICES`, `authentication` of its
//! `AUTHENTICATION`, `callbacks` of its `HTTP` options and `ping` of `WS_PING`; periods are
//! written as durations (`"300s"`) instead of numbers of seconds.

use std::collections::BTreeMap;
use std::time::Duration;

pub use identity::ClientCredentials;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Prepended to every Redis channel name (socketshark's `REDIS.channel_prefix`):
    /// publishers must use the same one.
    pub channel_prefix: String,
    pub limits: Limits,
    pub ping: Ping,
    pub redis: RedisLink,
    pub callbacks: Callbacks,
    pub authentication: Authentication,
    /// Subscription prefixes clients may use (`<service>.<topic>`), with their rules.
    pub services: BTreeMap<String, ServiceConfig>,
}

/// What a slow client (one whose outgoing queue is full) gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SlowClient {
    /// Close the connection: the client reconnects and resubscribes (the default).
    #[default]
    Disconnect,
    /// Drop the oldest queued message to make room: the client stays but misses messages.
    DropOldest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open websocket connections per process; more are refused with 503.
    pub max_connections: usize,
    /// Largest frame (and message) a client may send, in bytes; a larger one closes the
    /// connection with code 1009.
    pub max_frame_bytes: usize,
    /// Subscriptions one connection may hold; one more is refused with `Too many
    /// subscriptions.`.
    pub max_subscriptions: usize,
    /// Messages waiting to be written to one client.
    pub outgoing_queue: usize,
    pub slow_client: SlowClient,
    /// Client events received but not yet handled (while a callback runs); past this the
    /// broker stops reading from that client until it catches up.
    pub pending_events: usize,
    /// A write to a client that makes no progress for this long closes the connection.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Bytes of each connection's read buffer (tungstenite's, eagerly allocated). Client frames
    /// are small; a bigger one grows the buffer to its size.
    pub read_buffer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 50_000,
            max_frame_bytes: 64 * 1024,
            max_subscriptions: 1_000,
            outgoing_queue: 1_024,
            slow_client: SlowClient::Disconnect,
            pending_events: 64,
            write_timeout: Duration::from_secs(10),
            read_buffer_bytes: 256,
        }
    }
}

/// Server-side websocket pings (socketshark's `WS_PING`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Ping {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A client that has not answered a ping within this is disconnected.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Ping {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(15),
        }
    }
}

/// The pub/sub connection (its URL is the shared `redis.url` setting).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisLink {
    /// Ping Redis this often over the pub/sub connection, to notice a dead link.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// No answer within this = the link is dead: reconnect.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Reconnection backoff starts here and doubles up to `reconnect_max_delay`.
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// How long a `subscribe` waits for Redis to confirm the channel before answering anyway.
    #[serde(with = "humantime_serde")]
    pub subscribe_timeout: Duration,
}

impl Default for RedisLink {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            reconnect_min_delay: Duration::from_millis(100),
            reconnect_max_delay: Duration::from_secs(5),
            subscribe_timeout: Duration::from_secs(5),
        }
    }
}

/// HTTP calls to services (ticket validation, authorizers, subscription callbacks): one pooled
/// client, as socketshark's `HTTP` options.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Callbacks {
    /// Per attempt.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before answering `Service unavailable.`.
    pub tries: u32,
    /// Pause between attempts (a 429 waits for its rate-limit header instead).
    #[serde(with = "humantime_serde")]
    pub wait: Duration,
    /// Headers holding the seconds to wait after a 429, first present wins.
    pub rate_limit_reset_headers: Vec<String>,
}

impl Default for Callbacks {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(15),
            tries: 3,
            wait: Duration::from_secs(3),
            rate_limit_reset_headers: vec!["X-Rate-Limit-Reset".into(), "Retry-After".into()],
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Authentication {
    /// `{"event":"auth","method":"ticket"}`; unset = that method is unsupported.
    pub ticket: Option<TicketAuth>,
    /// `{"event":"auth","method":"jwt"}`: access tokens verified locally with kit's `auth`
    /// settings (enabled by default).
    pub jwt: JwtAuth,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketAuth {
    /// Where tickets are exchanged (auth's `POST /api/auth/v1/tickets/validate`).
    pub validation_url: String,
    /// Fields of a successful validation kept as the session's auth fields.
    #[serde(default = "default_auth_fields")]
    pub auth_fields: Vec<String>,
    /// OAuth client credentials: the broker then presents a service token (client-credentials
    /// grant) to the validation endpoint, as auth's requires. Unset = no `Authorization`.
    #[serde(default)]
    pub client: Option<ClientCredentials>,
}

fn default_auth_fields() -> Vec<String> {
    vec!["user_id".into(), "session_id".into(), "roles".into()]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtAuth {
    /// Offer the method (the verification settings are kit's `auth` section).
    pub enabled: bool,
}

impl Default for JwtAuth {
    fn default() -> Self {
        Self { enabled: true }
    }
}

/// One subscription prefix, as an entry of socketshark's `SERVICES`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Anonymous sessions are refused with `Authentication required.`.
    #[serde(default = "yes")]
    pub require_authentication: bool,
    /// A built-in rule checked without any HTTP call: `public`, `owner` (the topic ends with
    /// the subscriber's user UUID, e.g. `user_<uuid>`) or `role:<name>`.
    #[serde(default)]
    pub authorization: Option<String>,
    /// URL asked to authorize each subscription (after the built-in rule, if both are set).
    #[serde(default)]
    pub authorizer: Option<String>,
    /// Fields of the authorizer's answer passed on to the later callbacks.
    #[serde(default)]
    pub authorizer_fields: Vec<String>,
    /// Ask the authorizer again this often; a refusal unsubscribes with `Unauthorized.`.
    #[serde(default, with = "humantime_serde")]
    pub authorization_renewal_period: Option<Duration>,
    /// Each renewal comes up to this much earlier, spreading them out.
    #[serde(default, with = "humantime_serde")]
    pub authorization_renewal_jitter: Option<Duration>,
    /// Client fields kept with a subscription, echoed in replies and messages and passed to
    /// every callback.
    #[serde(default)]
    pub extra_fields: Vec<String>,
    /// Fields a published message may carry to reach only matching sessions.
    #[serde(default)]
    pub filter_fields: Vec<String>,
    #[serde(default)]
    pub before_subscribe: Option<String>,
    #[serde(default)]
    pub on_subscribe: Option<String>,
    #[serde(default)]
    pub on_message: Option<String>,
    #[serde(default)]
    pub before_unsubscribe: Option<String>,
    #[serde(default)]
    pub on_unsubscribe: Option<String>,
    #[serde(default)]
    pub on_authorization_change: Option<String>,
    #[serde(default)]
    pub on_heartbeat: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat_period: Option<Duration>,
}

fn yes() -> bool {
    true
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            require_authentication: true,
            authorization: None,
            authorizer: None,
            authorizer_fields: Vec::new(),
            authorization_renewal_period: None,
            authorization_renewal_jitter: None,
            extra_fields: Vec::new(),
            filter_fields: Vec::new(),
            before_subscribe: None,
            on_subscribe: None,
            on_message: None,
            before_unsubscribe: None,
            on_unsubscribe: None,
            on_authorization_change: None,
            on_heartbeat: None,
            heartbeat_period: None,
        }
    }
}
