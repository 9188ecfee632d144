//! Events between services: CloudEvents over RabbitMQ, with a transactional outbox on the
//! producing side and exactly-once handling (an inbox) on the consuming side. No event is
//! lost, none is applied twice, and no message can stop a consumer: what cannot be handled is
//! parked with its reason, for an operator to look at and replay.
//!
//! A service lists [`SCHEMA`] (the `outbox` and `inbox` tables) in its `kit::Database::shared`,
//! and wires the relay and its consumers in its `start` (see the template's `src/events.rs`):
//!
//! ```ignore
//! // kit::Service::start
//! let started = kit::Started::new(state).with(bus::wire(resources, events::consumers()))?;
//! // kit::Service::commands / run_command: the `events parked | replay | outbox` subcommands
//! fn commands() -> Vec<clap::Command> { bus::ops::define() }
//! async fn run_command(name, matches, resources) { bus::ops::run(name, matches, resources).await }
//! ```
//!
//! and publishes from any transaction: `bus::outbox::enqueue(&mut tx, &event).await?` (or, for
//! many events at once, `bus::enqueue_all(&mut tx, &envelopes)`).
//!
//! - [`envelope`]: the CloudEvents 1.0 JSON envelope.
//! - [`topology`]: exchange and queue names (`<prefix>.events`, `<prefix>.<service>`,
//!   retry queues, `<prefix>.<service>.parking`).
//! - [`outbox`]: `enqueue` and the relay.
//! - [`consumer`]: typed handlers, inbox, retries, parking.
//! - [`ops`]: the `events parked | replay | outbox` subcommands.
//! - [`testing`]: helpers for tests (watch what is published, publish raw bytes, clean up).
//!
//! Metrics (Prometheus, via kit's recorder): `bus_events_published_total{type}`,
//! `bus_events_consumed_total{type,outcome}`, `bus_events_retried_total{type}`,
//! `bus_events_parked_total{type,reason}`, `bus_handler_duration_seconds{type}`,
//! `bus_outbox_pending_events`, `bus_outbox_oldest_pending_seconds`,
//! `bus_connected{component}`. See `docs/events.md`.

pub mod connection;
pub mod consumer;
pub mod envelope;
pub mod ops;
pub mod outbox;
pub mod testing;
pub mod topology;

use std::sync::Arc;

use kit::config::AmqpSettings;
use kit::health::Check;
use kit::{Resources, SecretUrl, Started};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

pub use connection::{BusCheck, Status};
pub use consumer::{Consumer, ConsumerConfig, Consumers, Received, Tx};
pub use envelope::CloudEvent;
pub use outbox::{
    Relay, RelayConfig, Serialized, enqueue, enqueue_all, enqueue_as, enqueue_serialized,
};
pub use topology::Topology;

/// The `outbox` and `inbox` tables, defined once for every service.
pub static SCHEMA: kit::SharedSchema = kit::SharedSchema {
    owner: "bus",
    migrator: &MIGRATOR,
    replaces: &["outbox", "inbox"],
    // Envelopes carry the events' data (addresses, names): a copy publishes none of the
    // original's events, so the outbox is emptied. The inbox holds event ids only.
    personal: &[kit::Personal::clear("outbox")],
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// One service's bus: its settings, database and connection status.
#[derive(Clone)]
pub struct Bus {
    service: String,
    url: SecretUrl,
    settings: AmqpSettings,
    pool: PgPool,
    status: Arc<Status>,
}

impl Bus {
    /// `None` when `settings.url` is not set.
    pub fn new(service: &str, settings: &AmqpSettings, pool: PgPool) -> Option<Bus> {
        Some(Bus {
            service: service.to_owned(),
            url: settings.url.clone()?,
            settings: settings.clone(),
            pool,
            status: Arc::new(Status::default()),
        })
    }

    pub fn topology(&self) -> Topology {
        Topology::from_settings(&self.service, &self.settings)
    }

    pub fn url(&self) -> &SecretUrl {
        &self.url
    }

    /// The outbox relay (run it with [`Relay::run`]).
    pub fn relay(&self) -> Relay {
        Relay::new(
            RelayConfig {
                url: self.url.clone(),
                exchange: self.topology().exchange(),
                service: self.service.clone(),
                batch: self.settings.outbox_batch,
                poll: self.settings.outbox_poll,
                retention: self.settings.outbox_retention,
                inbox_retention: self.settings.inbox_retention,
                reconnect_max_delay: self.settings.reconnect_max_delay,
            },
            self.pool.clone(),
            self.status.clone(),
        )
    }

    /// The consumer running `consumers` (run it with [`Consumer::run`]).
    pub fn consumer(&self, consumers: Consumers) -> Consumer {
        Consumer::new(
            ConsumerConfig {
                url: self.url.clone(),
                topology: self.topology(),
                prefetch: self.settings.prefetch,
                concurrency: self.settings.concurrency,
                handler_timeout: self.settings.handler_timeout,
                reconnect_max_delay: self.settings.reconnect_max_delay,
            },
            self.pool.clone(),
            consumers,
            self.status.clone(),
        )
    }

    /// The `bus` readiness check: down while the relay or the consumer is disconnected.
    pub fn check(&self) -> Arc<dyn Check> {
        Arc::new(BusCheck(self.status.clone()))
    }

    /// Spawns the relay (and the consumer, when there are handlers) on `tasks`, stopping on
    /// `shutdown`.
    pub fn spawn(
        &self,
        consumers: Option<Consumers>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
    ) {
        tasks.spawn(self.relay().run(shutdown.clone()));
        if let Some(consumers) = consumers.filter(|c| !c.is_empty()) {
            tasks.spawn(self.consumer(consumers).run(shutdown.clone()));
        }
    }
}

/// For a service's `start`: runs the outbox relay and, when `consumers` has handlers, the
/// consumer, until shutdown, and reports the bus on `/readyz` as a dependency the service
/// serves without (events wait in the outbox while RabbitMQ is down). Without `amqp.url`
/// (tests that do not exercise the bus) nothing runs and events stay in the outbox.
pub fn wire<A, S>(
    resources: &Resources<A>,
    consumers: Consumers,
) -> impl FnOnce(Started<S>) -> anyhow::Result<Started<S>> {
    let bus = Bus::new(
        resources.name,
        &resources.settings.amqp,
        resources.db.clone(),
    );
    let shutdown = resources.shutdown.clone();
    move |started| {
        let Some(bus) = bus else {
            tracing::warn!("amqp.url is not set: events stay in the outbox and no consumer runs");
            return Ok(started);
        };
        let relay = bus.relay();
        let mut started = started
            .degraded_without(BusCheck(bus.status.clone()))
            .task("outbox relay", relay.run(shutdown.clone()));
        if !consumers.is_empty() {
            let consumer = bus.consumer(consumers);
            started = started.task("event consumer", consumer.run(shutdown));
        }
        Ok(started)
    }
}
