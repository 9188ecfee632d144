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

/// `identity_signature_checks_total` from `/metrics`: tokens verified by their signature (cache
/// misses). Nextest runs each test in its own process, so the count is this test's.
async fn signature_checks(auth: &Auth) -> u64 {
    let text = auth.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("identity_signature_checks_total "))
        .map_or(0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_token_signed_by_a_removed_key_is_refused_on_the_next_request_with_the_cache_on() {
    let auth = spawn_with(|s| s.app.key_reload = std::time::Duration::from_secs(1)).await;
    signature_checks(&auth).await;
    let person = verified_person(&auth, "removed-key").await;
    let old = access(&sign_in(&auth, &person.email, &person.password).await);
    assert_eq!(me_status(&auth, &old).await, StatusCode::OK);
    let checked = signature_checks(&auth).await;
    assert!(checked >= 1);
    // The cache is on: the same token again costs no signature check.
    for _ in 0..3 {
        assert_eq!(me_status(&auth, &old).await, StatusCode::OK);
    }
    assert_eq!(signature_checks(&auth).await, checked);

    // A new key signs from now on; the old one is then removed (as a compromised key would be).
    let old_kid = decode(&old).0["kid"].as_str().unwrap().to_owned();
    auth::keys::rotate(
        &auth.db,
        std::time::Duration::ZERO,
        auth::keep_retired_keys(&auth.settings),
        &development_keks(),
    )
    .await
    .unwrap();
    sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
        .bind(&old_kid)
        .execute(&auth.db)
        .await
        .unwrap();
    // The running service learns of it at its next reload: its key set (the JWKS) no longer
    // has the key...
    testkit::eventually(
        "the removed key withdrawn",
        std::time::Duration::from_secs(10),
        || async {
            let jwks: Value = json(auth.get("/.well-known/jwks.json").await).await;
            let kids: Vec<String> = jwks["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect();
            (!kids.contains(&old_kid)).then_some(())
        },
    )
    .await;
    // ...and the very next request with the remembered token is refused.
    let refused = auth.with_token(&old).get(&format!("{API}/me")).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    // A token of the new key verifies (and is remembered in its turn).
    let new = access(&sign_in(&auth, &person.email, &person.password).await);
    assert_ne!(decode(&new).0["kid"], old_kid.as_str());
    assert_eq!(me_status(&auth, &new).await, StatusCode::OK);
}

/// A row of `signing_keys`: kid, private key in clear, sealed private key, KEK id, public key.
type StoredKey = (
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<String>,
    Vec<u8>,
);

/// A key-encryption key for a test (base64 of 32 random bytes).
fn new_kek() -> String {
    auth::kek::Kek::generate().unwrap()
}

#[tokio::test]
async fn the_database_holds_no_usable_private_key() {
    let kek = new_kek();
    let auth = spawn_with(|s| {
        s.app.key_encryption_key = Some(kit::config::Secret::new(kek.clone()));
    })
    .await;
    let person = verified_person(&auth, "sealed").await;
    let tokens = sign_in(&auth, &person.email, &person.password).await;
    let rows: Vec<StoredKey> = sqlx::query_as(
        "SELECT kid, private_key, sealed_private_key, kek_id, public_key FROM signing_keys",
    )
    .fetch_all(&auth.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let kek = auth::kek::Kek::parse(&kek).unwrap();
    for (kid, clear, sealed, kek_id, public) in rows {
        assert_eq!(clear, None, "no private key in clear");
        let sealed = sealed.expect("a sealed private key");
        assert!(
            identity::SigningKey::from_pkcs8_der(&kid, &sealed).is_err(),
            "the stored bytes are not a key"
        );
        assert_eq!(kek_id.as_deref(), Some(kek.id()));
        // Only with the key-encryption key do they open, into the key tokens are signed with.
        let der = kek
            .open(&kid, &sealed)
            .expect("opens with the configured KEK");
        assert!(
            !sealed.windows(der.len()).any(|w| w == der.as_slice()),
            "the plaintext is not inside"
        );
        let key = identity::SigningKey::from_pkcs8_der(&kid, &der).unwrap();
        assert_eq!(key.public_key().as_bytes().as_slice(), public.as_slice());
        assert_eq!(decode(&access(&tokens)).0["kid"], kid.as_str());
        assert!(auth::kek::Kek::development().open(&kid, &sealed).is_none());
    }
}
