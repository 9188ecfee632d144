//! Signing-key rotation: tokens signed with the old key keep working until they expire; new
//! tokens carry the new key; both are published meanwhile.

use reqwest::StatusCode;
use serde_json::Value;
use testkit::json;

use crate::common::*;

#[tokio::test]
async fn rotation_keeps_old_tokens_valid_and_publishes_both_keys() {
    // Reload keys quickly so the running service picks up the rotation made "elsewhere".
    let auth = spawn_with(|s| {
        s.app.key_reload = std::time::Duration::from_secs(1);
        // The test signs in repeatedly while waiting for the switch.
        s.app.rate_limits.enabled = false;
    })
    .await;
    let person = verified_person(&auth, "rotation").await;
    let before = sign_in(&auth, &person.email, &person.password).await;
    let old_kid = decode(&access(&before)).0["kid"]
        .as_str()
        .unwrap()
        .to_owned();

    let rotation = auth::keys::rotate(
        &auth.db,
        std::time::Duration::from_secs(4),
        auth::keep_retired_keys(&auth.settings),
        &development_keks(),
    )
    .await
    .unwrap();
    assert_eq!(rotation.retired_kid.as_deref(), Some(old_kid.as_str()));
    let new_kid = rotation.new_kid.clone();

    // Published at once, before it signs.
    let jwks: Value = testkit::eventually(
        "the new key published",
        std::time::Duration::from_secs(10),
        || async {
            let jwks: Value = json(auth.get("/.well-known/jwks.json").await).await;
            (jwks["keys"].as_array().unwrap().len() == 2).then_some(jwks)
        },
    )
    .await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [new_kid.as_str(), old_kid.as_str()]);
    let meanwhile = sign_in(&auth, &person.email, &person.password).await;
    if chrono::Utc::now() < rotation.activates_at {
        assert_eq!(
            decode(&access(&meanwhile)).0["kid"],
            old_kid.as_str(),
            "the old key signs until the switch"
        );
    }

    // From the switch on, new tokens carry the new key; old ones keep working.
    let after = testkit::eventually(
        "tokens signed with the new key",
        std::time::Duration::from_secs(15),
        || async {
            let tokens = sign_in(&auth, &person.email, &person.password).await;
            (decode(&access(&tokens)).0["kid"] == new_kid.as_str()).then_some(tokens)
        },
    )
    .await;
    assert!(chrono::Utc::now() >= rotation.activates_at);
    assert_eq!(me_status(&auth, &access(&before)).await, StatusCode::OK);
    assert_eq!(me_status(&auth, &access(&after)).await, StatusCode::OK);

    // Once the old key's tokens have all expired, it leaves the key set.
    sqlx::query("UPDATE signing_keys SET retired_at = now() - interval '1 day' WHERE kid = $1")
        .bind(&old_kid)
        .execute(&auth.db)
        .await
        .unwrap();
    testkit::eventually(
        "the old key withdrawn",
        std::time::Duration::from_secs(10),
        || async {
            let jwks: Value = json(auth.get("/.well-known/jwks.json").await).await;
            (jwks["keys"].as_array().unwrap().len() == 1).then_some(())
        },
    )
    .await;
    assert_eq!(
        me_status(&auth, &access(&before)).await,
        StatusCode::UNAUTHORIZED
    );
}
