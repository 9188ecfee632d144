//! The broker binary as operators run it: exit codes and messages, `check` without a database,
//! and SIGTERM closing every websocket with 1001 before exiting 0.

use std::process::Command;

use std::time::Duration;
use testkit::cli::{Running, run};

use crate::common::{Client, REDIS, unique_prefix};
use serde_json::json;

fn binary() -> Command {
    testkit::cli::command(env!("CARGO_BIN_EXE_broker"), "broker")
}

#[test]
fn bad_settings_exit_2_naming_the_key() {
    let cases = [
        ("BROKER__HTTP__PORT", "eighty", "http.port"),
        ("BROKER__LOG__LEVEL", "info,[[[", "log.level"),
        (
            "BROKER__APP__LIMITS__MAX_CONNECTIONS",
            "-1",
            "app.limits.max_connections",
        ),
        ("BROKER__APP__SLOW", "1", "slow"),
        (
            "BROKER__APP__LIMITS__SLOW_CLIENT",
            "ignore",
            "app.limits.slow_client",
        ),
    ];
    for (key, value, named) in cases {
        let (output, _, stderr) = run(binary().arg("check").env(key, value));
        assert_eq!(output.status.code(), Some(2), "{key}={value}: {stderr}");
        assert!(
            stderr.contains(named),
            "{key}={value} should name {named}: {stderr}"
        );
    }
}

#[test]
fn a_bad_service_rule_or_no_redis_stops_the_start_naming_the_key() {
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("BROKER__HTTP__PORT", "0")
        .env("BROKER__REDIS__URL", REDIS)
        .env("BROKER__APP__SERVICES__NOTES__AUTHORIZATION", "everyone"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("app.services.notes.authorization") && stderr.contains("everyone"),
        "{stderr}"
    );

    // In production the Redis it delivers from must be named (no local default there).
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("BROKER__ENVIRONMENT", "production")
        .env(
            "BROKER__AUTH__JWKS_URL",
            "http://127.0.0.1:8001/.well-known/jwks.json",
        )
        .env("BROKER__HTTP__PORT", "0"));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("redis.url"), "{stderr}");
}

#[test]
fn check_needs_no_database() {
    let (output, stdout, stderr) = run(binary()
        .arg("check")
        .env(
            "BROKER__DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/none",
        )
        .env("BROKER__REDIS__URL", REDIS));
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("database"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("redis") && l.contains("up")),
        "{stdout}"
    );

    testkit::cli::assert_check_reports_down(
        binary().env("BROKER__REDIS__URL", "redis://127.0.0.1:1"),
        "redis",
    );
}

#[test]
fn openapi_documents_the_websocket_endpoint() {
    let (output, stdout, stderr) = run(binary().arg("openapi"));
    assert!(output.status.success(), "{stderr}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    assert_eq!(doc["info"]["title"], "Hatchery broker service");
    assert!(doc["paths"]["/ws"]["get"].is_object(), "{stdout}");
}

/// Starts the broker binary on a free port; returns it with its `http://` address.
fn start_broker(prefix: &str) -> (Running, String) {
    let child = Running::spawn(
        binary()
            .env("BROKER__HTTP__PORT", "0")
            .env("BROKER__REDIS__URL", REDIS)
            .env("BROKER__APP__CHANNEL_PREFIX", prefix)
            .env(
                "BROKER__APP__SERVICES__FEED__REQUIRE_AUTHENTICATION",
                "false",
            ),
    );
    let address = child.address.clone();
    (child, address)
}

async fn wait_ready(address: &str) {
    testkit::eventually("/readyz 200", Duration::from_secs(10), || async {
        let response = reqwest::get(format!("{address}/readyz")).await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

fn ws_url(address: &str) -> String {
    format!("{}/ws", address.replacen("http://", "ws://", 1))
}

#[tokio::test]
async fn two_broker_processes_both_deliver_a_publication() {
    let prefix = unique_prefix();
    let (_first, first) = start_broker(&prefix);
    let (_second, second) = start_broker(&prefix);
    wait_ready(&first).await;
    wait_ready(&second).await;
    let mut on_first = Client::connect(&ws_url(&first)).await;
    let mut on_second = Client::connect(&ws_url(&second)).await;
    on_first.subscribe("feed.news").await;
    on_second.subscribe("feed.news").await;
    let feed = crate::common::publisher(&prefix, "feed").await;
    let receivers = feed
        .publish(
            "news",
            &json!({"headline": "everywhere"}),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(receivers, 2, "each process listens once");
    for client in [&mut on_first, &mut on_second] {
        assert_eq!(
            client.recv().await,
            crate::common::message("feed.news", json!({"headline": "everywhere"}))
        );
    }
}

#[tokio::test]
async fn sigterm_closes_every_websocket_with_1001_then_exits_0() {
    let prefix = unique_prefix();
    let (mut child, address) = start_broker(&prefix);
    wait_ready(&address).await;
    let ws_url = ws_url(&address);
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut client = Client::connect(&ws_url).await;
        client.subscribe("feed.news").await;
        clients.push(client);
    }
    let delivered = crate::common::publish_raw(
        &prefix,
        "feed.news",
        &json!({"subscription": "feed.news", "data": "before"}).to_string(),
    )
    .await;
    assert_eq!(delivered, 1, "one broker process listens to feed.news");
    for client in &mut clients {
        assert_eq!(
            client.recv().await,
            crate::common::message("feed.news", json!("before"))
        );
    }

    child.terminate();
    for client in &mut clients {
        let frame = client.closed().await.expect("a close frame");
        assert_eq!(u16::from(frame.code), 1001, "{frame:?}");
    }
    let status = child.exit_status().await;
    assert_eq!(status.code(), Some(0));
}
