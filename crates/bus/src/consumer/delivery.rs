//! One delivery, or a batch of them, from dispatch to its end: acknowledged once applied (or
//! recognised as a duplicate), or copied to a retry queue or to the parking queue and
//! acknowledged once RabbitMQ confirmed the copy. A copy that cannot be placed hands the
//! original back to the queue instead, so nothing is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions};
use lapin::types::ShortString;
use lapin::{Channel, Confirmation};
use tracing::Instrument;
use uuid::Uuid;

use super::headers::{self, Header};
use super::inbox::{Inbox, Outcome};
use super::registry::{Consumers, Dispatch, EventInfo, Prepared};
use crate::topology::{Topology, short_string};

/// How long RabbitMQ may take to confirm a retry or parking copy.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on an acknowledgement: on a dead connection it may never complete.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// A delivery the database could not take, with no retry queue to wait in, is handed back
/// after this pause (so that it does not spin).
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(1);

/// What processing deliveries shares: the handlers, the inbox, the queue names and the
/// confirming channel that retry and parking copies are published on.
pub(super) struct Processor {
    consumers: Arc<Consumers>,
    inbox: Inbox,
    topology: Topology,
    publisher: Channel,
}

impl Processor {
    pub(super) fn new(
        consumers: Arc<Consumers>,
        inbox: Inbox,
        topology: Topology,
        publisher: Channel,
    ) -> Self {
        Processor {
            consumers,
            inbox,
            topology,
            publisher,
        }
    }

    /// Applies a batch of deliveries in one transaction (the inbox rows of all, then each
    /// handler); if anything in it fails, the transaction rolls back and each delivery is
    /// processed on its own, so one bad event never holds up the others. A handler may thus
    /// run again after a rollback, as after a crash: only its database writes are exactly-once.
    pub(super) async fn process_batch(&self, deliveries: Vec<Delivery>) {
        if deliveries.len() == 1 {
            for delivery in deliveries {
                self.process(delivery).await;
            }
            return;
        }
        let mut batch = Vec::with_capacity(deliveries.len());
        let mut calls = Vec::with_capacity(deliveries.len());
        let mut singles = Vec::new();
        for delivery in deliveries {
            // Only deliveries that come to a handler call join the batch; the others (parking,
            // mostly) take the single path.
            let failed_before = headers::attempts(&delivery.properties);
            match self.consumers.dispatch(&delivery.data, failed_before) {
                Dispatch::Handle(event, call) => {
                    batch.push((delivery, event));
                    calls.push(call);
                }
                other => singles.push((delivery, failed_before, other)),
            }
        }
        if !batch.is_empty() {
            let applying = batch.iter().map(|(_, event)| event).zip(calls).collect();
            match self.inbox.apply_batch(applying).await {
                Ok(applied) => {
                    for ((delivery, event), fresh) in batch.iter().zip(applied) {
                        ack(delivery).await;
                        let outcome = if fresh { "applied" } else { "duplicate" };
                        metrics::counter!("bus_events_consumed_total", "type" => event.label.clone(), "outcome" => outcome)
                            .increment(1);
                    }
                }
                Err(err) => {
                    tracing::info!(error = %err, size = batch.len(), "batch rolled back; applying its events one by one");
                    for (delivery, _) in batch {
                        self.process(delivery).await;
                    }
                }
            }
        }
        for (delivery, failed_before, dispatch) in singles {
            self.settle(delivery, failed_before, dispatch).await;
        }
    }

    async fn process(&self, delivery: Delivery) {
        let failed_before = headers::attempts(&delivery.properties);
        let dispatch = self.consumers.dispatch(&delivery.data, failed_before);
        self.settle(delivery, failed_before, dispatch).await;
    }

    async fn settle(&self, delivery: Delivery, failed_before: u32, dispatch: Dispatch) {
        match dispatch {
            Dispatch::Unreadable(rejection) => {
                tracing::warn!(reason = rejection.reason(), error = %rejection.detail(), "message parked");
                let (reason, detail) = (rejection.reason(), rejection.detail());
                self.park(
                    delivery,
                    reason,
                    &detail,
                    failed_before,
                    None,
                    "unknown".into(),
                )
                .await;
            }
            Dispatch::Rejected(event, rejection) => {
                let span = event.span();
                async {
                    tracing::warn!(reason = rejection.reason(), error = %rejection.detail(), "event parked");
                    let (reason, detail) = (rejection.reason(), rejection.detail());
                    self.park(delivery, reason, &detail, failed_before, Some(event.id), event.label)
                        .await;
                }
                .instrument(span)
                .await;
            }
            Dispatch::Handle(event, call) => {
                let span = event.span();
                self.handle(delivery, event, call).instrument(span).await;
            }
        }
    }

    async fn handle(&self, delivery: Delivery, event: EventInfo, call: Box<dyn Prepared>) {
        let started = Instant::now();
        match self.inbox.apply(&event, call).await {
            Outcome::Applied => {
                metrics::histogram!("bus_handler_duration_seconds", "type" => event.label.clone())
                    .record(started.elapsed().as_secs_f64());
                ack(&delivery).await;
                tracing::debug!("event applied");
                metrics::counter!("bus_events_consumed_total", "type" => event.label, "outcome" => "applied")
                    .increment(1);
            }
            Outcome::Duplicate => {
                ack(&delivery).await;
                tracing::info!("duplicate delivery acknowledged without running the handler");
                metrics::counter!("bus_events_consumed_total", "type" => event.label, "outcome" => "duplicate")
                    .increment(1);
            }
            Outcome::Failed(error) => self.retry_or_park(delivery, event, &error).await,
            Outcome::Unavailable(error) => {
                tracing::warn!(%error, "database unavailable; the event waits and keeps its attempts");
                match self.topology.retry_after(1) {
                    Some((queue, _)) => {
                        self.forward(&delivery, &queue, Vec::new(), None).await;
                    }
                    None => {
                        // No retry queue (max_attempts = 1): hold the slot a moment, then
                        // hand the delivery back.
                        tokio::time::sleep(UNAVAILABLE_PAUSE).await;
                        nack(&delivery).await;
                    }
                }
            }
        }
    }

    /// After a failed handler run: to the retry queue of this attempt, or parked after the
    /// last one.
    async fn retry_or_park(&self, delivery: Delivery, event: EventInfo, error: &str) {
        let failed = event.attempt;
        match self.topology.retry_after(failed) {
            Some((queue, delay)) => {
                tracing::warn!(%error, failed, retry_in = ?delay, "event handler failed; will retry");
                let headers = headers::retry_headers(failed, error);
                if self.forward(&delivery, &queue, headers, None).await {
                    metrics::counter!("bus_events_retried_total", "type" => event.label)
                        .increment(1);
                }
            }
            None => {
                tracing::error!(%error, failed, "event handler failed on every attempt; event parked");
                let reason = "handler_failed";
                self.park(delivery, reason, error, failed, Some(event.id), event.label)
                    .await;
            }
        }
    }

    /// Moves `delivery` to the parking queue with headers saying why.
    async fn park(
        &self,
        delivery: Delivery,
        reason: &'static str,
        error: &str,
        attempts: u32,
        event_id: Option<Uuid>,
        label: String,
    ) {
        let headers = headers::parking_headers(
            reason,
            error,
            attempts,
            delivery.routing_key.as_str(),
            Utc::now(),
        );
        // Every parked message gets an id, so an operator can name it in `events replay --id`.
        let message_id =
            delivery.properties.message_id().clone().unwrap_or_else(|| {
                short_string(&event_id.unwrap_or_else(Uuid::now_v7).to_string())
            });
        let parking = self.topology.parking();
        if self
            .forward(&delivery, &parking, headers, Some(message_id))
            .await
        {
            metrics::counter!("bus_events_parked_total", "type" => label, "reason" => reason)
                .increment(1);
        }
    }

    /// Publishes a copy of `delivery` to `queue` (through the default exchange) with `headers`
    /// added, waits for RabbitMQ's confirm, then acknowledges the original; `true` when done.
    /// When the copy cannot be placed, the original goes back to the queue instead.
    async fn forward(
        &self,
        delivery: &Delivery,
        queue: &str,
        headers: Vec<Header>,
        message_id: Option<ShortString>,
    ) -> bool {
        let mut table = delivery.properties.headers().clone().unwrap_or_default();
        for (key, value) in headers {
            table.insert(ShortString::from(key), value);
        }
        let mut properties = delivery.properties.clone().with_headers(table);
        if let Some(id) = message_id {
            properties = properties.with_message_id(id);
        }
        if delivery.properties.delivery_mode().is_none() {
            properties = properties.with_delivery_mode(2);
        }
        let placed = async {
            let confirm = self
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
