//! The transactional outbox: [`enqueue`] writes an event in the caller's transaction, so it
//! exists exactly when the change it announces committed; the [`Relay`] publishes pending
//! rows with publisher confirms and marks them published.
//!
//! The relay of every service instance works on the same table: each takes a batch of the
//! oldest pending rows with `FOR UPDATE SKIP LOCKED` (rows another instance is publishing are
//! skipped, not waited for), publishes them in id order, waits for RabbitMQ to confirm every
//! one, marks them published and commits. A relay that dies before its commit leaves the
//! rows pending, so they are published again (at least once; consumers de-duplicate by event
//! id). It wakes on `NOTIFY outbox` (sent by a trigger when a transaction that inserted rows
//! commits; it lingers a few milliseconds, so commits that follow each other make one batch)
//! and also polls, reconnects to RabbitMQ with backoff while it is unreachable (rows
//! simply wait), and deletes published rows after the retention period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use contracts::Event;
use futures_util::future::join_all;
use kit::SecretUrl;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::connection::{Backoff, Link, Session, Status, close_channel, open_channel};
use crate::envelope::{CONTENT_TYPE, CloudEvent};
use crate::topology::{declare_exchange, short_string};

/// The `NOTIFY` channel the outbox trigger signals.
pub const CHANNEL: &str = "outbox";
/// How long the relay waits after a wake before it takes a batch.
const LINGER: Duration = Duration::from_millis(5);
/// How long RabbitMQ may take to confirm a batch before the relay gives up on the connection.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How often published rows past retention (and old inbox rows) are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often the outbox lag gauges are refreshed.
const LAG_EVERY: Duration = Duration::from_secs(5);
/// Rows deleted per pruning statement, so pruning never holds long locks.
const PRUNE_CHUNK: i64 = 5_000;

/// Writes `event` to the outbox inside `tx`; it is published after `tx` commits, and never if
/// it rolls back. Returns the event id.
pub async fn enqueue<E: Event>(
    tx: &mut Transaction<'_, Postgres>,
    event: &E,
) -> Result<Uuid, sqlx::Error> {
    enqueue_envelope(tx, &CloudEvent::new(event, None)).await
}

/// Like [`enqueue`], naming the user who caused the event (the envelope's `actor`).
pub async fn enqueue_as<E: Event>(
    tx: &mut Transaction<'_, Postgres>,
    event: &E,
    actor: Uuid,
) -> Result<Uuid, sqlx::Error> {
    enqueue_envelope(tx, &CloudEvent::new(event, Some(actor))).await
}

async fn enqueue_envelope<E: Event>(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &CloudEvent<&E>,
) -> Result<Uuid, sqlx::Error> {
    let serialized = Serialized::new(envelope).map_err(|err| sqlx::Error::Encode(Box::new(err)))?;
    enqueue_serialized(tx, &serialized).await?;
    Ok(envelope.id)
}

/// An event's envelope as the outbox keeps it, for a service that writes it in a statement of
/// its own: `INSERT INTO outbox (event_id, event_type, envelope) VALUES (id, event_type,
/// json::json)`, published once that statement's transaction commits.
#[derive(Debug, Clone)]
pub struct Serialized {
    pub id: Uuid,
    pub event_type: String,
    pub json: String,
}

impl Serialized {
    pub fn new<D: serde::Serialize>(envelope: &CloudEvent<D>) -> serde_json::Result<Serialized> {
        Ok(Serialized {
            id: envelope.id,
            event_type: envelope.event_type.clone(),
            json: serde_json::to_string(envelope)?,
        })
    }
}

/// Writes a serialized envelope to the outbox inside `tx`.
pub async fn enqueue_serialized(
    tx: &mut Transaction<'_, Postgres>,
    event: &Serialized,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO outbox (event_id, event_type, envelope) VALUES ($1, $2, $3::json)")
        .bind(event.id)
        .bind(&event.event_type)
        .bind(&event.json)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes several events in one statement inside `tx` (a batch of outcomes, a fan-out): the
/// envelopes as built by [`CloudEvent::new`], each with its own `requestid` and `actor`.
/// Published after `tx` commits, in the order given.
pub async fn enqueue_all<D: serde::Serialize>(
    tx: &mut Transaction<'_, Postgres>,
    envelopes: &[CloudEvent<D>],
) -> Result<(), sqlx::Error> {
    if envelopes.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(envelopes.len());
    let mut types = Vec::with_capacity(envelopes.len());
    let mut bodies = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        ids.push(envelope.id);
        types.push(envelope.event_type.clone());
        bodies.push(
            serde_json::to_string(envelope).map_err(|err| sqlx::Error::Encode(Box::new(err)))?,
        );
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, event_type, envelope)
         SELECT e.id, e.type, e.body::json
         FROM unnest($1::uuid[], $2::text[], $3::text[]) WITH ORDINALITY AS e(id, type, body, n)
         ORDER BY e.n",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&bodies)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How far the relay is behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxLag {
    /// Rows not published yet.
    pub pending: i64,
    /// When the oldest of them was written.
    pub oldest_pending: Option<DateTime<Utc>>,
}

impl OutboxLag {
    /// Age of the oldest pending row (zero when none).
    pub fn oldest_age(&self) -> Duration {
        self.oldest_pending
            .and_then(|t| (Utc::now() - t).to_std().ok())
            .unwrap_or_default()
    }
}

/// Counts pending rows (cheap: the pending rows have their own partial index).
pub async fn lag(pool: &PgPool) -> sqlx::Result<OutboxLag> {
    let (pending, oldest_pending): (i64, Option<DateTime<Utc>>) =
        sqlx::query_as("SELECT count(*), min(created_at) FROM outbox WHERE published_at IS NULL")
            .fetch_one(pool)
            .await?;
    Ok(OutboxLag {
        pending,
        oldest_pending,
    })
}

/// Published rows still kept (until the retention period ends).
pub async fn published_count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NOT NULL")
        .fetch_one(pool)
        .await
}

/// Deletes published outbox rows older than `retention`; returns how many.
pub async fn prune(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    // The oldest ids are the oldest rows: delete those of them published before the cutoff,
    // until the head of the table has nothing old enough left (pending rows stay in it).
    let statement = "WITH head AS (SELECT id, published_at FROM outbox ORDER BY id LIMIT $2)
                     DELETE FROM outbox o USING head
                     WHERE o.id = head.id AND head.published_at < $1";
    delete_in_chunks(pool, statement, retention, |deleted| deleted == 0).await
}

/// Deletes inbox rows older than `retention`; returns how many.
pub async fn prune_inbox(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let statement = "DELETE FROM inbox WHERE ctid IN (
                         SELECT ctid FROM inbox WHERE processed_at < $1 LIMIT $2)";
    delete_in_chunks(pool, statement, retention, |deleted| {
        deleted < PRUNE_CHUNK as u64
    })
    .await
}

/// Runs `statement` (`$1` the cutoff, `$2` the chunk size) until `last(deleted)`, so pruning
/// never holds long locks; returns the rows deleted.
async fn delete_in_chunks(
    pool: &PgPool,
    statement: &'static str,
    retention: Duration,
    last: impl Fn(u64) -> bool,
) -> sqlx::Result<u64> {
    let cutoff = cutoff(retention);
    let mut total = 0;
    loop {
        let deleted = sqlx::query(statement)
            .bind(cutoff)
            .bind(PRUNE_CHUNK)
            .execute(pool)
            .await?
            .rows_affected();
        total += deleted;
        if last(deleted) {
            return Ok(total);
        }
    }
}

fn cutoff(retention: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| Utc::now().checked_sub_signed(r))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// What the relay needs.
#[derive(Clone)]
pub struct RelayConfig {
    pub url: SecretUrl,
    /// `<prefix>.events`.
    pub exchange: String,
    /// The service, as the messages' `app_id` and in the connection name.
    pub service: String,
    pub batch: u32,
    pub poll: Duration,
    pub retention: Duration,
    pub inbox_retention: Duration,
    pub reconnect_max_delay: Duration,
}

/// Publishes the outbox of one database. Run one per service instance; several are safe.
pub struct Relay {
    config: RelayConfig,
    pool: PgPool,
    status: Arc<Status>,
    /// `LISTEN outbox`, while it works; otherwise the relay polls.
    listener: Option<PgListener>,
    housekeeping: Housekeeping,
}

enum Failure {
    /// Postgres failed: keep the RabbitMQ connection, try again after a pause.
    Database(sqlx::Error),
    /// RabbitMQ failed: reconnect.
    Broker(String),
}

impl From<sqlx::Error> for Failure {
    fn from(err: sqlx::Error) -> Self {
        Failure::Database(err)
    }
}

const COMPONENT: &str = "relay";

impl Relay {
    pub fn new(config: RelayConfig, pool: PgPool, status: Arc<Status>) -> Self {
        status.register(COMPONENT);
        Relay {
            config,
            pool,
            status,
            listener: None,
            housekeeping: Housekeeping::default(),
        }
    }

    /// Runs until `shutdown`: connect, publish what is pending, wait for more, repeat; while
    /// RabbitMQ is unreachable, rows wait and the relay reconnects with backoff.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let status = self.status.clone();
        let url = self.config.url.clone();
        let link = Link {
            url: &url,
            connection_name: format!("{} outbox relay", self.config.service),
            component: COMPONENT,
            status: &status,
            reconnect_max_delay: self.config.reconnect_max_delay,
        };
        link.run(&mut self, &shutdown).await;
    }

    /// Publishes batches until the outbox has nothing pending; returns how many rows.
    ///
    /// Two batches overlap: the next one is read and sent while RabbitMQ confirms the previous
    /// one, which is then marked and committed. Messages still go out in id order; only when a
    /// batch fails can a later one be out before it is sent again.
    async fn drain(&self, channel: &Channel) -> Result<u64, Failure> {
        let mut total = 0;
        let mut previous: Option<Batch> = None;
        loop {
            let next = self.send_batch(channel).await;
            if let Some(batch) = previous.take() {
                total += self.settle(batch).await?;
            }
            match next? {
                None => return Ok(total),
                Some(batch) if batch.ids.len() < self.config.batch as usize => {
                    return Ok(total + self.settle(batch).await?);
                }
                Some(batch) => previous = Some(batch),
            }
        }
    }

    /// Locks the oldest pending rows (skipping rows another relay holds) and sends them.
    async fn send_batch(&self, channel: &Channel) -> Result<Option<Batch>, Failure> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, Uuid, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, event_id, event_type, envelope::text, created_at FROM outbox
             WHERE published_at IS NULL
             ORDER BY id
             LIMIT $1
             FOR UPDATE SKIP LOCKED",
        )
        .bind(i64::from(self.config.batch))
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let exchange = self.config.exchange.as_str();
        let app_id: ShortString = short_string(&self.config.service);
        // Every publish of the batch goes out before any confirm is awaited.
        let publishes = rows
            .iter()
            .map(|(_, event_id, event_type, envelope, created)| {
                let properties = BasicProperties::default()
                    .with_content_type(CONTENT_TYPE.into())
                    .with_delivery_mode(2)
                    .with_message_id(event_id.to_string().into())
                    .with_type(short_string(event_type))
                    .with_app_id(app_id.clone())
                    .with_timestamp(u64::try_from(created.timestamp()).unwrap_or(0));
                channel.basic_publish(
                    exchange.into(),
                    short_string(event_type),
                    BasicPublishOptions::default(),
                    envelope.as_bytes(),
                    properties,
                )
            });
        let mut confirms = Vec::with_capacity(rows.len());
        for sent in join_all(publishes).await {
            confirms.push(sent.map_err(|err| Failure::Broker(format!("publish failed: {err}")))?);
        }
        Ok(Some(Batch {
            tx,
            ids: rows.iter().map(|row| row.0).collect(),
            types: rows.into_iter().map(|row| row.2).collect(),
            confirms,
        }))
    }

    /// Waits for every confirm of `batch`, then marks its rows published and commits.
    async fn settle(&self, batch: Batch) -> Result<u64, Failure> {
        let Batch {
            mut tx,
            ids,
            types,
            confirms,
        } = batch;
        let outcomes = tokio::time::timeout(CONFIRM_TIMEOUT, join_all(confirms))
            .await
            .map_err(|_| {
                Failure::Broker(format!("no publisher confirm within {CONFIRM_TIMEOUT:?}"))
            })?;
        for outcome in outcomes {
            match outcome {
                Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => {}
                Ok(Confirmation::Nack(_)) => {
                    return Err(Failure::Broker("RabbitMQ refused a message (nack)".into()));
                }
                Err(err) => return Err(Failure::Broker(format!("publish not confirmed: {err}"))),
            }
        }
        sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        for event_type in types {
            metrics::counter!("bus_events_published_total", "type" => event_type).increment(1);
        }
        Ok(ids.len() as u64)
    }

    /// Waits for a NOTIFY or the poll interval; `false` on shutdown.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        if self.listener.is_none() {
            self.listener = self.listen().await;
        }
        let poll = tokio::time::sleep(self.config.poll);
        match &mut self.listener {
            Some(active) => {
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = poll => {}
                    received = active.try_recv() => {
                        // Lost connection or error: poll until a new listener is up.
                        if !matches!(received, Ok(Some(_))) {
                            self.listener = None;
                        } else {
                            // Under load, commits follow each other: a moment's wait lets
                            // one batch take what they wrote, and the wakes they sent meanwhile
                            // are spent.
                            tokio::time::sleep(LINGER).await;
                            while active.next_buffered().is_some() {}
                        }
                    }
                }
            }
            None => {
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = poll => {}
                }
            }
        }
        true
    }

    async fn listen(&self) -> Option<PgListener> {
        let connect = async {
            let mut listener = PgListener::connect_with(&self.pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        match connect.await {
            Ok(listener) => Some(listener),
            Err(err) => {
                tracing::warn!(error = %err, "outbox relay cannot LISTEN; polling instead");
                None
            }
        }
    }
}

impl Session for Relay {
    type Open = Channel;

    async fn open(&mut self, connection: &Connection) -> Result<Channel, String> {
        let exchange = &self.config.exchange;
        let setup = async |channel: Channel| {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            declare_exchange(&channel, exchange).await
        };
        let (channel, ()) = open_channel(connection, setup)
            .await
            .map_err(|err| format!("cannot set up the relay channel: {err}"))?;
        Ok(channel)
    }

    async fn work(
        &mut self,
        connection: &Connection,
        channel: Channel,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let mut database = Backoff::new(self.config.reconnect_max_delay);
        let worked = loop {
            match self.drain(&channel).await {
                Ok(_) => database.reset(),
                Err(Failure::Database(err)) => {
                    tracing::warn!(error = %err, "outbox relay cannot read the outbox");
                    if !database.wait(shutdown).await {
                        break Ok(());
                    }
                    continue;
                }
                Err(Failure::Broker(err)) => break Err(err),
            }
            self.housekeeping.run(&self.pool, &self.config).await;
            if !self.wait(shutdown).await {
                break Ok(());
            }
            if !connection.status().connected() {
                break Err("connection to RabbitMQ lost".to_owned());
            }
        };
        close_channel(&channel, "relay stopping").await;
        worked
    }

    /// Events wait in the outbox meanwhile; it is still pruned and measured.
    async fn unreachable(&mut self) {
        self.housekeeping.run(&self.pool, &self.config).await;
    }
}

/// A batch sent and awaiting its confirms; its rows stay locked by `tx` until settled.
struct Batch {
    tx: Transaction<'static, Postgres>,
    ids: Vec<i64>,
    types: Vec<String>,
    confirms: Vec<lapin::PublisherConfirm>,
}

/// Pruning and lag gauges, each at its own pace.
#[derive(Default)]
struct Housekeeping {
    last_prune: Option<Instant>,
    last_lag: Option<Instant>,
}

impl Housekeeping {
    async fn run(&mut self, pool: &PgPool, config: &RelayConfig) {
        let due =
            |last: Option<Instant>, every: Duration| last.is_none_or(|t| t.elapsed() >= every);
        if due(self.last_lag, LAG_EVERY) {
            self.last_lag = Some(Instant::now());
            match lag(pool).await {
                Ok(lag) => {
                    metrics::gauge!("bus_outbox_pending_events").set(lag.pending as f64);
                    metrics::gauge!("bus_outbox_oldest_pending_seconds")
                        .set(lag.oldest_age().as_secs_f64());
                }
                Err(err) => tracing::warn!(error = %err, "cannot measure the outbox lag"),
            }
        }
        if due(self.last_prune, PRUNE_EVERY) {
            self.last_prune = Some(Instant::now());
            match prune(pool, config.retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned published outbox rows"),
                Err(err) => tracing::warn!(error = %err, "pruning the outbox failed"),
            }
            match prune_inbox(pool, config.inbox_retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "pruned inbox rows"),
                Err(err) => tracing::warn!(error = %err, "pruning the inbox failed"),
            }
        }
    }
}
