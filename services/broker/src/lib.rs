//! The `broker` service: a websocket gateway speaking socketshark's client protocol, fed by
//! services through Redis pub/sub. It has no database.
//!
//! - `connection`: one task per websocket (read, write, ping, run the session's events);
//! - `session`: the protocol (auth, subscribe, message, unsubscribe, ping) and callbacks;
//! - `hub` + `delivery`: topics, fan-out, filters/order/throttle per subscription;
//! - `outbound`: each connection's bounded outgoing queue;
//! - `logins`: which connections hold which user's token, for auth's revocation notices;
//! - `link`: the one Redis pub/sub connection (reconnects and resubscribes by itself).

pub mod callbacks;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod http;
pub mod hub;
pub mod jwt;
pub mod link;
pub mod logins;
pub mod metrics;
pub mod outbound;
pub mod protocol;
pub mod rules;
pub mod session;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::Context;
use futures_util::future::BoxFuture;
use identity::ServiceClient;
use kit::health::Check;
use kit::{Database, Resources, Settings, Started, Uses};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::callbacks::Callbacks;
use crate::config::Config;
use crate::hub::Hub;
use crate::jwt::Jwt;
use crate::link::Link;
use crate::logins::Logins;
use crate::metrics::Metrics;
use crate::rules::ServiceRules;

/// The service, handed to `kit::run` by `main.rs` and to `testkit` by tests.
pub struct BrokerService;

impl kit::Service for BrokerService {
    type Config = Config;
    type State = Arc<Broker>;

    const NAME: &'static str = "broker";
    const PORT: u16 = 8000;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = env!("CARGO_PKG_DESCRIPTION");
    /// No migrations and no seed data: kit neither creates nor checks a database.
    const DATABASE: Option<Database> = None;
    const USES: &'static [Uses] = &[Uses::Redis];

    fn routes() -> utoipa_axum::router::OpenApiRouter<Arc<Broker>> {
        http::router()
    }

    /// Builds the broker and its Redis link. The pub/sub subscription is what the broker
    /// delivers from: `/readyz` answers 503 while it is down.
    async fn start(resources: &Resources<Config>) -> anyhow::Result<Started<Arc<Broker>>> {
        let url = resources.settings.redis.url.as_ref().context(
            "redis.url (BROKER__REDIS__URL or REDIS_URL) is not set: the broker receives publications through Redis",
        )?;
        let client = kit::redis::client(url)?;
        let (broker, changes) = Broker::new(
            &resources.settings,
            resources.shutdown.clone(),
            resources.tasks.clone(),
        )?;
        let link = Link {
            client,
            prefix: broker.config.channel_prefix.clone(),
            settings: broker.config.redis.clone(),
            hub: broker.hub.clone(),
            changes,
        };
        let check = PubSubCheck(broker.hub.clone());
        Ok(Started::new(broker)
            .ready_when(check)
            .task("redis pub/sub link", link.run(resources.shutdown.clone())))
    }
}

/// What every connection shares.
pub struct Broker {
    pub config: Config,
    pub services: HashMap<String, Arc<ServiceRules>>,
    pub hub: Arc<Hub>,
    pub callbacks: Callbacks,
    pub jwt: Option<Jwt>,
    /// Connections authenticated with a token, by user (revocations reach them through it).
    pub logins: Arc<Logins>,
    /// The broker's own identity towards auth (ticket validation), when credentials are
    /// configured.
    pub service_token: Option<ServiceClient>,
    pub metrics: Metrics,
    /// Cancelled on SIGTERM: connections send their close frames.
    pub shutdown: CancellationToken,
    /// Connection tasks, awaited (within the grace period) before the process exits.
    pub tasks: TaskTracker,
    connections: AtomicUsize,
    next_session: AtomicU64,
}

impl Broker {
    /// Validates the configuration (errors name the key) and builds the shared state. The
    /// second value feeds the Redis task.
    pub fn new(
        settings: &Settings<Config>,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> anyhow::Result<(Arc<Broker>, tokio::sync::mpsc::UnboundedReceiver<Arc<str>>)> {
        let config = settings.app.clone();
        validate(&config)?;
        let mut services = HashMap::new();
        for (name, service) in &config.services {
            let rules = ServiceRules::new(name, service.clone()).map_err(anyhow::Error::msg)?;
            services.insert(name.clone(), Arc::new(rules));
        }
        let filter_fields = config
            .services
            .iter()
            .map(|(name, service)| (name.clone(), service.filter_fields.clone()))
            .collect();
        let metrics = Metrics::register();
        let logins = Arc::new(Logins::default());
        // Token sessions end when auth announces their revocation.
        let revocations = config
            .authentication
            .jwt
            .enabled
            .then(|| hub::RevocationFeed {
                channel: identity::revocation::channel_in(&settings.auth.revocation_prefix),
                logins: logins.clone(),
            });
        let (hub, changes) = Hub::new(filter_fields, metrics.clone(), revocations);
        let callbacks =
            Callbacks::new(config.callbacks.clone()).context("building the HTTP client")?;
        let jwt = if config.authentication.jwt.enabled {
            let jwt = Jwt::new(&settings.auth, settings.redis.url.as_ref()).context(
                "app.authentication.jwt: setting up token verification (kit's `auth` section)",
            )?;
            Some(jwt)
        } else {
            None
        };
        let service_token = config
            .authentication
            .ticket
            .as_ref()
            .and_then(|ticket| ticket.client.clone())
            .map(|credentials| {
                let http = reqwest::Client::builder()
                    .timeout(config.callbacks.timeout)
                    .build()
                    .context("building the HTTP client for service tokens")?;
                anyhow::Ok(ServiceClient::new(credentials, http))
            })
            .transpose()?;
        let broker = Broker {
            service_token,
            config,
            services,
            hub,
            callbacks,
            jwt,
            logins,
            metrics,
            shutdown,
            tasks,
            connections: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
        };
        Ok((Arc::new(broker), changes))
    }

    /// Takes one of the `max_connections` places, if any is free and the broker is not
    /// shutting down.
    pub fn admit(self: &Arc<Self>) -> Option<connection::Permit> {
        if self.shutdown.is_cancelled() {
            return None;
        }
        let limit = self.config.limits.max_connections;
        let taken = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < limit).then_some(open + 1)
            });
        if taken.is_err() {
            self.metrics.refused.increment(1);
            return None;
        }
        self.metrics.connections.increment(1.0);
        Some(connection::Permit(self.clone()))
    }

    fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
        self.metrics.connections.decrement(1.0);
    }

    /// Open connections.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

fn validate(config: &Config) -> anyhow::Result<()> {
    let limits = &config.limits;
    let positive = [
        ("app.limits.max_connections", limits.max_connections),
        ("app.limits.max_frame_bytes", limits.max_frame_bytes),
        ("app.limits.max_subscriptions", limits.max_subscriptions),
        ("app.limits.outgoing_queue", limits.outgoing_queue),
        ("app.limits.pending_events", limits.pending_events),
        ("app.limits.read_buffer_bytes", limits.read_buffer_bytes),
    ];
    for (key, value) in positive {
        anyhow::ensure!(value > 0, "{key}: must be greater than zero");
    }
    let durations = [
        ("app.ping.interval", config.ping.interval),
        ("app.ping.timeout", config.ping.timeout),
        ("app.limits.write_timeout", limits.write_timeout),
        ("app.redis.ping_interval", config.redis.ping_interval),
        ("app.redis.ping_timeout", config.redis.ping_timeout),
        ("app.redis.connect_timeout", config.redis.connect_timeout),
        (
            "app.redis.reconnect_min_delay",
            config.redis.reconnect_min_delay,
        ),
        ("app.callbacks.timeout", config.callbacks.timeout),
    ];
    for (key, value) in durations {
        anyhow::ensure!(!value.is_zero(), "{key}: must be greater than zero");
    }
    anyhow::ensure!(
        config.redis.reconnect_max_delay >= config.redis.reconnect_min_delay,
        "app.redis.reconnect_max_delay: must be at least app.redis.reconnect_min_delay"
    );
    if let Some(ticket) = &config.authentication.ticket {
        rules::check_url(&ticket.validation_url)
            .map_err(|err| anyhow::anyhow!("app.authentication.ticket.validation_url: {err}"))?;
        if let Some(client) = &ticket.client {
            rules::check_url(&client.token_url).map_err(|err| {
                anyhow::anyhow!("app.authentication.ticket.client.token_url: {err}")
            })?;
        }
    }
    Ok(())
}

/// `/readyz`: the pub/sub connection is up and every topic resubscribed.
struct PubSubCheck(Arc<Hub>);

impl Check for PubSubCheck {
    fn name(&self) -> &str {
        "redis_pubsub"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            if self.0.is_link_up() {
                Ok(())
            } else {
                Err("pub/sub connection down, reconnecting".into())
            }
        })
    }
}

/// A random number in `[0, 1)` for jitter (std's randomly keyed hasher: no RNG dependency).
pub fn random_fraction() -> f64 {
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
