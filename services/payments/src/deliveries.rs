//! Sending outgoing webhooks to partner endpoints: every event queued for an endpoint (see
//! `apply`) is POSTed as `{"id", "type", "created", "data"}` with `Hatchery-Signature: t=…,v1=…`
//! (HMAC-SHA256 with the endpoint's secret over `<t>.<body>`), `Hatchery-Event-Id` and
//! `Hatchery-Delivery-Id`. A 2xx answer delivers it. Anything else is logged as an attempt and
//! retried after `backoff × 2^(attempts-1)` (capped at `max_backoff`) until `max_age` after the
//! event; an endpoint failing `disable_after` attempts in a row is disabled.
//!
//! Deliveries are leased (`next_attempt_at` pushed past the request's timeout) while being
//! sent, so several instances share the work and a sender that dies leaves nothing stuck. The
//! sender wakes when a commit queued deliveries, and polls otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::PartnerWebhooksConfig;
use crate::domain::signature;
use crate::store::webhooks::{self as store, Attempt, DueDelivery, Next};

/// How much of an endpoint's answer the log keeps.
const KEPT_BODY_BYTES: usize = 1024;
/// How often deliveries past their age are given up.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

pub struct Sender {
    db: PgPool,
    http: reqwest::Client,
    config: PartnerWebhooksConfig,
    wake: Arc<Notify>,
}

/// The wait before the attempt after `attempts` failed ones.
pub fn backoff(config: &PartnerWebhooksConfig, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    config
        .backoff
        .saturating_mul(1u32 << doublings)
        .min(config.max_backoff)
}

impl Sender {
    pub fn new(
        db: PgPool,
        config: PartnerWebhooksConfig,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Sender> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!(
                "hatchery-payments-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Sender {
            db,
            http,
            config,
            wake,
        })
    }

    /// Sends until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut last_expiry: Option<Instant> = None;
        loop {
            // A round waits on partners (up to `timeout` each): shutdown does not wait for it.
            // What it leaves unrecorded is leased, so it is sent again once the lease is over
            // (webhooks are at least once; partners dedupe by `hatchery-event-id`).
            let round = tokio::select! {
                () = shutdown.cancelled() => return,
                round = self.round() => round,
            };
            let sent = match round {
                Ok(sent) => sent,
                Err(err) => {
                    tracing::warn!(error = %err, "partner webhooks: cannot read due deliveries");
                    0
                }
            };
            if last_expiry.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
                last_expiry = Some(Instant::now());
                match store::expire_deliveries(&self.db, self.config.max_age).await {
                    Ok(0) => {}
                    Ok(expired) => tracing::warn!(expired, "partner webhook deliveries given up"),
                    Err(err) => tracing::warn!(error = %err, "cannot expire old deliveries"),
                }
            }
            if sent > 0 {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
    }

    /// Sends what is due; how many.
    pub async fn round(&self) -> sqlx::Result<usize> {
        let lease = self.config.timeout * 2 + Duration::from_secs(5);
        let limit = i64::try_from(self.config.concurrency.max(1) * 4).unwrap_or(32);
        let due = store::take_due(&self.db, limit, lease).await?;
        let count = due.len();
        futures_util::stream::iter(due)
            .for_each_concurrent(self.config.concurrency.max(1), |delivery| async move {
                self.deliver(delivery).await;
            })
            .await;
        Ok(count)
    }

    async fn deliver(&self, delivery: DueDelivery) {
        let body = delivery.payload.to_string();
        let header = signature::sign(
            delivery.secret.as_bytes(),
            Utc::now().timestamp(),
            body.as_bytes(),
        );
        let started = Instant::now();
        let sent = self
            .http
            .post(&delivery.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(signature::PARTNER_HEADER, header)
            .header("hatchery-event-id", delivery.event_id.to_string())
            .header("hatchery-delivery-id", delivery.uuid.to_string())
            .body(body)
            .send()
            .await;
        let (status_code, error, response_body) = match sent {
            Ok(response) => {
                let status = response.status();
                let bytes = response.bytes().await.unwrap_or_default();
                let kept = &bytes[..bytes.len().min(KEPT_BODY_BYTES)];
                (
                    Some(i32::from(status.as_u16())),
                    None,
                    Some(String::from_utf8_lossy(kept).into_owned()),
                )
            }
            Err(err) => (None, Some(describe(&err)), None),
        };
        let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
        let delivered = status_code.is_some_and(|code| (200..300).contains(&code));
        let attempts = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
        let next = if delivered {
            Next::Delivered
        } else {
            let at = Utc::now() + backoff(&self.config, attempts);
            if at - delivery.created_at >= chrono_duration(self.config.max_age) {
                Next::GiveUp
            } else {
                Next::RetryAt(at)
            }
        };
        let attempt = Attempt {
            status_code,
            error: error.as_deref(),
            response_body: response_body.as_deref(),
            duration_ms,
        };
        let outcome = if delivered { "delivered" } else { "failed" };
        metrics::counter!("payments_partner_webhook_attempts_total", "outcome" => outcome)
            .increment(1);
        match store::record_attempt(
            &self.db,
            &delivery,
            &attempt,
            &next,
            self.config.disable_after,
        )
        .await
        {
            Ok(true) => tracing::warn!(endpoint = %delivery.url,
                "partner webhook endpoint disabled after repeated failures"),
            Ok(false) => {}
            Err(err) => tracing::warn!(error = %err, delivery = %delivery.uuid,
                "cannot record a webhook attempt; the delivery is retried after its lease"),
        }
        match next {
            Next::Delivered => {}
            Next::RetryAt(at) => tracing::info!(delivery = %delivery.uuid, status = ?status_code,
                error = ?error, retry_at = %at, "partner webhook not delivered"),
            Next::GiveUp => tracing::warn!(delivery = %delivery.uuid, "partner webhook given up"),
        }
    }
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// An error without the URL's query string (it may carry a partner's token).
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    let source = std::error::Error::source(err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    format!("{kind}: {source}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = PartnerWebhooksConfig {
            backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
            ..PartnerWebhooksConfig::default()
        };
        let waits: Vec<u64> = (1..=7).map(|n| backoff(&config, n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(backoff(&config, 1_000).as_secs(), 600);
        // With the defaults, about two dozen attempts spread over the three days.
        let defaults = PartnerWebhooksConfig::default();
        let waits = |n: u32| (1..=n).map(|n| backoff(&defaults, n)).sum::<Duration>();
        assert!(waits(20) < defaults.max_age && waits(25) > defaults.max_age);
    }
}
