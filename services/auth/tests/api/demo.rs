//! The demo scenario: the documented logins work, and the users are the same ones every other
//! service seeds.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn the_documented_demo_logins_and_clients_work() {
    let auth = spawn_demo().await;
    for (email, password, id, roles) in [
        ("ada@hatchery.test", "hatchery-ada", ADA, json!(["admin"])),
        ("bob@hatchery.test", "hatchery-bob", BOB, json!([])),
        ("cleo@hatchery.test", "hatchery-cleo", CLEO, json!([])),
    ] {
        let tokens = sign_in(&auth, email, password).await;
        let (_, claims) = decode(&access(&tokens));
        assert_eq!(claims["sub"], id);
        assert_eq!(claims["email_verified"], true);
        assert_eq!(
            claims["roles"].as_array().map(Vec::len).unwrap_or(0),
            roles.as_array().unwrap().len()
        );
    }
    for (name, id) in [
        ("broker", "0193a000-0000-7000-8000-00000000c001"),
        ("mail", "0193a000-0000-7000-8000-00000000c002"),
        ("payments", "0193a000-0000-7000-8000-00000000c003"),
        ("events", "0193a000-0000-7000-8000-00000000c004"),
        ("template", "0193a000-0000-7000-8000-00000000c005"),
    ] {
        service_token(&auth, id, &format!("hatchery-{name}-secret")).await;
    }
    // Loading again changes nothing (get-or-create), even after a password change.
    let bob = sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await;
    let changed = auth
        .with_token(&access(&bob))
        .post_json(
            &format!("{API}/me/password"),
            &json!({"current_password": "hatchery-bob", "new_password": "bob's own password"}),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    let report = kit::service::populate::<auth::Auth>(
        &auth.db,
        &testkit::workspace_root().join("populator"),
        "demo",
    )
    .await
    .unwrap();
    assert_eq!(report.created("users"), 0);
    assert_eq!(report.kept("users"), 3);
    sign_in(&auth, "bob@hatchery.test", "bob's own password").await;
}

#[test]
fn demo_users_are_the_same_in_every_service_scenario() {
    let root = testkit::workspace_root().join("populator").join("demo");
    let users_of = |service: &str| -> Vec<Value> {
        let text = std::fs::read_to_string(root.join(service).join("10-users.yaml")).unwrap();
        let doc: Value = serde_saphyr::from_str(&text).unwrap();
        doc["users"].as_array().cloned().unwrap_or_default()
    };
    let ours = users_of("auth");
    let ids: Vec<&str> = ours.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [ADA, BOB, CLEO]);
    let mut compared = 0;
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let service = entry.file_name().to_string_lossy().into_owned();
        if service == "auth" || !entry.path().join("10-users.yaml").is_file() {
            continue;
        }
        // Every demo user another service seeds is one of auth's, with the same email.
        for user in users_of(&service) {
            let ours = ours
                .iter()
                .find(|u| u["id"] == user["id"])
                .unwrap_or_else(|| {
                    panic!(
                        "populator/demo/{service}: {} is not an auth demo user",
                        user["id"]
                    )
                });
            if let Some(email) = user.get("email") {
                assert_eq!(email, &ours["email"], "populator/demo/{service}");
            }
            compared += 1;
        }
    }
    assert!(compared >= 3, "the template's demo users at least");
}
