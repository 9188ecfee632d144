//! Rate limits, and password hashing kept off the async runtime.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

#[tokio::test]
async fn eleven_rapid_wrong_passwords_are_rate_limited() {
    let auth = spawn().await;
    let person = verified_person(&auth, "limited").await;
    let attempt = || {
        token(
            &auth,
            json!({"grant_type": "password", "email": person.email, "password": "guess guess"}),
        )
    };
    for n in 1..=10 {
        assert_eq!(
            attempt().await.status(),
            StatusCode::BAD_REQUEST,
            "attempt {n}"
        );
    }
    let limited = attempt().await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");
    let body: Value = json(limited).await;
    assert_eq!(body["error"], "rate_limited");
    // Even the right password waits now (the limit is per email, whoever guesses).
    let right = token(
        &auth,
        json!({"grant_type": "password", "email": person.email, "password": person.password}),
    )
    .await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    // Another account from the same address is not locked out by it.
    let other = verified_person(&auth, "other").await;
    sign_in(&auth, &other.email, &other.password).await;
    let rate_limited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE reason = 'rate_limited'")
            .fetch_one(&auth.db)
            .await
            .unwrap();
    assert_eq!(rate_limited, 2);
}

#[tokio::test]
async fn signup_forgot_and_resend_are_limited_per_address_and_email() {
    let auth = spawn_with(|s| {
        s.app.rate_limits.signup.per_ip = 2;
        s.app.rate_limits.forgot.per_email = 1;
        s.app.rate_limits.resend.per_email = 1;
    })
    .await;
    sign_up(&auth, &unique_email("a"), "password one").await;
    sign_up(&auth, &unique_email("b"), "password two").await;
    let third = post(
        &auth,
        "/signup",
        json!({"email": unique_email("c"), "password": "password 3", "name": "C"}),
    )
    .await;
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(third.headers().contains_key("retry-after"));
    let problem: Value = json(third).await;
    assert_eq!(problem["code"], "rate_limited");

    let email = unique_email("forgetful");
    assert_eq!(
        post(&auth, "/password/forgot", json!({"email": email}))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post(&auth, "/password/forgot", json!({"email": email}))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        post(&auth, "/email/resend", json!({"email": email}))
            .await
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post(&auth, "/email/resend", json!({"email": email}))
            .await
            .status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// `#[tokio::test]` runs everything on one thread: a hash computed on it would stall every
/// other request for its whole duration.
#[tokio::test]
async fn logins_hash_off_the_runtime_so_other_requests_are_not_stalled() {
    let auth = spawn_with(|s| {
        // Deliberately slow (~tens of ms per hash even optimised), one hash at a time.
        s.app.argon2 = auth::config::Argon2Settings {
            memory_kib: 32 * 1024,
            iterations: 3,
            parallelism: 1,
        };
        s.app.hashing_concurrency = 1;
        s.app.rate_limits.enabled = false;
    })
    .await;
    let person = verified_person(&auth, "slowhash").await;
    let started = Instant::now();
    let logins = futures_util::future::join_all((0..6).map(|_| {
        token(
            &auth,
            json!({"grant_type": "password", "email": person.email, "password": "wrong password"}),
        )
    }));
    let probes = async {
        let mut worst = Duration::ZERO;
        // Probe while the logins are being hashed.
        tokio::task::yield_now().await;
        for _ in 0..5 {
            let probe = Instant::now();
            assert_eq!(auth.get("/healthz").await.status(), StatusCode::OK);
            worst = worst.max(probe.elapsed());
        }
        worst
    };
    let (responses, worst_probe) = tokio::join!(logins, probes);
    let logins_took = started.elapsed();
    assert!(
        responses
            .iter()
            .all(|r| r.status() == StatusCode::BAD_REQUEST)
    );
    assert!(
        worst_probe * 3 < logins_took,
        "a health probe took {worst_probe:?} while six logins took {logins_took:?}"
    );
}

#[tokio::test]
async fn without_redis_the_same_limits_are_counted_in_the_process() {
    let proxy = testkit::FaultProxy::start("127.0.0.1:6379").await;
    let url = proxy.url(&redis_url());
    let auth = spawn_with(move |s| {
        s.redis.url = Some(kit::SecretUrl::new(url));
        s.app.rate_limits.token.per_email = 3;
    })
    .await;
    let person = verified_person(&auth, "redis-down").await;
    // Redis goes away (for this service alone).
    proxy.refuse(true);
    proxy.cut_all();
    let attempt = || {
        token(
            &auth,
            json!({"grant_type": "password", "email": person.email, "password": "guess guess"}),
        )
    };
    for n in 1..=3 {
        assert_eq!(
            attempt().await.status(),
            StatusCode::BAD_REQUEST,
            "attempt {n}"
        );
    }
    let limited = attempt().await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");
    // The right password waits too; another account is not locked out.
    let right = token(
        &auth,
        json!({"grant_type": "password", "email": person.email, "password": person.password}),
    )
    .await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    let other = token(
        &auth,
        json!({"grant_type": "password", "email": unique_email("nobody"), "password": "guess guess"}),
    )
    .await;
    assert_eq!(other.status(), StatusCode::BAD_REQUEST);
}
