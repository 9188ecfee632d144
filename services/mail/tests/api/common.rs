//! What the HTTP tests share: the service with the demo scenario, trusting testkit's signing
//! key and checking revocation in Redis, and tokens for the demo users.

use kit::config::SecretUrl;
use testkit::{TestApp, tokens};
use uuid::Uuid;

pub const ADA: &str = "0193a000-0000-7000-8000-000000000001";
pub const BOB: &str = "0193a000-0000-7000-8000-000000000002";
pub const CLEO: &str = "0193a000-0000-7000-8000-000000000003";

/// The shared Redis (`REDIS_URL`, else the local one).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub async fn demo_app() -> TestApp {
    TestApp::spawn_with::<mail::Mail>(|settings| {
        settings.populate.scenario = Some("demo".into());
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        tokens::trust(settings);
    })
    .await
}

fn demo_user(id: &str, email: &str, name: &str) -> tokens::Token {
    tokens::user(Uuid::parse_str(id).expect("a demo user id"))
        .email(email)
        .name(name)
}

/// Ada Admin (role `admin`).
pub fn ada() -> tokens::Token {
    demo_user(ADA, "ada@hatchery.test", "Ada Admin").admin()
}

pub fn bob() -> tokens::Token {
    demo_user(BOB, "bob@hatchery.test", "Bob Baker")
}

pub fn cleo() -> tokens::Token {
    demo_user(CLEO, "cleo@hatchery.test", "Cleo Cooper")
}
