//! A probe service exercising kit's HTTP stack: it panics, sleeps, echoes and fails on demand.
//! It has a seed-data hook (loading nothing), so it owns a database like most services.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::{get, post};
use kit::{ApiError, Json, Parts, Service};
use utoipa_axum::router::OpenApiRouter;

/// Slow requests that have started (so a test knows one is in flight).
pub static SLOW_STARTED: AtomicUsize = AtomicUsize::new(0);
/// Background tasks that saw the shutdown and finished their work.
pub static TASKS_FINISHED: AtomicUsize = AtomicUsize::new(0);

pub fn service() -> Service {
    Service {
        name: "probe",
        port: 0,
        version: "0.0.0",
        description: "kit test probe",
        migrator: None,
        routes,
        populate: Some(no_seed_data),
        start: None,
        commands: None,
    }
}

fn routes(parts: &Parts<()>) -> OpenApiRouter {
    let shutdown = parts.shutdown.clone();
    parts.tasks.spawn(async move {
        shutdown.cancelled().await;
        // Pretend to flush something on the way out.
        tokio::time::sleep(Duration::from_millis(50)).await;
        TASKS_FINISHED.fetch_add(1, Ordering::SeqCst);
    });
    OpenApiRouter::new()
        .route("/boom", get(boom))
        .route(
            "/slow/{ms}",
            get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    SLOW_STARTED.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "done"
                },
            ),
        )
        .route(
            "/echo",
            post(|Json(value): Json<serde_json::Value>| async move { Json(value) }),
        )
        .route(
            "/fail",
            get(|| async {
                tracing::info!("about to fail");
                Err::<(), _>(ApiError::internal(anyhow::anyhow!(
                    "disk on fire: secret detail"
                )))
            }),
        )
}

async fn boom() -> &'static str {
    panic!("probe exploded")
}

fn no_seed_data<'a>(
    _: &'a mut sqlx::PgConnection,
    _: &'a kit::populator::Scenario,
) -> futures_util::future::BoxFuture<'a, Result<kit::populator::Report, kit::populator::Error>> {
    Box::pin(async { Ok(kit::populator::Report::default()) })
}
