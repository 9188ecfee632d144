//! Hot statements shared by concurrent requests, as a group commit: each kind is run by one
//! task on a connection of its own, for every request waiting at that moment, in one statement
//! (one round trip and one commit for all of them). Under load the batches grow by themselves;
//! alone, a request waits for nobody.
//!
//! A batch that fails is run again one request at a time, so an error is only its own
//! request's. The connection is dropped after an error and made again for the next batch.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::{mpsc, oneshot};

/// What a batch statement returns: one output per input, in the inputs' order.
pub type BatchFuture<'c, O> = Pin<Box<dyn Future<Output = sqlx::Result<Vec<O>>> + Send + 'c>>;

/// Runs one statement for a batch of inputs.
pub type RunBatch<I, O> = for<'c> fn(&'c mut PgConnection, &'c [I]) -> BatchFuture<'c, O>;

type Waiting<I, O> = (I, oneshot::Sender<sqlx::Result<O>>);

/// The requests' side of a batch task: cheap to clone; the task ends with the last clone.
pub struct Batcher<I, O> {
    sender: mpsc::UnboundedSender<Waiting<I, O>>,
}

impl<I, O> Clone for Batcher<I, O> {
    fn clone(&self) -> Self {
        Batcher {
            sender: self.sender.clone(),
        }
    }
}

impl<I: Send + Sync + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the task: `run` on batches of at most `max` inputs, on a connection made with
    /// `options`.
    pub fn start(options: Arc<PgConnectOptions>, max: usize, run: RunBatch<I, O>) -> Self {
        // A batch arrives as one JSON parameter the planner cannot count (it assumes 100 rows):
        // every row it names is found by key, never by scanning a table.
        let options = Arc::new(options.as_ref().clone().options([
            ("enable_seqscan", "off"),
            ("enable_hashjoin", "off"),
            ("enable_mergejoin", "off"),
        ]));
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(serve(receiver, options, max.max(1), run));
        Batcher { sender }
    }

    /// Runs `input` with whatever else is waiting; its output.
    pub async fn call(&self, input: I) -> sqlx::Result<O> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((input, reply))
            .map_err(|_| sqlx::Error::PoolClosed)?;
        answer.await.map_err(|_| sqlx::Error::PoolClosed)?
    }
}

async fn serve<I, O>(
    mut receiver: mpsc::UnboundedReceiver<Waiting<I, O>>,
    options: Arc<PgConnectOptions>,
    max: usize,
    run: RunBatch<I, O>,
) {
    let mut conn: Option<PgConnection> = None;
    let mut inputs = Vec::with_capacity(max);
    let mut replies = Vec::with_capacity(max);
    while let Some((input, reply)) = receiver.recv().await {
        inputs.push(input);
        replies.push(reply);
        while inputs.len() < max {
            match receiver.try_recv() {
                Ok((input, reply)) => {
                    inputs.push(input);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        metrics::histogram!("payments_batch_size").record(inputs.len() as f64);
        match attempt(&mut conn, &options, run, &inputs).await {
            Ok(outputs) if outputs.len() == inputs.len() => {
                for (reply, output) in replies.drain(..).zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            outcome => {
                if let Err(err) = &outcome {
                    tracing::debug!(error = %err, size = inputs.len(), "a batch failed; running it one by one");
                }
                // One by one: each request gets its own answer (or error).
                for (input, reply) in inputs.iter().zip(replies.drain(..)) {
                    let single = attempt(&mut conn, &options, run, std::slice::from_ref(input))
                        .await
                        .and_then(|mut outputs| outputs.pop().ok_or(sqlx::Error::RowNotFound));
                    let _ = reply.send(single);
                }
            }
        }
        inputs.clear();
    }
    if let Some(conn) = conn {
        conn.close().await.ok();
    }
}

async fn attempt<I, O>(
    conn: &mut Option<PgConnection>,
    options: &PgConnectOptions,
    run: RunBatch<I, O>,
    inputs: &[I],
) -> sqlx::Result<Vec<O>> {
    let connected = match conn {
        Some(connected) => connected,
        None => conn.insert(PgConnection::connect_with(options).await?),
    };
    let outcome = run(connected, inputs).await;
    if outcome.is_err() {
        // Broken or not, a fresh one is certain to be in a clean state.
        conn.take();
    }
    outcome
}
