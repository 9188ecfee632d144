//! The service binary as operators run it: exit codes, messages, start-up and shutdown.

use std::process::Command;

use testkit::TestDb;
use testkit::cli::{Running, run};

fn binary() -> Command {
    testkit::cli::command(env!("CARGO_BIN_EXE_events"), "events")
}

/// kit tests its own keys; here: the service's own section, and that the binary turns any bad
/// setting into exit code 2.
#[test]
fn bad_settings_exit_2_naming_the_key() {
    testkit::cli::assert_config_errors(
        binary,
        &["check"],
        &[
            (
                "EVENTS__APP__MAX_DESCRIPTION_CHARS",
                "-1",
                "app.max_description_chars",
            ),
            ("EVENTS__APP__HOLD", "soon", "app.hold"),
            ("EVENTS__APP__HOLDS", "1m", "holds"),
            ("EVENTS__HTTP__PORT", "eighty", "http.port"),
        ],
    );
}

#[test]
fn openapi_prints_the_document_without_a_database() {
    let (output, stdout, stderr) = run(binary().arg("openapi").env(
        "EVENTS__DATABASE__URL",
        "postgres://nobody@127.0.0.1:1/none",
    ));
    assert!(output.status.success(), "{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is the JSON document");
    assert_eq!(doc["info"]["title"], "Hatchery events service");
}

#[tokio::test]
async fn a_bad_scenario_file_stops_the_start_with_file_and_line() {
    let db = TestDb::create().await;
    let scenario = testkit::cli::Scenario::new("broken", "events");
    scenario.write(
        "events.yaml",
        "users:\n  - id: 0193a000-0000-7000-8000-000000000001\n    email: a@b.test\n    name: A\nevents:\n  - id: 0193a000-0000-7000-8000-0000000e0001\n    organizer: 0193a000-0000-7000-8000-000000000001\n    titel: typo\n",
    );
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("EVENTS__DATABASE__URL", db.url())
        .env("EVENTS__HTTP__PORT", "0")
        .env("EVENTS__POPULATE__DIR", &scenario.dir)
        .env("EVENTS__POPULATE__SCENARIO", "broken"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("events.yaml:8"), "{stderr}");
    assert!(stderr.contains("titel"), "{stderr}");

    // An unknown time zone is reported where it is written, and nothing was loaded.
    scenario.write(
        "events.yaml",
        "users:\n  - id: 0193a000-0000-7000-8000-000000000001\n    email: a@b.test\n    name: A\nevents:\n  - id: 0193a000-0000-7000-8000-0000000e0001\n    organizer: 0193a000-0000-7000-8000-000000000001\n    title: T\n    starts_at: !in 1d\n    ends_at: !in 2d\n    time_zone: Mars/Olympus\n    status: published\n    capacity: 3\n    ticket_types: []\n",
    );
    let (output, _, stderr) = run(binary()
        .args(["populate", "--scenario", "broken"])
        .env("EVENTS__DATABASE__URL", db.url())
        .env("EVENTS__POPULATE__DIR", &scenario.dir));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("events.yaml:11") && stderr.contains("Mars/Olympus"),
        "{stderr}"
    );
    let pool = db.pool().await;
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events, 0);
}

/// With nothing set but its database, the service reaches the local Redis and RabbitMQ (the
/// development defaults), serves the demo data, and stops on SIGTERM with exit code 0 and no
/// ERROR logged.
#[tokio::test]
async fn serves_demo_data_on_the_local_servers_and_stops_cleanly() {
    let db = TestDb::create().await;
    let mut child = Running::spawn(
        binary()
            .env("EVENTS__DATABASE__URL", db.url())
            .env("EVENTS__HTTP__PORT", "0")
            .env("EVENTS__POPULATE__SCENARIO", "demo")
            .env("EVENTS__AUTH__PUBLIC_KEY", testkit::tokens::public_key()),
    );
    let address = child.address.clone();
    let client = reqwest::Client::new();
    child.ready(&["database", "redis", "bus"]).await;
    // The demo's upcoming published events, soonest first; the past one is not listed.
    let events: serde_json::Value = client
        .get(format!("{address}/api/events/v1/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let titles: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Code review club",
            "Rust meetup — December edition",
            "Building services with kit — a hands-on workshop"
        ]
    );
    let full = &events["items"][0]["availability"];
    assert_eq!(
        (full["left"].as_i64(), full["waitlisted"].as_i64()),
        (Some(0), Some(1)),
        "{full}"
    );

    child.stops_cleanly().await;
}
