//! Delivery against a real SMTP conversation: every recipient its own job, permanent refusals
//! failed with the reply, temporary ones retried until accepted (or given up on).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use smtp_sink::{ChaosResponse, Stage};
use testkit::json;

use crate::common::*;

#[tokio::test]
async fn a_thousand_recipients_are_each_delivered_once_and_three_bad_ones_fail_alone() {
    let sink = sink(2_000);
    let app = spawn_with(&sink, |settings| {
        settings.app.smtp.max_connections = 16;
    })
    .await;
    let recipients: Vec<String> = (0..1_000)
        .map(|i| format!("person{i}-{}@example.test", uuid::Uuid::now_v7().simple()))
        .collect();
    let bad: Vec<&String> = [17, 500, 999].iter().map(|&i| &recipients[i]).collect();
    for address in &bad {
        sink.set_recipient_chaos(
            address,
            vec![ChaosResponse::Reply {
                stage: Stage::Rcpt,
                code: 550,
                text: "5.1.1 No such user".into(),
            }],
        )
        .unwrap();
    }
    let accepted = send_verification(&app, &recipients).await;
    assert_eq!(accepted.len(), 1_000);

    let counts = wait_until_all_finished(&app.db, Duration::from_secs(60)).await;
    assert_eq!(counts, [("failed".to_owned(), 3), ("sent".to_owned(), 997)]);
    for (message, address) in accepted.iter().zip(&recipients) {
        if bad.contains(&address) {
            let failed = message_by_id(&app, message).await;
            assert_eq!(failed["status"], "failed");
            assert_eq!(failed["last_reply"], "550 5.1.1 No such user");
            assert_eq!(failed["attempts"], 1);
        }
    }
    // Each good recipient got exactly one mail, the bad ones none.
    let mails = sink.messages();
    assert_eq!(mails.len(), 997);
    let delivered: HashSet<String> = mails.iter().flat_map(|m| m.recipients.clone()).collect();
    assert_eq!(delivered.len(), 997);
    for address in &bad {
        assert!(!delivered.contains(*address));
    }
    let ids: HashSet<Option<String>> = mails.iter().map(|m| m.header("Message-ID")).collect();
    assert_eq!(ids.len(), 997);

    // A mailbox refused for good is suppressed from now on.
    let suppressions: Value = json(
        app.with_token(&ada())
            .get(&format!("{SUPPRESSIONS}?email={}", bad[0]))
            .await,
    )
    .await;
    assert_eq!(suppressions["items"][0]["reason"], "hard_bounce");
}

async fn message_by_id(app: &testkit::TestApp, accepted: &Value) -> Value {
    message(app, accepted["id"].as_str().unwrap()).await
}

#[tokio::test]
async fn temporary_failures_are_retried_until_accepted_and_the_timeline_shows_each_attempt() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let to = unique_email("greylisted");
    sink.set_recipient_chaos(
        &to,
        vec![
            ChaosResponse::Reply {
                stage: Stage::Rcpt,
                code: 451,
                text: "4.7.1 Greylisted, try later".into(),
            },
            ChaosResponse::Reply {
                stage: Stage::Data,
                code: 452,
                text: "4.3.1 Out of storage".into(),
            },
        ],
    )
    .unwrap();
    let accepted = send_verification(&app, std::slice::from_ref(&to)).await;
    let sent = wait_for_status(&app, accepted[0]["id"].as_str().unwrap(), "sent").await;
    assert_eq!(sent["attempts"], 3);
    assert_eq!(kinds(&sent), ["queued", "deferred", "deferred", "sent"]);
    let timeline = sent["timeline"].as_array().unwrap();
    assert_eq!(timeline[1]["attempt"], 1);
    assert_eq!(timeline[1]["reply"], "451 4.7.1 Greylisted, try later");
    assert_eq!(timeline[2]["attempt"], 2);
    assert_eq!(timeline[2]["reply"], "452 4.3.1 Out of storage");
    assert!(
        timeline[2]["detail"]
            .as_str()
            .unwrap()
            .contains("next attempt at")
    );
    assert_eq!(timeline[3]["attempt"], 3);
    assert!(timeline[3]["reply"].as_str().unwrap().starts_with("250"));
    assert_eq!(mail_to(&sink, &to).len(), 1);

    // A connection dropped at the end of DATA: retried; the other recipient is unaffected.
    let flaky = unique_email("dropped");
    let fine = unique_email("fine");
    sink.set_recipient_chaos(
        &flaky,
        vec![ChaosResponse::Disconnect { stage: Stage::Data }],
    )
    .unwrap();
    let accepted = send_verification(&app, &[flaky.clone(), fine.clone()]).await;
    let retried = wait_for_status(&app, accepted[0]["id"].as_str().unwrap(), "sent").await;
    assert_eq!(kinds(&retried), ["queued", "deferred", "sent"]);
    assert!(retried["timeline"][1]["reply"].is_null());
    let other = wait_for_status(&app, accepted[1]["id"].as_str().unwrap(), "sent").await;
    assert_eq!(other["attempts"], 1);
    assert_eq!(mail_to(&sink, &flaky).len(), 1);
}

#[tokio::test]
async fn a_message_still_refused_after_the_retry_period_fails_with_the_last_reply() {
    let sink = sink(10);
    let app = spawn_with(&sink, |settings| {
        settings.app.delivery.max_age = Duration::from_millis(300);
    })
    .await;
    let to = unique_email("never");
    sink.set_recipient_chaos(&to, vec![ChaosResponse::reply(Stage::Rcpt, 421); 100])
        .unwrap();
    let accepted = send_verification(&app, std::slice::from_ref(&to)).await;
    let failed = wait_for_status(&app, accepted[0]["id"].as_str().unwrap(), "failed").await;
    let timeline = failed["timeline"].as_array().unwrap();
    let last = timeline.last().unwrap();
    assert_eq!(last["kind"], "failed");
    assert!(
        last["detail"]
            .as_str()
            .unwrap()
            .starts_with("gave up after"),
        "{last}"
    );
    assert!(
        failed["last_reply"].as_str().unwrap().starts_with("421"),
        "{failed}"
    );
    assert!(failed["attempts"].as_u64().unwrap() >= 2);
    assert!(mail_to(&sink, &to).is_empty());
}
