//! Shutdown against real Postgres and RabbitMQ: a consumer and a relay stopped while handlers
//! are running finish them, hand the rest back, close in order and log nothing at ERROR.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Env, ItemCreated, record, until_connected};
use bus::{Consumers, Received, Tx};
use futures_util::future::BoxFuture;
use testkit::eventually;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Every ERROR event logged in this process (by the bus or by lapin, on any thread).
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl Errors {
    /// Installs the process-wide subscriber; kit's telemetry, initialised later by `Env`,
    /// keeps it.
    fn install() -> Errors {
        let errors = Errors::default();
        tracing_subscriber::registry()
            .with(errors.clone())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
            )
            .try_init()
            .expect("the first subscriber of this test process");
        errors
    }

    fn logged(&self) -> Vec<String> {
        self.0.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Errors {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() != tracing::Level::ERROR {
            return;
        }
        struct Line(String);
        impl Visit for Line {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
        let mut line = Line(event.metadata().target().to_owned());
        event.record(&mut line);
        if let Ok(mut errors) = self.0.lock() {
            errors.push(line.0);
        }
    }
}

/// Handlers that record each event and, while `gate` is closed, hold every run open.
fn gated_consumers(started: Arc<AtomicU64>, gate: watch::Receiver<bool>) -> Consumers {
    Consumers::new().on::<ItemCreated, _>(move |tx: &mut Tx, event: Received<ItemCreated>| {
        let (started, mut gate) = (started.clone(), gate.clone());
        Box::pin(async move {
            started.fetch_add(1, Ordering::SeqCst);
            gate.wait_for(|open| *open).await?;
            record(tx, &event).await
        }) as BoxFuture<'_, anyhow::Result<()>>
    })
}

/// Cancels `env`'s tasks and waits for them; the runs it had are replaced by fresh ones.
async fn stop(env: &mut Env) {
    env.shutdown.cancel();
    env.tasks.close();
    tokio::time::timeout(Duration::from_secs(20), env.tasks.wait())
        .await
        .expect("the relay and the consumer stop within 20 s");
    env.shutdown = CancellationToken::new();
    env.tasks = TaskTracker::new();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_with_handlers_running_finishes_them_and_logs_no_error() {
    let errors = Errors::install();
    let mut env = Env::new().await;
    let bus = env.bus("shop");
    let started = Arc::new(AtomicU64::new(0));
    let (open, gate) = watch::channel(true);
    bus.spawn(
        Some(gated_consumers(started.clone(), gate.clone())),
        &env.tasks,
        &env.shutdown,
    );
    until_connected(&bus).await;
    let check = bus.check();
    env.enqueue(0, 10, 1).await;
    eventually(
        "the first events to be applied",
        Duration::from_secs(20),
        || async { (env.applied().await.0 == 10).then_some(()) },
    )
    .await;

    // Handlers now hang until the gate opens: shut down while some are running and more
    // wait, prefetched, in the channel.
    open.send_replace(false);
    let total = 200u32;
    env.enqueue(10, total - 10, 10).await;
    eventually(
        "every event to be published and handlers to be running",
        Duration::from_secs(20),
        || async {
            (env.pending().await == 0 && started.load(Ordering::SeqCst) > 10).then_some(())
        },
    )
    .await;
    env.shutdown.cancel();
    open.send_replace(true);
    stop(&mut env).await;
    assert!(
        check.check().await.is_err(),
        "readiness reports the stopped bus down"
    );
    let (applied, _) = env.applied().await;
    assert!(
        applied > 10,
        "the handlers running at shutdown finished and committed"
    );

    // What was not applied went back to RabbitMQ: a new consumer applies the rest, once.
    let bus = env.bus("shop");
    bus.spawn(
        Some(gated_consumers(started.clone(), gate)),
        &env.tasks,
        &env.shutdown,
    );
    eventually(
        "the rest to be applied after the restart",
        Duration::from_secs(30),
        || async { (env.applied().await.0 >= i64::from(total)).then_some(()) },
    )
    .await;
    stop(&mut env).await;
    assert_eq!(
        env.applied().await,
        (i64::from(total), i64::from(total)),
        "nothing lost, nothing applied twice"
    );
    let logged = errors.logged();
    assert!(
        logged.is_empty(),
        "a clean shutdown logged errors:\n{}",
        logged.join("\n")
    );
    env.finish().await;
}
