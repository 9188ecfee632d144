//! The `mail` service: the one way the platform sends mail. Templates (versioned, per locale),
//! sends turned into one message per recipient, delivery over SMTP with retries, a suppression
//! list, one-click unsubscribe, and a traceable record of every message.
//!
//! - `lib.rs` (here): the service — name, port, database, what it uses, routes, and `start`,
//!   which builds the handlers' state, the delivery workers and the event consumer;
//! - `config.rs`: the service's own settings; `domain/`: validated types and template
//!   rendering, no I/O;
//! - `http/`: one module per resource; `store/`: queries; `events.rs`: what it publishes and
//!   consumes; `populate.rs`: seed data (templates, event mappings);
//! - `submit.rs`: a send becoming queued messages; `delivery/`: workers, SMTP relay, retries;
//!   `renderer.rs`: compiled template versions; `unsubscribe.rs`: signed unsubscribe links.
//!
//! `docs/mail.md` describes the service for people.

pub mod config;
pub mod delivery;
pub mod domain;
pub mod events;
pub mod http;
pub mod populate;
pub mod renderer;
pub mod store;
pub mod submit;
pub mod unsubscribe;

use std::sync::Arc;

use anyhow::Context;
use kit::config::Environment;
use kit::{Database, Personal, Replace, Resources, Started, Uses};
use sqlx::migrate::Migrator;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::delivery::Delivery;
use crate::delivery::relay::Relay;
use crate::http::AppState;
use crate::renderer::Renderer;
use crate::unsubscribe::UnsubscribeKey;

/// The service, handed to `kit::run` by `main.rs` and to `testkit` by tests.
pub struct Mail;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The UUID of a message's recipient when they are a platform user (anonymizer).
const MESSAGE_USER: &str = "(SELECT u.uuid FROM users u WHERE u.id = messages.user_id)";

impl kit::Service for Mail {
    type Config = Config;
    type State = AppState;

    const NAME: &'static str = "mail";
    const PORT: u16 = 8002;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = env!("CARGO_PKG_DESCRIPTION");
    const DATABASE: Option<Database> = Some(Database {
        migrations: &MIGRATOR,
        shared: &[&identity::SCHEMA, &kit::idempotency::SCHEMA, &bus::SCHEMA],
        populate: Some(populate::load),
        changelog: &[],
        personal: &[
            // A recipient who is a platform user gets their fake address and name everywhere.
            Personal::column(
                "messages",
                "to_email",
                Replace::Email {
                    user: Some(MESSAGE_USER),
                },
            ),
            Personal::column(
                "messages",
                "to_name",
                Replace::Name {
                    user: Some(MESSAGE_USER),
                },
            ),
            Personal::column("messages", "last_reply", Replace::Text),
            Personal::column("messages", "metadata", Replace::Json),
            Personal::column("message_events", "reply", Replace::Text),
            Personal::column("message_events", "detail", Replace::Text),
            Personal::column("sends", "data", Replace::Json),
            Personal::column("sends", "headers", Replace::Json),
            Personal::column("attachments", "filename", Replace::Text),
            Personal::column("attachments", "content", Replace::Secret),
            Personal::column("suppressions", "email", Replace::Email { user: None }),
            Personal::column("suppressions", "note", Replace::Text),
            // Admins write sample data for previews, often a real person's.
            Personal::column("template_versions", "sample_data", Replace::Json),
        ],
    });
    const USES: &'static [Uses] = &[Uses::Redis, Uses::RabbitMq];

    fn routes() -> OpenApiRouter<AppState> {
        http::router()
    }

    /// The handlers' state, the delivery workers (and the relay's readiness), the outbox relay
    /// and the event consumer (bound to the event types mapped to mail at this start).
    async fn start(resources: &Resources<Config>) -> anyhow::Result<Started<AppState>> {
        let settings = &resources.settings;
        let app = &settings.app;
        app.validate(settings.environment == Environment::Production)
            .map_err(|(key, why)| anyhow::anyhow!("invalid configuration: {key}: {why}"))?;
        if app.dkim.is_some() && !delivery::relay::DKIM_SUPPORTED {
            anyhow::bail!(
                "invalid configuration: app.dkim is set, but this build cannot sign (build with `--features dkim`)"
            );
        }
        let identity = identity::Identity::from_resources(resources)?;
        let renderer = Renderer::new();
        let unsubscribe = Arc::new(UnsubscribeKey::new(app.unsubscribe_secret.expose()));
        let message_id_domain: Arc<str> = app.message_id_domain().into();
        let relay = Arc::new(Relay::new(app, unsubscribe.clone())?);
        let mapped = store::event_mails::all(&resources.db)
            .await
            .context("reading the event mail mappings")?;
        let consumers = events::consumers(
            &mapped,
            events::EventMails {
                renderer: renderer.clone(),
                message_id_domain: message_id_domain.clone(),
            },
        );
        let delivery = Delivery {
            pool: resources.db.clone(),
            relay: relay.clone(),
            renderer: renderer.clone(),
            settings: app.delivery.clone(),
            suppress_hard_bounces: app.suppress_hard_bounces,
            concurrency: app.smtp.max_connections,
        };
        let mut started = Started::new(AppState {
            db: resources.db.clone(),
            settings: settings.clone(),
            identity: identity.clone(),
            renderer,
            unsubscribe,
            message_id_domain,
        })
        .degraded_without(relay.check())
        .task("delivery", delivery.run(resources.shutdown.clone()));
        if let Some(revocations) = identity.revocation_check() {
            started = started.degraded_without(revocations);
        }
        started.with(bus::wire(resources, consumers))
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
