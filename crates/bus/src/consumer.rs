//! Consumers: typed handlers per event type, each delivery applied exactly once.
//!
//! A delivery goes through these steps; every outcome ends with the delivery acknowledged
//! (so nothing loops), and only after whatever had to be durable is:
//!
//! 1. Decode: not JSON, not a CloudEvents 1.0 envelope, a `type` without handler, a
//!    `dataversion` without handler, or `data` not matching the handler's payload type →
//!    **parked at once** (retrying cannot help), with `x-bus-reason`, `x-bus-error` and
//!    `x-bus-attempts` headers.
//! 2. In one database transaction: insert `(consumer, event_id)` into the inbox. Already there
//!    → a duplicate delivery: acknowledged without running the handler. Otherwise run the
//!    handler on the same transaction and commit; the acknowledgement follows the commit. A
//!    process that dies in between leaves the delivery unacknowledged, RabbitMQ delivers it
//!    again, and the inbox row makes that a duplicate.
//! 3. The handler fails (error, panic or timeout) → the transaction rolls back and a copy goes
//!    to the retry queue of that attempt (`x-bus-attempts` + 1), which hands it back to the
//!    service queue after the delay; after `max_attempts` runs it is parked instead
//!    (`handler_failed`). The copy is confirmed by RabbitMQ before the original is
//!    acknowledged.
//! 4. The database itself is unreachable (connection errors, pool timeouts) → not the event's
//!    fault: it waits in the first retry queue without using up an attempt.
//!
//! Deliveries run concurrently (`amqp.concurrency`), so handlers must not rely on the order of
//! events; RabbitMQ sends `amqp.prefetch` ahead.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use contracts::Event;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use kit::SecretUrl;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::connection::{Backoff, Status};
use crate::envelope::{self, CloudEvent, Rejection};
use crate::topology::{Topology, long_string, short_string};

/// The transaction a handler runs in (together with the inbox row).
pub type Tx = Transaction<'static, Postgres>;

/// Header: failed handler runs so far.
pub const ATTEMPTS_HEADER: &str = "x-bus-attempts";
/// Header of a parked message: why (`invalid_json`, `not_cloudevent`, `unknown_type`,
/// `unsupported_dataversion`, `invalid_data`, `handler_failed`).
pub const REASON_HEADER: &str = "x-bus-reason";
/// Header: the last error (parked and retried messages).
pub const ERROR_HEADER: &str = "x-bus-error";
/// Header of a parked message: when it was parked (RFC 3339).
pub const PARKED_AT_HEADER: &str = "x-bus-parked-at";
/// Header of a parked message: the routing key it arrived with.
pub const ROUTING_KEY_HEADER: &str = "x-bus-routing-key";

/// Longest error text kept in a header.
const MAX_ERROR_CHARS: usize = 2_000;
/// How long RabbitMQ may take to confirm a retry or parking copy.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Most deliveries applied in one transaction.
const MAX_BATCH: usize = 32;
/// Bound on acknowledgements and closing: on a dead connection they may never complete.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

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
trait Prepared: Send + Sync {
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

    /// Whether `event_type` has a typed handler (for metric labels: unknown types are not
    /// used as labels, so a flood of made-up types cannot blow up the metrics).
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

/// What a consumer needs.
#[derive(Clone)]
pub struct ConsumerConfig {
    pub url: SecretUrl,
    pub topology: Topology,
    pub prefetch: u16,
    pub concurrency: usize,
    pub handler_timeout: Duration,
    pub reconnect_max_delay: Duration,
}

/// The service's consumer: one connection, deliveries handled concurrently.
pub struct Consumer {
    config: ConsumerConfig,
    pool: PgPool,
    consumers: Arc<Consumers>,
    status: Arc<Status>,
}

const COMPONENT: &str = "consumer";

/// What one delivery's processing shares.
struct Context {
    config: ConsumerConfig,
    pool: PgPool,
    consumers: Arc<Consumers>,
    publisher: Channel,
}

enum Outcome {
    Applied,
    Duplicate,
    Rejected(Rejection),
    Failed(String),
    /// The database could not be reached: not the event's fault.
    Unavailable(String),
}

impl Consumer {
    pub fn new(
        config: ConsumerConfig,
        pool: PgPool,
        consumers: Consumers,
        status: Arc<Status>,
    ) -> Self {
        status.register(COMPONENT);
        Consumer {
            config,
            pool,
            consumers: Arc::new(consumers),
            status,
        }
    }

    /// Consumes until `shutdown`, reconnecting (and re-declaring) whenever the connection
    /// drops. On shutdown it stops taking deliveries, lets in-flight ones finish, and closes
    /// the channel, which hands prefetched, unstarted deliveries back to RabbitMQ.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(self.config.reconnect_max_delay);
        while !shutdown.is_cancelled() {
            match self.session(&shutdown).await {
                Ok(()) => return,
                Err(err) => {
                    self.status.down(COMPONENT, err.clone());
                    tracing::warn!(error = %err, queue = %self.config.topology.queue(), "event consumer disconnected; reconnecting");
                }
            }
            if !backoff.wait(&shutdown).await {
                return;
            }
            // A session that got as far as consuming resets the backoff in `session`.
            if self.status.check().is_ok() {
                backoff.reset();
            }
        }
    }

    /// One connection's life: `Ok` on shutdown, `Err` when the connection failed.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), String> {
        let topology = &self.config.topology;
        let name = format!("{} consumer", topology.service());
        let connection = crate::connection::connect(&self.config.url, &name)
            .await
            .map_err(|err| format!("{err:#}"))?;
        let result = self.consume(&connection, shutdown).await;
        let _ = tokio::time::timeout(
            ACK_TIMEOUT,
            connection.close(200, "consumer stopping".into()),
        )
        .await;
        result
    }

    async fn consume(
        &self,
        connection: &Connection,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let topology = &self.config.topology;
        let setup = async {
            let channel = connection.create_channel().await?;
            topology
                .declare_consumer(&channel, &self.consumers.routing_keys())
                .await?;
            channel
                .basic_qos(self.config.prefetch, BasicQosOptions::default())
                .await?;
            let publisher = connection.create_channel().await?;
            publisher
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            let tag = format!("{}-{}", topology.service(), Uuid::now_v7().simple());
            let stream = channel
                .basic_consume(
                    topology.queue().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, publisher, stream, tag))
        };
        let (channel, publisher, mut stream, tag) = setup
            .await
            .map_err(|err| format!("cannot set up consuming from {}: {err}", topology.queue()))?;
        self.status.up(COMPONENT);
        tracing::info!(queue = %topology.queue(), "event consumer connected");
        let context = Arc::new(Context {
            config: self.config.clone(),
            pool: self.pool.clone(),
            consumers: self.consumers.clone(),
            publisher,
        });
        let slots = Arc::new(Semaphore::new(self.config.concurrency));
        // Enough per batch to keep every slot busy with what RabbitMQ sends ahead.
        let max_batch =
            (usize::from(self.config.prefetch) / self.config.concurrency).clamp(1, MAX_BATCH);
        let mut in_flight = JoinSet::new();
        let failure = loop {
            while in_flight.try_join_next().is_some() {}
            // Take a delivery only when a slot is free, so prefetched messages wait in the
            // channel (and go back to RabbitMQ on shutdown) rather than in tasks.
            let slot = tokio::select! {
                () = shutdown.cancelled() => break None,
                slot = slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break None,
                },
            };
            let delivery = tokio::select! {
                () = shutdown.cancelled() => break None,
                delivery = stream.next() => delivery,
            };
            let first = match delivery {
                Some(Ok(delivery)) => delivery,
                Some(Err(err)) => break Some(format!("consuming failed: {err}")),
                None => break Some("the consumer was cancelled by RabbitMQ".to_owned()),
            };
            // Under load, deliveries that are already here join one batch (one transaction);
            // when they trickle in, a batch is a single delivery and nothing waits.
            let mut batch = vec![first];
            let mut failed = None;
            while batch.len() < max_batch {
                match stream.next().now_or_never() {
                    Some(Some(Ok(delivery))) => batch.push(delivery),
                    Some(Some(Err(err))) => {
                        failed = Some(format!("consuming failed: {err}"));
                        break;
                    }
                    Some(None) => {
                        failed = Some("the consumer was cancelled by RabbitMQ".to_owned());
                        break;
                    }
                    None => break,
                }
            }
            let context = context.clone();
            in_flight.spawn(async move {
                process_batch(&context, batch).await;
                drop(slot);
            });
            if failed.is_some() {
                break failed;
            }
        };
        if failure.is_none() {
            let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
            let _ = tokio::time::timeout(ACK_TIMEOUT, cancel).await;
        }
        // In-flight deliveries finish (and are acknowledged) before the channel closes; on a
        // broken connection their acknowledgements fail and RabbitMQ redelivers them.
        while in_flight.join_next().await.is_some() {}
        let _ =
            tokio::time::timeout(ACK_TIMEOUT, channel.close(200, "consumer stopping".into())).await;
        match failure {
            None => {
                self.status.down(COMPONENT, "stopped".into());
                Ok(())
            }
            Some(err) => Err(err),
        }
    }
}

/// Applies a batch of deliveries in one transaction (the inbox rows of all, then each
/// handler); if anything in it fails, the transaction rolls back and each delivery is
/// processed on its own, so one bad event never holds up the others. A handler may thus run
/// again after a rollback, as after a crash: only its database writes are exactly-once.
async fn process_batch(context: &Context, deliveries: Vec<Delivery>) {
    if deliveries.len() == 1 {
        for delivery in deliveries {
            process(context, delivery).await;
        }
        return;
    }
    let mut batch = Vec::with_capacity(deliveries.len());
    let mut singles = Vec::new();
    for delivery in deliveries {
        // Only deliveries that decode to a handler call go into the batch; everything else
        // (parking, mostly) takes the single path.
        let failed_before = header_u32(&delivery.properties, ATTEMPTS_HEADER).unwrap_or(0);
        let Ok(event) = envelope::decode(&delivery.data) else {
            singles.push(delivery);
            continue;
        };
        let (id, event_type, request_id) =
            (event.id, event.event_type.clone(), event.requestid.clone());
        match context.consumers.prepare(event, failed_before + 1) {
            Ok(prepared) => batch.push(Pending {
                delivery,
                id,
                event_type,
                request_id,
                attempt: failed_before + 1,
                prepared: Some(prepared),
            }),
            Err(_) => singles.push(delivery),
        }
    }
    match apply_batch(context, &mut batch).await {
        Ok(applied) => {
            for (pending, fresh) in batch.iter().zip(applied) {
                ack(&pending.delivery).await;
                let outcome = if fresh { "applied" } else { "duplicate" };
                metrics::counter!("bus_events_consumed_total", "type" => pending.event_type.clone(), "outcome" => outcome)
                    .increment(1);
            }
        }
        Err(err) => {
            tracing::info!(error = %err, size = batch.len(), "batch rolled back; applying its events one by one");
            for pending in batch {
                process(context, pending.delivery).await;
            }
        }
    }
    for delivery in singles {
        process(context, delivery).await;
    }
}

/// One delivery of a batch.
struct Pending {
    delivery: Delivery,
    id: Uuid,
    event_type: String,
    request_id: Option<String>,
    attempt: u32,
    prepared: Option<Box<dyn Prepared>>,
}

/// Inbox rows and handlers of a batch in one transaction; per delivery, whether it was new.
async fn apply_batch(context: &Context, batch: &mut [Pending]) -> anyhow::Result<Vec<bool>> {
    let mut tx = context.pool.begin().await?;
    let ids: Vec<Uuid> = batch.iter().map(|p| p.id).collect();
    let fresh: std::collections::HashSet<Uuid> = sqlx::query_scalar(
        "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])
         ON CONFLICT DO NOTHING RETURNING event_id",
    )
    .bind(context.config.topology.service())
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let mut seen = std::collections::HashSet::new();
    let mut applied = Vec::with_capacity(batch.len());
    for pending in batch.iter_mut() {
        // The same event twice in one batch: the second is a duplicate.
        let new = fresh.contains(&pending.id) && seen.insert(pending.id);
        applied.push(new);
        if !new {
            continue;
        }
        let Some(prepared) = pending.prepared.take() else {
            anyhow::bail!("handler call already used");
        };
        let span = tracing::info_span!(
            "event",
            event_id = %pending.id,
            event_type = %pending.event_type,
            request_id = tracing::field::Empty,
            attempt = pending.attempt,
        );
        if let Some(request_id) = &pending.request_id {
            span.record("request_id", request_id.as_str());
        }
        let started = Instant::now();
        run_handler(
            context,
            &mut tx,
            pending.id,
            pending.request_id.clone(),
            prepared,
        )
        .instrument(span)
        .await?;
        metrics::histogram!("bus_handler_duration_seconds", "type" => pending.event_type.clone())
            .record(started.elapsed().as_secs_f64());
    }
    tx.commit().await?;
    Ok(applied)
}

/// Runs one handler on `tx`, bounded by the handler timeout, with panics caught.
async fn run_handler(
    context: &Context,
    tx: &mut Tx,
    event_id: Uuid,
    request_id: Option<String>,
    prepared: Box<dyn Prepared>,
) -> anyhow::Result<()> {
    let run = AssertUnwindSafe(kit::request_id::scope(
        request_id.unwrap_or_else(|| event_id.to_string()),
        prepared.call(tx),
    ))
    .catch_unwind();
    match tokio::time::timeout(context.config.handler_timeout, run).await {
        Err(_) => Err(anyhow::anyhow!(
            "handler did not finish within {:?}",
            context.config.handler_timeout
        )),
        Ok(Err(panic)) => Err(anyhow::anyhow!(
            "handler panicked: {}",
            panic_message(&*panic)
        )),
        Ok(Ok(result)) => result,
    }
}

async fn process(context: &Context, delivery: Delivery) {
    let failed_before = header_u32(&delivery.properties, ATTEMPTS_HEADER).unwrap_or(0);
    let event = match envelope::decode(&delivery.data) {
        Ok(event) => event,
        Err(rejection) => {
            tracing::warn!(reason = rejection.reason(), error = %rejection.detail(), "message parked");
            let reason = rejection.reason();
            park(
                context,
                delivery,
                reason,
                &rejection.detail(),
                failed_before,
                None,
                "unknown".into(),
            )
            .await;
            return;
        }
    };
    let span = tracing::info_span!(
        "event",
        event_id = %event.id,
        event_type = %event.event_type,
        request_id = tracing::field::Empty,
        attempt = failed_before + 1,
    );
    if let Some(request_id) = &event.requestid {
        span.record("request_id", request_id.as_str());
    }
    async move {
        let event_id = event.id;
        let event_type = event.event_type.clone();
        let request_id = event.requestid.clone();
        let label = if context.consumers.knows(&event_type) {
            event_type.clone()
        } else {
            "unknown".to_owned()
        };
        let started = Instant::now();
        let outcome = match context.consumers.prepare(event, failed_before + 1) {
            Err(rejection) => Outcome::Rejected(rejection),
            Ok(prepared) => apply(context, event_id, request_id, prepared).await,
        };
        match outcome {
            Outcome::Applied => {
                metrics::histogram!("bus_handler_duration_seconds", "type" => label.clone())
                    .record(started.elapsed().as_secs_f64());
                ack(&delivery).await;
                tracing::debug!("event applied");
                metrics::counter!("bus_events_consumed_total", "type" => label, "outcome" => "applied")
                    .increment(1);
            }
            Outcome::Duplicate => {
                ack(&delivery).await;
                tracing::info!("duplicate delivery acknowledged without running the handler");
                metrics::counter!("bus_events_consumed_total", "type" => label, "outcome" => "duplicate")
                    .increment(1);
            }
            Outcome::Rejected(rejection) => {
                tracing::warn!(reason = rejection.reason(), error = %rejection.detail(), "event parked");
                let reason = rejection.reason();
                park(context, delivery, reason, &rejection.detail(), failed_before, Some(event_id), label).await;
            }
            Outcome::Failed(error) => {
                let failed = failed_before + 1;
                match context.config.topology.retry_after(failed) {
                    Some((queue, delay)) => {
                        tracing::warn!(%error, failed, retry_in = ?delay, "event handler failed; will retry");
                        let headers = [
                            (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(failed))),
                            (ERROR_HEADER, long_string(&truncate(&error))),
                        ];
                        if forward(context, &delivery, &queue, &headers, None).await {
                            metrics::counter!("bus_events_retried_total", "type" => label).increment(1);
                        }
                    }
                    None => {
                        tracing::error!(%error, failed, "event handler failed on every attempt; event parked");
                        park(context, delivery, "handler_failed", &error, failed, Some(event_id), label).await;
                    }
                }
            }
            Outcome::Unavailable(error) => {
                tracing::warn!(%error, "database unavailable; the event waits and keeps its attempts");
                match context.config.topology.retry_after(1) {
                    Some((queue, _)) => {
                        forward(context, &delivery, &queue, &[], None).await;
                    }
                    None => {
                        // No retry queue (max_attempts = 1): hold the slot a moment, then
                        // hand the delivery back.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        nack(&delivery).await;
                    }
                }
            }
        }
    }
    .instrument(span)
    .await;
}

/// Inbox row + handler in one transaction.
async fn apply(
    context: &Context,
    event_id: Uuid,
    request_id: Option<String>,
    prepared: Box<dyn Prepared>,
) -> Outcome {
    let mut tx = match context.pool.begin().await {
        Ok(tx) => tx,
        Err(err) => return Outcome::Unavailable(err.to_string()),
    };
    let inserted = sqlx::query(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(context.config.topology.service())
    .bind(event_id)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(done) if done.rows_affected() == 0 => return Outcome::Duplicate,
        Ok(_) => {}
        Err(err) => return Outcome::Unavailable(err.to_string()),
    }
    let result = run_handler(context, &mut tx, event_id, request_id, prepared).await;
    if let Err(err) = result {
        return if is_unavailable(&err) {
            Outcome::Unavailable(format!("{err:#}"))
        } else {
            Outcome::Failed(format!("{err:#}"))
        };
    }
    match tx.commit().await {
        Ok(()) => Outcome::Applied,
        Err(err) => {
            let err = anyhow::Error::from(err);
            if is_unavailable(&err) {
                Outcome::Unavailable(format!("commit failed: {err:#}"))
            } else {
                Outcome::Failed(format!("commit failed: {err:#}"))
            }
        }
    }
}

/// Errors that say "the database is unreachable" rather than "this event is bad".
fn is_unavailable(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            // Class 08: connection exception; 57P0x: server shutting down; 53: out of resources.
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                code.starts_with("08") || code.starts_with("57P") || code.starts_with("53")
            }),
            _ => false,
        })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Moves `delivery` to the parking queue with headers saying why.
async fn park(
    context: &Context,
    delivery: Delivery,
    reason: &'static str,
    error: &str,
    attempts: u32,
    event_id: Option<Uuid>,
    label: String,
) {
    let headers = [
        (REASON_HEADER, long_string(reason)),
        (ERROR_HEADER, long_string(&truncate(error))),
        (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(attempts))),
        (PARKED_AT_HEADER, long_string(&Utc::now().to_rfc3339())),
        (
            ROUTING_KEY_HEADER,
            long_string(delivery.routing_key.as_str()),
        ),
    ];
    // Every parked message gets an id, so an operator can name it in `events replay --id`.
    let message_id = delivery
        .properties
        .message_id()
        .clone()
        .unwrap_or_else(|| short_string(&event_id.unwrap_or_else(Uuid::now_v7).to_string()));
    let parking = context.config.topology.parking();
    if forward(context, &delivery, &parking, &headers, Some(message_id)).await {
        metrics::counter!("bus_events_parked_total", "type" => label, "reason" => reason)
            .increment(1);
    }
}

/// Publishes a copy of `delivery` to `queue` (through the default exchange) with `headers`
/// added, waits for RabbitMQ's confirm, then acknowledges the original; `true` when done.
/// When the copy cannot be placed, the original goes back to the queue instead.
async fn forward(
    context: &Context,
    delivery: &Delivery,
    queue: &str,
    headers: &[(&str, AMQPValue)],
    message_id: Option<ShortString>,
) -> bool {
    let mut table = delivery.properties.headers().clone().unwrap_or_default();
    for (key, value) in headers {
        table.insert(ShortString::from(*key), value.clone());
    }
    let mut properties = delivery.properties.clone().with_headers(table);
    if let Some(id) = message_id {
        properties = properties.with_message_id(id);
    }
    if delivery.properties.delivery_mode().is_none() {
        properties = properties.with_delivery_mode(2);
    }
    let placed = async {
        let confirm = context
            .publisher
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &delivery.data,
                properties,
            )
            .await
            .map_err(|err| err.to_string())?;
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Err(_) => Err("no confirm".to_owned()),
            Ok(Err(err)) => Err(err.to_string()),
            Ok(Ok(Confirmation::Ack(None))) | Ok(Ok(Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(format!("queue {queue} does not exist")),
            Ok(Ok(Confirmation::Nack(_))) => Err("RabbitMQ refused the copy".to_owned()),
        }
    }
    .await;
    match placed {
        Ok(()) => {
            ack(delivery).await;
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, queue, "could not move the message; handing it back");
            nack(delivery).await;
            false
        }
    }
}

async fn ack(delivery: &Delivery) {
    match tokio::time::timeout(ACK_TIMEOUT, delivery.ack(BasicAckOptions::default())).await {
        Ok(Ok(true)) => {}
        // The connection broke: RabbitMQ redelivers, and the inbox makes that harmless.
        Ok(Ok(false)) => tracing::warn!(
            "channel closed before the acknowledgement; the event will be redelivered"
        ),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "acknowledgement failed; the event will be redelivered")
        }
        Err(_) => tracing::warn!("acknowledgement timed out; the event may be redelivered"),
    }
}

async fn nack(delivery: &Delivery) {
    let requeue = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    if !matches!(
        tokio::time::timeout(ACK_TIMEOUT, delivery.nack(requeue)).await,
        Ok(Ok(true))
    ) {
        tracing::warn!("could not hand the delivery back; RabbitMQ will redeliver it");
    }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A numeric header, whatever integer type the sender used.
pub(crate) fn header_u32(properties: &BasicProperties, name: &str) -> Option<u32> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    let number: i64 = match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    };
    u32::try_from(number).ok()
}

/// A text header.
pub(crate) fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn long_errors_are_cut() {
        let cut = truncate(&"x".repeat(5000));
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS + 1);
        assert_eq!(truncate("short"), "short");
    }
}
