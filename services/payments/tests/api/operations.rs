//! Operating the payments database: the restore drill, the anonymizer, the changelog's
//! declaration, and migrations running forward.

use kit::Settings;
use kit::config::SecretUrl;
use payments::config::Config;
use serde_json::Value;
use testkit::operations::Drill;
use testkit::{TestApp, json, tokens};

use crate::common::{PAYMENTS, ada, redis_url};

fn configure(settings: &mut Settings<Config>) {
    settings.redis.url = Some(SecretUrl::new(redis_url()));
    tokens::trust(settings);
}

/// The payments an admin lists: their ids and descriptions.
async fn listed(app: &TestApp) -> Vec<(String, Value)> {
    let page: Value = json(app.with_token(&ada().mint()).get(PAYMENTS).await).await;
    page["items"]
        .as_array()
        .expect("a page")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_owned(),
                p["description"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn restore_drill_and_anonymized_copy() {
    testkit::operations::restore_drill_and_anonymize::<payments::Payments, _, _, _, _, _>(Drill {
        configure,
        known: &["bob@hatchery.test", "Bob Baker"],
        writes: listed,
        serves: async |app: &TestApp, before: &Vec<(String, Value)>| {
            assert_eq!(&listed(app).await, before);
            assert!(before.len() >= 5, "{before:?}");
        },
        serves_anonymized: async |app: &TestApp, before: &Vec<(String, Value)>| {
            let after = listed(app).await;
            let ids =
                |list: &[(String, Value)]| list.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
            assert_eq!(ids(&after), ids(before), "the same payments");
            assert!(
                after.iter().all(|p| p.1.is_null() || p.1 == "[redacted]"),
                "{after:?}"
            );
        },
    })
    .await;
}

#[test]
fn the_changelog_lists_every_file() {
    testkit::operations::assert_changelog_lists_every_file::<payments::Payments>();
}

#[tokio::test]
async fn migrations_run_forward_over_the_previous_release() {
    testkit::operations::assert_migrates_forward::<payments::Payments>(None).await;
}
