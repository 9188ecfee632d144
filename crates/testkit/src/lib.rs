//! Test helpers: a fresh database per test and a service running for real on a local port.
//!
//! ```ignore
//! let app = testkit::TestApp::spawn::<template::Template>().await;
//! let response = app.get("/api/template/v1/notes").await;
//! ```

mod app;
pub mod cli;
mod db;
pub mod operations;
pub mod proxy;
pub mod schema;
pub mod tokens;

pub use app::{TestApp, init_logs, json, workspace_root};
pub use db::{TEST_TABLESPACE, TestDb};
pub use proxy::FaultProxy;

/// Polls `probe` until it returns `Some`, or panics after `timeout` with `what`. Tests wait for
/// asynchronous effects with this, never with fixed sleeps.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = std::time::Duration::from_millis(5);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(100));
    }
}
