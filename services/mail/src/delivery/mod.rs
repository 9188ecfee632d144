//! Delivery: workers claim due messages (`FOR UPDATE SKIP LOCKED`, under a lease), render them,
//! hand them to the SMTP relay and record what happened, a batch at a time.
//!
//! - Every message is its own job: one recipient's failure never touches another's.
//! - A temporary failure (4xx, timeout, connection) is retried with exponential backoff and
//!   jitter (`app.delivery.retry_delay` doubling to `retry_max_delay`) until the message is
//!   `app.delivery.max_age` past due; a permanent one (5xx) fails at once, reply kept.
//! - Each message has one `Message-ID` for all its attempts. A worker that dies mid-send leaves
//!   its messages `sending`; when their lease runs out another worker sends them again (the
//!   timeline says so), so a mail may arrive twice but is never lost, and the copies are
//!   recognisable as one.
//! - An outcome is written only by the worker still holding the attempt, together with the
//!   timeline entry and, for a terminal state, its `mail.message.*` event: exactly one terminal
//!   state per message.
//! - Every log line of an attempt carries the message id and the originating request id.
//!
//! Metrics: `mail_messages_{queued,sent,failed,retried,suppressed}_total`,
//! `mail_oldest_due_message_seconds`, `mail_smtp_send_duration_seconds`.

pub mod relay;
pub mod smtp;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::future::join_all;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::DeliverySettings;
use crate::domain::template::context;
use crate::domain::{Category, Locale, Status};
use crate::events;
use crate::renderer::Renderer;
use crate::store::messages::{self, Claimed, NewEvents, Outcomes};
use crate::store::suppressions;
use relay::{Attempt, Outgoing, Relay};

/// The `NOTIFY` channel a commit that queued messages signals.
pub const CHANNEL: &str = "mail_due";

/// How long a worker woken by new messages waits before claiming, so that messages queued by
/// requests arriving together are sent as one batch rather than one batch each.
const GATHER: Duration = Duration::from_millis(25);

/// Reply codes that mean the mailbox itself is refused: the address is suppressed.
const HARD_BOUNCE_CODES: [u16; 3] = [550, 551, 553];

#[derive(Clone)]
pub struct Delivery {
    pub pool: PgPool,
    pub relay: Arc<Relay>,
    pub renderer: Renderer,
    pub settings: DeliverySettings,
    pub suppress_hard_bounces: bool,
    /// Attempts of one batch under way at once (the relay's connections).
    pub concurrency: usize,
}

/// What became of one attempt.
#[derive(Debug, Clone)]
enum Outcome {
    Sent {
        reply: String,
    },
    Deferred {
        reply: Option<String>,
        why: String,
        at: DateTime<Utc>,
    },
    Failed {
        reply: Option<String>,
        code: Option<u16>,
        reason: String,
    },
    Suppressed {
        reason: String,
    },
}

impl Outcome {
    fn status(&self) -> Status {
        match self {
            Outcome::Sent { .. } => Status::Sent,
            Outcome::Deferred { .. } => Status::Deferred,
            Outcome::Failed { .. } => Status::Failed,
            Outcome::Suppressed { .. } => Status::Suppressed,
        }
    }
}

impl Delivery {
    /// Runs the workers until `shutdown`; each finishes the batch it is sending.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(self.pool.clone(), wake.clone(), shutdown.clone()));
        let gauge = tokio::spawn(oldest_due_gauge(self.pool.clone(), shutdown.clone()));
        let workers: Vec<_> = (0..self.settings.workers)
            .map(|_| tokio::spawn(self.clone().work(wake.clone(), shutdown.clone())))
            .collect();
        join_all(workers).await;
        let _ = listener.await;
        let _ = gauge.await;
    }

    /// One worker: claims and sends batches while there are due messages, then sleeps until
    /// woken (one worker per notification; a worker that claimed a full batch wakes another),
    /// the next message falls due, or `poll` passes.
    async fn work(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let claimed = messages::claim(
                &self.pool,
                i64::from(self.settings.batch),
                self.settings.lease,
            )
            .await;
            let pause = match claimed {
                Ok(batch) if !batch.is_empty() => {
                    failures = 0;
                    if batch.len() == self.settings.batch as usize {
                        wake.notify_one();
                    }
                    self.deliver(batch).await;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    self.until_next_due().await
                }
                Err(err) => {
                    failures += 1;
                    tracing::warn!(error = %err, "claiming due messages failed");
                    Duration::from_millis(100 * 2u64.pow(failures.min(6)))
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = wake.notified() => {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(GATHER) => {}
                    }
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// How long to sleep when nothing is due: until the next message is, at most `poll`.
    async fn until_next_due(&self) -> Duration {
        match messages::next_due(&self.pool).await {
            Ok(Some(at)) => (at - Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(self.settings.poll)
                // Due now but not claimed: another worker holds it. Let it be.
                .max(Duration::from_millis(5)),
            _ => self.settings.poll,
        }
    }

    /// Sends a claimed batch, each message on its own, and records the outcomes together.
    async fn deliver(&self, batch: Vec<Claimed>) {
        let attachments = match self.attachments(&batch).await {
            Ok(attachments) => attachments,
            Err(err) => {
                tracing::warn!(error = %err, "reading attachments failed; the batch waits for its lease");
                return;
            }
        };
        let attempts: Vec<_> = batch
            .iter()
            .enumerate()
            .map(|(index, message)| {
                let span = tracing::info_span!(
                    "delivery",
                    message_id = %message.uuid,
                    request_id = message.request_id.as_deref().unwrap_or(""),
                    attempt = message.attempts,
                );
                let reason = message.suppressed.clone();
                let files = attachments
                    .get(&message.send_id)
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                let attempt = async move {
                    let outcome = match reason {
                        Some(reason) => Outcome::Suppressed { reason },
                        None => self.attempt(message, files).await,
                    };
                    (index, outcome)
                };
                attempt.instrument(span)
            })
            .collect();
        // As many at a time as there are connections: each message is rendered and built just
        // before its turn, so a large batch never holds the runtime for long in one go.
        let mut outcomes: Vec<(usize, Outcome)> = futures_util::stream::iter(attempts)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        outcomes.sort_by_key(|(index, _)| *index);
        let outcomes = outcomes.into_iter().map(|(_, outcome)| outcome).collect();
        self.record(&batch, outcomes).await;
    }

    async fn attempt(
        &self,
        message: &Claimed,
        attachments: &[(String, String, Vec<u8>)],
    ) -> Outcome {
        if message.interrupted {
            tracing::warn!("sending again after an interrupted attempt (same Message-ID)");
        }
        let rendered = match self.render(message).await {
            Ok(rendered) => rendered,
            Err(reason) => {
                return Outcome::Failed {
                    reply: None,
                    code: None,
                    reason,
                };
            }
        };
        let to = match message.to_email.parse::<lettre::Address>() {
            Ok(address) => lettre::message::Mailbox::new(
                (!message.to_name.is_empty()).then(|| message.to_name.clone()),
                address,
            ),
            Err(_) => {
                return Outcome::Failed {
                    reply: None,
                    code: None,
                    reason: format!("{:?} is not an address", message.to_email),
                };
            }
        };
        let outgoing = Outgoing {
            to,
            message_id: &message.message_id,
            date: message.created_at.into(),
            category: Category::parse(&message.category).unwrap_or(Category::Transactional),
            rendered: &rendered,
            headers: &message.headers,
            attachments,
        };
        match self.relay.send(&outgoing).await {
            Attempt::Accepted { reply } => Outcome::Sent { reply },
            Attempt::Permanent { code, reply, why } => Outcome::Failed {
                reply,
                code,
                reason: why,
            },
            Attempt::Temporary { reply, why } => self.retry_or_give_up(message, reply, why),
        }
    }

    async fn render(&self, message: &Claimed) -> Result<crate::domain::Rendered, String> {
        let compiled = self
            .renderer
            .compiled(&self.pool, message.template_version_id)
            .await
            .map_err(|err| format!("the template cannot be loaded: {err:#}"))?;
        let locale = Locale::parse(&message.locale).map_err(|why| format!("locale {why}"))?;
        let context = context(&message.data, &message.to_email, &message.to_name);
        compiled
            .render(&locale, &context)
            .map_err(|err| err.to_string())
    }

    /// A temporary failure: due again after the backoff, or failed once past `max_age`.
    fn retry_or_give_up(&self, message: &Claimed, reply: Option<String>, why: String) -> Outcome {
        let delay = backoff(&self.settings, message.attempts);
        let at = Utc::now() + delay;
        let deadline = message.due_since
            + chrono::Duration::from_std(self.settings.max_age).unwrap_or(chrono::Duration::MAX);
        if at > deadline {
            return Outcome::Failed {
                reply,
                code: None,
                reason: format!(
                    "gave up after {} attempts, {} s after it was due ({why})",
                    message.attempts,
                    (Utc::now() - message.due_since).num_seconds()
                ),
            };
        }
        Outcome::Deferred { reply, why, at }
    }

    async fn attachments(
        &self,
        batch: &[Claimed],
    ) -> sqlx::Result<HashMap<i64, Vec<(String, String, Vec<u8>)>>> {
        let sends: Vec<i64> = batch
            .iter()
            .filter(|m| m.has_attachments)
            .map(|m| m.send_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut by_send: HashMap<i64, Vec<_>> = HashMap::new();
        if sends.is_empty() {
            return Ok(by_send);
        }
        for row in messages::attachments(&self.pool, &sends).await? {
            by_send.entry(row.send_id).or_default().push((
                row.filename,
                row.content_type,
                row.content,
            ));
        }
        Ok(by_send)
    }

    /// Writes the batch's outcomes, retrying while the database is unreachable (until then the
    /// messages stay `sending`; past their lease they would be sent again).
    async fn record(&self, batch: &[Claimed], outcomes: Vec<Outcome>) {
        let mut pause = Duration::from_millis(100);
        for _ in 0..8 {
            match self.try_record(batch, &outcomes).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, "recording delivery outcomes failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::error!(
            messages = batch.len(),
            "delivery outcomes could not be recorded; the messages will be sent again after their lease"
        );
    }

    async fn try_record(&self, batch: &[Claimed], outcomes: &[Outcome]) -> anyhow::Result<()> {
        let mut columns = Outcomes::default();
        for (message, outcome) in batch.iter().zip(outcomes) {
            columns.id.push(message.id);
            columns.attempt.push(message.attempts);
            columns.status.push(outcome.status().as_str());
            columns.reply.push(match outcome {
                Outcome::Sent { reply } => Some(reply.clone()),
                Outcome::Deferred { reply, .. } | Outcome::Failed { reply, .. } => reply.clone(),
                Outcome::Suppressed { .. } => None,
            });
            columns.next_attempt_at.push(match outcome {
                Outcome::Deferred { at, .. } => Some(*at),
                _ => None,
            });
        }
        let mut tx = self.pool.begin().await?;
        let written: HashSet<i64> = messages::record(&mut tx, &columns)
            .await?
            .into_iter()
            .collect();
        let mut timeline = NewEvents::default();
        let mut bounces = Vec::new();
        let (mut sent, mut failed, mut suppressed) = (Vec::new(), Vec::new(), Vec::new());
        let now = Utc::now();
        for (message, outcome) in batch.iter().zip(outcomes) {
            if !written.contains(&message.id) {
                tracing::warn!(message_id = %message.uuid, "another worker took this message over; its outcome is theirs");
                continue;
            }
            let attempt = Some(message.attempts);
            match outcome {
                Outcome::Sent { reply } => {
                    timeline.push(message.id, "sent", attempt, Some(reply.clone()), None);
                    let event = contracts::mail::MessageSent {
                        message: message.uuid,
                        email: message.to_email.clone(),
                        user: message.user_uuid,
                        template: message.template_key.clone(),
                        template_version: message.template_version.unsigned_abs(),
                        message_id: message.message_id.clone(),
                        attempts: message.attempts.unsigned_abs(),
                        reply: reply.clone(),
                        tags: message.tags.clone(),
                        metadata: metadata(&message.metadata),
                        sent_at: now,
                    };
                    sent.push((event, message.request_id.clone()));
                }
                Outcome::Deferred { reply, why, at } => {
                    timeline.push(
                        message.id,
                        "deferred",
                        attempt,
                        reply.clone(),
                        Some(format!("{why}; next attempt at {}", at.to_rfc3339())),
                    );
                }
                Outcome::Failed {
                    reply,
                    code,
                    reason,
                } => {
                    timeline.push(
                        message.id,
                        "failed",
                        attempt,
                        reply.clone(),
                        Some(reason.clone()),
                    );
                    if self.suppress_hard_bounces
                        && code.is_some_and(|c| HARD_BOUNCE_CODES.contains(&c))
                    {
                        bounces.push((
                            message.to_email.to_lowercase(),
                            format!(
                                "message {}: {}",
                                message.uuid,
                                reply.as_deref().unwrap_or(reason)
                            ),
                        ));
                    }
                    let event = contracts::mail::MessageFailed {
                        message: message.uuid,
                        email: message.to_email.clone(),
                        user: message.user_uuid,
                        template: message.template_key.clone(),
                        template_version: message.template_version.unsigned_abs(),
                        message_id: message.message_id.clone(),
                        attempts: message.attempts.unsigned_abs(),
                        reply: reply.clone(),
                        reason: reason.clone(),
                        tags: message.tags.clone(),
                        metadata: metadata(&message.metadata),
                        failed_at: now,
                    };
                    failed.push((event, message.request_id.clone()));
                }
                Outcome::Suppressed { reason } => {
                    timeline.push(
                        message.id,
                        "suppressed",
                        None,
                        None,
                        Some(format!("the address is suppressed ({reason})")),
                    );
                    let event = contracts::mail::MessageSuppressed {
                        message: message.uuid,
                        email: message.to_email.clone(),
                        user: message.user_uuid,
                        template: message.template_key.clone(),
                        template_version: message.template_version.unsigned_abs(),
                        reason: reason.clone(),
                        tags: message.tags.clone(),
                        metadata: metadata(&message.metadata),
                        suppressed_at: now,
                    };
                    suppressed.push((event, message.request_id.clone()));
                }
            }
        }
        messages::insert_events(&mut *tx, &timeline).await?;
        suppressions::insert_hard_bounces(&mut *tx, &bounces).await?;
        events::publish(&mut tx, &sent).await?;
        events::publish(&mut tx, &failed).await?;
        events::publish(&mut tx, &suppressed).await?;
        tx.commit().await?;
        for (message, outcome) in batch.iter().zip(outcomes) {
            if !written.contains(&message.id) {
                continue;
            }
            log_outcome(message, outcome);
        }
        Ok(())
    }
}

/// One line per attempt, in the message's span (message id, request id, attempt).
fn log_outcome(message: &Claimed, outcome: &Outcome) {
    let span = tracing::info_span!(
        "delivery",
        message_id = %message.uuid,
        request_id = message.request_id.as_deref().unwrap_or(""),
        attempt = message.attempts,
    );
    let _entered = span.enter();
    match outcome {
        Outcome::Sent { reply } => {
            metrics::counter!("mail_messages_sent_total").increment(1);
            tracing::info!(template = %message.template_key, reply = %reply, "mail sent");
        }
        Outcome::Deferred { reply, why, at } => {
            metrics::counter!("mail_messages_retried_total").increment(1);
            tracing::info!(reply = reply.as_deref().unwrap_or(""), why = %why, next_attempt_at = %at, "mail deferred");
        }
        Outcome::Failed { reply, reason, .. } => {
            metrics::counter!("mail_messages_failed_total").increment(1);
            tracing::warn!(reply = reply.as_deref().unwrap_or(""), reason = %reason, "mail failed");
        }
        Outcome::Suppressed { reason } => {
            metrics::counter!("mail_messages_suppressed_total").increment(1);
            tracing::info!(reason = %reason, "mail suppressed");
        }
    }
}

fn metadata(value: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// The wait before attempt `attempt + 1`: `retry_delay` doubled per attempt, at most
/// `retry_max_delay`, times a random factor in [0.5, 1.5) so retries of a burst spread out.
pub fn backoff(settings: &DeliverySettings, attempt: i32) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let base = settings
        .retry_delay
        .saturating_mul(2u32.saturating_pow(doublings))
        .min(settings.retry_max_delay);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let factor = 0.5 + (random % 1_000_000) as f64 / 1_000_000.0;
    base.mul_f64(factor)
}

/// Wakes a worker when a transaction that queued messages commits. Reconnects by itself
/// (sqlx's listener); the workers' polling covers the gaps.
async fn listen(pool: PgPool, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut pause = Duration::from_millis(100);
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            loop {
                listener.recv().await?;
                wake.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = listener => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "the queue listener lost its connection");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// `mail_oldest_due_message_seconds`: how long the oldest due message has waited.
async fn oldest_due_gauge(pool: PgPool, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Ok(oldest) = messages::oldest_due(&pool).await {
            let age = oldest
                .and_then(|at| (Utc::now() - at).to_std().ok())
                .unwrap_or_default();
            metrics::gauge!("mail_oldest_due_message_seconds").set(age.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_ceiling() {
        let settings = DeliverySettings {
            retry_delay: Duration::from_secs(10),
            retry_max_delay: Duration::from_secs(60),
            ..DeliverySettings::default()
        };
        for _ in 0..100 {
            let first = backoff(&settings, 1);
            assert!(
                first >= Duration::from_secs(5) && first < Duration::from_secs(15),
                "{first:?}"
            );
            let third = backoff(&settings, 3);
            assert!(
                third >= Duration::from_secs(20) && third < Duration::from_secs(60),
                "{third:?}"
            );
            let late = backoff(&settings, 40);
            assert!(
                late >= Duration::from_secs(30) && late < Duration::from_secs(90),
                "{late:?}"
            );
        }
    }
}
