//! A tiny service using every extractor, run through kit and testkit like a real one.

use axum::Json;
use axum::routing::get;
use identity::{Admin, CurrentUser, Identity, MaybeUser, RequireRole, ServiceCaller};
use kit::config::SecretUrl;
use kit::{Database, Resources, Settings, Started};
use serde_json::{Value, json};
use testkit::TestApp;
use utoipa_axum::router::OpenApiRouter;

/// A tiny service whose only table is identity's `users`.
pub struct IdentityTest;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/identity/migrations");

impl kit::Service for IdentityTest {
    type Config = ();
    type State = Identity;
    const NAME: &'static str = "identitytest";
    const PORT: u16 = 0;
    const VERSION: &'static str = "0";
    const DESCRIPTION: &'static str = "identity extractors under test";
    const DATABASE: Option<Database> = Some(Database {
        migrations: &MIGRATOR,
        shared: &[&identity::SCHEMA],
        populate: None,
        changelog: &[],
        personal: &[],
    });

    fn routes() -> OpenApiRouter<Identity> {
        OpenApiRouter::new()
            .route("/me", get(me))
            .route("/maybe", get(maybe))
            .route("/optional", get(optional))
            .route("/admin", get(admin))
            .route("/service", get(service_only))
    }

    async fn start(resources: &Resources<()>) -> anyhow::Result<Started<Identity>> {
        Ok(Started::new(Identity::from_resources(resources)?))
    }
}

async fn me(user: CurrentUser) -> Json<Value> {
    Json(json!({"id": user.id, "uuid": user.uuid, "roles": user.roles(), "admin": user.is_admin()}))
}

async fn maybe(MaybeUser(user): MaybeUser) -> Json<Value> {
    Json(json!({"uuid": user.map(|u| u.uuid)}))
}

async fn optional(user: Option<CurrentUser>) -> Json<Value> {
    Json(json!({"uuid": user.map(|u| u.uuid)}))
}

async fn admin(admin: RequireRole<Admin>) -> Json<Value> {
    Json(json!({"uuid": admin.uuid}))
}

async fn service_only(caller: ServiceCaller) -> kit::ApiResult<Json<Value>> {
    caller.require_scope("notes:read")?;
    Ok(Json(json!({"client": caller.client_id})))
}

/// The shared Redis (`REDIS_URL`, else the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The service trusting testkit's key, checking revocation in the shared Redis.
pub async fn app() -> TestApp {
    app_with(|_| {}).await
}

pub async fn app_with(configure: impl FnOnce(&mut Settings<()>)) -> TestApp {
    TestApp::spawn_with::<IdentityTest>(|settings| {
        testkit::tokens::trust(settings);
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        configure(settings);
    })
    .await
}

pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis must run at 127.0.0.1:6379 (cargo xtask infra starts it)")
}

/// Asserts a 401 problem with `WWW-Authenticate: Bearer`; returns its detail.
pub async fn assert_unauthorized(response: reqwest::Response, what: &str) -> String {
    assert_eq!(response.status(), 401, "{what}");
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some("Bearer"),
        "{what}"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let problem: Value = testkit::json(response).await;
    assert_eq!(problem["code"], "unauthorized", "{what}: {problem}");
    problem["detail"].as_str().unwrap_or_default().to_owned()
}
