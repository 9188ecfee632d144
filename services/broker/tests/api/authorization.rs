//! Who may subscribe to what: built-in rules (owner, role, public), the authorizer callback with
//! periodic re-authorization, and the subscription callbacks with socketshark's request and
//! response shapes, against a real HTTP server.

use std::time::Duration;

use crate::common::*;
use broker::config::ServiceConfig;
use serde_json::json;

fn complex(callbacks: &CallbackServer) -> ServiceConfig {
    ServiceConfig {
        authorizer: Some(callbacks.url("authorizer")),
        authorizer_fields: vec!["capabilities".into()],
        extra_fields: vec!["extra".into()],
        before_subscribe: Some(callbacks.url("before_subscribe")),
        before_unsubscribe: Some(callbacks.url("before_unsubscribe")),
        on_subscribe: Some(callbacks.url("on_subscribe")),
        on_unsubscribe: Some(callbacks.url("on_unsubscribe")),
        on_message: Some(callbacks.url("on_message")),
        ..ServiceConfig::default()
    }
}

#[tokio::test]
async fn a_user_cannot_subscribe_to_another_users_private_topic() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        ticket_auth(config, &callbacks);
        config.services.insert(
            "notifications".into(),
            ServiceConfig {
                authorization: Some("owner".into()),
                ..ServiceConfig::default()
            },
        );
        config.services.insert(
            "admin".into(),
            ServiceConfig {
                authorization: Some("role:admin".into()),
                ..ServiceConfig::default()
            },
        );
        config.services.insert(
            "public".into(),
            ServiceConfig {
                require_authentication: false,
                authorization: Some("public".into()),
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    let unauthorized = |subscription: &str| json!({"event": "subscribe", "subscription": subscription, "status": "error", "error": "Unauthorized."});

    let mut anonymous = broker.client().await;
    anonymous.subscribe("public.feed").await;
    assert_eq!(
        anonymous
            .request(
                json!({"event": "subscribe", "subscription": format!("notifications.user_{ADA}")})
            )
            .await["error"],
        "Authentication required."
    );

    let mut bob = broker.client().await;
    callbacks.ok(
        "ticket",
        json!({"status": "ok", "user_id": BOB, "session_id": "s-bob", "roles": []}),
    );
    bob.auth("bob").await;
    let adas_topic = format!("notifications.user_{ADA}");
    assert_eq!(
        bob.request(json!({"event": "subscribe", "subscription": adas_topic}))
            .await,
        unauthorized(&adas_topic)
    );
    bob.subscribe(&format!("notifications.user_{BOB}")).await;
    assert_eq!(
        bob.request(json!({"event": "subscribe", "subscription": "admin.audit"}))
            .await,
        unauthorized("admin.audit")
    );

    let mut ada = broker.client().await;
    callbacks.ok(
        "ticket",
        json!({"status": "ok", "user_id": ADA, "session_id": "s-ada", "roles": ["admin"]}),
    );
    ada.auth("ada").await;
    ada.subscribe(&adas_topic).await;
    ada.subscribe("admin.audit").await;

    // A push to Ada's topic reaches Ada only.
    let notifications = publisher(&broker.prefix, "notifications").await;
    notifications
        .publish(
            &format!("user_{ADA}"),
            &json!({"text": "hi Ada"}),
            Default::default(),
        )
        .await
        .unwrap();
    notifications
        .publish(
            &format!("user_{BOB}"),
            &json!({"text": "hi Bob"}),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        ada.recv().await,
        message(&adas_topic, json!({"text": "hi Ada"}))
    );
    assert_eq!(
        bob.recv().await,
        message(
            &format!("notifications.user_{BOB}"),
            json!({"text": "hi Bob"})
        )
    );
    // No HTTP call was made for any of these decisions.
    assert!(callbacks.requests("authorizer").is_empty());
}

#[tokio::test]
async fn the_authorizer_decides_with_socketshark_bodies_and_errors() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        ticket_auth(config, &callbacks);
        config.services.insert(
            "authorizer".into(),
            ServiceConfig {
                authorizer: Some(callbacks.url("authorizer")),
                extra_fields: vec!["extra".into()],
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    let mut client = broker.client().await;
    callbacks.ok("ticket", json!({"status": "ok", "session_id": "sess_123"}));
    client.auth("t").await;
    callbacks.answer(
        "authorizer",
        [
            Answer::Json(json!({"status": "error"})),
            Answer::Json(json!({"status": "error", "error": "test error"})),
            Answer::Status(503, vec![]),
            Answer::Json(json!({"status": "ok"})),
        ],
    );
    let subscribe = json!({"event": "subscribe", "subscription": "authorizer.topic"});
    let error = |error: &str| json!({"event": "subscribe", "subscription": "authorizer.topic", "status": "error", "error": error});
    assert_eq!(
        client.request(subscribe.clone()).await,
        error("Unauthorized.")
    );
    assert_eq!(client.request(subscribe.clone()).await, error("test error"));
    assert_eq!(
        client.request(subscribe).await,
        error("Service unavailable.")
    );
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "authorizer.topic", "extra": "foo", "other": "bar"}))
            .await,
        json!({"event": "subscribe", "subscription": "authorizer.topic", "status": "ok", "extra": "foo"})
    );
    let bodies = callbacks.requests("authorizer");
    assert_eq!(
        bodies[0],
        json!({"subscription": "authorizer.topic", "session_id": "sess_123"})
    );
    assert_eq!(bodies[1], bodies[0]);
    assert_eq!(
        bodies[3],
        json!({"subscription": "authorizer.topic", "session_id": "sess_123", "extra": "foo"})
    );
}

#[tokio::test]
async fn subscription_callbacks_follow_socketshark() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        ticket_auth(config, &callbacks);
        config
            .services
            .insert("complex".into(), complex(&callbacks));
    })
    .await;
    let mut client = broker.client().await;
    callbacks.ok("ticket", json!({"status": "ok", "session_id": "sess_123"}));
    client.auth("t").await;

    // before_subscribe refuses: without words, then with them.
    callbacks.answer(
        "before_subscribe",
        [
            Answer::Json(json!({"status": "error"})),
            Answer::Json(json!({"status": "error", "error": "before subscribe error"})),
        ],
    );
    let subscribe = json!({"event": "subscribe", "subscription": "complex.topic"});
    assert_eq!(
        client.request(subscribe.clone()).await,
        json!({"event": "subscribe", "subscription": "complex.topic", "status": "error", "error": "Unhandled exception."})
    );
    assert_eq!(
        client.request(subscribe).await,
        json!({"event": "subscribe", "subscription": "complex.topic", "status": "error", "error": "before subscribe error"})
    );

    // Accepted, with the authorizer's fields passed on.
    callbacks.ok(
        "authorizer",
        json!({"status": "ok", "capabilities": "foo", "plan_type": "bar"}),
    );
    assert_eq!(
        client
            .request(
                json!({"event": "subscribe", "subscription": "complex.topic", "extra": "hello"})
            )
            .await,
        json!({"event": "subscribe", "subscription": "complex.topic", "status": "ok", "extra": "hello"})
    );
    let expected_body = json!({"subscription": "complex.topic", "session_id": "sess_123", "extra": "hello", "capabilities": "foo"});
    assert_eq!(
        callbacks.wait_for("on_subscribe", 1).await,
        vec![expected_body.clone()]
    );
    assert_eq!(callbacks.requests("before_subscribe")[2], expected_body);

    // Messages: no reply, error, error with data, ok without data, ok with data.
    callbacks.answer(
        "on_message",
        [
            Answer::Json(json!({"status": "ok"})),
            Answer::Json(json!({"status": "error", "error": "on message error"})),
            Answer::Json(
                json!({"status": "error", "error": "on message error", "data": {"extra": "data"}}),
            ),
            Answer::Json(json!({"status": "ok", "data": null})),
            Answer::Json(json!({"status": "ok", "data": {"reply": true}})),
        ],
    );
    let msg = |data: serde_json::Value| json!({"event": "message", "subscription": "complex.topic", "extra": "irrelevant", "data": data});
    client.send(msg(json!(null))).await;
    assert_eq!(
        client.request(msg(json!({"foo": "bar", "baz": 123}))).await,
        json!({"event": "message", "subscription": "complex.topic", "status": "error", "extra": "hello", "error": "on message error"})
    );
    assert_eq!(
        client.request(msg(json!(1))).await,
        json!({"event": "message", "subscription": "complex.topic", "status": "error", "extra": "hello", "error": "on message error", "data": {"extra": "data"}})
    );
    assert_eq!(
        client.request(msg(json!(2))).await,
        json!({"event": "message", "subscription": "complex.topic", "status": "ok", "extra": "hello"})
    );
    assert_eq!(
        client.request(msg(json!(3))).await,
        json!({"event": "message", "subscription": "complex.topic", "status": "ok", "extra": "hello", "data": {"reply": true}})
    );
    let on_message = callbacks.requests("on_message");
    assert_eq!(
        on_message[1],
        json!({"subscription": "complex.topic", "session_id": "sess_123", "extra": "hello", "capabilities": "foo", "data": {"foo": "bar", "baz": 123}})
    );

    // A publication carries the subscription's extra fields.
    publish_raw(
        &broker.prefix,
        "complex.topic",
        &json!({"subscription": "complex.topic", "data": {"foo": "bar"}}).to_string(),
    )
    .await;
    assert_eq!(
        client.recv().await,
        json!({"event": "message", "subscription": "complex.topic", "data": {"foo": "bar"}, "extra": "hello"})
    );

    // Unsubscribe: refused twice, then accepted with data.
    callbacks.answer(
        "before_unsubscribe",
        [
            Answer::Json(json!({"status": "error"})),
            Answer::Json(json!({"status": "error", "error": "before unsubscribe error"})),
            Answer::Json(json!({"status": "ok", "data": {"foo": "unsubscribe"}})),
        ],
    );
    let unsubscribe = json!({"event": "unsubscribe", "subscription": "complex.topic"});
    assert_eq!(
        client.request(unsubscribe.clone()).await,
        json!({"event": "unsubscribe", "subscription": "complex.topic", "status": "error", "extra": "hello", "error": "Unhandled exception."})
    );
    assert_eq!(
        client.request(unsubscribe.clone()).await,
        json!({"event": "unsubscribe", "subscription": "complex.topic", "status": "error", "extra": "hello", "error": "before unsubscribe error"})
    );
    assert_eq!(
        client.request(unsubscribe).await,
        json!({"event": "unsubscribe", "subscription": "complex.topic", "status": "ok", "extra": "hello", "data": {"foo": "unsubscribe"}})
    );
    assert_eq!(
        callbacks.wait_for("on_unsubscribe", 1).await,
        vec![expected_body]
    );

    // before_subscribe's data reaches the client.
    callbacks.ok(
        "before_subscribe",
        json!({"status": "ok", "data": {"foo": "subscribe"}}),
    );
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "complex.extra_data"}))
            .await,
        json!({"event": "subscribe", "subscription": "complex.extra_data", "status": "ok", "data": {"foo": "subscribe"}})
    );
}

#[tokio::test]
async fn a_refused_reauthorization_unsubscribes_with_the_push() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        ticket_auth(config, &callbacks);
        config.services.insert(
            "periodic".into(),
            ServiceConfig {
                authorizer: Some(callbacks.url("authorizer")),
                authorization_renewal_period: Some(Duration::from_millis(300)),
                on_unsubscribe: Some(callbacks.url("on_unsubscribe")),
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    let mut client = broker.client().await;
    callbacks.ok("ticket", json!({"status": "ok", "session_id": "sess_123"}));
    client.auth("t").await;
    callbacks.answer(
        "authorizer",
        [
            Answer::Json(json!({"status": "ok"})),
            Answer::Json(json!({"status": "ok"})),
            Answer::Json(json!({"status": "error"})),
            Answer::Json(json!({"status": "error", "error": "no longer authorized"})),
        ],
    );
    client.subscribe("periodic.topic").await;
    client.subscribe("periodic.topic2").await;
    let mut pushes = vec![client.recv().await, client.recv().await];
    pushes.sort_by_key(|push| push["subscription"].as_str().unwrap().to_owned());
    assert_eq!(
        pushes,
        vec![
            json!({"event": "unsubscribe", "subscription": "periodic.topic", "error": "Unauthorized."}),
            json!({"event": "unsubscribe", "subscription": "periodic.topic2", "error": "no longer authorized"}),
        ]
    );
    callbacks.wait_for("on_unsubscribe", 2).await;
    // Both are gone: subscribing again works (with a fresh authorization).
    client.subscribe("periodic.topic").await;
}

#[tokio::test]
async fn closing_the_connection_runs_the_unsubscribe_callbacks() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        config.services.insert(
            "ws_test".into(),
            ServiceConfig {
                require_authentication: false,
                on_unsubscribe: Some(callbacks.url("on_unsubscribe")),
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    let mut client = broker.client().await;
    client.subscribe("ws_test.hello").await;
    drop(client);
    assert_eq!(
        callbacks.wait_for("on_unsubscribe", 1).await,
        vec![json!({"subscription": "ws_test.hello"})]
    );
}

#[tokio::test]
async fn a_rate_limited_callback_is_retried_after_its_header() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        config.callbacks.tries = 2;
        config.callbacks.wait = Duration::from_secs(3);
        config.services.insert(
            "limited".into(),
            ServiceConfig {
                require_authentication: false,
                before_subscribe: Some(callbacks.url("before_subscribe")),
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    callbacks.answer(
        "before_subscribe",
        [
            Answer::Status(429, vec![("x-rate-limit-reset", "0.2")]),
            Answer::Json(json!({"status": "ok", "data": {}})),
        ],
    );
    let mut client = broker.client().await;
    let started = std::time::Instant::now();
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "limited.topic"}))
            .await,
        json!({"event": "subscribe", "subscription": "limited.topic", "status": "ok", "data": {}})
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "waited {waited:?}: the header's 0.2 s, not the configured 3 s"
    );
}

#[tokio::test]
async fn heartbeats_and_authorization_changes_reach_the_service() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        ticket_auth(config, &callbacks);
        config.services.insert(
            "live".into(),
            ServiceConfig {
                authorizer: Some(callbacks.url("authorizer")),
                authorizer_fields: vec!["capabilities".into()],
                authorization_renewal_period: Some(Duration::from_millis(200)),
                on_authorization_change: Some(callbacks.url("on_auth_change")),
                on_heartbeat: Some(callbacks.url("heartbeat")),
                heartbeat_period: Some(Duration::from_millis(200)),
                ..ServiceConfig::default()
            },
        );
    })
    .await;
    let mut client = broker.client().await;
    callbacks.ok("ticket", json!({"status": "ok", "session_id": "sess_123"}));
    client.auth("t").await;
    callbacks.answer(
        "authorizer",
        [
            Answer::Json(json!({"status": "ok", "capabilities": "foo"})),
            Answer::Json(json!({"status": "ok", "capabilities": "bar"})),
        ],
    );
    client.subscribe("live.topic").await;
    let heartbeats = callbacks.wait_for("heartbeat", 2).await;
    assert_eq!(
        heartbeats[0],
        json!({"subscription": "live.topic", "session_id": "sess_123", "capabilities": "foo"})
    );
    let changes = callbacks.wait_for("on_auth_change", 1).await;
    assert_eq!(
        changes[0],
        json!({"subscription": "live.topic", "session_id": "sess_123", "capabilities": "bar"})
    );
    // The second renewal's request carried the fields the first one granted.
    assert_eq!(
        callbacks.requests("authorizer")[1],
        json!({"subscription": "live.topic", "session_id": "sess_123", "capabilities": "foo"})
    );
}
