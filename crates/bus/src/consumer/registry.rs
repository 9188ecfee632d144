//! The handlers of one service and what a delivery's body comes to, without any I/O: a
//! handler call ready for its transaction, or a reason to park the message at once.
//!
//! [`Consumers::dispatch`] decides, in this order: not JSON → `invalid_json`; not a
//! CloudEvents 1.0 envelope → `not_cloudevent`; a typed handler for the `type` but not for its
//! `dataversion` → `unsupported_dataversion`; `data` not matching the typed handler's payload →
//! `invalid_data`; no typed handler and no pattern matching the `type` → `unknown_type`. A
//! typed handler wins over a pattern; a pattern handler takes any `dataversion` and raw `data`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use contracts::Event;
use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::envelope::{self, CloudEvent, Rejection};

/// The transaction a handler runs in (together with the inbox row).
pub type Tx = Transaction<'static, Postgres>;

/// An event as a handler receives it: the envelope's attributes and the typed `data`.
#[derive(Debug, Clone)]
pub struct Received<E> {
    pub id: Uuid,
    pub event_type: String,
    pub source: String,
    pub time: Option<DateTime<Utc>>,
    pub subject: Option<String>,
    pub dataversion: u32,
    /// The request that caused the event; also the current request id while the handler
    /// runs, so events it enqueues carry it on.
    pub requestid: Option<String>,
    pub actor: Option<Uuid>,
    /// This run: 1 the first time, up to `max_attempts`.
    pub attempt: u32,
    pub data: E,
}

impl<E> Received<E> {
    fn from_envelope(event: CloudEvent, data: E, attempt: u32) -> Self {
        Received {
            id: event.id,
            dataversion: event.version(),
            event_type: event.event_type,
            source: event.source,
            time: event.time,
            subject: event.subject,
            requestid: event.requestid,
            actor: event.actor,
            attempt,
            data,
        }
    }
}

/// A handler call with its event decoded, waiting for its transaction.
pub(crate) trait Prepared: Send + Sync {
    fn call<'a>(self: Box<Self>, tx: &'a mut Tx) -> BoxFuture<'a, anyhow::Result<()>>;
}

struct Call<E, F> {
    handler: Arc<F>,
    event: Received<E>,
}

impl<E, F> Prepared for Call<E, F>
where
    E: Send + Sync + 'static,
    F: for<'a> Fn(&'a mut Tx, Received<E>) -> BoxFuture<'a, anyhow::Result<()>>
        + Send
        + Sync
        + 'static,
{
    fn call<'a>(self: Box<Self>, tx: &'a mut Tx) -> BoxFuture<'a, anyhow::Result<()>> {
        (self.handler)(tx, self.event)
    }
}

/// Decodes `data` for one registered handler.
type Decoder = Arc<dyn Fn(CloudEvent, u32) -> Result<Box<dyn Prepared>, Rejection> + Send + Sync>;

/// What a delivery is logged and counted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventInfo {
    pub id: Uuid,
    pub event_type: String,
    /// The request that caused the event.
    pub request_id: Option<String>,
    /// This run: the failed runs recorded on the message, plus one.
    pub attempt: u32,
    /// The metric label: the type when a handler knows it, else `unknown` (a flood of made-up
    /// types must not blow up the metrics).
    pub label: String,
}

impl EventInfo {
    /// The `event` span a delivery is handled in: searching the request id finds the HTTP
    /// request that caused the event and every consumer that handled it.
    pub(crate) fn span(&self) -> tracing::Span {
        let span = tracing::info_span!(
            "event",
            event_id = %self.id,
            event_type = %self.event_type,
            request_id = tracing::field::Empty,
            attempt = self.attempt,
        );
        if let Some(request_id) = &self.request_id {
            span.record("request_id", request_id.as_str());
        }
        span
    }
}

/// What a delivery's body comes to.
pub(crate) enum Dispatch {
    /// Not an event at all (not JSON, not a CloudEvent): park it.
    Unreadable(Rejection),
    /// An event no handler takes (type, `dataversion` or `data`): park it.
    Rejected(EventInfo, Rejection),
    /// A handler call, ready for its transaction.
    Handle(EventInfo, Box<dyn Prepared>),
}

/// The handlers of one service, by event type (and `dataversion`) or routing pattern.
///
/// ```ignore
/// let consumers = bus::Consumers::new()
///     .on::<contracts::auth::UserRegistered, _>(|tx, event| Box::pin(async move {
///         sqlx::query("INSERT INTO users ...").bind(event.data.user).execute(&mut **tx).await?;
///         Ok(())
///     }));
/// ```
#[derive(Default, Clone)]
pub struct Consumers {
    typed: HashMap<String, HashMap<u32, Decoder>>,
    patterns: Vec<(String, Decoder)>,
}

impl Consumers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles events of type `E::TYPE` with `dataversion` `E::DATAVERSION`. To accept two
    /// versions of one type during a migration, register a handler for each.
    ///
    /// # Panics
    /// When a handler for this type and version is registered already (a programming error,
    /// found at start).
    pub fn on<E, F>(mut self, handler: F) -> Self
    where
        E: Event,
        F: for<'a> Fn(&'a mut Tx, Received<E>) -> BoxFuture<'a, anyhow::Result<()>>
            + Send
            + Sync
            + 'static,
    {
        let handler = Arc::new(handler);
        let decoder: Decoder = Arc::new(move |mut event: CloudEvent, attempt| {
            let data = serde_json::from_value::<E>(event.data.take())
                .map_err(|err| Rejection::InvalidData(err.to_string()))?;
            Ok(Box::new(Call {
                handler: handler.clone(),
                event: Received::from_envelope(event, data, attempt),
            }) as Box<dyn Prepared>)
        });
        let previous = self
            .typed
            .entry(E::TYPE.to_owned())
            .or_default()
            .insert(E::DATAVERSION, decoder);
        assert!(
            previous.is_none(),
            "two handlers for {} dataversion {}",
            E::TYPE,
            E::DATAVERSION
        );
        self
    }

    /// Handles every event whose type matches the topic `pattern` (`*` one word, `#` any
    /// number) and has no typed handler, with its `data` as raw JSON and any `dataversion`.
    ///
    /// # Panics
    /// When `pattern` is not a valid topic pattern.
    pub fn on_pattern<F>(mut self, pattern: &str, handler: F) -> Self
    where
        F: for<'a> Fn(&'a mut Tx, Received<Value>) -> BoxFuture<'a, anyhow::Result<()>>
            + Send
            + Sync
            + 'static,
    {
        assert!(
            is_valid_pattern(pattern),
            "not a topic pattern: {pattern:?}"
        );
        let handler = Arc::new(handler);
        let decoder: Decoder = Arc::new(move |mut event: CloudEvent, attempt| {
            let data = event.data.take();
            Ok(Box::new(Call {
                handler: handler.clone(),
                event: Received::from_envelope(event, data, attempt),
            }) as Box<dyn Prepared>)
        });
        self.patterns.push((pattern.to_owned(), decoder));
        self
    }

    /// Whether no handler is registered.
    pub fn is_empty(&self) -> bool {
        self.typed.is_empty() && self.patterns.is_empty()
    }

    /// The routing keys the service queue is bound with.
    pub fn routing_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.typed.keys().cloned().collect();
        keys.extend(self.patterns.iter().map(|(p, _)| p.clone()));
        keys.sort();
        keys.dedup();
        keys
    }

    /// What the `body` of a delivery whose handler failed `failed_before` times comes to.
    pub(crate) fn dispatch(&self, body: &[u8], failed_before: u32) -> Dispatch {
        let event = match envelope::decode(body) {
            Ok(event) => event,
            Err(rejection) => return Dispatch::Unreadable(rejection),
        };
        let info = EventInfo {
            id: event.id,
            event_type: event.event_type.clone(),
            request_id: event.requestid.clone(),
            // The header comes from the network: a huge value must not overflow.
            attempt: failed_before.saturating_add(1),
            label: if self.knows(&event.event_type) {
                event.event_type.clone()
            } else {
                "unknown".to_owned()
            },
        };
        match self.prepare(event, info.attempt) {
            Ok(call) => Dispatch::Handle(info, call),
            Err(rejection) => Dispatch::Rejected(info, rejection),
        }
    }

    /// Whether `event_type` has a handler.
    fn knows(&self, event_type: &str) -> bool {
        self.typed.contains_key(event_type)
            || self
                .patterns
                .iter()
                .any(|(p, _)| topic_matches(p, event_type))
    }

    fn prepare(&self, event: CloudEvent, attempt: u32) -> Result<Box<dyn Prepared>, Rejection> {
        if let Some(versions) = self.typed.get(&event.event_type) {
            return match versions.get(&event.version()) {
                Some(decode) => decode(event, attempt),
                None => Err(Rejection::UnsupportedDataversion(
                    event.event_type.clone(),
                    event.version(),
                )),
            };
        }
        match self
            .patterns
            .iter()
            .find(|(pattern, _)| topic_matches(pattern, &event.event_type))
        {
            Some((_, decode)) => decode(event, attempt),
            None => Err(Rejection::UnknownType(event.event_type)),
        }
    }
}

fn is_valid_pattern(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 255
        && pattern.split('.').all(|word| {
            word == "*"
                || word == "#"
                || (!word.is_empty()
                    && word
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
        })
}

/// AMQP topic matching: `*` is exactly one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| go(rest, &key[skip..])),
            Some((word, rest)) => match key.split_first() {
                Some((first, key_rest)) => (*word == "*" || word == first) && go(rest, key_rest),
                None => false,
            },
        }
    }
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    go(&pattern, &key)
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Shipped {
        parcel: Uuid,
    }

    impl Event for Shipped {
        const TYPE: &'static str = "shop.parcel.shipped";
        const DATAVERSION: u32 = 1;
        fn subject(&self) -> Option<Uuid> {
            Some(self.parcel)
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct ShippedV2 {
        parcel: Uuid,
        carrier: String,
    }

    impl Event for ShippedV2 {
        const TYPE: &'static str = "shop.parcel.shipped";
        const DATAVERSION: u32 = 2;
        fn subject(&self) -> Option<Uuid> {
            Some(self.parcel)
        }
    }

    fn ok<'a>(_: &'a mut Tx) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn consumers() -> Consumers {
        Consumers::new()
            .on::<Shipped, _>(|tx, _| ok(tx))
            .on::<ShippedV2, _>(|tx, _| ok(tx))
            .on_pattern("shop.order.*", |tx, _| ok(tx))
    }

    fn body(event_type: &str, dataversion: Option<u32>, data: Value) -> Vec<u8> {
        let mut event = json!({
            "specversion": "1.0",
            "id": "0193a000-0000-7000-8000-000000000001",
            "source": "/shop",
            "type": event_type,
            "requestid": "req-1",
            "data": data,
        });
        if let Some(version) = dataversion {
            event["dataversion"] = version.into();
        }
        serde_json::to_vec(&event).unwrap()
    }

    /// The park reason, or `handle` with the event's attempt and label.
    fn outcome(consumers: &Consumers, body: &[u8], failed_before: u32) -> String {
        match consumers.dispatch(body, failed_before) {
            Dispatch::Unreadable(rejection) => format!("park {}", rejection.reason()),
            Dispatch::Rejected(info, rejection) => {
                format!("park {} as {}", rejection.reason(), info.label)
            }
            Dispatch::Handle(info, _) => format!("handle #{} as {}", info.attempt, info.label),
        }
    }

    #[test]
    fn deliveries_are_handled_or_parked_for_their_reason() {
        let c = consumers();
        let parcel = json!({"parcel": Uuid::now_v7()});
        let v2 = json!({"parcel": Uuid::now_v7(), "carrier": "post"});
        let cases = [
            (b"{nope".to_vec(), "park invalid_json"),
            (br#"{"hello":"world"}"#.to_vec(), "park not_cloudevent"),
            (
                body("shop.parcel.shipped", None, parcel.clone()),
                "handle #1 as shop.parcel.shipped",
            ),
            (
                body("shop.parcel.shipped", Some(2), v2),
                "handle #1 as shop.parcel.shipped",
            ),
            (
                body("shop.parcel.shipped", Some(3), parcel.clone()),
                "park unsupported_dataversion as shop.parcel.shipped",
            ),
            (
                body("shop.parcel.shipped", Some(1), json!({"parcel": 7})),
                "park invalid_data as shop.parcel.shipped",
            ),
            (
                body("shop.order.paid", Some(9), json!("anything")),
                "handle #1 as shop.order.paid",
            ),
            (
                body("shop.order.paid.late", None, json!({})),
                "park unknown_type as unknown",
            ),
            (
                body("mail.sent", None, json!({})),
                "park unknown_type as unknown",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                outcome(&c, &body, 0),
                expected,
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn a_typed_handler_wins_over_a_pattern() {
        let c = Consumers::new()
            .on::<Shipped, _>(|tx, _| ok(tx))
            .on_pattern("shop.#", |tx, _| ok(tx));
        let bad_data = body("shop.parcel.shipped", None, json!({"parcel": "no uuid"}));
        assert_eq!(
            outcome(&c, &bad_data, 0),
            "park invalid_data as shop.parcel.shipped",
            "the typed handler decides, the pattern does not take it"
        );
        let other = body("shop.parcel.lost", Some(4), json!(null));
        assert_eq!(outcome(&c, &other, 0), "handle #1 as shop.parcel.lost");
    }

    #[test]
    fn the_attempt_counts_failed_runs_without_overflowing() {
        let c = consumers();
        let event = body(
            "shop.parcel.shipped",
            None,
            json!({"parcel": Uuid::now_v7()}),
        );
        assert_eq!(outcome(&c, &event, 2), "handle #3 as shop.parcel.shipped");
        assert_eq!(
            outcome(&c, &event, u32::MAX),
            format!("handle #{} as shop.parcel.shipped", u32::MAX)
        );
        match c.dispatch(&event, 0) {
            Dispatch::Handle(info, _) => {
                assert_eq!(info.request_id.as_deref(), Some("req-1"));
                assert_eq!(info.id.to_string(), "0193a000-0000-7000-8000-000000000001");
            }
            _ => panic!("handled"),
        }
    }

    #[test]
    fn routing_keys_are_the_types_and_patterns() {
        assert_eq!(
            consumers().routing_keys(),
            ["shop.order.*", "shop.parcel.shipped"]
        );
        assert!(Consumers::new().is_empty());
        assert!(!consumers().is_empty());
    }

    #[test]
    #[should_panic(expected = "two handlers for shop.parcel.shipped dataversion 1")]
    fn two_handlers_for_one_version_are_refused() {
        let _ = Consumers::new()
            .on::<Shipped, _>(|tx, _| ok(tx))
            .on::<Shipped, _>(|tx, _| ok(tx));
    }

    #[test]
    fn topic_patterns_match_like_rabbitmq() {
        assert!(topic_matches("auth.user.*", "auth.user.registered"));
        assert!(!topic_matches("auth.user.*", "auth.user.registered.v2"));
        assert!(topic_matches("auth.#", "auth.user.registered"));
        assert!(topic_matches("#", "anything.at.all"));
        assert!(topic_matches("auth.#.deleted", "auth.deleted"));
        assert!(!topic_matches("auth.*", "mail.sent"));
        assert!(topic_matches("a.b.c", "a.b.c"));
        assert!(!topic_matches("a.b.c", "a.b"));
        assert!(is_valid_pattern("auth.user.*"));
        assert!(!is_valid_pattern("auth..user"));
        assert!(!is_valid_pattern("auth.us er"));
    }
}
