//! The topic table: which local subscriptions listen to which topic, and the fan-out of each
//! publication to them. One Redis SUBSCRIBE per distinct topic serves every local subscriber;
//! the Redis task (`link.rs`) is told when a topic gains its first or loses its last one.
//! The same link listens to auth's revocation channel, whose notices go to [`Logins`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::delivery::{Publication, Rejected, Slot};
use crate::logins::Logins;
use crate::metrics::Metrics;

/// Auth's revocation channel and who listens to it.
pub struct RevocationFeed {
    /// `<auth.revocation_prefix>revocations`.
    pub channel: String,
    pub logins: Arc<Logins>,
}

struct Topic {
    slots: Vec<Arc<Slot>>,
    /// Redis confirmed the SUBSCRIBE on the current connection.
    on_redis: bool,
    /// Subscribes waiting for that confirmation.
    waiters: Vec<oneshot::Sender<()>>,
}

pub struct Hub {
    topics: Mutex<HashMap<Arc<str>, Topic>>,
    /// Topics that gained their first or lost their last subscriber.
    changes: mpsc::UnboundedSender<Arc<str>>,
    /// The pub/sub connection is up (subscribes then wait for Redis to confirm).
    link_up: AtomicBool,
    /// It was up before: notices may have been missed while it was down.
    link_was_up: AtomicBool,
    revocations: Option<RevocationFeed>,
    /// Filter fields per service, for parsing publications.
    filter_fields: HashMap<String, Vec<String>>,
    metrics: Metrics,
}

impl Hub {
    pub fn new(
        filter_fields: HashMap<String, Vec<String>>,
        metrics: Metrics,
        revocations: Option<RevocationFeed>,
    ) -> (Arc<Hub>, mpsc::UnboundedReceiver<Arc<str>>) {
        let (changes, receiver) = mpsc::unbounded_channel();
        let hub = Hub {
            topics: Mutex::new(HashMap::new()),
            changes,
            link_up: AtomicBool::new(false),
            link_was_up: AtomicBool::new(false),
            revocations,
            filter_fields,
            metrics,
        };
        (Arc::new(hub), receiver)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Topic>> {
        self.topics.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a subscription (unconfirmed: messages wait in the slot until
    /// [`Slot::confirm`]). Returns a receiver that completes once Redis listens to the topic,
    /// or `None` when there is nothing to wait for (already listening, or Redis is down and
    /// the topic will be subscribed on reconnection).
    pub fn add(&self, slot: Arc<Slot>) -> Option<oneshot::Receiver<()>> {
        let mut topics = self.lock();
        let topic = match topics.get_mut(&slot.name) {
            Some(topic) => topic,
            None => {
                let name = slot.name.clone();
                let _ = self.changes.send(name.clone());
                self.metrics.topics.increment(1.0);
                topics.entry(name).or_insert(Topic {
                    slots: Vec::new(),
                    on_redis: false,
                    waiters: Vec::new(),
                })
            }
        };
        topic.slots.push(slot);
        if topic.on_redis || !self.link_up.load(Ordering::Acquire) {
            return None;
        }
        let (sender, receiver) = oneshot::channel();
        topic.waiters.push(sender);
        Some(receiver)
    }

    /// Unregisters a subscription and stops its deliveries.
    pub fn remove(&self, slot: &Arc<Slot>) {
        slot.close();
        let mut topics = self.lock();
        let Some(topic) = topics.get_mut(&slot.name) else {
            return;
        };
        if let Some(at) = topic.slots.iter().position(|s| Arc::ptr_eq(s, slot)) {
            topic.slots.swap_remove(at);
        }
        if topic.slots.is_empty() {
            topics.remove(&slot.name);
            self.metrics.topics.decrement(1.0);
            let _ = self.changes.send(slot.name.clone());
        }
    }

    /// Fans a Redis message out to the local subscribers of `topic`.
    pub fn dispatch(&self, topic: &str, payload: &[u8]) {
        let service = topic.split_once('.').map_or(topic, |(service, _)| service);
        let filter_fields = self
            .filter_fields
            .get(service)
            .map_or(&[][..], Vec::as_slice);
        let publication = match Publication::parse(payload, filter_fields) {
            Ok(publication) => Arc::new(publication),
            Err(rejected) => {
                self.metrics.publications_invalid.increment(1);
                let reason = match rejected {
                    Rejected::NotJson => "not a JSON object",
                    Rejected::MissingSubscription => "no subscription",
                    Rejected::MissingData => "no data",
                };
                tracing::warn!(topic, reason, "ignored an invalid publication");
                return;
            }
        };
        self.metrics.publications.increment(1);
        let topics = self.lock();
        if *publication.subscription == *topic {
            if let Some(entry) = topics.get(topic) {
                for slot in &entry.slots {
                    slot.offer(&publication);
                }
            }
            return;
        }
        // The payload names another subscription than its channel: like socketshark, it only
        // reaches sessions subscribed to both, through their subscription to the named one.
        let (Some(channel), Some(named)) =
            (topics.get(topic), topics.get(&*publication.subscription))
        else {
            return;
        };
        let sessions: HashSet<u64> = channel.slots.iter().map(|s| s.session).collect();
        for slot in named.slots.iter().filter(|s| sessions.contains(&s.session)) {
            slot.offer(&publication);
        }
    }

    /// Every topic with at least one local subscriber.
    pub fn active_topics(&self) -> Vec<Arc<str>> {
        self.lock().keys().cloned().collect()
    }

    pub fn is_active(&self, topic: &str) -> bool {
        self.lock().contains_key(topic)
    }

    /// Redis confirmed these topics on the current connection.
    pub fn confirmed(&self, names: &[Arc<str>]) {
        let mut topics = self.lock();
        for name in names {
            if let Some(topic) = topics.get_mut(name) {
                topic.on_redis = true;
                for waiter in topic.waiters.drain(..) {
                    let _ = waiter.send(());
                }
            }
        }
    }

    /// The pub/sub connection is up and listening to every topic (and the revocation channel).
    pub fn set_link_up(&self) {
        self.link_up.store(true, Ordering::Release);
        self.metrics.redis_up.set(1.0);
        if self.link_was_up.swap(true, Ordering::AcqRel)
            && let Some(feed) = &self.revocations
        {
            // Revocations announced while the link was down were missed.
            feed.logins.recheck_all();
        }
    }

    /// The channel auth announces revocations on, when tokens are accepted.
    pub fn revocation_channel(&self) -> Option<&str> {
        self.revocations.as_ref().map(|feed| feed.channel.as_str())
    }

    /// A message on the revocation channel.
    pub fn revocation_notice(&self, payload: &[u8]) {
        let Some(feed) = &self.revocations else {
            return;
        };
        match identity::revocation::Notice::parse(payload) {
            Some(notice) => feed.logins.notify(notice),
            None => {
                tracing::warn!("ignored a message on the revocation channel that is not a notice")
            }
        }
    }

    /// The pub/sub connection dropped: nothing is confirmed any more, and nobody waits for a
    /// confirmation that will only come after the reconnection.
    pub fn set_link_down(&self) {
        self.link_up.store(false, Ordering::Release);
        self.metrics.redis_up.set(0.0);
        let mut topics = self.lock();
        for topic in topics.values_mut() {
            topic.on_redis = false;
            for waiter in topic.waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn is_link_up(&self) -> bool {
        self.link_up.load(Ordering::Acquire)
    }

    /// Distinct topics with local subscribers.
    pub fn topic_count(&self) -> usize {
        self.lock().len()
    }
}
