//! Publications (what services send through Redis) and the per-subscription state that decides
//! whether and when each one reaches a client: filter fields, out-of-order filtering and
//! throttling, all as socketshark does them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::outbound::{OutFrame, Outbound};

/// Messages kept for a subscription between its registration and its `ok` (socketshark's
/// "provisional" subscription); older ones are dropped past this.
const PROVISIONAL_LIMIT: usize = 256;

/// `order` / `throttle` as parsed from a message's `options` (invalid values are ignored, as
/// in socketshark).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeliveryOptions {
    pub order: Option<f64>,
    /// The JSON text of `order_key` (so `"1"` and `1` stay distinct); `None` = default key.
    pub order_key: Option<Box<str>>,
    /// Seconds.
    pub throttle: Option<f64>,
    pub throttle_key: Option<Box<str>>,
}

impl DeliveryOptions {
    pub fn parse(options: Option<&Value>) -> DeliveryOptions {
        let Some(Value::Object(options)) = options else {
            return DeliveryOptions::default();
        };
        let key = |name: &str| -> Option<Box<str>> {
            options
                .get(name)
                .filter(|v| !v.is_null())
                .map(|v| v.to_string().into_boxed_str())
        };
        let mut parsed = DeliveryOptions::default();
        if let Some(order) = options.get("order").and_then(as_float) {
            parsed.order = Some(order);
            parsed.order_key = key("order_key");
        }
        if let Some(throttle) = options.get("throttle").and_then(as_float) {
            parsed.throttle = Some(throttle);
            parsed.throttle_key = key("throttle_key");
        }
        parsed
    }

    fn is_empty(&self) -> bool {
        self.order.is_none() && self.throttle.is_none()
    }
}

/// Python's `float(x)` on a JSON value: numbers, booleans and numeric strings.
fn as_float(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// One message published to a topic, parsed once and shared by every subscriber.
pub struct Publication {
    /// The `subscription` it names (normally the channel's topic).
    pub subscription: Box<str>,
    /// `{"event":"message","subscription":..,"data":..` without the closing brace.
    head: Box<str>,
    /// The complete frame for subscribers without extra fields.
    plain: Utf8Bytes,
    pub options: DeliveryOptions,
    /// The message's values of the service's filter fields.
    pub filters: Vec<(Box<str>, Value)>,
    /// Publisher's timestamp (µs since the epoch), 0 when absent.
    pub published_us: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    NotJson,
    MissingSubscription,
    MissingData,
}

impl Publication {
    /// Parses a Redis payload. `filter_fields` are the fields the topic's service filters on.
    pub fn parse(payload: &[u8], filter_fields: &[String]) -> Result<Publication, Rejected> {
        let fields: HashMap<String, &RawValue> =
            serde_json::from_slice(payload).map_err(|_| Rejected::NotJson)?;
        let subscription: String = fields
            .get("subscription")
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .ok_or(Rejected::MissingSubscription)?;
        let data = fields.get("data").ok_or(Rejected::MissingData)?;
        let options = fields
            .get("options")
            .and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok());
        let published_us = fields
            .get("published_at")
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(&text).ok())
            .map_or(0, |at| at.timestamp_micros());
        let filters = filter_fields
            .iter()
            .filter_map(|field| {
                let raw = fields.get(field.as_str())?;
                let value = serde_json::from_str::<Value>(raw.get()).ok()?;
                Some((field.clone().into_boxed_str(), value))
            })
            .collect();
        Ok(Publication::new(
            subscription,
            data.get(),
            DeliveryOptions::parse(options.as_ref()),
            filters,
            published_us,
        ))
    }

    /// A publication made by the broker itself (a throttled `before_subscribe` answer).
    pub fn new(
        subscription: String,
        data_json: &str,
        options: DeliveryOptions,
        filters: Vec<(Box<str>, Value)>,
        published_us: i64,
    ) -> Publication {
        let name = Value::String(subscription);
        let head = format!(r#"{{"event":"message","subscription":{name},"data":{data_json}"#);
        let plain = Utf8Bytes::from(format!("{head}}}"));
        let Value::String(subscription) = name else {
            unreachable!("built as a string above")
        };
        Publication {
            subscription: subscription.into_boxed_str(),
            head: head.into_boxed_str(),
            plain,
            options,
            filters,
            published_us,
        }
    }

    /// The frame for a subscriber whose extra fields serialize to `suffix`
    /// (`,"k":v,...`, empty for none).
    fn frame(&self, suffix: &str) -> OutFrame {
        let text = if suffix.is_empty() {
            self.plain.clone()
        } else {
            Utf8Bytes::from(format!("{}{suffix}}}", self.head))
        };
        OutFrame {
            text,
            published_us: self.published_us,
        }
    }
}

struct Throttle {
    last_sent: Instant,
    pending: Option<Arc<Publication>>,
    armed: bool,
}

struct SlotState {
    /// False between registration and the subscribe `ok`: messages wait in `provisional`.
    confirmed: bool,
    closed: bool,
    provisional: VecDeque<Arc<Publication>>,
    /// For each filter field: the value a message must carry to be delivered (the
    /// subscription's extra field or the session's auth field; missing = `null`).
    expected: Vec<(Box<str>, Value)>,
    order: HashMap<Option<Box<str>>, f64>,
    throttle: HashMap<Option<Box<str>>, Throttle>,
}

/// One session's subscription to one topic, as the hub sees it.
pub struct Slot {
    pub name: Arc<str>,
    pub session: u64,
    out: Arc<Outbound>,
    metrics: Metrics,
    /// The subscription's extra fields as `,"k":v` pairs appended to every message frame.
    suffix: Box<str>,
    state: Mutex<SlotState>,
}

/// What to compare a message's filter fields against.
pub fn expected_values(
    filter_fields: &[String],
    extra_fields: &[String],
    extra: &Map<String, Value>,
    auth: &Map<String, Value>,
) -> Vec<(Box<str>, Value)> {
    filter_fields
        .iter()
        .map(|field| {
            let source = if extra_fields.contains(field) {
                extra
            } else {
                auth
            };
            let value = source.get(field).cloned().unwrap_or(Value::Null);
            (field.clone().into_boxed_str(), value)
        })
        .collect()
}

impl Slot {
    pub fn new(
        name: Arc<str>,
        session: u64,
        out: Arc<Outbound>,
        metrics: Metrics,
        extra: &Map<String, Value>,
        expected: Vec<(Box<str>, Value)>,
    ) -> Slot {
        let mut suffix = String::new();
        for (key, value) in extra {
            suffix.push(',');
            suffix.push_str(&Value::String(key.clone()).to_string());
            suffix.push(':');
            suffix.push_str(&value.to_string());
        }
        Slot {
            name,
            session,
            out,
            metrics,
            suffix: suffix.into_boxed_str(),
            state: Mutex::new(SlotState {
                confirmed: false,
                closed: false,
                provisional: VecDeque::new(),
                expected,
                order: HashMap::new(),
                throttle: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A message for this subscription arrived from Redis: its frame is queued if it passes.
    /// True when the connection's queue was empty before: the caller then writes it
    /// ([`Outbound::write_now`]) once it has queued everything it had for that connection.
    pub fn offer(self: &Arc<Self>, publication: &Arc<Publication>) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        if !state.confirmed {
            if state.provisional.len() >= PROVISIONAL_LIMIT {
                state.provisional.pop_front();
                self.metrics.dropped.increment(1);
            }
            state.provisional.push_back(publication.clone());
            return false;
        }
        if self.admit(&mut state, publication) {
            return self
                .out
                .enqueue(publication.frame(&self.suffix), &self.metrics);
        }
        false
    }

    /// The connection's outgoing queue.
    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.out
    }

    /// Runs a callback answer (`before_subscribe`'s) through the filters, order and throttle
    /// like a message; true = send the `ok` now. A throttled answer is delivered later as a
    /// message, as socketshark does.
    pub fn admit_answer(self: &Arc<Self>, answer: &Arc<Publication>) -> bool {
        let mut state = self.lock();
        self.admit(&mut state, answer)
    }

    /// Marks the subscription confirmed (its `ok` is queued) and delivers what arrived
    /// meanwhile, in order.
    pub fn confirm(self: &Arc<Self>) {
        let mut state = self.lock();
        state.confirmed = true;
        let waiting = std::mem::take(&mut state.provisional);
        for publication in waiting {
            if self.admit(&mut state, &publication) {
                self.out
                    .push(publication.frame(&self.suffix), &self.metrics);
            }
        }
    }

    /// The session's auth fields changed (a new `auth` event).
    pub fn set_expected(&self, expected: Vec<(Box<str>, Value)>) {
        self.lock().expected = expected;
    }

    /// Stops all deliveries (and pending throttled ones) for good.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.provisional.clear();
        state.throttle.clear();
    }

    /// Filter fields, then order, then throttle, as socketshark's `should_deliver_message`.
    fn admit(self: &Arc<Self>, state: &mut SlotState, publication: &Arc<Publication>) -> bool {
        for (field, value) in &publication.filters {
            if let Some((_, expected)) = state.expected.iter().find(|(f, _)| f == field)
                && expected != value
            {
                return false;
            }
        }
        let options = &publication.options;
        if options.is_empty() {
            return true;
        }
        if let Some(order) = options.order {
            let last = state.order.get(&options.order_key).copied();
            // NaN never passes `<=`, like Python's comparison.
            if last.is_some_and(|last| order <= last) {
                return false;
            }
            state.order.insert(options.order_key.clone(), order);
        }
        if let Some(period) = options.throttle {
            let now = Instant::now();
            if let Some(throttle) = state.throttle.get_mut(&options.throttle_key) {
                if throttle.armed {
                    // A delivery is scheduled: it will carry this newer message instead.
                    throttle.pending = Some(publication.clone());
                    return false;
                }
                let elapsed = now.duration_since(throttle.last_sent).as_secs_f64();
                if elapsed < period {
                    throttle.pending = Some(publication.clone());
                    throttle.armed = true;
                    let due = throttle.last_sent + Duration::from_secs_f64(period.max(0.0));
                    self.schedule(options.throttle_key.clone(), due);
                    return false;
                }
            }
            state.throttle.insert(
                options.throttle_key.clone(),
                Throttle {
                    last_sent: now,
                    pending: None,
                    armed: false,
                },
            );
        }
        true
    }

    fn schedule(self: &Arc<Self>, key: Option<Box<str>>, due: Instant) {
        let slot: Weak<Slot> = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            if let Some(slot) = slot.upgrade() {
                slot.send_throttled(&key);
            }
        });
    }

    fn send_throttled(&self, key: &Option<Box<str>>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let Some(throttle) = state.throttle.get_mut(key) else {
            return;
        };
        throttle.armed = false;
        throttle.last_sent = Instant::now();
        if let Some(publication) = throttle.pending.take() {
            self.out
                .push(publication.frame(&self.suffix), &self.metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SlowClient;
    use serde_json::json;
    use std::collections::VecDeque;

    fn slot(
        extra: Map<String, Value>,
        expected: Vec<(Box<str>, Value)>,
    ) -> (Arc<Slot>, Arc<Outbound>) {
        let out = Arc::new(Outbound::new(100, SlowClient::Disconnect));
        let slot = Arc::new(Slot::new(
            "simple.topic".into(),
            1,
            out.clone(),
            Metrics::detached(),
            &extra,
            expected,
        ));
        slot.confirm();
        (slot, out)
    }

    fn publish(slot: &Arc<Slot>, payload: Value, filter_fields: &[String]) {
        let bytes = serde_json::to_vec(&payload).unwrap();
        let publication = Arc::new(Publication::parse(&bytes, filter_fields).unwrap());
        slot.offer(&publication);
    }

    fn received(out: &Outbound) -> Vec<Value> {
        let mut batch = VecDeque::new();
        out.take(&mut batch);
        batch
            .iter()
            .map(|f| serde_json::from_str(f.text.as_str()).unwrap())
            .collect()
    }

    #[test]
    fn payloads_without_subscription_or_data_are_rejected() {
        assert_eq!(Publication::parse(b"{", &[]).err(), Some(Rejected::NotJson));
        assert_eq!(
            Publication::parse(br#"{"data":1}"#, &[]).err(),
            Some(Rejected::MissingSubscription)
        );
        assert_eq!(
            Publication::parse(br#"{"subscription":"a.b"}"#, &[]).err(),
            Some(Rejected::MissingData)
        );
    }

    #[tokio::test]
    async fn order_filter_drops_older_messages_per_key() {
        let (slot, out) = slot(Map::new(), Vec::new());
        for (order, key, msg) in [
            (json!(1), json!(null), 2),
            (json!(3), json!(null), 4),
            (json!(2), json!(null), 5),
            (json!("invalid"), json!(null), 6),
            (json!(1.1), json!("other"), 7),
            (json!(1.05), json!("other"), 8),
        ] {
            publish(
                &slot,
                json!({"subscription":"simple.topic","options":{"order":order,"order_key":key},"data":{"msg":msg}}),
                &[],
            );
        }
        let msgs: Vec<Value> = received(&out)
            .iter()
            .map(|m| m["data"]["msg"].clone())
            .collect();
        assert_eq!(msgs, [json!(2), json!(4), json!(6), json!(7)]);
    }

    #[tokio::test]
    async fn filters_compare_with_extra_and_auth_fields() {
        let mut extra = Map::new();
        extra.insert("extra".into(), json!("bar"));
        let filter_fields = vec!["session_id".to_owned(), "extra".to_owned()];
        let expected = expected_values(&filter_fields, &["extra".to_owned()], &extra, &Map::new());
        let (slot, out) = slot(extra, expected);
        publish(
            &slot,
            json!({"subscription":"simple.topic","extra":"foo","data":1}),
            &filter_fields,
        );
        publish(
            &slot,
            json!({"subscription":"simple.topic","extra":"bar","data":2}),
            &filter_fields,
        );
        publish(
            &slot,
            json!({"subscription":"simple.topic","session_id":null,"data":3}),
            &filter_fields,
        );
        publish(
            &slot,
            json!({"subscription":"simple.topic","session_id":"s","data":4}),
            &filter_fields,
        );
        let got = received(&out);
        let data: Vec<Value> = got.iter().map(|m| m["data"].clone()).collect();
        assert_eq!(data, [json!(2), json!(3)]);
        assert_eq!(
            got[0],
            json!({"event":"message","subscription":"simple.topic","data":2,"extra":"bar"})
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_sends_first_then_latest_after_the_period() {
        let (slot, out) = slot(Map::new(), Vec::new());
        let throttled =
            |n: i32| json!({"subscription":"simple.topic","options":{"throttle":0.2},"data":n});
        publish(&slot, throttled(1), &[]);
        publish(&slot, throttled(2), &[]);
        publish(&slot, throttled(3), &[]);
        publish(
            &slot,
            json!({"subscription":"simple.topic","data":"unthrottled"}),
            &[],
        );
        let data = |msgs: Vec<Value>| msgs.iter().map(|m| m["data"].clone()).collect::<Vec<_>>();
        assert_eq!(data(received(&out)), [json!(1), json!("unthrottled")]);
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(data(received(&out)), [json!(3)]);
        // After a quiet period the next one goes out at once.
        tokio::time::sleep(Duration::from_millis(250)).await;
        publish(&slot, throttled(4), &[]);
        assert_eq!(data(received(&out)), [json!(4)]);
        // Closing cancels a pending delivery.
        publish(&slot, throttled(5), &[]);
        slot.close();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(received(&out).is_empty());
    }

    #[tokio::test]
    async fn provisional_messages_wait_for_the_confirmation() {
        let out = Arc::new(Outbound::new(100, SlowClient::Disconnect));
        let slot = Arc::new(Slot::new(
            "a.b".into(),
            1,
            out.clone(),
            Metrics::detached(),
            &Map::new(),
            Vec::new(),
        ));
        publish(&slot, json!({"subscription":"a.b","data":1}), &[]);
        assert!(received(&out).is_empty());
        out.push(
            OutFrame::reply(r#"{"event":"subscribe","status":"ok"}"#.into()),
            &Metrics::detached(),
        );
        slot.confirm();
        let got = received(&out);
        assert_eq!(got[0]["event"], "subscribe");
        assert_eq!(got[1]["data"], 1);
    }
}
