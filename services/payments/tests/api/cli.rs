//! The service binary as operators run it: exit codes, messages, start-up and shutdown.

use std::process::Command;

use testkit::TestDb;
use testkit::cli::{Running, run};

fn binary() -> Command {
    testkit::cli::command(env!("CARGO_BIN_EXE_payments"), "payments")
}

/// kit tests its own keys; here: the service's own section, and that the binary turns any bad
/// setting into exit code 2.
#[test]
fn bad_settings_exit_2_naming_the_key() {
    testkit::cli::assert_config_errors(
        binary,
        &["check"],
        &[
            ("PAYMENTS__APP__MAX_AMOUNT", "-1", "app.max_amount"),
            ("PAYMENTS__APP__PROVIDER", "paypal", "app.provider"),
            (
                "PAYMENTS__APP__RECONCILE__INTERVAL",
                "soon",
                "app.reconcile.interval",
            ),
            ("PAYMENTS__APP__MAX_AMOUN", "1", "max_amoun"),
            ("PAYMENTS__HTTP__PORT", "eighty", "http.port"),
        ],
    );
}

#[test]
fn secrets_never_reach_the_output() {
    let (output, stdout, stderr) = run(binary()
        .arg("check")
        .env(
            "PAYMENTS__DATABASE__URL",
            "postgres://app:hunter2secret@127.0.0.1:1/payments",
        )
        .env("PAYMENTS__APP__STRIPE__API_KEY", "sk_live_hunter2secret"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout.contains("database") && stdout.contains("DOWN"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("hunter2secret") && !stderr.contains("hunter2secret"),
        "{stdout}{stderr}"
    );
}

/// A provider that cannot be used stops the start, saying which setting to fix; the test
/// provider never runs in production.
#[tokio::test]
async fn an_unusable_provider_stops_the_start() {
    let db = TestDb::create().await;
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("PAYMENTS__DATABASE__URL", db.url())
        .env("PAYMENTS__HTTP__PORT", "0")
        .env("PAYMENTS__APP__PROVIDER", "stripe"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("app.stripe.api_key"), "{stderr}");
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("PAYMENTS__ENVIRONMENT", "production")
        .env("PAYMENTS__AUTH__PUBLIC_KEY", testkit::tokens::public_key())
        .env("PAYMENTS__DATABASE__URL", db.url())
        .env("PAYMENTS__HTTP__PORT", "0")
        .env("PAYMENTS__REDIS__URL", "redis://127.0.0.1:6379")
        .env(
            "PAYMENTS__AMQP__URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
        ));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not for production"), "{stderr}");
}

#[tokio::test]
async fn check_reports_each_dependency() {
    let db = TestDb::create().await;
    let (output, stdout, stderr) = run(binary()
        .arg("check")
        .env("PAYMENTS__DATABASE__URL", db.url())
        .env("PAYMENTS__REDIS__URL", "redis://127.0.0.1:6379"));
    assert!(output.status.success(), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("config") && lines[0].contains("ok"),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("database") && l.contains("up")),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("redis") && l.contains("up")),
        "{stdout}"
    );

    // Redis on a port where nothing listens: named as down, non-zero exit.
    let (output, stdout, _) = run(binary()
        .arg("check")
        .env("PAYMENTS__DATABASE__URL", db.url())
        .env("PAYMENTS__REDIS__URL", "redis://127.0.0.1:1"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("redis") && l.contains("DOWN")),
        "{stdout}"
    );
}

#[test]
fn openapi_prints_the_document_without_a_database() {
    let (output, stdout, stderr) = run(binary().arg("openapi").env(
        "PAYMENTS__DATABASE__URL",
        "postgres://nobody@127.0.0.1:1/none",
    ));
    assert!(output.status.success(), "{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is the JSON document");
    assert_eq!(doc["info"]["title"], "Hatchery payments service");
}

#[tokio::test]
async fn a_bad_scenario_file_stops_the_start_with_file_and_line() {
    let db = TestDb::create().await;
    let dir = std::env::temp_dir().join(format!("hatchery-populator-{}", uuid::Uuid::now_v7()));
    let service_dir = dir.join("broken").join("payments");
    std::fs::create_dir_all(&service_dir).unwrap();
    std::fs::write(
        service_dir.join("payments.yaml"),
        "users:\n  - id: 0193a000-0000-7000-8000-000000000001\n    email: a@b.test\n    name: A\npayments:\n  - id: 0193a000-0000-7000-8000-0000000b0001\n    user: 0193a000-0000-7000-8000-000000000001\n    amont: 100\n",
    )
    .unwrap();
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("PAYMENTS__DATABASE__URL", db.url())
        .env("PAYMENTS__HTTP__PORT", "0")
        .env("PAYMENTS__POPULATE__DIR", &dir)
        .env("PAYMENTS__POPULATE__SCENARIO", "broken"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("payments.yaml:8"), "{stderr}");
    assert!(stderr.contains("amont"), "{stderr}");

    // A dangling reference is reported where it is written, and nothing was loaded.
    std::fs::write(
        service_dir.join("payments.yaml"),
        "payments:\n  - id: 0193a000-0000-7000-8000-0000000b0001\n    user: 0193a000-0000-7000-8000-0000000000ff\n    amount: 100\n    currency: EUR\n    reference: {service: events, id: x}\n    status: succeeded\n",
    )
    .unwrap();
    let (output, _, stderr) = run(binary()
        .args(["populate", "--scenario", "broken"])
        .env("PAYMENTS__DATABASE__URL", db.url())
        .env("PAYMENTS__POPULATE__DIR", &dir));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("payments.yaml:3")
            && stderr.contains("0193a000-0000-7000-8000-0000000000ff"),
        "{stderr}"
    );
    let pool = db.pool().await;
    let payments: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(payments, 0);
    std::fs::remove_dir_all(&dir).ok();
}

/// With nothing set but its database, the service reaches the local Redis and RabbitMQ (the
/// development defaults), serves the demo data, and stops on SIGTERM with exit code 0 and no
/// ERROR logged.
#[tokio::test]
async fn serves_demo_data_on_the_local_servers_and_stops_cleanly() {
    let db = TestDb::create().await;
    let mut child = Running::spawn(
        binary()
            .env("PAYMENTS__DATABASE__URL", db.url())
            .env("PAYMENTS__HTTP__PORT", "0")
            .env("PAYMENTS__POPULATE__SCENARIO", "demo")
            .env("PAYMENTS__AUTH__PUBLIC_KEY", testkit::tokens::public_key()),
    );
    let address = child.address.clone();
    let client = reqwest::Client::new();
    child.ready(&["database", "redis", "bus"]).await;
    let admin = testkit::tokens::user(uuid::Uuid::now_v7()).admin().mint();
    let payments: serde_json::Value = client
        .get(format!("{address}/api/payments/v1/payments"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(payments["items"].as_array().unwrap().len(), 5);

    child.stops_cleanly().await;
}
