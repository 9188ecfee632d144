//! Token verification and the extractors, over HTTP against a real service (fresh database,
//! the shared Redis with per-test UUIDs).

use std::time::Duration;

use crate::common::{app, app_with, assert_unauthorized};
use identity::SigningKey;
use kit::config::{RevocationCheck, SecretUrl};
use serde_json::Value;
use testkit::{json, tokens};
use uuid::Uuid;

#[tokio::test]
async fn forged_malformed_and_out_of_date_tokens_are_refused() {
    let app = app().await;
    let user = tokens::user(Uuid::now_v7());
    let stranger = SigningKey::generate("testkit").unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("alg none", user.unsigned(), "EdDSA"),
        (
            "HS256 keyed with the raw public key",
            user.hs256_with_public_key(false),
            "EdDSA",
        ),
        (
            "HS256 keyed with the public key text",
            user.hs256_with_public_key(true),
            "EdDSA",
        ),
        (
            "expired beyond the leeway",
            user.clone().expired_ago(Duration::from_secs(120)).mint(),
            "expired",
        ),
        (
            "wrong audience",
            user.clone().audience("payments").mint(),
            "audience",
        ),
        (
            "wrong issuer",
            user.clone().issuer("evil-auth").mint(),
            "issuer",
        ),
        (
            "tampered payload",
            user.tampered(|c| c.roles = vec!["admin".into()]),
            "signature",
        ),
        (
            "signed by an untrusted key with the trusted kid",
            user.signed_with(&stranger),
            "signature",
        ),
        (
            "not valid yet",
            user.clone().not_before_in(Duration::from_secs(600)).mint(),
            "not valid yet",
        ),
        ("not a JWT", "definitely.not.a-jwt".into(), "well-formed"),
    ];
    for (what, token, reason) in cases {
        let detail = assert_unauthorized(app.with_token(&token).get("/me").await, what).await;
        assert!(detail.contains(reason), "{what}: {detail}");
    }
    // No header, and a header that is not a bearer token.
    let detail = assert_unauthorized(app.get("/me").await, "no header").await;
    assert!(detail.contains("bearer token"), "{detail}");
    let basic = app
        .client
        .get(app.url("/me"))
        .header("authorization", "Basic YWRhOnNlY3JldA==")
        .send()
        .await
        .unwrap();
    let detail = assert_unauthorized(basic, "basic auth").await;
    assert!(detail.contains("Bearer"), "{detail}");
    // Nobody got a users row out of it.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test]
async fn clock_skew_within_the_leeway_is_tolerated() {
    let app = app().await;
    let token = tokens::user(Uuid::now_v7())
        .expired_ago(Duration::from_secs(10))
        .mint();
    assert_eq!(app.with_token(&token).get("/me").await.status(), 200);
    let tight = app_with(|s| s.auth.leeway = Duration::ZERO).await;
    assert_unauthorized(tight.with_token(&token).get("/me").await, "no leeway").await;
}

#[tokio::test]
async fn users_are_created_on_first_sight_and_kept_current() {
    let app = app().await;
    let id = Uuid::now_v7();
    let first = tokens::user(id)
        .email("dana@hatchery.test")
        .name("Dana")
        .mint();
    let me: Value = json(app.with_token(&first).get("/me").await).await;
    assert_eq!(me["uuid"], id.to_string());
    let local = me["id"].as_i64().unwrap();
    let again: Value = json(app.with_token(&first).get("/me").await).await;
    assert_eq!(again["id"], local, "the same row, not a second one");

    // A newer token with a new name and role updates the row...
    let renamed = tokens::user(id)
        .email("dana@hatchery.test")
        .name("Dana Doe")
        .admin()
        .mint();
    let me: Value = json(app.with_token(&renamed).get("/me").await).await;
    assert_eq!(me["admin"], true);
    // ...and an older token still in use does not roll it back.
    let stale = tokens::user(id)
        .email("old@hatchery.test")
        .name("Dana Old")
        .issued_ago(Duration::from_secs(300))
        .mint();
    assert_eq!(app.with_token(&stale).get("/me").await.status(), 200);
    let row: (i64, String, String, Vec<String>) =
        sqlx::query_as("SELECT id, email, name, roles FROM users WHERE uuid = $1")
            .bind(id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(
        row,
        (
            local,
            "dana@hatchery.test".into(),
            "Dana Doe".into(),
            vec!["admin".into()]
        )
    );
}

#[tokio::test]
async fn deleted_and_disabled_users_are_refused() {
    let app = app().await;
    let (gone, off) = (Uuid::now_v7(), Uuid::now_v7());
    for id in [gone, off] {
        let token = tokens::user(id).issued_ago(Duration::from_secs(60)).mint();
        assert_eq!(app.with_token(&token).get("/me").await.status(), 200);
    }
    let mut conn = app.db.acquire().await.unwrap();
    let now = chrono::Utc::now();
    identity::users::apply_deleted(&mut conn, &identity::users::UserDeleted { user: gone }, now)
        .await
        .unwrap();
    let disabled = identity::users::UserUpdated {
        user: off,
        email: "off@hatchery.test".into(),
        name: "Off".into(),
        roles: vec![],
        is_active: false,
    };
    identity::users::apply_updated(&mut conn, &disabled, now)
        .await
        .unwrap();

    let token = tokens::user(gone)
        .issued_ago(Duration::from_secs(30))
        .mint();
    let detail = assert_unauthorized(app.with_token(&token).get("/me").await, "deleted").await;
    assert!(detail.contains("deleted"), "{detail}");
    let token = tokens::user(off).issued_ago(Duration::from_secs(30)).mint();
    let response = app.with_token(&token).get("/me").await;
    assert_eq!(response.status(), 403);
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "account_disabled");
}

#[tokio::test]
async fn roles_and_token_kinds_are_enforced() {
    let app = app().await;
    let user = tokens::user(Uuid::now_v7()).mint();
    let admin = tokens::user(Uuid::now_v7()).admin().mint();
    let client = Uuid::now_v7();
    let service = tokens::service(client)
        .scope("notes:read notes:write")
        .mint();
    let narrow = tokens::service(client).scope("notes:write").mint();

    let forbidden = app.with_token(&user).get("/admin").await;
    assert_eq!(forbidden.status(), 403);
    let problem: Value = json(forbidden).await;
    assert_eq!(problem["code"], "forbidden");
    assert_eq!(app.with_token(&admin).get("/admin").await.status(), 200);

    // Service tokens are for service endpoints only, and the other way round.
    assert_eq!(app.with_token(&service).get("/me").await.status(), 403);
    assert_eq!(app.with_token(&user).get("/service").await.status(), 403);
    let caller: Value = json(app.with_token(&service).get("/service").await).await;
    assert_eq!(caller["client"], client.to_string());
    let problem: Value = json(app.with_token(&narrow).get("/service").await).await;
    assert_eq!(problem["code"], "insufficient_scope");
    assert_unauthorized(app.get("/service").await, "no token on a service endpoint").await;
    // A service token never becomes a local user.
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE uuid = $1")
        .bind(client)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test]
async fn optional_users_are_anonymous_only_without_a_header() {
    let app = app().await;
    let id = Uuid::now_v7();
    for path in ["/maybe", "/optional"] {
        let anonymous: Value = json(app.get(path).await).await;
        assert_eq!(anonymous["uuid"], Value::Null, "{path}");
        let known: Value = json(app.with_token(&tokens::user(id).mint()).get(path).await).await;
        assert_eq!(known["uuid"], id.to_string(), "{path}");
        let forged = tokens::user(id).unsigned();
        assert_unauthorized(app.with_token(&forged).get(path).await, path).await;
    }
}

#[tokio::test]
async fn revoked_sessions_and_subjects_are_refused() {
    let app = app().await;
    let mut redis = crate::common::redis().await;
    let id = Uuid::now_v7();
    let (laptop, phone) = (Uuid::now_v7(), Uuid::now_v7());
    let on_laptop = tokens::user(id)
        .session(laptop)
        .issued_ago(Duration::from_secs(5))
        .mint();
    let on_phone = tokens::user(id)
        .session(phone)
        .issued_ago(Duration::from_secs(5))
        .mint();
    assert_eq!(app.with_token(&on_laptop).get("/me").await.status(), 200);

    // Signing out on the laptop ends that session only.
    identity::revocation::revoke_session(&mut redis, laptop, Duration::from_secs(60))
        .await
        .unwrap();
    let detail = assert_unauthorized(
        app.with_token(&on_laptop).get("/me").await,
        "revoked session",
    )
    .await;
    assert!(detail.contains("signed out"), "{detail}");
    assert_eq!(app.with_token(&on_phone).get("/me").await.status(), 200);

    // "Sign out everywhere" refuses every token issued before it, not those issued after.
    let now = chrono::Utc::now().timestamp();
    identity::revocation::revoke_subject_before(&mut redis, id, now, Duration::from_secs(60))
        .await
        .unwrap();
    assert_unauthorized(
        app.with_token(&on_phone).get("/me").await,
        "revoked subject",
    )
    .await;
    let fresh = tokens::user(id).mint();
    assert_eq!(app.with_token(&fresh).get("/me").await.status(), 200);
    // An earlier marker written later does not reopen older tokens.
    identity::revocation::revoke_subject_before(
        &mut redis,
        id,
        now - 3600,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_unauthorized(app.with_token(&on_phone).get("/me").await, "marker kept").await;

    // Markers expire with the tokens they concern.
    let ttl: i64 = redis::cmd("TTL")
        .arg(identity::revocation::session_key(laptop))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn unreachable_redis_fails_closed_by_default_and_open_when_configured() {
    let token = tokens::user(Uuid::now_v7()).mint();
    let closed = app_with(|s| s.redis.url = Some(SecretUrl::new("redis://127.0.0.1:1"))).await;
    let response = closed.with_token(&token).get("/me").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert!(
        response.headers().get("www-authenticate").is_none(),
        "not a credentials problem"
    );
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "auth_unavailable");

    let open = app_with(|s| {
        s.redis.url = Some(SecretUrl::new("redis://127.0.0.1:1"));
        s.auth.revocation_check = RevocationCheck::FailOpen;
    })
    .await;
    assert_eq!(open.with_token(&token).get("/me").await.status(), 200);
    // Fail-open still refuses bad tokens: only the revocation lookup is skipped.
    let forged = tokens::user(Uuid::now_v7()).unsigned();
    assert_unauthorized(
        open.with_token(&forged).get("/me").await,
        "forged, fail-open",
    )
    .await;
}

#[tokio::test]
async fn a_stalled_redis_is_bounded_by_the_revocation_timeout() {
    let proxy = testkit::FaultProxy::start("127.0.0.1:6379").await;
    let redis_url = proxy.url("redis://127.0.0.1:6379");
    let app = app_with(|s| {
        s.redis.url = Some(SecretUrl::new(redis_url));
        s.auth.revocation_timeout = Duration::from_millis(200);
    })
    .await;
    let token = tokens::user(Uuid::now_v7()).mint();
    assert_eq!(app.with_token(&token).get("/me").await.status(), 200);

    proxy.pause(true);
    let started = std::time::Instant::now();
    assert_eq!(app.with_token(&token).get("/me").await.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    proxy.pause(false);
    proxy.cut_all();
    testkit::eventually(
        "requests to work again once Redis is back",
        Duration::from_secs(10),
        || {
            let (app, token) = (&app, &token);
            async move { (app.with_token(token).get("/me").await.status() == 200).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn every_revocation_and_role_change_is_announced_under_the_prefix() {
    use futures_util::StreamExt;
    use identity::revocation::{self, Notice};

    let prefix = format!("test-{}:", Uuid::now_v7().simple());
    let mut listener = redis::Client::open(crate::common::redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    listener
        .subscribe(revocation::channel_in(&prefix))
        .await
        .unwrap();
    let mut messages = listener.into_on_message();
    let mut redis = crate::common::redis().await;
    let (user, sid) = (Uuid::now_v7(), Uuid::now_v7());
    let ttl = Duration::from_secs(60);
    revocation::revoke_session_in(&mut redis, &prefix, sid, ttl)
        .await
        .unwrap();
    revocation::revoke_subject_before_in(&mut redis, &prefix, user, 1_700_000_000, ttl)
        .await
        .unwrap();
    revocation::publish_roles_in(&mut redis, &prefix, user, &["staff".to_owned()])
        .await
        .unwrap();
    let mut heard = Vec::new();
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("announced within 5 s")
            .expect("subscribed");
        heard.push(Notice::parse(message.get_payload_bytes()).expect("a notice"));
    }
    assert_eq!(
        heard,
        [
            Notice::Session { sid },
            Notice::Subject {
                sub: user,
                before: 1_700_000_000
            },
            Notice::Roles {
                sub: user,
                roles: vec!["staff".into()]
            },
        ]
    );
    // The markers are written as before, under the same prefix.
    let stored: Vec<Option<String>> = redis::cmd("MGET")
        .arg(revocation::session_key_in(&prefix, sid))
        .arg(revocation::subject_key_in(&prefix, user))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(stored, [Some("1".into()), Some("1700000000".into())]);
    assert_eq!(Notice::parse(b"not json"), None);
}
