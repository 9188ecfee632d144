//! The real binary killed with SIGKILL in the middle of a 2,000-message batch: after a restart
//! every message ends in exactly one terminal state, none is lost, and a message sent again
//! carries the same Message-ID as its first copy.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use testkit::TestDb;
use testkit::cli::Running;

use crate::common::*;

fn binary(db: &TestDb, sink: &smtp_sink::Sink, prefix: &str, per_second: u32) -> Command {
    let mut command = testkit::cli::command(env!("CARGO_BIN_EXE_mail"), "mail");
    command
        .env("MAIL__DATABASE__URL", db.url())
        .env("MAIL__HTTP__PORT", "0")
        .env("MAIL__POPULATE__SCENARIO", "demo")
        .env("MAIL__AMQP__URL", bus::testing::amqp_url())
        .env("MAIL__AMQP__PREFIX", prefix)
        .env("MAIL__AUTH__PUBLIC_KEY", testkit::tokens::public_key())
        .env("MAIL__APP__SMTP__URL", format!("smtp://{}", sink.addr()))
        .env("MAIL__APP__SMTP__TIMEOUT", "500ms")
        .env("MAIL__APP__SMTP__MAX_PER_SECOND", per_second.to_string())
        .env("MAIL__APP__DELIVERY__LEASE", "1200ms")
        .env("MAIL__APP__DELIVERY__POLL", "100ms");
    command
}

#[tokio::test]
async fn killed_mid_batch_every_message_ends_once_with_one_message_id() {
    let db = TestDb::create().await;
    let sink = sink(10_000);
    let prefix = bus::testing::unique_prefix();
    // Paced, so the kill lands while batches are being sent.
    let running = Running::spawn(&mut binary(&db, &sink, &prefix, 1_000));
    let client = reqwest::Client::new();
    let admin = ada();
    for part in 0..2 {
        let recipients: Vec<_> = (0..1_000)
            .map(|i| json!({"email": format!("crash{part}-{i}-{}@example.test", uuid::Uuid::now_v7().simple())}))
            .collect();
        let response = client
            .post(format!("{}{MESSAGES}", running.address))
            .bearer_auth(&admin)
            .json(&json!({"template": "auth.verify_email", "data": verification_data(), "recipients": recipients}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::ACCEPTED);
    }
    testkit::eventually(
        "some mail to be delivered",
        Duration::from_secs(20),
        || async { (sink.messages().len() >= 300).then_some(()) },
    )
    .await;
    // Dropping a running binary kills it with SIGKILL: no shutdown, batches cut short.
    drop(running);
    let pool = db.pool().await;
    let at_kill = sink.messages().len();
    assert!(
        at_kill < 2_000,
        "the kill came after everything was sent ({at_kill})"
    );

    let restarted = Running::spawn(&mut binary(&db, &sink, &prefix, 0));
    let counts = wait_until_all_finished(&pool, Duration::from_secs(60)).await;
    assert_eq!(counts, [("sent".to_owned(), 2_000)]);

    // One terminal entry per message in its timeline.
    let terminal: Vec<(i64,)> = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE e.kind IN ('sent', 'failed', 'suppressed', 'canceled'))
         FROM messages m LEFT JOIN message_events e ON e.message_id = m.id GROUP BY m.id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(terminal.len(), 2_000);
    assert!(
        terminal.iter().all(|(n,)| *n == 1),
        "every message has exactly one terminal entry"
    );

    // Every message reached the sink; any copy beyond the first is a resend of an interrupted
    // attempt, with the same Message-ID and recipient.
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT m.message_id, m.to_email,
             EXISTS (SELECT 1 FROM message_events e WHERE e.message_id = m.id AND e.kind = 'interrupted')
         FROM messages m",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut copies: HashMap<String, Vec<String>> = HashMap::new();
    for mail in sink.messages() {
        let id = mail
            .header("Message-ID")
            .expect("every mail has a Message-ID");
        copies
            .entry(id)
            .or_default()
            .extend(mail.recipients.clone());
    }
    let known: HashSet<&String> = rows.iter().map(|(id, _, _)| id).collect();
    assert!(
        copies.keys().all(|id| known.contains(id)),
        "the sink has only our messages"
    );
    let mut resent = 0;
    for (message_id, to, interrupted) in &rows {
        let received = copies.get(message_id).map(Vec::as_slice).unwrap_or(&[]);
        assert!(!received.is_empty(), "{message_id} to {to} was lost");
        assert!(
            received.iter().all(|r| r == to),
            "{message_id}: {received:?}"
        );
        if received.len() > 1 {
            assert!(
                interrupted,
                "{message_id} was sent twice without an interrupted attempt"
            );
            resent += received.len() - 1;
        }
    }
    assert_eq!(sink.messages().len(), 2_000 + resent);
    let interrupted = rows.iter().filter(|(_, _, i)| *i).count();
    println!(
        "killed after {at_kill} mails; {interrupted} attempts interrupted, {resent} sent twice"
    );

    drop(restarted);
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
