//! `/healthz` (the process answers) and `/readyz` ("send me traffic").
//!
//! Readiness fails (503 `unavailable`) only while a dependency the service cannot serve without
//! is down: its own database, or what a service declares [`Dependency::required`] (the
//! broker's Redis subscription). A dependency it serves without (RabbitMQ, whose events the
//! outbox keeps; Redis where a local fallback exists) is [`Dependency::degrading`]: while it is
//! down, `/readyz` answers 200 with `"status":"degraded"` and the failing check in the body,
//! so an outage of the bus never takes every replica out of the load balancer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::config::SecretUrl;

/// How long one dependency may take to answer a readiness probe.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency a service needs to do its work.
pub trait Check: Send + Sync {
    fn name(&self) -> &str;
    /// Ok when the dependency answered; the error text is shown on `/readyz` and by `check`,
    /// so it must not contain secrets.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// A check together with what its failure means for the service.
#[derive(Clone)]
pub struct Dependency {
    pub check: Arc<dyn Check>,
    /// `true`: the service cannot serve without it (its database): `/readyz` answers 503 while
    /// it is down. `false`: the service serves in a degraded way (events wait in the outbox,
    /// rate limits fall back to a local limiter...): `/readyz` answers 200 `degraded`.
    pub required: bool,
}

impl Dependency {
    /// A dependency the service cannot serve without.
    pub fn required(check: impl Check + 'static) -> Self {
        Self {
            check: Arc::new(check),
            required: true,
        }
    }

    /// A dependency the service serves without, degraded.
    pub fn degrading(check: impl Check + 'static) -> Self {
        Self {
            check: Arc::new(check),
            required: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CheckStatus {
    /// `up` or `down`.
    pub status: String,
    /// Whether the service stops taking traffic while this is down.
    pub required: bool,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` (everything up), `degraded` (a dependency the service can serve without is down:
    /// still ready) or `unavailable` (a required dependency is down: not ready).
    pub status: String,
    pub checks: BTreeMap<String, CheckStatus>,
}

impl Readiness {
    /// Whether the service should get traffic (`ok` or `degraded`).
    pub fn is_ready(&self) -> bool {
        self.status != "unavailable"
    }

    /// Whether every dependency answered.
    pub fn all_up(&self) -> bool {
        self.status == "ok"
    }
}

/// Runs every check concurrently, each bounded by [`CHECK_TIMEOUT`], and records each
/// dependency's state in the `readiness_dependency_up{dependency,required}` gauge.
pub async fn probe(dependencies: &[Dependency]) -> Readiness {
    let results =
        futures_util::future::join_all(dependencies.iter().map(|dependency| async move {
            let check = &dependency.check;
            let started = Instant::now();
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            metrics::gauge!(
                "readiness_dependency_up",
                "dependency" => check.name().to_owned(),
                "required" => dependency.required.to_string(),
            )
            .set(if outcome.is_ok() { 1.0 } else { 0.0 });
            let (status, error) = match outcome {
                Ok(()) => ("up", None),
                Err(error) => ("down", Some(error)),
            };
            let status = CheckStatus {
                status: status.into(),
                required: dependency.required,
                latency_ms,
                error,
            };
            (check.name().to_owned(), status)
        }))
        .await;
    let down = |required: bool| {
        results
            .iter()
            .any(|(_, s)| s.status != "up" && s.required == required)
    };
    let status = if down(true) {
        "unavailable"
    } else if down(false) {
        "degraded"
    } else {
        "ok"
    };
    Readiness {
        status: status.into(),
        checks: results.into_iter().collect(),
    }
}

pub struct Database(pub PgPool);

impl Check for Database {
    fn name(&self) -> &str {
        "database"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            sqlx::query("SELECT 1")
                .execute(&self.0)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }
}

/// RabbitMQ answers a fresh connection (the `check` command; a running service reports its
/// bus's own connection instead).
pub struct Amqp(pub SecretUrl);

impl Check for Amqp {
    fn name(&self) -> &str {
        "rabbitmq"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let conn =
                lapin::Connection::connect(self.0.expose(), lapin::ConnectionProperties::default())
                    .await
                    .map_err(|err| err.to_string())?;
            conn.close(200, "readiness probe".into()).await.ok();
            Ok(())
        })
    }
}
