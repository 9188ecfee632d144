//! The broker with the real auth service: a user signs in, asks auth for a ticket, and the
//! broker exchanges it (presenting its own service token) before enforcing topic rules.

use crate::common::{ADA, BOB, REDIS, spawn_broker};
use broker::config::{ClientCredentials, ServiceConfig, TicketAuth};
use kit::config::SecretUrl;
use serde_json::{Value, json};
use testkit::{TestApp, json};

const BROKER_CLIENT: &str = "0193a000-0000-7000-8000-00000000c001";
const BROKER_SECRET: &str = "hatchery-broker-secret";

async fn auth_service() -> TestApp {
    let prefix = format!("test-{}:", uuid::Uuid::now_v7().simple());
    TestApp::spawn_with::<auth::Auth>(|s| {
        s.populate.scenario = Some("demo".into());
        s.redis.url = Some(SecretUrl::new(REDIS));
        s.auth.revocation_prefix = prefix.clone();
        s.app.redis_prefix = prefix;
        // Tests check behaviour, not hashing cost.
        s.app.argon2 = auth::config::Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
    })
    .await
}

async fn ticket_for(auth: &TestApp, email: &str, password: &str) -> String {
    let tokens: Value = json(
        auth.post_json(
            "/api/auth/v1/token",
            &json!({"grant_type": "password", "email": email, "password": password}),
        )
        .await,
    )
    .await;
    let access = tokens["access_token"]
        .as_str()
        .expect("signed in")
        .to_owned();
    let ticket: Value = json(
        auth.client
            .post(auth.url("/api/auth/v1/tickets"))
            .bearer_auth(access)
            .send()
            .await
            .unwrap(),
    )
    .await;
    ticket["ticket"].as_str().expect("a ticket").to_owned()
}

#[tokio::test]
async fn tickets_issued_by_auth_authenticate_and_topic_rules_apply() {
    let auth = auth_service().await;
    let broker = spawn_broker(|config| {
        config.authentication.ticket = Some(TicketAuth {
            validation_url: auth.url("/api/auth/v1/tickets/validate"),
            auth_fields: vec!["user_id".into(), "roles".into()],
            client: Some(ClientCredentials {
                token_url: auth.url("/api/auth/v1/token"),
                client_id: BROKER_CLIENT.into(),
                client_secret: kit::Secret::new(BROKER_SECRET),
                scope: None,
            }),
        });
        config.services.insert(
            "notifications".into(),
            ServiceConfig {
                authorization: Some("owner".into()),
                ..ServiceConfig::default()
            },
        );
    })
    .await;

    let ticket = ticket_for(&auth, "bob@hatchery.test", "hatchery-bob").await;
    let mut bob = broker.client().await;
    bob.auth(&ticket).await;
    bob.subscribe(&format!("notifications.user_{BOB}")).await;
    let adas = format!("notifications.user_{ADA}");
    assert_eq!(
        bob.request(json!({"event": "subscribe", "subscription": adas}))
            .await,
        json!({"event": "subscribe", "subscription": adas, "status": "error", "error": "Unauthorized."})
    );

    // Tickets are single-use: a second connection presenting it is refused.
    let mut replay = broker.client().await;
    assert_eq!(
        replay
            .request(json!({"event": "auth", "method": "ticket", "ticket": ticket}))
            .await,
        json!({"event": "auth", "status": "error", "error": "Authentication failed."})
    );
}
