//! A probe service exercising kit's HTTP stack: it panics, sleeps, echoes and fails on demand.
//! It owns a database like most services (kit's idempotency table and one table of its own).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::{get, post};
use kit::{ApiError, Database, Json, Resources, Started};
use utoipa_axum::router::OpenApiRouter;

/// Slow requests that have started (so a test knows one is in flight).
pub static SLOW_STARTED: AtomicUsize = AtomicUsize::new(0);
/// Background tasks that saw the shutdown and finished their work.
pub static TASKS_FINISHED: AtomicUsize = AtomicUsize::new(0);

pub struct Probe;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/kit/probe/migrations");

impl kit::Service for Probe {
    type Config = ();
    type State = ();
    const NAME: &'static str = "probe";
    const PORT: u16 = 0;
    const VERSION: &'static str = "0.0.0";
    const DESCRIPTION: &'static str = "kit test probe";
    const DATABASE: Option<Database> = Some(Database {
        migrations: &MIGRATOR,
        shared: &[&kit::idempotency::SCHEMA],
        populate: Some(no_seed_data),
        changelog: &[],
        personal: &[],
    });

    fn routes() -> OpenApiRouter<()> {
        routes()
    }

    async fn start(resources: &Resources<()>) -> anyhow::Result<Started<()>> {
        let shutdown = resources.shutdown.clone();
        Ok(Started::new(()).task("flush on the way out", async move {
            shutdown.cancelled().await;
            // Pretend to flush something on the way out.
            tokio::time::sleep(Duration::from_millis(50)).await;
            TASKS_FINISHED.fetch_add(1, Ordering::SeqCst);
        }))
    }
}

fn routes() -> OpenApiRouter<()> {
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

/// The probe's routes as a service without a database (like the broker).
pub struct NoDatabase;

impl kit::Service for NoDatabase {
    type Config = ();
    type State = ();
    const NAME: &'static str = "nodb";
    const PORT: u16 = 0;
    const VERSION: &'static str = "0.0.0";
    const DESCRIPTION: &'static str = "kit test probe without a database";
    const DATABASE: Option<Database> = None;

    fn routes() -> OpenApiRouter<()> {
        routes()
    }

    async fn start(_: &Resources<()>) -> anyhow::Result<Started<()>> {
        Ok(Started::new(()))
    }
}
