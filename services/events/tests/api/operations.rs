//! Operating the events database: the restore drill, the anonymizer, the changelog's
//! declaration, and migrations running forward.

use kit::Settings;
use kit::config::SecretUrl;
use serde_json::{Value, json};
use testkit::operations::Drill;
use testkit::{TestApp, json, tokens};

use crate::common::{API, bob, redis_url};

fn configure(settings: &mut Settings<events::config::Config>) {
    settings.redis.url = Some(SecretUrl::new(redis_url()));
    tokens::trust(settings);
}

/// Bob's registrations: their ids, statuses and answers.
async fn bobs(app: &TestApp) -> Vec<(String, Value, Value)> {
    let page: Value = json(
        app.with_token(&bob())
            .get(&format!("{API}/registrations"))
            .await,
    )
    .await;
    page["items"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_owned(),
                r["status"].clone(),
                r["answers"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn restore_drill_and_anonymized_copy() {
    testkit::operations::restore_drill_and_anonymize::<events::Events, _, _, _, _, _>(Drill {
        configure,
        known: &["bob@hatchery.test", "Bob Baker", "cleo@hatchery.test"],
        writes: bobs,
        serves: async |app: &TestApp, before: &Vec<(String, Value, Value)>| {
            assert_eq!(&bobs(app).await, before);
            assert!(!before.is_empty(), "Bob is registered in the demo");
        },
        serves_anonymized: async |app: &TestApp, before: &Vec<(String, Value, Value)>| {
            let after = bobs(app).await;
            let kept = |list: &[(String, Value, Value)]| {
                list.iter()
                    .map(|r| (r.0.clone(), r.1.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(kept(&after), kept(before), "the same registrations");
            for (_, _, answers) in &after {
                let strings = answers
                    .as_object()
                    .map(|o| o.values().filter(|v| v.is_string()).count())
                    .unwrap_or(0);
                let redacted = answers
                    .as_object()
                    .map(|o| o.values().filter(|v| **v == json!("[redacted]")).count())
                    .unwrap_or(0);
                assert_eq!(strings, redacted, "answers redacted: {answers}");
            }
        },
    })
    .await;
}

#[test]
fn the_changelog_lists_every_file() {
    testkit::operations::assert_changelog_lists_every_file::<events::Events>();
}

#[tokio::test]
async fn migrations_run_forward_over_the_previous_release() {
    testkit::operations::assert_migrates_forward::<events::Events>(None).await;
}
