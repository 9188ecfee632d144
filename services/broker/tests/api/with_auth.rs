//! The broker with the real auth service: a user signs in, asks auth for a ticket, and the
//! broker exchanges it (presenting its own service token) before enforcing topic rules; and
//! websockets authenticated with auth's access tokens end when the token does (expiry, logout,
//! logout everywhere, a role taken away), which auth announces through Redis.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{ADA, BOB, Client, REDIS, TestBroker, message, publisher, spawn_broker};
use base64::Engine;
use broker::config::{ClientCredentials, Config, ServiceConfig, TicketAuth};
use kit::config::SecretUrl;
use serde_json::{Value, json};
use testkit::{TestApp, json};

const BROKER_CLIENT: &str = "0193a000-0000-7000-8000-00000000c001";
const BROKER_SECRET: &str = "hatchery-broker-secret";
/// How soon a revocation must reach an open websocket.
const REVOCATION_DELAY: Duration = Duration::from_secs(1);

struct Auth {
    app: TestApp,
    /// Its `auth.revocation_prefix` (keys and the revocation channel).
    prefix: String,
}

async fn auth_service() -> TestApp {
    auth_service_with(|_| {}).await.app
}

async fn auth_service_with(configure: impl FnOnce(&mut auth::config::Config)) -> Auth {
    let prefix = format!("test-{}:", uuid::Uuid::now_v7().simple());
    let revocation_prefix = prefix.clone();
    let app = TestApp::spawn_with::<auth::Auth>(|s| {
        s.populate.scenario = Some("demo".into());
        s.redis.url = Some(SecretUrl::new(REDIS));
        s.auth.revocation_prefix = revocation_prefix.clone();
        s.app.redis_prefix = revocation_prefix;
        // Tests check behaviour, not hashing cost.
        s.app.argon2 = auth::config::Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        configure(&mut s.app);
    })
    .await;
    Auth { app, prefix }
}

/// A broker verifying `auth`'s tokens (its key set, its revocations), with `notifications`
/// (owner), `staff` (role:staff) and the public, anonymous `events`.
async fn broker_trusting(auth: &Auth) -> TestBroker {
    let jwks = auth.app.url("/.well-known/jwks.json");
    let revocation_prefix = auth.prefix.clone();
    let broker =
        crate::common::spawn_broker_with(REDIS, &crate::common::unique_prefix(), |settings| {
            settings.auth.public_key = None;
            settings.auth.jwks_url = Some(jwks);
            settings.auth.revocation_prefix = revocation_prefix;
            token_services(&mut settings.app);
        })
        .await;
    broker.ready().await;
    broker
}

fn token_services(config: &mut Config) {
    let rule = |rule: &str| ServiceConfig {
        authorization: Some(rule.into()),
        ..ServiceConfig::default()
    };
    config
        .services
        .insert("notifications".into(), rule("owner"));
    config.services.insert("staff".into(), rule("role:staff"));
    config.services.insert(
        "events".into(),
        ServiceConfig {
            require_authentication: false,
            ..rule("public")
        },
    );
}

/// Auth's token answer for a grant (password or refresh_token).
async fn grant(auth: &TestApp, body: Value) -> Value {
    let response = auth.post_json("/api/auth/v1/token", &body).await;
    assert_eq!(response.status(), 200, "token grant {body}");
    json(response).await
}

async fn sign_in(auth: &TestApp, email: &str, password: &str) -> Value {
    grant(
        auth,
        json!({"grant_type": "password", "email": email, "password": password}),
    )
    .await
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().expect("an access token")
}

/// A token's `exp` (Unix seconds), read from its payload.
fn expiry(token: &str) -> u64 {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["exp"].as_u64().expect("exp")
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn jwt_auth(client: &mut Client, token: &str) -> Value {
    client
        .request(json!({"event": "auth", "method": "jwt", "token": token}))
        .await
}

/// The next frame, which must come within `within`.
async fn recv_within(client: &mut Client, within: Duration) -> Value {
    tokio::time::timeout(within, client.recv())
        .await
        .unwrap_or_else(|_| panic!("a frame within {within:?}"))
}

fn ended(subscription: &str, error: &str) -> Value {
    json!({"event": "unsubscribe", "subscription": subscription, "error": error})
}

/// After the push: the client stays connected as anonymous, nothing more of the ended topic
/// reaches it (published first, it would arrive before the public message published after it).
async fn only_public_messages_arrive(broker: &TestBroker, client: &mut Client, ended_topic: &str) {
    let notifications = publisher(&broker.prefix, "notifications").await;
    notifications
        .publish(ended_topic, &json!("after the end"), Default::default())
        .await
        .unwrap();
    let events = publisher(&broker.prefix, "events").await;
    events
        .publish("feed", &json!("public"), Default::default())
        .await
        .unwrap();
    assert_eq!(client.recv().await, message("events.feed", json!("public")));
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": format!("notifications.{ended_topic}")}))
            .await["error"],
        "Authentication required."
    );
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

#[tokio::test]
async fn logout_everywhere_ends_the_websocket_session_within_a_second() {
    let auth = auth_service_with(|_| {}).await;
    let broker = broker_trusting(&auth).await;
    let tokens = sign_in(&auth.app, "bob@hatchery.test", "hatchery-bob").await;
    let mut bob = broker.client().await;
    assert_eq!(
        jwt_auth(&mut bob, access(&tokens)).await,
        json!({"event": "auth", "status": "ok"})
    );
    let own = format!("notifications.user_{BOB}");
    bob.subscribe(&own).await;
    bob.subscribe("events.feed").await;

    let logout = auth
        .app
        .client
        .post(auth.app.url("/api/auth/v1/logout?scope=global"))
        .bearer_auth(access(&tokens))
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(
        recv_within(&mut bob, REVOCATION_DELAY).await,
        ended(&own, "Session revoked.")
    );
    only_public_messages_arrive(&broker, &mut bob, &format!("user_{BOB}")).await;
}

#[tokio::test]
async fn a_token_expiring_while_connected_ends_what_it_allowed() {
    let auth = auth_service_with(|config| config.access_token_ttl = Duration::from_secs(2)).await;
    let broker = broker_trusting(&auth).await;
    let tokens = sign_in(&auth.app, "bob@hatchery.test", "hatchery-bob").await;
    let expires = expiry(access(&tokens));
    let mut bob = broker.client().await;
    jwt_auth(&mut bob, access(&tokens)).await;
    let own = format!("notifications.user_{BOB}");
    bob.subscribe(&own).await;
    bob.subscribe("events.feed").await;

    assert_eq!(bob.recv().await, ended(&own, "Token expired."));
    let late = unix_now() - expires as f64;
    assert!(
        (0.0..REVOCATION_DELAY.as_secs_f64()).contains(&late),
        "ended {late:.2} s after exp"
    );
    only_public_messages_arrive(&broker, &mut bob, &format!("user_{BOB}")).await;
    // Anonymous again: a new token authenticates it afresh.
    let again = sign_in(&auth.app, "bob@hatchery.test", "hatchery-bob").await;
    assert_eq!(
        jwt_auth(&mut bob, access(&again)).await,
        json!({"event": "auth", "status": "ok"})
    );
    bob.subscribe(&own).await;
}

#[tokio::test]
async fn a_token_refreshed_before_expiry_keeps_the_subscription() {
    let auth = auth_service_with(|config| config.access_token_ttl = Duration::from_secs(3)).await;
    let broker = broker_trusting(&auth).await;
    let tokens = sign_in(&auth.app, "bob@hatchery.test", "hatchery-bob").await;
    let first_expiry = expiry(access(&tokens)) as f64;
    let mut bob = broker.client().await;
    jwt_auth(&mut bob, access(&tokens)).await;
    let own = format!("notifications.user_{BOB}");
    bob.subscribe(&own).await;

    let notifications = publisher(&broker.prefix, "notifications").await;
    let mut pace = tokio::time::interval(Duration::from_millis(100));
    let mut sent = 0;
    let mut refreshed = false;
    // Messages keep arriving up to a second past the first token's expiry.
    while unix_now() < first_expiry + 1.0 {
        pace.tick().await;
        if !refreshed && unix_now() >= first_expiry - 1.0 {
            let next = grant(
                &auth.app,
                json!({"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}),
            )
            .await;
            assert!(expiry(access(&next)) as f64 > first_expiry + 1.0);
            assert_eq!(
                jwt_auth(&mut bob, access(&next)).await,
                json!({"event": "auth", "status": "ok"})
            );
            refreshed = true;
        }
        sent += 1;
        notifications
            .publish(&format!("user_{BOB}"), &json!(sent), Default::default())
            .await
            .unwrap();
        assert_eq!(bob.recv().await, message(&own, json!(sent)));
    }
    assert!(refreshed);
}

#[tokio::test]
async fn a_refresh_with_another_users_token_is_refused() {
    let auth = auth_service_with(|_| {}).await;
    let broker = broker_trusting(&auth).await;
    let bobs = sign_in(&auth.app, "bob@hatchery.test", "hatchery-bob").await;
    let cleos = sign_in(&auth.app, "cleo@hatchery.test", "hatchery-cleo").await;
    let mut bob = broker.client().await;
    jwt_auth(&mut bob, access(&bobs)).await;
    let own = format!("notifications.user_{BOB}");
    bob.subscribe(&own).await;

    assert_eq!(
        jwt_auth(&mut bob, access(&cleos)).await,
        json!({"event": "auth", "status": "error", "error": "Token belongs to another user."})
    );
    // Still Bob's session.
    publisher(&broker.prefix, "notifications")
        .await
        .publish(
            &format!("user_{BOB}"),
            &json!("still bob"),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(bob.recv().await, message(&own, json!("still bob")));
}

#[tokio::test]
async fn an_admin_taking_a_role_away_ends_the_subscriptions_it_allowed() {
    let auth = auth_service_with(|_| {}).await;
    let broker = broker_trusting(&auth).await;
    let ada = sign_in(&auth.app, "ada@hatchery.test", "hatchery-ada").await;
    let set_roles = |roles: Value| {
        auth.app
            .client
            .patch(auth.app.url(&format!("/api/auth/v1/users/{BOB}")))
            .bearer_auth(access(&ada))
            .json(&json!({"roles": roles}))
            .send()
    };
    assert_eq!(set_roles(json!(["staff"])).await.unwrap().status(), 200);
    let tokens = sign_in(&auth.app, "bob@hatchery.test", "hatchery-bob").await;
    let mut bob = broker.client().await;
    jwt_auth(&mut bob, access(&tokens)).await;
    bob.subscribe("staff.desk").await;
    let own = format!("notifications.user_{BOB}");
    bob.subscribe(&own).await;

    assert_eq!(set_roles(json!([])).await.unwrap().status(), 200);
    // The role's subscription ends for the role; auth then ends Bob's sessions as well.
    assert_eq!(
        recv_within(&mut bob, REVOCATION_DELAY).await,
        ended("staff.desk", "Unauthorized.")
    );
    assert_eq!(
        recv_within(&mut bob, REVOCATION_DELAY).await,
        ended(&own, "Session revoked.")
    );
    assert_eq!(
        bob.request(json!({"event": "subscribe", "subscription": "staff.desk"}))
            .await["error"],
        "Authentication required."
    );
}
