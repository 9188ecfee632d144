//! The topic table: which local subscriptions listen to which topic, and the fan-out of each
//! publication to them. One Redis SUBSCRIBE per distinct topic serves every local subscriber;
//! the Redis task (`link.rs`) is told when a topic gains its first or loses its last one.
//! The same link listens to auth's revocation channel, whose notices go to [`Logins`].
//!
//! Fan-out runs on one delivery thread per runtime worker, each serving the connections whose
//! session id falls to it (so one connection's messages always leave in order). A thread takes
//! every publication waiting for it, queues their frames, then writes each connection it touched
//! once: one `write` per connection per batch and no per-connection wakeup. Under load the
//! batches grow and several frames share a write. Plain threads, not runtime tasks: a batch of
//! writes never holds up the connections' own tasks, and the OS spreads the threads over the
//! cores (woken runtime tasks tend to pile up on the worker that woke them).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

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

/// Publications a delivery thread takes at once, at most (only a backlog makes batches this
/// big; each connection then gets all of its frames in one write).
const DELIVERY_BATCH: usize = 1024;
/// Publications waiting for one delivery thread before the Redis link waits (and Redis keeps
/// the rest).
const DELIVERY_QUEUE: usize = 4096;

/// One publication for the subscribers it reaches.
struct Delivery {
    publication: Arc<Publication>,
    slots: Arc<[Arc<Slot>]>,
}

struct Topic {
    slots: Vec<Arc<Slot>>,
    /// `slots` as handed to the delivery threads; rebuilt after a change.
    snapshot: Option<Arc<[Arc<Slot>]>>,
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
    /// One queue per delivery thread, once started.
    delivery: OnceLock<Vec<mpsc::Sender<Delivery>>>,
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
            delivery: OnceLock::new(),
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
                    snapshot: None,
                    on_redis: false,
                    waiters: Vec::new(),
                })
            }
        };
        topic.slots.push(slot);
        topic.snapshot = None;
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
            topic.snapshot = None;
        }
        if topic.slots.is_empty() {
            topics.remove(&slot.name);
            self.metrics.topics.decrement(1.0);
            let _ = self.changes.send(slot.name.clone());
        }
    }

    /// Starts the delivery threads (one per runtime worker thread); without them publications
    /// are delivered by the caller of [`Hub::dispatch`].
    pub fn start_delivery(&self) {
        let runtime = tokio::runtime::Handle::current();
        let workers = runtime.metrics().num_workers().max(1);
        self.delivery.get_or_init(|| {
            let mut queues = Vec::with_capacity(workers);
            for index in 0..workers {
                let (sender, receiver) = mpsc::channel(DELIVERY_QUEUE);
                let metrics = self.metrics.clone();
                let runtime = runtime.clone();
                let started = std::thread::Builder::new()
                    .name(format!("broker-delivery-{index}"))
                    .spawn(move || {
                        // Throttled deliveries schedule their timer on the runtime.
                        let _runtime = runtime.enter();
                        deliver(receiver, index, workers, metrics);
                    });
                if let Err(err) = started {
                    // The ones started end with their queues; the Redis task delivers instead.
                    tracing::error!(error = %err, "cannot start the delivery threads");
                    return Vec::new();
                }
                queues.push(sender);
            }
            queues
        });
    }

    /// Fans a Redis message out to the local subscribers of `topic`.
    pub async fn dispatch(&self, topic: &str, payload: &[u8]) {
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
        let Some(slots) = self.targets(topic, &publication) else {
            return;
        };
        let Some(queues) = self.delivery.get().filter(|queues| !queues.is_empty()) else {
            let mut written = Vec::new();
            offer_all(&slots, &publication, |_| true, &mut written);
            write_all(&mut written, &self.metrics);
            return;
        };
        let shards = queues.len();
        for (index, queue) in queues.iter().enumerate() {
            if !slots.iter().any(|slot| shard_of(slot, shards) == index) {
                continue;
            }
            let delivery = Delivery {
                publication: publication.clone(),
                slots: slots.clone(),
            };
            // Waits when the task is that far behind: Redis holds the rest meanwhile.
            let _ = queue.send(delivery).await;
        }
    }

    /// The subscriptions a publication on channel `topic` reaches.
    fn targets(&self, topic: &str, publication: &Publication) -> Option<Arc<[Arc<Slot>]>> {
        let mut topics = self.lock();
        if *publication.subscription == *topic {
            let entry = topics.get_mut(topic)?;
            let snapshot = entry
                .snapshot
                .get_or_insert_with(|| Arc::from(entry.slots.as_slice()));
            return Some(snapshot.clone());
        }
        // The payload names another subscription than its channel: like socketshark, it only
        // reaches sessions subscribed to both, through their subscription to the named one.
        let (Some(channel), Some(named)) =
            (topics.get(topic), topics.get(&*publication.subscription))
        else {
            return None;
        };
        let sessions: HashSet<u64> = channel.slots.iter().map(|s| s.session).collect();
        let slots: Vec<Arc<Slot>> = named
            .slots
            .iter()
            .filter(|s| sessions.contains(&s.session))
            .cloned()
            .collect();
        Some(Arc::from(slots))
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

/// Which delivery thread serves a subscription's connection.
fn shard_of(slot: &Slot, shards: usize) -> usize {
    (slot.session % shards as u64) as usize
}

/// A delivery thread: takes what is waiting, queues every frame, then writes each connection it
/// touched once. Ends when the hub is gone.
fn deliver(mut receiver: mpsc::Receiver<Delivery>, index: usize, shards: usize, metrics: Metrics) {
    let mut touched: Vec<Arc<Slot>> = Vec::new();
    while let Some(first) = receiver.blocking_recv() {
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(delivery) = next {
            offer_all(
                &delivery.slots,
                &delivery.publication,
                |slot| shard_of(slot, shards) == index,
                &mut touched,
            );
            taken += 1;
            next = if taken < DELIVERY_BATCH {
                receiver.try_recv().ok()
            } else {
                None
            };
        }
        write_all(&mut touched, &metrics);
    }
}

/// Queues the publication for every slot `mine` selects; the slots whose connection had
/// nothing queued before go to `touched`.
fn offer_all(
    slots: &[Arc<Slot>],
    publication: &Arc<Publication>,
    mine: impl Fn(&Slot) -> bool,
    touched: &mut Vec<Arc<Slot>>,
) {
    for slot in slots.iter().filter(|slot| mine(slot)) {
        if slot.offer(publication) {
            touched.push(slot.clone());
        }
    }
}

/// One write per touched connection.
fn write_all(touched: &mut Vec<Arc<Slot>>, metrics: &Metrics) {
    let mut written = 0;
    for slot in touched.drain(..) {
        slot.outbound().write_now(metrics, &mut written);
    }
    metrics.messages_out.increment(written);
}
