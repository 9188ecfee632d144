//! The broker's Prometheus metrics (rendered by kit on `/metrics`). Handles are registered once
//! and kept, so the hot path is an atomic add, not a registry lookup.

use std::cell::Cell;
use std::ops::Deref;
use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram};

/// Publish-to-send latency is sampled: one delivery in this many is recorded (the exporter
/// keeps every sample until the next scrape, so recording all of them at 200k/s would grow
/// memory between scrapes).
pub const LATENCY_SAMPLE_EVERY: u32 = 16;

/// The handles, shared: every subscription keeps one `Metrics` (a pointer, not 13 handles).
#[derive(Clone)]
pub struct Metrics(Arc<MetricSet>);

impl Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

pub struct MetricSet {
    /// Open websocket connections.
    pub connections: Gauge,
    /// Subscriptions held by sessions.
    pub subscriptions: Gauge,
    /// Distinct topics this process listens to on Redis.
    pub topics: Gauge,
    /// Frames received from clients.
    pub messages_in: Counter,
    /// Frames written to clients (replies and published messages).
    pub messages_out: Counter,
    /// Valid publications received from Redis.
    pub publications: Counter,
    /// Redis payloads that were not a valid publication.
    pub publications_invalid: Counter,
    /// Frames thrown away because a client's queue was full (or it was being cut off).
    pub dropped: Counter,
    /// Connections closed because their queue overflowed.
    pub slow_disconnects: Counter,
    /// Connections refused because `max_connections` was reached.
    pub refused: Counter,
    /// Seconds from the publisher's `published_at` to the frame being written (sampled).
    pub latency: Histogram,
    /// 1 while the pub/sub connection is up and resubscribed.
    pub redis_up: Gauge,
    pub redis_reconnects: Counter,
}

impl Metrics {
    /// Registers the broker's metrics with kit's recorder.
    pub fn register() -> Metrics {
        // Installs the recorder if nothing did yet, so the handles below are live ones.
        kit::telemetry::metrics_handle();
        Metrics(Arc::new(MetricSet {
            connections: metrics::gauge!("broker_connections"),
            subscriptions: metrics::gauge!("broker_subscriptions"),
            topics: metrics::gauge!("broker_topics"),
            messages_in: metrics::counter!("broker_messages_in_total"),
            messages_out: metrics::counter!("broker_messages_out_total"),
            publications: metrics::counter!("broker_publications_total"),
            publications_invalid: metrics::counter!("broker_publications_invalid_total"),
            dropped: metrics::counter!("broker_messages_dropped_total"),
            slow_disconnects: metrics::counter!("broker_slow_client_disconnects_total"),
            refused: metrics::counter!("broker_connections_refused_total"),
            latency: metrics::histogram!("broker_publish_to_send_duration_seconds"),
            redis_up: metrics::gauge!("broker_redis_up"),
            redis_reconnects: metrics::counter!("broker_redis_reconnects_total"),
        }))
    }

    /// Handles that record nothing (unit tests).
    pub fn detached() -> Metrics {
        Metrics(Arc::new(MetricSet {
            connections: Gauge::noop(),
            subscriptions: Gauge::noop(),
            topics: Gauge::noop(),
            messages_in: Counter::noop(),
            messages_out: Counter::noop(),
            publications: Counter::noop(),
            publications_invalid: Counter::noop(),
            dropped: Counter::noop(),
            slow_disconnects: Counter::noop(),
            refused: Counter::noop(),
            latency: Histogram::noop(),
            redis_up: Gauge::noop(),
            redis_reconnects: Counter::noop(),
        }))
    }

    /// Counts one handled client event (`event` is one of the protocol's names, `invalid` or
    /// `unknown`, so the label stays bounded).
    pub fn client_event(event: &'static str, ok: bool) {
        metrics::counter!(
            "broker_client_events_total",
            "event" => event,
            "status" => if ok { "ok" } else { "error" }
        )
        .increment(1);
    }

    /// Records the latency of a frame stamped at `published_us`, one in
    /// [`LATENCY_SAMPLE_EVERY`] per thread.
    pub fn sample_latency(&self, published_us: i64, now_us: i64) {
        thread_local! {
            static SEEN: Cell<u32> = const { Cell::new(0) };
        }
        if published_us <= 0 {
            return;
        }
        let take = SEEN.with(|seen| {
            let n = seen.get();
            seen.set(n.wrapping_add(1));
            n % LATENCY_SAMPLE_EVERY == 0
        });
        if take {
            let seconds = (now_us - published_us).max(0) as f64 / 1e6;
            self.latency.record(seconds);
        }
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
