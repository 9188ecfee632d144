//! `{"event":"auth","method":"jwt","token":...}`: access tokens verified locally with the
//! identity crate (signature, expiry, revocation), feeding the same rules as ticket auth.

use std::time::Duration;

use crate::common::*;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_valid_token_authenticates_and_feeds_owner_and_role_rules() {
    let broker = spawn_broker(|config| {
        config.services.insert(
            "notifications".into(),
            broker::config::ServiceConfig {
                authorization: Some("owner".into()),
                filter_fields: vec!["session_id".into()],
                ..Default::default()
            },
        );
        config.services.insert(
            "admin".into(),
            broker::config::ServiceConfig {
                authorization: Some("role:admin".into()),
                ..Default::default()
            },
        );
    })
    .await;
    let ada: Uuid = ADA.parse().unwrap();
    let sid = Uuid::now_v7();
    let token = testkit::tokens::user(ada).admin().session(sid).mint();
    let mut client = broker.client().await;
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "jwt", "token": token}))
            .await,
        json!({"event": "auth", "status": "ok"})
    );
    let own = format!("notifications.user_{ADA}");
    client.subscribe(&own).await;
    client.subscribe("admin.audit").await;
    let bobs = format!("notifications.user_{BOB}");
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": bobs}))
            .await,
        json!({"event": "subscribe", "subscription": bobs, "status": "error", "error": "Unauthorized."})
    );
    // The token's session id is an auth field: filters can target one login session.
    let notifications = publisher(&broker.prefix, "notifications").await;
    for (session, text) in [(Uuid::now_v7(), "other session"), (sid, "this session")] {
        notifications
            .publish(
                &format!("user_{ADA}"),
                &json!(text),
                realtime::PublishOptions::new().filter("session_id", session.to_string()),
            )
            .await
            .unwrap();
    }
    assert_eq!(client.recv().await, message(&own, json!("this session")));

    // A user without the role is refused the admin feed.
    let mut bob = broker.client().await;
    let bob_token = testkit::tokens::user(BOB.parse().unwrap()).mint();
    assert_eq!(
        bob.request(json!({"event": "auth", "method": "jwt", "token": bob_token}))
            .await["status"],
        "ok"
    );
    assert_eq!(
        bob.request(json!({"event": "subscribe", "subscription": "admin.audit"}))
            .await["error"],
        "Unauthorized."
    );
}

#[tokio::test]
async fn bad_expired_and_revoked_tokens_fail() {
    let broker = spawn_broker(basic_services).await;
    let mut client = broker.client().await;
    let failed = json!({"event": "auth", "status": "error", "error": "Authentication failed."});
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "jwt"}))
            .await,
        json!({"event": "auth", "status": "error", "error": "Must specify token."})
    );
    let ada: Uuid = ADA.parse().unwrap();
    let expired = testkit::tokens::user(ada)
        .expired_ago(Duration::from_secs(3600))
        .mint();
    let tampered =
        testkit::tokens::user(ada).tampered(|claims| claims.roles = vec!["admin".into()]);
    for token in [json!("not.a.jwt"), json!(expired), json!(tampered)] {
        assert_eq!(
            client
                .request(json!({"event": "auth", "method": "jwt", "token": token}))
                .await,
            failed
        );
    }

    // A revoked session's token is refused even though it verifies.
    let sid = Uuid::now_v7();
    let token = testkit::tokens::user(ada).session(sid).mint();
    let redis = redis::Client::open(REDIS).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    identity::revocation::revoke_session(&mut conn, sid, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "jwt", "token": token}))
            .await,
        failed
    );
    // Anonymous still: an authenticated service refuses.
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "simple_auth.x"}))
            .await["error"],
        "Authentication required."
    );
}
