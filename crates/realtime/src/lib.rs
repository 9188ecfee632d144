//! How a service pushes a message to websocket clients: a Redis `PUBLISH` on the topic's channel,
//! in the message format the broker (and socketshark before it) reads.
//!
//! ```ignore
//! let publisher = realtime::Publisher::connect(&redis_url, "events")?;
//! publisher
//!     .publish("event_0190c7a4", &json!({"seats_left": 3}), PublishOptions::new().order(17.0))
//!     .await?;
//! ```
//!
//! The channel is `<prefix><service>.<topic>` and the payload
//! `{"subscription": "<service>.<topic>", "data": ..., "options": {...}?, "published_at": ...,
//! "request_id": ..., <filter fields>}`. `published_at` (RFC 3339, microseconds) lets the broker
//! measure publish-to-send latency; `request_id` is the id of the request being handled
//! ([`kit::request_id::current`]) so a push can be traced back to what caused it.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Top-level keys of a published message that are not filter fields.
pub const RESERVED_FIELDS: [&str; 5] = [
    "subscription",
    "data",
    "options",
    "published_at",
    "request_id",
];

/// Longest topic name accepted (the part after `<service>.`).
pub const MAX_TOPIC_LEN: usize = 200;

/// A message as it travels on a Redis channel to the broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<D = Value> {
    /// `<service>.<topic>`: the subscription the message is for.
    pub subscription: String,
    /// What subscribed clients receive as `data`.
    pub data: D,
    #[serde(default, skip_serializing_if = "Options::is_empty")]
    pub options: Options,
    /// When the publisher sent it (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<String>,
    /// The request that caused it, for tracing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Filter fields: the message only reaches sessions whose value of each field (from the
    /// subscription's extra fields or the session's auth fields) equals the given one.
    #[serde(flatten)]
    pub filters: Map<String, Value>,
}

/// Delivery options, applied by the broker per subscription (as socketshark does).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    /// Messages with an order lower than or equal to the highest one already delivered (for
    /// the same `order_key`) are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_key: Option<String>,
    /// Seconds: at most one message per period (per `throttle_key`) reaches a subscriber; the
    /// latest one held back is delivered when the period ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle_key: Option<String>,
}

impl Options {
    pub fn is_empty(&self) -> bool {
        self.order.is_none()
            && self.order_key.is_none()
            && self.throttle.is_none()
            && self.throttle_key.is_none()
    }
}

/// What [`Publisher::publish`] takes besides the topic and the data.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PublishOptions {
    pub order: Option<f64>,
    pub order_key: Option<String>,
    pub throttle: Option<Duration>,
    pub throttle_key: Option<String>,
    pub filters: Map<String, Value>,
}

impl PublishOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Drop this message at subscribers that already got one with a higher or equal order.
    pub fn order(mut self, order: f64) -> Self {
        self.order = Some(order);
        self
    }

    /// Keeps an independent order per key (e.g. `call_1.status` and `call_1.note`).
    pub fn order_key(mut self, key: impl Into<String>) -> Self {
        self.order_key = Some(key.into());
        self
    }

    /// At most one message per `period` reaches each subscriber; the last one is not lost.
    pub fn throttle(mut self, period: Duration) -> Self {
        self.throttle = Some(period);
        self
    }

    pub fn throttle_key(mut self, key: impl Into<String>) -> Self {
        self.throttle_key = Some(key.into());
        self
    }

    /// Only sessions whose `field` (an extra field of the subscription or an auth field such as
    /// `user_id`) equals `value` receive the message. The broker must list `field` in the
    /// service's `filter_fields`.
    pub fn filter(mut self, field: impl Into<String>, value: impl Into<Value>) -> Self {
        self.filters.insert(field.into(), value.into());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid topic {0:?}: expected 1 to {MAX_TOPIC_LEN} characters without whitespace")]
    InvalidTopic(String),
    #[error("invalid service name {0:?}: expected letters, digits, '_' or '-'")]
    InvalidService(String),
    #[error("filter field {0:?} is reserved by the message format")]
    ReservedField(String),
    #[error("throttle period must be positive")]
    InvalidThrottle,
    #[error("order must be a finite number")]
    InvalidOrder,
    #[error("cannot connect to Redis: {0}")]
    Connect(String),
    #[error("cannot encode the message data: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("cannot publish to Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Publishes a service's realtime messages. Cheap to clone: clones share one Redis connection
/// (reconnected automatically).
#[derive(Clone)]
pub struct Publisher {
    redis: ConnectionManager,
    prefix: String,
    service: String,
}

impl Publisher {
    /// Publishes as `service` (the first part of every topic) through Redis at `url`, over
    /// kit's shared connection (connects on first use, reconnects by itself).
    pub fn connect(url: &kit::SecretUrl, service: &str) -> Result<Self, Error> {
        let redis = kit::redis::connect(url).map_err(|err| Error::Connect(format!("{err:#}")))?;
        Self::new(redis, service)
    }

    /// Publishes over an existing connection as `service`.
    pub fn new(redis: ConnectionManager, service: &str) -> Result<Self, Error> {
        validate_service(service)?;
        Ok(Self {
            redis,
            prefix: String::new(),
            service: service.to_owned(),
        })
    }

    /// Prepends `prefix` to every channel name: it must match the broker's `channel_prefix`
    /// (tests use a unique one to stay out of each other's way).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// `<service>.<topic>`: what clients subscribe to.
    pub fn subscription(&self, topic: &str) -> Result<String, Error> {
        validate_topic(topic)?;
        Ok(format!("{}.{topic}", self.service))
    }

    /// The Redis channel and payload [`Self::publish`] sends, stamped now and with the current
    /// request id.
    pub fn encode<D: Serialize + ?Sized>(
        &self,
        topic: &str,
        data: &D,
        options: PublishOptions,
    ) -> Result<(String, String), Error> {
        let subscription = self.subscription(topic)?;
        if let Some(field) = options
            .filters
            .keys()
            .find(|field| RESERVED_FIELDS.contains(&field.as_str()))
        {
            return Err(Error::ReservedField(field.clone()));
        }
        let throttle = match options.throttle {
            Some(period) if period.is_zero() => return Err(Error::InvalidThrottle),
            Some(period) => Some(period.as_secs_f64()),
            None => None,
        };
        if options.order.is_some_and(|order| !order.is_finite()) {
            return Err(Error::InvalidOrder);
        }
        let envelope = Envelope {
            subscription: subscription.clone(),
            data,
            options: Options {
                order: options.order,
                order_key: options.order_key,
                throttle,
                throttle_key: options.throttle_key,
            },
            published_at: Some(
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
            request_id: kit::request_id::current(),
            filters: options.filters,
        };
        let payload = serde_json::to_string(&envelope)?;
        Ok((format!("{}{subscription}", self.prefix), payload))
    }

    /// Sends `data` to every client subscribed to `<service>.<topic>`, on every broker
    /// process. Returns how many Redis subscribers (broker processes listening to that topic)
    /// received it: 0 means nobody is subscribed right now, which is not an error (realtime
    /// pushes are fire-and-forget).
    pub async fn publish<D: Serialize + ?Sized>(
        &self,
        topic: &str,
        data: &D,
        options: PublishOptions,
    ) -> Result<usize, Error> {
        let (channel, payload) = self.encode(topic, data, options)?;
        let mut redis = self.redis.clone();
        let receivers: usize = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg(&payload)
            .query_async(&mut redis)
            .await?;
        Ok(receivers)
    }
}

fn validate_service(service: &str) -> Result<(), Error> {
    let ok = !service.is_empty()
        && service.len() <= 64
        && service
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidService(service.to_owned()))
    }
}

fn validate_topic(topic: &str) -> Result<(), Error> {
    let ok = !topic.is_empty()
        && topic.chars().count() <= MAX_TOPIC_LEN
        && !topic.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidTopic(topic.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_and_services_are_validated() {
        assert!(validate_topic("user_0193a000-0000-7000-8000-000000000001").is_ok());
        assert!(validate_topic("a.b.c").is_ok());
        for bad in ["", "has space", "tab\there", &"x".repeat(MAX_TOPIC_LEN + 1)] {
            assert!(validate_topic(bad).is_err(), "{bad:?}");
        }
        assert!(validate_service("events").is_ok());
        for bad in ["", "a.b", "white space"] {
            assert!(validate_service(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn options_serialize_only_what_is_set() {
        let options = Options {
            order: Some(2.0),
            ..Options::default()
        };
        assert_eq!(
            serde_json::to_value(&options).unwrap(),
            serde_json::json!({"order": 2.0})
        );
        assert!(Options::default().is_empty());
    }
}
