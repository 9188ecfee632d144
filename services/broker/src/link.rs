//! The process's one Redis pub/sub connection: SUBSCRIBE per distinct topic on its first local
//! subscriber, UNSUBSCRIBE when the last one leaves, periodic PINGs to notice a dead link, and on
//! any failure reconnection with backoff and a resubscription of every active topic. Clients stay
//! connected meanwhile (socketshark exits instead); `/readyz` reports 503 until it is back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::aio::PubSubSink;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::config::RedisLink;
use crate::hub::Hub;

/// Channels per SUBSCRIBE command when resubscribing everything.
const RESUBSCRIBE_BATCH: usize = 1_000;

pub struct Link {
    pub client: redis::Client,
    pub prefix: String,
    pub settings: RedisLink,
    pub hub: Arc<Hub>,
    pub changes: mpsc::UnboundedReceiver<Arc<str>>,
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    Lost(String),
}

impl Link {
    /// Runs until `shutdown`, reconnecting as long as it takes.
    pub async fn run(mut self, shutdown: CancellationToken) {
        self.hub.start_delivery();
        let mut delay = self.settings.reconnect_min_delay;
        let mut first = true;
        loop {
            let started = Instant::now();
            match self.connection(&shutdown).await {
                Ended::Shutdown => break,
                Ended::Lost(reason) => {
                    self.hub.set_link_down();
                    if first {
                        tracing::warn!(reason, "cannot use Redis pub/sub; retrying");
                    } else {
                        tracing::warn!(reason, "lost the Redis pub/sub connection; reconnecting");
                    }
                }
            }
            first = false;
            // A connection that lived a while starts the backoff afresh.
            if started.elapsed() > self.settings.reconnect_max_delay * 2 {
                delay = self.settings.reconnect_min_delay;
            }
            let pause = jittered(delay);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = sleep(pause) => {}
            }
            delay = (delay * 2).min(self.settings.reconnect_max_delay);
            self.hub.metrics().redis_reconnects.increment(1);
        }
        self.hub.set_link_down();
    }

    async fn connection(&mut self, shutdown: &CancellationToken) -> Ended {
        let connected = tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            connected = timeout(self.settings.connect_timeout, self.client.get_async_pubsub()) => connected,
        };
        let pubsub = match connected {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(err)) => return Ended::Lost(err.to_string()),
            Err(_) => return Ended::Lost("connect timed out".into()),
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut listening: HashSet<Arc<str>> = HashSet::new();

        // Changes queued before this point are covered by the full resubscription.
        while self.changes.try_recv().is_ok() {}
        let revocations = self.hub.revocation_channel().map(str::to_owned);
        if let Some(channel) = &revocations {
            match timeout(self.settings.ping_timeout, sink.subscribe(channel)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Ended::Lost(err.to_string()),
                Err(_) => return Ended::Lost("SUBSCRIBE timed out".into()),
            }
        }
        let active = self.hub.active_topics();
        for batch in active.chunks(RESUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(|t| self.channel(t)).collect();
            match timeout(self.settings.ping_timeout, sink.subscribe(&channels)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Ended::Lost(err.to_string()),
                Err(_) => return Ended::Lost("SUBSCRIBE timed out".into()),
            }
            listening.extend(batch.iter().cloned());
            self.hub.confirmed(batch);
        }
        self.hub.set_link_up();
        if !active.is_empty() {
            tracing::info!(topics = active.len(), "resubscribed to Redis");
        }

        let prefix_len = self.prefix.len();
        let mut next_ping = Instant::now() + self.settings.ping_interval;
        let mut ping: Option<BoxFuture<'static, bool>> = None;
        // When the last PING left and when the last message arrived: under a flood the PONG
        // queues behind the messages on this connection, and messages prove the link alive too.
        let mut ping_sent = Instant::now();
        let mut last_message = Instant::now();
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ended::Shutdown,
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ended::Lost("connection closed".into());
                    };
                    last_message = Instant::now();
                    let channel = message.get_channel_name();
                    if revocations.as_deref() == Some(channel) {
                        self.hub.revocation_notice(message.get_payload_bytes());
                        continue;
                    }
                    match channel.get(prefix_len..) {
                        Some(topic) if channel.starts_with(&self.prefix) => {
                            self.hub.dispatch(topic, message.get_payload_bytes()).await;
                        }
                        _ => {}
                    }
                }
                Some(first) = self.changes.recv() => {
                    let mut changed: HashSet<Arc<str>> = HashSet::from([first]);
                    while let Ok(more) = self.changes.try_recv() {
                        changed.insert(more);
                    }
                    if let Err(reason) = self.apply(&mut sink, &mut listening, changed).await {
                        return Ended::Lost(reason);
                    }
                }
                alive = async { ping.as_mut().expect("guarded").await }, if ping.is_some() => {
                    ping = None;
                    if !alive && last_message < ping_sent {
                        return Ended::Lost("no answer to PING".into());
                    }
                    next_ping = Instant::now() + self.settings.ping_interval;
                }
                () = tokio::time::sleep_until(next_ping), if ping.is_none() => {
                    let mut sink = sink.clone();
                    let limit = self.settings.ping_timeout;
                    ping_sent = Instant::now();
                    ping = Some(Box::pin(async move {
                        matches!(timeout(limit, sink.ping::<redis::Value>()).await, Ok(Ok(_)))
                    }));
                }
            }
        }
    }

    /// Brings Redis in line with the hub for the topics that changed.
    async fn apply(
        &self,
        sink: &mut PubSubSink,
        listening: &mut HashSet<Arc<str>>,
        changed: HashSet<Arc<str>>,
    ) -> Result<(), String> {
        let mut subscribe = Vec::new();
        let mut already = Vec::new();
        let mut unsubscribe = Vec::new();
        for topic in changed {
            let active = self.hub.is_active(&topic);
            match (active, listening.contains(&topic)) {
                (true, false) => subscribe.push(topic),
                (true, true) => already.push(topic),
                (false, true) => unsubscribe.push(topic),
                (false, false) => {}
            }
        }
        let limit = self.settings.ping_timeout;
        for batch in subscribe.chunks(RESUBSCRIBE_BATCH) {
            let channels: Vec<String> = batch.iter().map(|t| self.channel(t)).collect();
            match timeout(limit, sink.subscribe(&channels)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err.to_string()),
                Err(_) => return Err("SUBSCRIBE timed out".into()),
            }
            listening.extend(batch.iter().cloned());
        }
        // A topic re-created while its channel stayed subscribed still needs its waiters
        // released.
        subscribe.extend(already);
        self.hub.confirmed(&subscribe);
        for batch in unsubscribe.chunks(RESUBSCRIBE_BATCH) {
            // A topic named like the revocation channel must not stop the revocations.
            let revocations = self.hub.revocation_channel();
            let channels: Vec<String> = batch
                .iter()
                .map(|t| self.channel(t))
                .filter(|channel| Some(channel.as_str()) != revocations)
                .collect();
            match timeout(limit, sink.unsubscribe(&channels)).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err.to_string()),
                Err(_) => return Err("UNSUBSCRIBE timed out".into()),
            }
            for topic in batch {
                listening.remove(topic);
            }
        }
        Ok(())
    }

    fn channel(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix)
    }
}

/// `delay` minus up to a quarter, so a fleet of brokers does not reconnect in lockstep.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(1.0 - crate::random_fraction() * 0.25)
}
