//! The service binary as operators run it: exit codes, messages, start-up and shutdown.

use std::process::Command;

use testkit::TestDb;
use testkit::cli::{Running, run};

fn binary() -> Command {
    testkit::cli::command(env!("CARGO_BIN_EXE_template"), "template")
}

/// kit tests its own keys; here: the service's own section, and that the binary turns any bad
/// setting into exit code 2.
#[test]
fn bad_settings_exit_2_naming_the_key() {
    testkit::cli::assert_config_errors(
        binary,
        &["check"],
        &[
            ("TEMPLATE__APP__MAX_BODY_CHARS", "-1", "app.max_body_chars"),
            ("TEMPLATE__APP__MAX_BODY_CHAR", "1", "max_body_char"),
            ("TEMPLATE__HTTP__PORT", "eighty", "http.port"),
        ],
    );
}

#[test]
fn secrets_never_reach_the_output() {
    let (output, stdout, stderr) = run(binary().arg("check").env(
        "TEMPLATE__DATABASE__URL",
        "postgres://app:hunter2secret@127.0.0.1:1/template",
    ));
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

#[tokio::test]
async fn check_reports_each_dependency() {
    let db = TestDb::create().await;
    let (output, stdout, stderr) = run(binary()
        .arg("check")
        .env("TEMPLATE__DATABASE__URL", db.url())
        .env("TEMPLATE__REDIS__URL", "redis://127.0.0.1:6379"));
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
    testkit::cli::assert_check_reports_down(
        binary()
            .env("TEMPLATE__DATABASE__URL", db.url())
            .env("TEMPLATE__REDIS__URL", "redis://127.0.0.1:1"),
        "redis",
    );
}

#[test]
fn openapi_prints_the_document_without_a_database() {
    let (output, stdout, stderr) = run(binary().arg("openapi").env(
        "TEMPLATE__DATABASE__URL",
        "postgres://nobody@127.0.0.1:1/none",
    ));
    assert!(output.status.success(), "{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is the JSON document");
    assert_eq!(doc["info"]["title"], "Hatchery template service");
}

#[tokio::test]
async fn a_bad_scenario_file_stops_the_start_with_file_and_line() {
    let db = TestDb::create().await;
    let scenario = testkit::cli::Scenario::new("broken", "template");
    scenario.write(
        "notes.yaml",
        "users:\n  - id: 0193a000-0000-7000-8000-000000000001\n    email: a@b.test\n    name: A\nnotes:\n  - id: 0193a000-0000-7000-8000-00000000a001\n    owner: 0193a000-0000-7000-8000-000000000001\n    titel: typo\n",
    );
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("TEMPLATE__DATABASE__URL", db.url())
        .env("TEMPLATE__HTTP__PORT", "0")
        .env("TEMPLATE__POPULATE__DIR", &scenario.dir)
        .env("TEMPLATE__POPULATE__SCENARIO", "broken"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("notes.yaml:8"), "{stderr}");
    assert!(stderr.contains("titel"), "{stderr}");

    // A dangling reference is reported where it is written, and nothing was loaded.
    scenario.write(
        "notes.yaml",
        "notes:\n  - id: 0193a000-0000-7000-8000-00000000a001\n    owner: 0193a000-0000-7000-8000-0000000000ff\n    title: orphan\n",
    );
    let (output, _, stderr) = run(binary()
        .args(["populate", "--scenario", "broken"])
        .env("TEMPLATE__DATABASE__URL", db.url())
        .env("TEMPLATE__POPULATE__DIR", &scenario.dir));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("notes.yaml:3") && stderr.contains("0193a000-0000-7000-8000-0000000000ff"),
        "{stderr}"
    );
    let pool = db.pool().await;
    let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(notes, 0);
}

/// With nothing set but its database, the service reaches the local Redis and RabbitMQ (the
/// development defaults), serves the demo data, and stops on SIGTERM with exit code 0 and no
/// ERROR logged.
#[tokio::test]
async fn serves_demo_data_on_the_local_servers_and_stops_cleanly() {
    let db = TestDb::create().await;
    let mut child = Running::spawn(
        binary()
            .env("TEMPLATE__DATABASE__URL", db.url())
            .env("TEMPLATE__HTTP__PORT", "0")
            .env("TEMPLATE__POPULATE__SCENARIO", "demo")
            .env("TEMPLATE__AUTH__PUBLIC_KEY", testkit::tokens::public_key()),
    );
    let address = child.address.clone();
    let client = reqwest::Client::new();
    child.ready(&["database", "redis", "bus"]).await;
    let admin = testkit::tokens::user(uuid::Uuid::now_v7()).admin().mint();
    let notes: serde_json::Value = client
        .get(format!("{address}/api/template/v1/notes?owner=all"))
        .bearer_auth(admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(notes["items"].as_array().unwrap().len(), 4);

    child.stops_cleanly().await;
}
