use std::path::PathBuf;

use crate::TestDb;
use kit::{Service, Settings};
use serde::de::DeserializeOwned;

/// Stops a spawned app when dropped.
struct Shutdown(Option<tokio::sync::oneshot::Sender<()>>);

impl Drop for Shutdown {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// The repository root (where `Cargo.lock` and `populator/` live), found from the test's
/// package directory.
pub fn workspace_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::current_dir().expect("current dir"));
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file() && dir.join("populator").is_dir())
        .map(PathBuf::from)
        .unwrap_or(start)
}

/// A service running in this test process on 127.0.0.1 (random port) against its own fresh
/// database, stopped when dropped.
pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub db: sqlx::PgPool,
    _shutdown: Shutdown,
    _database: TestDb,
}

impl TestApp {
    /// Spawns service `S` with its default settings on a fresh database.
    pub async fn spawn<S: Service>() -> TestApp {
        Self::spawn_with::<S>(|_| {}).await
    }

    /// Spawns service `S` after `configure` adjusts its settings (scenario, limits, ...).
    pub async fn spawn_with<S: Service>(
        configure: impl FnOnce(&mut Settings<S::Config>),
    ) -> TestApp {
        Self::try_spawn_with::<S>(configure)
            .await
            .expect("service starts")
    }

    /// Like [`Self::spawn_with`], returning the start-up error instead of panicking.
    pub async fn try_spawn_with<S: Service>(
        configure: impl FnOnce(&mut Settings<S::Config>),
    ) -> anyhow::Result<TestApp> {
        Self::try_spawn_on::<S>(TestDb::create().await, configure).await
    }

    /// Spawns service `S` on an existing database (a restored or anonymized copy), which it
    /// then owns (dropped with the app).
    pub async fn spawn_on<S: Service>(
        database: TestDb,
        configure: impl FnOnce(&mut Settings<S::Config>),
    ) -> TestApp {
        Self::try_spawn_on::<S>(database, configure)
            .await
            .expect("service starts")
    }

    /// The database, kept, after the service stopped (its connections closed).
    pub async fn stop(self) -> TestDb {
        let TestApp {
            db,
            _shutdown,
            _database,
            ..
        } = self;
        db.close().await;
        drop(_shutdown);
        _database
    }

    async fn try_spawn_on<S: Service>(
        database: TestDb,
        configure: impl FnOnce(&mut Settings<S::Config>),
    ) -> anyhow::Result<TestApp> {
        init_logs();
        // Bound first, so the service's settings carry the port it really serves on (a service
        // that calls itself, as a provider's webhooks do, needs it).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let mut settings = kit::service::default_settings::<S>()?;
        settings.database.url = kit::SecretUrl::new(database.url());
        settings.populate.dir = workspace_root().join("populator");
        settings.http.host = address.ip().to_string();
        settings.http.port = address.port();
        configure(&mut settings);
        let app = kit::service::build::<S>(settings).await?;
        let base_url = format!("http://{address}");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.serve(listener, async {
            let _ = rx.await;
        }));
        Ok(TestApp {
            base_url,
            client: reqwest::Client::new(),
            db: database.pool().await,
            _shutdown: Shutdown(Some(tx)),
            _database: database,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn patch_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PATCH")
    }

    /// `/readyz`: its status code and body.
    pub async fn readiness(&self) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self.get("/readyz").await;
        let status = response.status();
        (status, response.json().await.expect("readiness is JSON"))
    }

    /// Polls `/readyz` (up to 20 s) until its `status` is `expected` (`ok`, `degraded`,
    /// `unavailable`); its status code and body then.
    pub async fn readiness_becomes(
        &self,
        expected: &str,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        crate::eventually(
            &format!("readiness {expected}"),
            std::time::Duration::from_secs(20),
            || async {
                let (status, body) = self.readiness().await;
                (body["status"] == expected).then_some((status, body))
            },
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> reqwest::Response {
        self.client
            .delete(self.url(path))
            .send()
            .await
            .expect("DELETE")
    }
}

/// Decodes a response body as JSON, with the body in the panic message when it is not.
pub async fn json<T: DeserializeOwned>(response: reqwest::Response) -> T {
    let status = response.status();
    let text = response.text().await.expect("response body");
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{status} body is not the expected JSON ({err}): {text}"))
}

/// Logs of the code under test (warnings and errors) on the test's output, set up once per
/// process.
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let log = kit::config::LogSettings {
            format: kit::config::LogFormat::Pretty,
            level: "warn".into(),
        };
        // Kept for the whole test process.
        std::mem::forget(kit::telemetry::init(
            "test",
            "test",
            &log,
            &Default::default(),
        ));
    });
}
