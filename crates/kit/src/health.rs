//! `/healthz` (the process answers) and `/readyz` (every configured dependency answers).

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CheckStatus {
    /// `up` or `down`.
    pub status: String,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Readiness {
    /// `ok` or `unavailable`.
    pub status: String,
    pub checks: BTreeMap<String, CheckStatus>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.status == "ok"
    }
}

/// Runs every check concurrently, each bounded by [`CHECK_TIMEOUT`].
pub async fn probe(checks: &[Arc<dyn Check>]) -> Readiness {
    let results = futures_util::future::join_all(checks.iter().map(|check| async move {
        let started = Instant::now();
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let status = match outcome {
            Ok(()) => CheckStatus {
                status: "up".into(),
                latency_ms,
                error: None,
            },
            Err(error) => CheckStatus {
                status: "down".into(),
                latency_ms,
                error: Some(error),
            },
        };
        (check.name().to_owned(), status)
    }))
    .await;
    let ready = results.iter().all(|(_, s)| s.status == "up");
    Readiness {
        status: if ready { "ok" } else { "unavailable" }.into(),
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

pub struct Redis(pub redis::Client);

impl Redis {
    pub fn new(url: &SecretUrl) -> Result<Self, String> {
        redis::Client::open(url.expose())
            .map(Redis)
            .map_err(|err| err.to_string())
    }
}

impl Check for Redis {
    fn name(&self) -> &str {
        "redis"
    }
    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self
                .0
                .get_multiplexed_async_connection()
                .await
                .map_err(|err| err.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }
}

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
