//! Staying connected to RabbitMQ, and the bus's readiness as `/readyz` reports it.
//!
//! The relay and the consumer live the same way, through a [`Link`]: connect, let the
//! component's [`Session`] open its channels and work until shutdown or until RabbitMQ fails,
//! close (the session its channels, then the link the connection), and reconnect with
//! exponential backoff. [`Status`] holds each component's state for the `bus` readiness check.
//!
//! Closing happens in that order for a reason: lapin closes a channel whose last handle is
//! dropped on its own, in the background; if the connection is closing meanwhile, that close
//! fails and lapin logs the connection as broken (at ERROR) and never sends the
//! `connection.close`. So every channel is closed, and awaited, before its connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use kit::SecretUrl;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

/// How long one connection attempt (TCP + AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on closing a channel or a connection: on a dead connection it may never complete.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
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

/// Opens a channel on `connection` and runs `setup` on (a handle to) it. A channel whose setup
/// failed is closed before the error is returned (see the module comment for why it must not
/// simply be dropped).
pub(crate) async fn open_channel<T, F>(
    connection: &Connection,
    setup: impl FnOnce(Channel) -> F,
) -> lapin::Result<(Channel, T)>
where
    F: Future<Output = lapin::Result<T>>,
{
    let channel = connection.create_channel().await?;
    match setup(channel.clone()).await {
        Ok(value) => Ok((channel, value)),
        Err(err) => {
            close_channel(&channel, "setup failed").await;
            Err(err)
        }
    }
}

/// Closes `channel` and waits for RabbitMQ to confirm, within [`CLOSE_TIMEOUT`]. A channel that
/// is closed already, or whose connection is gone, is left as it is.
pub(crate) async fn close_channel(channel: &Channel, reason: &str) {
    if channel.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, reason.into())).await;
    }
}

/// Closes `connection` (after its channels), within [`CLOSE_TIMEOUT`].
pub(crate) async fn close_connection(connection: &Connection, reason: &str) {
    if connection.status().connected() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await;
    }
}

/// What one bus component does with each connection its [`Link`] opens.
pub(crate) trait Session: Send {
    /// What [`Session::open`] sets up and [`Session::work`] uses (channels, a consumer).
    type Open: Send;

    /// Opens and sets up the component's channels on a fresh connection; an error says what
    /// failed. Channels opened before a failure are closed again ([`open_channel`]).
    fn open(
        &mut self,
        connection: &Connection,
    ) -> impl Future<Output = Result<Self::Open, String>> + Send;

    /// Works until `shutdown` (`Ok`) or until RabbitMQ fails (`Err`, saying why), then closes
    /// its channels, so that the connection is closed with nothing left on it.
    fn work(
        &mut self,
        connection: &Connection,
        open: Self::Open,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Runs after each failed connection attempt, before the backoff.
    fn unreachable(&mut self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Keeps one component (`relay`, `consumer`) on RabbitMQ until shutdown, with its state in
/// [`Status`].
pub(crate) struct Link<'a> {
    pub url: &'a SecretUrl,
    /// Shown in RabbitMQ's connection list.
    pub connection_name: String,
    pub component: &'static str,
    pub status: &'a Status,
    pub reconnect_max_delay: Duration,
}

impl Link<'_> {
    /// Connects, runs `session`, closes and reconnects with backoff, until `shutdown`.
    pub(crate) async fn run<S: Session>(&self, session: &mut S, shutdown: &CancellationToken) {
        let component = self.component;
        let mut backoff = Backoff::new(self.reconnect_max_delay);
        while !shutdown.is_cancelled() {
            match self.open(session).await {
                Err(err) => {
                    tracing::warn!(component, error = %err, "cannot reach RabbitMQ; retrying");
                    self.status.down(component, err);
                    session.unreachable().await;
                }
                Ok((connection, open)) => {
                    self.status.up(component);
                    tracing::info!(component, "connected to RabbitMQ");
                    backoff.reset();
                    let worked = session.work(&connection, open, shutdown).await;
                    close_connection(&connection, "stopping").await;
                    match worked {
                        Ok(()) => break,
                        Err(err) => {
                            tracing::warn!(component, error = %err, "lost RabbitMQ; reconnecting");
                            self.status.down(component, err);
                        }
                    }
                }
            }
            if !backoff.wait(shutdown).await {
                break;
            }
        }
        self.status.down(component, "stopped".into());
    }

    async fn open<S: Session>(&self, session: &mut S) -> Result<(Connection, S::Open), String> {
        let connection = connect(self.url, &self.connection_name)
            .await
            .map_err(|err| format!("{err:#}"))?;
        match session.open(&connection).await {
            Ok(open) => Ok((connection, open)),
            Err(err) => {
                close_connection(&connection, "setup failed").await;
                Err(err)
            }
        }
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
