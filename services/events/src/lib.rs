//! The `events` service: community events with exact capacity, fair waitlists, paid seats
//! (through the payments service), tickets and check-in, calendars.
//!
//! - `lib.rs` (here): the service — name, port, database, what it uses, routes, and `start`;
//! - `config.rs`: its settings; `domain.rs`: validated types and rules, no I/O;
//! - `seats.rs`: taking and freeing seats and promoting the waitlist, under the event's lock;
//! - `actions.rs`: registering, cancelling, expiring holds, payments arriving (neither HTTP
//!   nor SQL, so handlers, the consumer and the expiry task share it);
//! - `payments.rs`: the payments service's client; `notify.rs`: realtime pushes;
//! - `http/`: one module per resource; `store/`: queries; `events.rs`: what it publishes and
//!   consumes; `populate.rs`: seed data; `calendar.rs`: iCalendar feeds.

pub mod actions;
pub mod calendar;
pub mod config;
pub mod desk;
pub mod domain;
pub mod events;
pub mod http;
pub mod notify;
pub mod payments;
pub mod populate;
pub mod seats;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kit::{Database, Personal, Replace, Resources, Started, Uses};
use sqlx::migrate::Migrator;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::http::AppState;

/// The service, handed to `kit::run` by `main.rs` and to `testkit` by tests.
pub struct Events;

static MIGRATOR: Migrator = sqlx::migrate!();

/// The realtime service of users' own notifications (`notifications.user_<uuid>`).
pub const NOTIFICATIONS: &str = "notifications";

/// The UUID of the attendee a check-in scanned (anonymizer).
const CHECKIN_USER: &str = "(SELECT u.uuid FROM users u JOIN registrations r ON r.user_id = u.id \
     WHERE r.id = checkins.registration_id)";

impl kit::Service for Events {
    type Config = Config;
    type State = AppState;

    const NAME: &'static str = "events";
    const PORT: u16 = 8004;
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = env!("CARGO_PKG_DESCRIPTION");
    const DATABASE: Option<Database> = Some(Database {
        migrations: &MIGRATOR,
        shared: &[&identity::SCHEMA, &kit::idempotency::SCHEMA, &bus::SCHEMA],
        populate: Some(populate::load),
        changelog: &[],
        personal: &[
            // What attendees wrote, and the secrets that admit them or pay for them.
            Personal::column("registrations", "answers", Replace::Json),
            Personal::column("registrations", "cancel_reason", Replace::Text),
            Personal::column("registrations", "client_secret", Replace::Secret),
            Personal::column("registrations", "ticket_secret", Replace::Secret),
            // The name a scan showed at the door: the attendee's fake name.
            Personal::column(
                "checkins",
                "attendee",
                Replace::Name {
                    user: Some(CHECKIN_USER),
                },
            ),
            // Calendar feed tokens: a copy needs none.
            Personal::clear("calendar_tokens"),
        ],
    });
    const USES: &'static [Uses] = &[Uses::Redis, Uses::RabbitMq];

    fn routes() -> OpenApiRouter<AppState> {
        http::router()
    }

    /// The handlers' state (token verification with revocation in Redis, the database, the
    /// payments client, realtime pushes), the hold expiry task, the outbox relay and the
    /// consumer of payments' events.
    async fn start(resources: &Resources<Config>) -> anyhow::Result<Started<AppState>> {
        let settings = &resources.settings;
        let app = &settings.app;
        let identity = identity::Identity::from_resources(resources)?;
        let publisher = |service: &str| {
            settings
                .redis
                .url
                .as_ref()
                .map(|url| {
                    realtime::Publisher::connect(url, service)
                        .map(|publisher| publisher.with_prefix(app.realtime_prefix.clone()))
                })
                .transpose()
                .context("realtime")
        };
        let notifier = notify::Notifier::new(
            publisher(Self::NAME)?,
            publisher(NOTIFICATIONS)?,
            resources.tasks.clone(),
        );
        let payments = match &app.client {
            None => {
                tracing::warn!("app.client is not set: paid tickets cannot be sold");
                None
            }
            Some(credentials) => {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .context("the HTTP client")?;
                let client = identity::ServiceClient::new(credentials.clone(), http);
                Some(payments::Payments::new(Arc::new(client), &app.payments_url))
            }
        };
        let ctx = actions::Ctx {
            db: resources.db.clone(),
            rules: seats::Rules {
                public_url: app.public_url.trim_end_matches('/').to_owned(),
                hold: app.hold,
                offer: app.offer,
            },
            payments,
            notifier,
        };
        let mut started = Started::new(AppState {
            db: resources.db.clone(),
            settings: settings.clone(),
            identity: identity.clone(),
            ctx: ctx.clone(),
            desk: desk::Desk::default(),
        });
        if let Some(revocations) = identity.revocation_check() {
            started = started.degraded_without(revocations);
        }
        started = started.task(
            "hold expiry",
            actions::run_expiry(
                ctx.clone(),
                app.expiry_poll,
                app.expiry_grace,
                resources.shutdown.clone(),
            ),
        );
        started.with(bus::wire(resources, events::consumers(ctx)))
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
