//! socketshark's client protocol over real websockets, with its exact strings: invalid input,
//! ping, ticket authentication, subscription validation and errors.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn invalid_and_unknown_events_get_the_documented_errors_and_the_connection_stays() {
    let broker = spawn_broker(basic_services).await;
    let mut client = broker.client().await;
    let invalid =
        json!({"status": "error", "error": "Messages must be JSON and contain an event field."});
    for text in [
        "not json",
        "\"hello\"",
        "null",
        "[]",
        "{}",
        r#"{"event": null}"#,
        r#"{"event": 42}"#,
        r#"{"data": "no event"}"#,
    ] {
        client.send_text(text).await;
        assert_eq!(client.recv().await, invalid, "for {text}");
    }
    // A 41-character event name is not echoed back; 40 characters are.
    let long = "x".repeat(41);
    assert_eq!(client.request(json!({"event": long})).await, invalid);
    let forty = "y".repeat(40);
    assert_eq!(
        client.request(json!({"event": forty})).await,
        json!({"event": forty, "status": "error", "error": "Event not found."})
    );
    assert_eq!(
        client.request(json!({"event": ""})).await,
        json!({"event": "", "status": "error", "error": "Event not found."})
    );
    assert_eq!(
        client.request(json!({"event": "hello"})).await,
        json!({"event": "hello", "status": "error", "error": "Event not found."})
    );
    // Still usable after all that.
    assert_eq!(
        client
            .request(json!({"event": "ping", "data": "still here"}))
            .await,
        json!({"event": "pong", "data": "still here"})
    );
}

#[tokio::test]
async fn ping_echoes_string_data_only() {
    let broker = spawn_broker(basic_services).await;
    let mut client = broker.client().await;
    assert_eq!(
        client.request(json!({"event": "ping", "data": "x"})).await,
        json!({"event": "pong", "data": "x"})
    );
    assert_eq!(
        client.request(json!({"event": "ping"})).await,
        json!({"event": "pong", "data": null})
    );
    assert_eq!(
        client.request(json!({"event": "ping", "data": 123})).await,
        json!({"event": "pong", "data": null})
    );
    let long = "p".repeat(300);
    let pong = client.request(json!({"event": "ping", "data": long})).await;
    assert_eq!(pong["data"].as_str().unwrap().len(), 128);
}

#[tokio::test]
async fn auth_without_a_configured_method_is_unsupported() {
    let broker = spawn_broker(|config| {
        basic_services(config);
        config.authentication.jwt.enabled = false;
    })
    .await;
    let mut client = broker.client().await;
    let unsupported =
        json!({"event": "auth", "status": "error", "error": "Authentication method unsupported."});
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "x"}))
            .await,
        unsupported
    );
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "ticket", "ticket": "t"}))
            .await,
        unsupported
    );
    assert_eq!(
        client
            .request(json!({"event": "auth", "ticket": "t"}))
            .await,
        unsupported
    );
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "jwt", "token": "t"}))
            .await,
        unsupported
    );
}

#[tokio::test]
async fn ticket_auth_follows_socketshark_exactly() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        basic_services(config);
        ticket_auth(config, &callbacks);
    })
    .await;
    let mut client = broker.client().await;
    let needs_ticket = json!({"event": "auth", "status": "error", "error": "Must specify ticket."});
    assert_eq!(client.request(json!({"event": "auth"})).await, needs_ticket);
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "ticket"}))
            .await,
        needs_ticket
    );
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "ticket", "ticket": ""}))
            .await,
        needs_ticket
    );
    assert!(callbacks.requests("ticket").is_empty());

    // Refused (extra fields of a refusal are ignored), then refused with the service's words,
    // then unreachable, then accepted.
    callbacks.ok(
        "ticket",
        json!({"status": "error", "session_id": "sess_invalid"}),
    );
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "ticket", "ticket": "bad"}))
            .await,
        json!({"event": "auth", "status": "error", "error": "Authentication failed."})
    );
    callbacks.ok(
        "ticket",
        json!({"status": "error", "error": "Ticket expired."}),
    );
    assert_eq!(
        client
            .request(json!({"event": "auth", "ticket": "old"}))
            .await,
        json!({"event": "auth", "status": "error", "error": "Ticket expired."})
    );
    callbacks.answer("ticket", [Answer::Status(500, vec![])]);
    assert_eq!(
        client
            .request(json!({"event": "auth", "ticket": "t"}))
            .await,
        json!({"event": "auth", "status": "error", "error": "Service unavailable."})
    );
    // Still anonymous: an authenticated service refuses.
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "simple_auth.topic"}))
            .await,
        json!({"event": "subscribe", "subscription": "simple_auth.topic", "status": "error", "error": "Authentication required."})
    );

    callbacks.ok(
        "ticket",
        json!({"status": "ok", "session_id": "sess_123", "user_id": ADA, "foo": "ignored"}),
    );
    assert_eq!(
        client
            .request(json!({"event": "auth", "method": "ticket", "ticket": "good"}))
            .await,
        json!({"event": "auth", "status": "ok"})
    );
    let bodies = callbacks.requests("ticket");
    assert_eq!(
        bodies,
        vec![
            json!({"ticket": "bad"}),
            json!({"ticket": "old"}),
            json!({"ticket": "t"}),
            json!({"ticket": "good"}),
        ]
    );
    // The upgrade request's id travels with the callbacks.
    assert!(callbacks.request_ids("ticket").iter().all(Option::is_some));
    client.subscribe("simple_auth.topic").await;
}

#[tokio::test]
async fn an_unreachable_auth_service_is_service_unavailable() {
    let callbacks = CallbackServer::start().await;
    let url = callbacks.url("ticket");
    drop(callbacks);
    let broker = spawn_broker(|config| {
        basic_services(config);
        config.authentication.ticket = Some(broker::config::TicketAuth {
            validation_url: url,
            auth_fields: vec!["session_id".into()],
            client: None,
        });
    })
    .await;
    let mut client = broker.client().await;
    assert_eq!(
        client
            .request(json!({"event": "auth", "ticket": "t"}))
            .await,
        json!({"event": "auth", "status": "error", "error": "Service unavailable."})
    );
}

#[tokio::test]
async fn subscription_names_and_services_are_validated() {
    let broker = spawn_broker(basic_services).await;
    let mut client = broker.client().await;
    assert_eq!(
        client.request(json!({"event": "subscribe"})).await,
        json!({"event": "subscribe", "status": "error", "error": "Invalid subscription format."})
    );
    for bad in ["invalid", ".topic", "simple.", "simple"] {
        assert_eq!(
            client
                .request(json!({"event": "subscribe", "subscription": bad}))
                .await,
            json!({"event": "subscribe", "subscription": bad, "status": "error", "error": "Invalid subscription format."}),
            "{bad}"
        );
    }
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "invalid.topic"}))
            .await,
        json!({"event": "subscribe", "subscription": "invalid.topic", "status": "error", "error": "Invalid service."})
    );
    // Services require authentication unless configured otherwise.
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "empty.topic"}))
            .await,
        json!({"event": "subscribe", "subscription": "empty.topic", "status": "error", "error": "Authentication required."})
    );

    client.subscribe("simple.topic").await;
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "simple.topic"}))
            .await,
        json!({"event": "subscribe", "subscription": "simple.topic", "status": "error", "error": "Already subscribed."})
    );
    assert_eq!(
        client
            .request(json!({"event": "message", "subscription": "simple.invalid", "data": {"foo": "bar"}}))
            .await,
        json!({"event": "message", "subscription": "simple.invalid", "status": "error", "error": "Subscription does not exist."})
    );
    assert_eq!(
        client
            .request(json!({"event": "unsubscribe", "subscription": "simple.invalid"}))
            .await,
        json!({"event": "unsubscribe", "subscription": "simple.invalid", "status": "error", "error": "Subscription does not exist."})
    );
    // A message to a subscription without `on_message` gets no reply: the next reply is the
    // unsubscribe's.
    client
        .send(json!({"event": "message", "subscription": "simple.topic", "data": {"foo": "bar"}}))
        .await;
    assert_eq!(
        client
            .request(json!({"event": "unsubscribe", "subscription": "simple.topic"}))
            .await,
        json!({"event": "unsubscribe", "subscription": "simple.topic", "status": "ok"})
    );
    assert_eq!(
        client
            .request(json!({"event": "unsubscribe", "subscription": "simple.topic"}))
            .await,
        json!({"event": "unsubscribe", "subscription": "simple.topic", "status": "error", "error": "Subscription does not exist."})
    );
}

#[tokio::test]
async fn extra_fields_are_kept_from_the_subscribe_and_echoed() {
    let broker = spawn_broker(basic_services).await;
    let mut client = broker.client().await;
    assert_eq!(
        client
            .request(json!({"event": "subscribe", "subscription": "simple.topic", "extra": "foo", "other": "bar"}))
            .await,
        json!({"event": "subscribe", "subscription": "simple.topic", "status": "ok", "extra": "foo"})
    );
    // Later events use the subscription's own extra fields, not the ones they carry.
    assert_eq!(
        client
            .request(json!({"event": "unsubscribe", "subscription": "simple.topic", "extra": "irrelevant"}))
            .await,
        json!({"event": "unsubscribe", "subscription": "simple.topic", "status": "ok", "extra": "foo"})
    );
}

#[tokio::test]
async fn ticket_validation_presents_the_brokers_service_token() {
    let callbacks = CallbackServer::start().await;
    let broker = spawn_broker(|config| {
        basic_services(config);
        ticket_auth(config, &callbacks);
        if let Some(ticket) = &mut config.authentication.ticket {
            ticket.client = Some(broker::config::ClientCredentials {
                token_url: callbacks.url("token"),
                client_id: "0193a000-0000-7000-8000-00000000c001".into(),
                client_secret: kit::Secret::new("hatchery-broker-secret"),
                scope: None,
            });
        }
    })
    .await;
    callbacks.answer(
        "token",
        [
            Answer::Json(
                json!({"access_token": "svc-1", "token_type": "Bearer", "expires_in": 300}),
            ),
            Answer::Json(
                json!({"access_token": "svc-2", "token_type": "Bearer", "expires_in": 300}),
            ),
        ],
    );
    callbacks.answer(
        "ticket",
        [
            Answer::Json(json!({"status": "ok", "session_id": "s1"})),
            Answer::Json(json!({"status": "ok", "session_id": "s2"})),
            // The token was revoked or rotated: refused once, then accepted with a new one.
            Answer::Status(401, vec![]),
            Answer::Json(json!({"status": "ok", "session_id": "s3"})),
        ],
    );
    for ticket in ["a", "b", "c"] {
        let mut client = broker.client().await;
        client.auth(ticket).await;
    }
    assert_eq!(
        callbacks.requests("token"),
        vec![
            json!({"grant_type": "client_credentials", "client_id": "0193a000-0000-7000-8000-00000000c001", "client_secret": "hatchery-broker-secret"}),
            json!({"grant_type": "client_credentials", "client_id": "0193a000-0000-7000-8000-00000000c001", "client_secret": "hatchery-broker-secret"}),
        ],
        "fetched once, reused, fetched again after the 401"
    );
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    assert_eq!(
        callbacks.authorizations("ticket"),
        vec![
            bearer("svc-1"),
            bearer("svc-1"),
            bearer("svc-1"),
            bearer("svc-2")
        ]
    );
}
