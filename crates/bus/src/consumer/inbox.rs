//! The inbox: a handler runs in the same transaction as the `(consumer, event_id)` row that
//! records the event as handled, so its database writes commit exactly once however often
//! RabbitMQ delivers the event. Handlers are bounded by the handler timeout and their panics
//! are caught; errors that mean "the database is unreachable" are told apart from errors that
//! mean "this event fails".

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use super::registry::{EventInfo, Prepared, Tx};

/// How applying one delivery ended.
pub(super) enum Outcome {
    Applied,
    Duplicate,
    Failed(String),
    /// The database could not be reached: not the event's fault.
    Unavailable(String),
}

/// The inbox of one consumer (the service).
pub(super) struct Inbox {
    pool: PgPool,
    consumer: String,
    handler_timeout: Duration,
}

impl Inbox {
    pub(super) fn new(pool: PgPool, consumer: &str, handler_timeout: Duration) -> Self {
        Inbox {
            pool,
            consumer: consumer.to_owned(),
            handler_timeout,
        }
    }

    /// Inbox row + handler in one transaction.
    pub(super) async fn apply(&self, event: &EventInfo, call: Box<dyn Prepared>) -> Outcome {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(err) => return Outcome::Unavailable(err.to_string()),
        };
        let inserted = sqlx::query(
            "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(event.id)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 0 => return Outcome::Duplicate,
            Ok(_) => {}
            Err(err) => return Outcome::Unavailable(err.to_string()),
        }
        if let Err(err) = self.run_handler(&mut tx, event, call).await {
            return failure(&err, "");
        }
        match tx.commit().await {
            Ok(()) => Outcome::Applied,
            Err(err) => failure(&err.into(), "commit failed: "),
        }
    }

    /// The inbox rows of a batch in one statement, then each new event's handler, all in one
    /// transaction; per event, whether it was new. Any error rolls everything back.
    pub(super) async fn apply_batch(
        &self,
        batch: Vec<(&EventInfo, Box<dyn Prepared>)>,
    ) -> anyhow::Result<Vec<bool>> {
        let mut tx = self.pool.begin().await?;
        let ids: Vec<Uuid> = batch.iter().map(|(event, _)| event.id).collect();
        let fresh: HashSet<Uuid> = sqlx::query_scalar(
            "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])
             ON CONFLICT DO NOTHING RETURNING event_id",
        )
        .bind(&self.consumer)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let mut seen = HashSet::new();
        let mut applied = Vec::with_capacity(batch.len());
        for (event, call) in batch {
            // The same event twice in one batch: the second is a duplicate.
            let new = fresh.contains(&event.id) && seen.insert(event.id);
            applied.push(new);
            if !new {
                continue;
            }
            let started = Instant::now();
            self.run_handler(&mut tx, event, call)
                .instrument(event.span())
                .await?;
            metrics::histogram!("bus_handler_duration_seconds", "type" => event.label.clone())
                .record(started.elapsed().as_secs_f64());
        }
        tx.commit().await?;
        Ok(applied)
    }

    /// Runs one handler on `tx`, bounded by the handler timeout, with panics caught, and with
    /// the event's request id as the current one.
    async fn run_handler(
        &self,
        tx: &mut Tx,
        event: &EventInfo,
        call: Box<dyn Prepared>,
    ) -> anyhow::Result<()> {
        let request_id = event
            .request_id
            .clone()
            .unwrap_or_else(|| event.id.to_string());
        let run =
            AssertUnwindSafe(kit::request_id::scope(request_id, call.call(tx))).catch_unwind();
        match tokio::time::timeout(self.handler_timeout, run).await {
            Err(_) => Err(anyhow::anyhow!(
                "handler did not finish within {:?}",
                self.handler_timeout
            )),
            Ok(Err(panic)) => Err(anyhow::anyhow!(
                "handler panicked: {}",
                panic_message(&*panic)
            )),
            Ok(Ok(result)) => result,
        }
    }
}

fn failure(err: &anyhow::Error, context: &str) -> Outcome {
    if is_unavailable(err) {
        Outcome::Unavailable(format!("{context}{err:#}"))
    } else {
        Outcome::Failed(format!("{context}{err:#}"))
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
