//! The registration desk: registrations for one event, arriving together, are decided in one
//! transaction. Seats change only under the event's row lock, which is held until the commit;
//! one commit per registration would cap a popular event at one registration per disk flush.
//! The desk takes the lock once for every registration waiting (up to [`BATCH`]), decides each
//! in a savepoint of its own (a refusal undoes only that one), and commits them together.
//! Capacity stays exact across processes: each process's desk queues behind the same lock.
//!
//! One worker per event with registrations in flight, ending when its queue is idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use kit::{ApiError, ApiResult};
use tokio::sync::{mpsc, oneshot};

use crate::actions::{self, Changed, Ctx, Registering};
use crate::store::events::EventRow;
use crate::store::registrations::{self, RegistrationRow};

/// Registrations decided in one transaction at most.
pub const BATCH: usize = 64;
/// A worker with nothing to do for this long ends.
const IDLE: Duration = Duration::from_secs(2);

type Answer = ApiResult<(RegistrationRow, Changed)>;

struct Job {
    input: Registering,
    reply: oneshot::Sender<Answer>,
}

#[derive(Clone, Default)]
pub struct Desk {
    queues: Arc<Mutex<HashMap<i64, mpsc::UnboundedSender<Job>>>>,
}

impl Desk {
    /// Registers `input` for `event` together with whatever else is waiting for it.
    pub async fn register(&self, ctx: &Ctx, event: &EventRow, input: Registering) -> Answer {
        let (reply, answer) = oneshot::channel();
        {
            let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            let queue = queues.entry(event.id).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(work(self.clone(), ctx.clone(), event.id, rx));
                tx
            });
            let job = Job { input, reply };
            if let Err(mpsc::error::SendError(job)) = queue.send(job) {
                // The worker just ended: a new one takes it.
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(work(self.clone(), ctx.clone(), event.id, rx));
                let _ = tx.send(job);
                queues.insert(event.id, tx);
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::internal(anyhow::anyhow!(
                "the registration desk stopped"
            )))
        })
    }
}

async fn work(desk: Desk, ctx: Ctx, event_id: i64, mut rx: mpsc::UnboundedReceiver<Job>) {
    loop {
        let first = match tokio::time::timeout(IDLE, rx.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(_) => {
                let mut queues = desk.queues.lock().unwrap_or_else(|e| e.into_inner());
                if rx.is_empty() {
                    queues.remove(&event_id);
                    return;
                }
                continue;
            }
        };
        let mut jobs = vec![first];
        while jobs.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        decide(&ctx, event_id, jobs).await;
    }
}

/// One transaction for `jobs`: each decided in its own savepoint, all committed together.
async fn decide(ctx: &Ctx, event_id: i64, jobs: Vec<Job>) {
    let mut answers: Vec<(oneshot::Sender<Answer>, ApiResult<RegistrationRow>)> = Vec::new();
    let outcome: ApiResult<actions::Changed> = async {
        let mut tx = ctx.db.begin().await?;
        let mut seats = actions::lock_seats(&mut tx, event_id).await?;
        let mut users = Vec::new();
        let now = Utc::now();
        for job in jobs {
            let before = (seats.event.clone(), seats.tickets.clone());
            let mut savepoint = sqlx::Acquire::begin(&mut tx).await?;
            let decided = async {
                if let Some(existing) =
                    registrations::find_active(&mut *savepoint, event_id, job.input.user_id).await?
                {
                    return Err(actions::already_registered(existing));
                }
                actions::register_locked(ctx, &mut savepoint, &mut seats, &job.input, now).await
            }
            .await;
            match decided {
                Ok((row, pushes)) => {
                    savepoint.commit().await?;
                    users.extend(pushes);
                    answers.push((job.reply, Ok(row)));
                }
                Err(refused) => {
                    savepoint.rollback().await?;
                    (seats.event, seats.tickets) = before;
                    answers.push((job.reply, Err(refused)));
                }
            }
        }
        tx.commit().await?;
        Ok(Changed { seats, users })
    }
    .await;
    match outcome {
        Ok(changed) => {
            let changed = Arc::new(changed);
            for (reply, answer) in answers {
                let _ = reply.send(answer.map(|row| {
                    let users = changed
                        .users
                        .iter()
                        .filter(|push| push.registration == row.uuid)
                        .cloned()
                        .collect();
                    (
                        row,
                        Changed {
                            seats: changed.seats.clone(),
                            users,
                        },
                    )
                }));
            }
        }
        Err(failed) => {
            tracing::warn!(error = %failed, "a batch of registrations failed");
            for (reply, _) in answers {
                let _ = reply.send(Err(ApiError::internal(anyhow::anyhow!("the batch failed"))));
            }
        }
    }
}
