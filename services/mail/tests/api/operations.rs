//! Operating the mail database: the restore drill, the anonymizer (recipients who are platform
//! users get their fake address, others a hashed one), the changelog's declaration, and
//! migrations running forward.

use kit::Settings;
use kit::config::SecretUrl;
use mail::config::Config;
use reqwest::StatusCode;
use serde_json::{Value, json};
use smtp_sink::Sink;
use testkit::operations::Drill;
use testkit::{TestApp, json, tokens};

use crate::common::{ADA, MESSAGES, ada, deliver_to, redis_url, sink, wait_for_status};

fn configure(sink: &Sink) -> impl Fn(&mut Settings<Config>) + use<'_> {
    move |settings| {
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        tokens::trust(settings);
        deliver_to(settings, sink);
    }
}

/// Ada (a platform user) and an outsider get a message; both are delivered.
async fn send(app: &TestApp) -> Vec<String> {
    let response = app
        .with_token(&ada())
        .post_json(
            MESSAGES,
            &json!({
                "template": "auth.verify_email",
                "data": {"name": "Dora Outsider", "email": "dora.outsider@example.test",
                         "url": "https://hatchery.test/verify-email?token=t0k3n",
                         "expires_at": "2026-12-02T10:00:00Z"},
                "recipients": [{"email": "ada@hatchery.test", "name": "Ada Admin", "user_id": ADA},
                               {"email": "dora.outsider@example.test", "name": "Dora Outsider"}],
            }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = json(response).await;
    let mut ids = Vec::new();
    for message in accepted["messages"].as_array().unwrap() {
        let id = message["id"].as_str().unwrap().to_owned();
        wait_for_status(app, &id, "sent").await;
        ids.push(id);
    }
    ids
}

async fn message(app: &TestApp, id: &str) -> Value {
    let response = app
        .with_token(&ada())
        .get(&format!("{MESSAGES}/{id}"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

#[tokio::test]
async fn restore_drill_and_anonymized_copy() {
    let sink = sink(10);
    testkit::operations::restore_drill_and_anonymize::<mail::Mail, _, _, _, _, _>(Drill {
        configure: configure(&sink),
        known: &[
            "ada@hatchery.test",
            "Ada Admin",
            "dora.outsider@example.test",
            "Dora Outsider",
        ],
        writes: send,
        serves: async |app: &TestApp, ids: &Vec<String>| {
            let first = message(app, &ids[0]).await;
            assert_eq!(
                (first["to"]["email"].as_str(), first["status"].as_str()),
                (Some("ada@hatchery.test"), Some("sent"))
            );
        },
        serves_anonymized: async |app: &TestApp, ids: &Vec<String>| {
            // Ada's message carries her fake address, the same one her users row has.
            let first = message(app, &ids[0]).await;
            assert_eq!(
                first["to"]["email"].as_str(),
                Some(format!("u{}@anonymized.invalid", ADA.replace('-', "")).as_str()),
                "{first}"
            );
            let second = message(app, &ids[1]).await;
            let address = second["to"]["email"].as_str().unwrap_or_default();
            assert!(address.ends_with("@anonymized.invalid"), "{second}");
        },
    })
    .await;
}

#[test]
fn the_changelog_lists_every_file() {
    testkit::operations::assert_changelog_lists_every_file::<mail::Mail>();
}

#[tokio::test]
async fn migrations_run_forward_over_the_previous_release() {
    testkit::operations::assert_migrates_forward::<mail::Mail>(None).await;
}
