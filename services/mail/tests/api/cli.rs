//! The service binary as operators run it: exit codes, messages, start-up and shutdown.

use std::process::Command;

use testkit::TestDb;
use testkit::cli::{Running, run};

use crate::common::{TEMPLATES, ada, sink};

fn binary() -> Command {
    testkit::cli::command(env!("CARGO_BIN_EXE_mail"), "mail")
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
                "MAIL__APP__SMTP__URL",
                "http://mail.example.com",
                "app.smtp.url",
            ),
            ("MAIL__APP__FROM", "nobody", "app.from"),
            ("MAIL__APP__PUBLIC_URL", "ftp://x", "app.public_url"),
            ("MAIL__APP__MAX_RECIPIENTS", "-1", "app.max_recipients"),
            ("MAIL__APP__DELIVERY__LEASE", "soon", "app.delivery.lease"),
            ("MAIL__APP__SMTP__TIMEOUTS", "1s", "timeouts"),
            ("MAIL__HTTP__PORT", "eighty", "http.port"),
        ],
    );
}

#[tokio::test]
async fn settings_that_contradict_each_other_stop_the_start_naming_the_key() {
    let db = TestDb::create().await;
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("MAIL__DATABASE__URL", db.url())
        .env("MAIL__HTTP__PORT", "0")
        .env(
            "MAIL__APP__SMTP__URL",
            "smtp://relay:hunter2secret@127.0.0.1:1",
        )
        .env("MAIL__APP__DELIVERY__LEASE", "10s")
        .env("MAIL__APP__SMTP__TIMEOUT", "30s"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("app.delivery.lease"), "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
    let (output, _, stderr) = run(binary()
        .arg("serve")
        .env("MAIL__DATABASE__URL", db.url())
        .env("MAIL__HTTP__PORT", "0")
        .env("MAIL__ENVIRONMENT", "production")
        .env("MAIL__AUTH__PUBLIC_KEY", testkit::tokens::public_key())
        .env("MAIL__REDIS__URL", "redis://127.0.0.1:6379")
        .env("MAIL__AMQP__URL", bus::testing::amqp_url()));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("app.unsubscribe_secret"), "{stderr}");
}

#[test]
fn secrets_never_reach_the_output() {
    let (output, stdout, stderr) = run(binary().arg("check").env(
        "MAIL__DATABASE__URL",
        "postgres://app:hunter2secret@127.0.0.1:1/mail",
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

#[test]
fn openapi_prints_the_document_without_a_database() {
    let (output, stdout, stderr) = run(binary()
        .arg("openapi")
        .env("MAIL__DATABASE__URL", "postgres://nobody@127.0.0.1:1/none"));
    assert!(output.status.success(), "{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).expect("stdout is the JSON document");
    assert_eq!(doc["info"]["title"], "Hatchery mail service");
    assert!(doc["paths"]["/api/mail/v1/messages"]["post"].is_object());
}

/// With its database and an SMTP relay, the service reaches the local Redis and RabbitMQ (the
/// development defaults), serves the demo templates, and stops on SIGTERM with exit code 0 and
/// no ERROR logged.
#[tokio::test]
async fn serves_the_demo_templates_on_the_local_servers_and_stops_cleanly() {
    let db = TestDb::create().await;
    let sink = sink(10);
    let prefix = bus::testing::unique_prefix();
    let mut child = Running::spawn(
        binary()
            .env("MAIL__DATABASE__URL", db.url())
            .env("MAIL__HTTP__PORT", "0")
            .env("MAIL__POPULATE__SCENARIO", "demo")
            .env("MAIL__AMQP__URL", bus::testing::amqp_url())
            .env("MAIL__AMQP__PREFIX", &prefix)
            .env("MAIL__APP__SMTP__URL", format!("smtp://{}", sink.addr()))
            .env("MAIL__AUTH__PUBLIC_KEY", testkit::tokens::public_key()),
    );
    let address = child.address.clone();
    let client = reqwest::Client::new();
    child.ready(&["database", "redis", "bus", "smtp"]).await;
    let templates: serde_json::Value = client
        .get(format!("{address}{TEMPLATES}"))
        .bearer_auth(ada())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(templates["items"].as_array().unwrap().len(), 6);

    child.stops_cleanly().await;
    bus::testing::cleanup(
        &bus::testing::amqp_url(),
        &kit::config::AmqpSettings {
            prefix,
            ..Default::default()
        },
        &["mail"],
    )
    .await;
}
