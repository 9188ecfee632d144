//! Connecting to RabbitMQ with backoff, and the bus's readiness as `/readyz` reports it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use kit::SecretUrl;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

/// How long one connection attempt (TCP + AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat asked for unless the URL names one: a silently dead peer is noticed within
/// about twice this.
const HEARTBEAT_SECS: u16 = 10;

/// Opens a connection named `name` (shown in RabbitMQ's connection list).
pub async fn connect(url: &SecretUrl, name: &str) -> anyhow::Result<Connection> {
    let mut uri: AMQPUri = url
        .expose()
        .parse()
        .map_err(|err| anyhow::anyhow!("not an AMQP URL ({}): {err}", url.redacted()))?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(HEARTBEAT_SECS);
    }
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(err)) => Err(anyhow::anyhow!(
            "cannot connect to RabbitMQ at {}: {err}",
            url.redacted()
        )),
        Err(_) => Err(anyhow::anyhow!(
            "no answer from RabbitMQ at {} within {CONNECT_TIMEOUT:?}",
            url.redacted()
        )),
    }
}

/// Exponential backoff between reconnection attempts: 100 ms, doubling, up to a ceiling.
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    pub(crate) fn new(max: Duration) -> Self {
        Backoff {
            next: Self::FIRST.min(max),
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }

    /// Waits for the next delay; `false` when `shutdown` fired meanwhile.
    pub(crate) async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        // A little jitter so that instances cut off together do not reconnect in lockstep.
        let jitter = Duration::from_millis(u64::from(uuid::Uuid::now_v7().as_u128() as u8 % 50));
        let delay = self.next + jitter;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = shutdown.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

/// Connection state of each bus component (relay, consumer) of one service.
#[derive(Debug, Default)]
pub struct Status {
    components: Mutex<BTreeMap<String, Option<String>>>,
}

impl Status {
    /// Registers `component` as not connected yet.
    pub(crate) fn register(&self, component: &str) {
        self.set(component, Some("not connected yet".into()));
    }

    pub(crate) fn up(&self, component: &str) {
        self.set(component, None);
    }

    pub(crate) fn down(&self, component: &str, error: String) {
        self.set(component, Some(error));
    }

    fn set(&self, component: &str, error: Option<String>) {
        let up = error.is_none();
        if let Ok(mut components) = self.components.lock() {
            components.insert(component.to_owned(), error);
        }
        metrics::gauge!("bus_connected", "component" => component.to_owned()).set(if up {
            1.0
        } else {
            0.0
        });
    }

    /// Ok when every component is connected, else the first problem.
    pub fn check(&self) -> Result<(), String> {
        let components = self
            .components
            .lock()
            .map_err(|_| "bus status unavailable".to_owned())?;
        match components
            .iter()
            .find_map(|(name, error)| error.as_ref().map(|e| format!("{name}: {e}")))
        {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }
}

/// The `bus` readiness check: down while the relay or a consumer has no connection.
pub struct BusCheck(pub Arc<Status>);

impl kit::health::Check for BusCheck {
    fn name(&self) -> &str {
        "bus"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.check() })
    }
}
