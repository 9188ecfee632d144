//! Operating auth's database: the restore drill, the anonymizer (no credential survives it), the
//! changelog's declaration, and migrations running forward over the previous release's data.

use auth::config::Config;
use kit::Settings;
use kit::config::SecretUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::operations::Drill;
use testkit::{TestApp, json};

use crate::common::{ADA, access, cheap_hashing, me_status, redis_url, sign_in, token};

/// Every start of one test shares its Redis prefix.
fn configure() -> impl Fn(&mut Settings<Config>) {
    let prefix = format!("test-{}:", uuid::Uuid::now_v7().simple());
    move |settings| {
        settings.redis.url = Some(SecretUrl::new(redis_url()));
        settings.auth.revocation_prefix = prefix.clone();
        settings.app.redis_prefix = prefix.clone();
        settings.app.argon2 = cheap_hashing();
    }
}

/// Ada signs in: a session with her address (IP, user agent) and audit entries.
async fn ada_signs_in(app: &TestApp) {
    sign_in(app, "ada@hatchery.test", "hatchery-ada").await;
}

#[tokio::test]
async fn restore_drill_and_anonymized_copy() {
    testkit::operations::restore_drill_and_anonymize::<auth::Auth, _, _, _, _, _>(Drill {
        configure: configure(),
        known: &["ada@hatchery.test", "Ada Admin", "Cleo Cooper", "127.0.0.1"],
        writes: ada_signs_in,
        // The restored accounts, passwords and signing keys work as before.
        serves: async |app: &TestApp, _: &()| {
            let tokens = sign_in(app, "ada@hatchery.test", "hatchery-ada").await;
            assert_eq!(me_status(app, &access(&tokens)).await, StatusCode::OK);
        },
        serves_anonymized: async |app: &TestApp, _: &()| {
            // Neither the old password nor the fake address signs in: no credential survived.
            let fake = format!("u{}@anonymized.invalid", ADA.replace('-', ""));
            for email in ["ada@hatchery.test", fake.as_str()] {
                let response = token(
                    app,
                    json!({"grant_type": "password", "email": email, "password": "hatchery-ada"}),
                )
                .await;
                assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{email}");
            }
            // A new signing key was made at start and is published.
            let jwks: Value = json(app.get("/.well-known/jwks.json").await).await;
            assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1), "{jwks}");
        },
    })
    .await;
}

#[test]
fn the_changelog_lists_every_file() {
    testkit::operations::assert_changelog_lists_every_file::<auth::Auth>();
}

/// The first release shipped `20261122000001_auth.sql`.
#[tokio::test]
async fn migrations_run_forward_over_the_previous_release() {
    testkit::operations::assert_migrates_forward::<auth::Auth>(Some(20261122000001)).await;
}
