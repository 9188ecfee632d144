//! The `payments` service: payments with a provider's semantics for the platform's other
//! services (events' paid seats first) and its admins.
//!
//! - `lib.rs` (here): the service — name, port, database, what it uses, routes, and `start`,
//!   which builds the providers, the handlers' state and what runs beside them (reconciliation,
//!   the partner webhook sender, the outbox relay and the user-event consumer);
//! - `config.rs`: the service's own settings; `domain/`: money, the status machine, validated
//!   fields and webhook signatures, no I/O;
//! - `http/`: one module per resource; `store/`: queries; `events.rs`: what it consumes;
//!   `populate.rs`: seed data;
//! - logic that is neither HTTP nor SQL, each taking only what it needs: `provider/` (the
//!   `Provider` trait, `stripe` and the built-in `test`), `apply.rs` (what a provider says,
//!   through the transition table), `incoming.rs` (provider webhooks), `reconcile.rs`,
//!   `deliveries.rs` (outgoing partner webhooks), `notify.rs` (realtime pushes).

pub mod apply;
pub mod batch;
pub mod config;
pub mod deliveries;
pub mod domain;
pub mod events;
pub mod http;
pub mod incoming;
pub mod notify;
pub mod populate;
pub mod provider;
pub mod reconcile;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kit::config::Environment;
use kit::{Database, Personal, Replace, Resources, Settings, Started, Uses};
use sqlx::migrate::Migrator;
use tokio::sync::Notify;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::domain::{AmountLimits, ProviderName};
use crate::http::AppState;
use crate::notify::{NOTIFICATIONS, Notifier};
use crate::provider::test::WebhookTarget;
use crate::provider::{Providers, StripeProvider, TestProvider};

/// The service, handed to `kit::run` by `main.rs` and to `testkit` by tests.
pub struct Payments;

static MIGRATOR: Migrator = sqlx::migrate!();

/// Where the API is, as the service itself can reach it (for the test provider's webhooks and
/// 3-D Secure page): `None` when the port is not known (0).
fn own_api_url<A>(settings: &Settings<A>) -> Option<String> {
    let port = settings.http.port;
    if port == 0 {
        return None;
    }
    let host = match settings.http.host.as_str() {
        "" | "0.0.0.0" => "127.0.0.1".to_owned(),
        "::" => "[::1]".to_owned(),
        host if host.contains(':') && !host.starts_with('[') => format!("[{host}]"),
        host => host.to_owned(),
    };
    Some(format!("http://{host}:{port}/api/payments/v1"))
}

/// The test provider's own connections to the database: its writes are committed without
/// waiting for the disk (`synchronous_commit = off`). It stands in for a provider elsewhere,
/// whose last moments lost in a crash the service already survives: reconciliation and the
/// idempotent calls repair any difference, as they would with a real provider. Our own tables
/// are always written durably.
fn test_provider_pool(db: &sqlx::PgPool) -> sqlx::PgPool {
    let options = db
        .connect_options()
        .as_ref()
        .clone()
        .options([("synchronous_commit", "off")]);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(db.options().get_max_connections().clamp(1, 8))
        .connect_lazy_with(options)
}

/// The providers this instance can use; the one new payments go to must be among them.
fn providers(resources: &Resources<Config>) -> anyhow::Result<Providers> {
    let settings = &resources.settings;
    let app = &settings.app;
    let production = settings.environment == Environment::Production;
    if production && (app.provider == ProviderName::Test || app.test_provider.enabled) {
        bail!(
            "the test provider is not for production: set app.provider = \"stripe\" and app.test_provider.enabled = false"
        );
    }
    let api = own_api_url(settings);
    let test = app.test_provider.enabled.then(|| {
        let webhooks = match (&app.test_provider.webhook_url, &api) {
            _ if !app.test_provider.send_webhooks => None,
            (Some(url), _) => Some(url.clone()),
            (None, Some(api)) => Some(format!("{api}/webhooks/test")),
            (None, None) => {
                tracing::warn!("http.port is 0: the test provider sends no webhooks (set app.test_provider.webhook_url)");
                None
            }
        };
        let target = webhooks.map(|url| WebhookTarget {
            url,
            secret: app.test_provider.webhook_secret.clone(),
            delay: app.test_provider.webhook_delay,
            shutdown: resources.shutdown.clone(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            tasks: resources.tasks.clone(),
        });
        Arc::new(TestProvider::new(
            test_provider_pool(&resources.db),
            app.test_provider.webhook_secret.clone(),
            target,
            api.clone().unwrap_or_else(|| "/api/payments/v1".into()),
        ))
    });
    let stripe = match &app.stripe.api_key {
        None => None,
        Some(key) => Some(Arc::new(
            StripeProvider::new(
                &app.stripe.api_base,
                key.clone(),
                app.stripe.webhook_secret.clone(),
                app.stripe.timeout,
                app.stripe.return_url.clone(),
            )
            .context("app.stripe")?,
        )),
    };
    let providers = Providers {
        default: app.provider,
        test,
        stripe,
    };
    if providers.default_provider().is_none() {
        bail!(
            "app.provider = \"{}\" is not usable: {}",
            app.provider,
            match app.provider {
                ProviderName::Stripe => "set app.stripe.api_key (PAYMENTS__APP__STRIPE__API_KEY)",
                ProviderName::Test => "app.test_provider.enabled is false",
            }
        );
    }
    Ok(providers)
}

impl kit::Service for Payments {
    type Config = Config;
    type State = AppState;

    const NAME: &'static str = "payments";
    const PORT: u16 = 8003;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = env!("CARGO_PKG_DESCRIPTION");
    const DATABASE: Option<Database> = Some(Database {
        migrations: &MIGRATOR,
        shared: &[&identity::SCHEMA, &kit::idempotency::SCHEMA, &bus::SCHEMA],
        populate: Some(populate::load),
        changelog: &[],
        personal: &[
            Personal::column("payments", "description", Replace::Text),
            Personal::column("payments", "metadata", Replace::Json),
            Personal::column("payments", "failure_message", Replace::Text),
            Personal::column("payments", "client_secret", Replace::Secret),
            Personal::column("payments", "next_action", Replace::Json),
            Personal::column("refunds", "reason", Replace::Text),
            Personal::column("refunds", "metadata", Replace::Json),
            Personal::column("refunds", "failure_reason", Replace::Text),
            // Partners' signing secrets: a copy must not sign as production does.
            Personal::column("webhook_endpoints", "secret", Replace::Secret),
            Personal::column("webhook_deliveries", "payload", Replace::Json),
            Personal::column("webhook_attempts", "response_body", Replace::Text),
            Personal::column("webhook_attempts", "error", Replace::Text),
            Personal::column("test_provider_intents", "client_secret", Replace::Secret),
            Personal::column("test_provider_intents", "metadata", Replace::Json),
            Personal::column("test_provider_intents", "last_error", Replace::Json),
            Personal::column("test_provider_refunds", "metadata", Replace::Json),
        ],
    });
    const USES: &'static [Uses] = &[Uses::Redis, Uses::RabbitMq];

    fn routes() -> OpenApiRouter<AppState> {
        http::router()
    }

    /// The providers, the handlers' state (token verification with revocation in Redis, the
    /// database, realtime pushes), reconciliation, the partner webhook sender, the outbox
    /// relay and the event consumer.
    async fn start(resources: &Resources<Config>) -> anyhow::Result<Started<AppState>> {
        let settings = &resources.settings;
        let app = &settings.app;
        let providers = providers(resources)?;
        let identity = identity::Identity::from_resources(resources)?;
        let realtime = settings
            .redis
            .url
            .as_ref()
            .map(|url| {
                realtime::Publisher::connect(url, NOTIFICATIONS)
                    .map(|publisher| publisher.with_prefix(app.realtime_prefix.clone()))
            })
            .transpose()
            .context("realtime")?;
        let wake = Arc::new(Notify::new());
        let notifier = Notifier::new(realtime, wake.clone(), resources.tasks.clone());
        let state = AppState {
            db: resources.db.clone(),
            hot: store::payments::Hot::start(resources.db.connect_options()),
            settings: settings.clone(),
            identity: identity.clone(),
            providers: providers.clone(),
            notifier: notifier.clone(),
            limits: Arc::new(AmountLimits {
                max_major: app.max_amount,
                per_currency: app.max_amounts.clone(),
            }),
        };
        let mut started = Started::new(state);
        if let Some(revocations) = identity.revocation_check() {
            started = started.degraded_without(revocations);
        }
        if app.reconcile.enabled {
            let reconciler = reconcile::Reconciler {
                db: resources.db.clone(),
                providers,
                notifier,
                config: app.reconcile.clone(),
            };
            started = started.task("reconciliation", reconciler.run(resources.shutdown.clone()));
        }
        let sender = deliveries::Sender::new(resources.db.clone(), app.webhooks.clone(), wake)?;
        started = started.task("partner webhooks", sender.run(resources.shutdown.clone()));
        started.with(bus::wire(resources, events::consumers()))
    }

    fn commands() -> Vec<kit::clap::Command> {
        bus::ops::define()
    }

    async fn run_command(
        name: &str,
        matches: &kit::clap::ArgMatches,
        resources: Resources<Config>,
    ) -> anyhow::Result<()> {
        bus::ops::run(name, matches, resources).await
    }
}
