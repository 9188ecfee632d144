//! The consumer's life on RabbitMQ: on each connection (kept by a [`Link`]) it declares the
//! topology, consumes the service queue with `amqp.prefetch` deliveries sent ahead, and hands
//! them in batches to at most `amqp.concurrency` workers.
//!
//! It stops in order, so that nothing is lost and nothing is logged as broken: cancel the
//! subscription (RabbitMQ sends nothing more), let the running batches finish and acknowledge,
//! close the consuming channel (RabbitMQ takes back what was prefetched but not started), close
//! the publishing channel, and only then the connection.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use kit::SecretUrl;
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::delivery::Processor;
use super::inbox::Inbox;
use super::registry::Consumers;
use crate::connection::{CLOSE_TIMEOUT, Link, Session, Status, close_channel, open_channel};
use crate::topology::Topology;

/// Most deliveries applied in one transaction.
const MAX_BATCH: usize = 32;

const COMPONENT: &str = "consumer";

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
    /// its channels, which hands prefetched, unstarted deliveries back to RabbitMQ.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let status = self.status.clone();
        let url = self.config.url.clone();
        let link = Link {
            url: &url,
            connection_name: format!("{} consumer", self.config.topology.service()),
            component: COMPONENT,
            status: &status,
            reconnect_max_delay: self.config.reconnect_max_delay,
        };
        link.run(&mut self, &shutdown).await;
    }

    /// Enough per batch to keep every worker busy with what RabbitMQ sends ahead.
    fn max_batch(&self) -> usize {
        (usize::from(self.config.prefetch) / self.config.concurrency.max(1)).clamp(1, MAX_BATCH)
    }
}

/// The channels of one connection.
pub(crate) struct Channels {
    /// Consumes the service queue.
    consuming: Channel,
    stream: lapin::Consumer,
    tag: String,
    /// Publishes retry and parking copies, with confirms.
    publisher: Channel,
}

impl Session for Consumer {
    type Open = Channels;

    async fn open(&mut self, connection: &Connection) -> Result<Channels, String> {
        let topology = &self.config.topology;
        let routing_keys = self.consumers.routing_keys();
        let tag = format!("{}-{}", topology.service(), Uuid::now_v7().simple());
        let prefetch = self.config.prefetch;
        let subscribe = async |channel: Channel| {
            topology.declare_consumer(&channel, &routing_keys).await?;
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            channel
                .basic_consume(
                    topology.queue().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        let setup_error =
            |err: lapin::Error| format!("cannot set up consuming from {}: {err}", topology.queue());
        let (consuming, stream) = open_channel(connection, subscribe)
            .await
            .map_err(setup_error)?;
        let confirming = async |channel: Channel| {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
        };
        match open_channel(connection, confirming).await {
            Ok((publisher, ())) => Ok(Channels {
                consuming,
                stream,
                tag,
                publisher,
            }),
            Err(err) => {
                close_channel(&consuming, "setup failed").await;
                Err(setup_error(err))
            }
        }
    }

    async fn work(
        &mut self,
        _connection: &Connection,
        channels: Channels,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let Channels {
            consuming,
            stream,
            tag,
            publisher,
        } = channels;
        tracing::info!(queue = %self.config.topology.queue(), "event consumer started");
        let processor = Processor::new(
            self.consumers.clone(),
            Inbox::new(
                self.pool.clone(),
                self.config.topology.service(),
                self.config.handler_timeout,
            ),
            self.config.topology.clone(),
            publisher.clone(),
        );
        let mut intake = Intake::new(stream, processor, self.config.concurrency, self.max_batch());
        let failure = intake.run(shutdown).await;
        if failure.is_none() {
            let cancel = consuming.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, cancel).await;
        }
        // Running batches finish (and are acknowledged) before the channels close; on a broken
        // connection their acknowledgements fail and RabbitMQ redelivers them.
        let stream = intake.finish().await;
        close_channel(&consuming, "consumer stopping").await;
        close_channel(&publisher, "consumer stopping").await;
        // Dropped only now: a subscription dropped while its channel is open is cancelled by
        // lapin in the background.
        drop(stream);
        match failure {
            None => Ok(()),
            Some(err) => Err(err),
        }
    }
}

/// Takes deliveries off the consumer stream while a worker slot is free, and starts a worker
/// per batch. Prefetched deliveries wait in the channel rather than in tasks, so that on
/// shutdown they go back to RabbitMQ untouched.
struct Intake {
    stream: lapin::Consumer,
    processor: Arc<Processor>,
    slots: Arc<Semaphore>,
    workers: JoinSet<()>,
    max_batch: usize,
}

impl Intake {
    fn new(
        stream: lapin::Consumer,
        processor: Processor,
        concurrency: usize,
        max_batch: usize,
    ) -> Self {
        Intake {
            stream,
            processor: Arc::new(processor),
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            workers: JoinSet::new(),
            max_batch,
        }
    }

    /// Until `shutdown` (`None`) or until the subscription fails (`Some`, why).
    async fn run(&mut self, shutdown: &CancellationToken) -> Option<String> {
        loop {
            while self.workers.try_join_next().is_some() {}
            let slot = tokio::select! {
                () = shutdown.cancelled() => return None,
                slot = self.slots.clone().acquire_owned() => slot.ok()?,
            };
            let first = tokio::select! {
                () = shutdown.cancelled() => return None,
                next = self.stream.next() => match received(next) {
                    Ok(delivery) => delivery,
                    Err(failure) => return Some(failure),
                },
            };
            let (batch, failure) = self.gather(first);
            self.start(batch, slot);
            if failure.is_some() {
                return failure;
            }
        }
    }

    /// `first` and the deliveries that are already here, up to a batch. Under load they share
    /// one transaction; when deliveries trickle in, a batch is one delivery and nothing waits.
    fn gather(&mut self, first: Delivery) -> (Vec<Delivery>, Option<String>) {
        let mut batch = vec![first];
        while batch.len() < self.max_batch {
            match self.stream.next().now_or_never() {
                None => break,
                Some(next) => match received(next) {
                    Ok(delivery) => batch.push(delivery),
                    Err(failure) => return (batch, Some(failure)),
                },
            }
        }
        (batch, None)
    }

    fn start(&mut self, batch: Vec<Delivery>, slot: OwnedSemaphorePermit) {
        let processor = self.processor.clone();
        self.workers.spawn(async move {
            processor.process_batch(batch).await;
            drop(slot);
        });
    }

    /// Waits for every running batch; returns the subscription, to be dropped after its
    /// channel is closed.
    async fn finish(mut self) -> lapin::Consumer {
        while self.workers.join_next().await.is_some() {}
        self.stream
    }
}

/// A delivery, or why the subscription ended.
fn received(next: Option<lapin::Result<Delivery>>) -> Result<Delivery, String> {
    match next {
        Some(Ok(delivery)) => Ok(delivery),
        Some(Err(err)) => Err(format!("consuming failed: {err}")),
        None => Err("the consumer was cancelled by RabbitMQ".to_owned()),
    }
}
