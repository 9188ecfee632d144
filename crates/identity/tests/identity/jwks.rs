//! Keys from the auth service's JWKS: fetched once and cached, fetched again for a new `kid`
//! (rotation) at most once per `auth.jwks_min_refetch`, dropped keys refused after a refresh.
//! A real HTTP server on 127.0.0.1 plays the auth service and counts its fetches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{app_with, assert_unauthorized};
use axum::Json;
use axum::extract::State;
use axum::routing::get;
use identity::{JwkSet, SigningKey};
use testkit::{TestApp, tokens};
use uuid::Uuid;

#[derive(Clone, Default)]
struct Served {
    keys: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicU64>,
}

impl Served {
    fn serve(&self, keys: &[&SigningKey]) {
        *self.keys.lock().unwrap() = JwkSet {
            keys: keys.iter().map(|k| k.jwk()).collect(),
        };
    }

    fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// Serves `/.well-known/jwks.json` like the auth service; returns its URL.
async fn auth_service(served: &Served) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let router = axum::Router::new()
        .route(
            "/.well-known/jwks.json",
            get(|State(served): State<Served>| async move {
                served.fetches.fetch_add(1, Ordering::SeqCst);
                Json(served.keys.lock().unwrap().clone())
            }),
        )
        .with_state(served.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn app_trusting(url: String, min_refetch: Duration, refresh: Duration) -> TestApp {
    app_with(move |s| {
        s.auth.public_key = None;
        s.auth.jwks_url = Some(url);
        s.auth.jwks_min_refetch = min_refetch;
        s.auth.jwks_refresh = refresh;
    })
    .await
}

async fn status(app: &TestApp, token: &str) -> u16 {
    app.with_token(token).get("/me").await.status().as_u16()
}

#[tokio::test]
async fn keys_are_fetched_once_and_cached() {
    let served = Served::default();
    let current = SigningKey::generate("2026-01").unwrap();
    served.serve(&[&current]);
    let app = app_trusting(
        auth_service(&served).await,
        Duration::from_secs(10),
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(
        served.fetches(),
        0,
        "nothing fetched before a token needs it"
    );
    for _ in 0..3 {
        let token = tokens::user(Uuid::now_v7()).signed_with(&current);
        assert_eq!(status(&app, &token).await, 200);
    }
    assert_eq!(served.fetches(), 1);

    // A kid the set does not have, right after a fetch: refused without asking again.
    let unknown = SigningKey::generate("made-up").unwrap();
    let token = tokens::user(Uuid::now_v7()).signed_with(&unknown);
    let detail = assert_unauthorized(app.with_token(&token).get("/me").await, "unknown kid").await;
    assert!(detail.contains("unknown key"), "{detail}");
    assert_eq!(served.fetches(), 1);
    // A trusted kid does not make another key's signature good.
    let impostor = SigningKey::generate("2026-01").unwrap();
    let token = tokens::user(Uuid::now_v7()).signed_with(&impostor);
    assert_unauthorized(app.with_token(&token).get("/me").await, "impostor").await;
}

#[tokio::test]
async fn a_rotated_key_is_fetched_and_a_flood_of_unknown_kids_is_rate_limited() {
    let served = Served::default();
    let old = SigningKey::generate("old").unwrap();
    served.serve(&[&old]);
    let min_refetch = Duration::from_millis(300);
    let app = app_trusting(
        auth_service(&served).await,
        min_refetch,
        Duration::from_secs(300),
    )
    .await;
    assert_eq!(
        status(&app, &tokens::user(Uuid::now_v7()).signed_with(&old)).await,
        200
    );
    assert_eq!(served.fetches(), 1);

    // Auth rotates: tokens signed with the new key are accepted once the set is fetched again.
    let new = SigningKey::generate("new").unwrap();
    served.serve(&[&old, &new]);
    let token = tokens::user(Uuid::now_v7()).signed_with(&new);
    testkit::eventually(
        "the new key to be accepted",
        Duration::from_secs(10),
        || {
            let (app, token) = (&app, &token);
            async move { (status(app, token).await == 200).then_some(()) }
        },
    )
    .await;
    assert_eq!(served.fetches(), 2);

    // 100 concurrent tokens with made-up kids: all refused, the auth service barely asked.
    let strangers: Vec<String> = (0..100)
        .map(|i| {
            let key = SigningKey::generate(format!("attack-{i}")).unwrap();
            tokens::user(Uuid::now_v7()).signed_with(&key)
        })
        .collect();
    let before = served.fetches();
    let started = Instant::now();
    let statuses =
        futures_util::future::join_all(strangers.iter().map(|token| status(&app, token))).await;
    let elapsed = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let allowed = 1 + u64::try_from(elapsed.as_millis() / min_refetch.as_millis()).unwrap();
    let fetched = served.fetches() - before;
    assert!(
        fetched <= allowed,
        "{fetched} fetches for 100 unknown kids in {elapsed:?} (at most {allowed})"
    );
    // The real keys kept working throughout.
    assert_eq!(
        status(&app, &tokens::user(Uuid::now_v7()).signed_with(&old)).await,
        200
    );
}

#[tokio::test]
async fn a_key_the_auth_service_drops_stops_verifying_after_a_refresh() {
    let served = Served::default();
    let (leaked, current) = (
        SigningKey::generate("leaked").unwrap(),
        SigningKey::generate("current").unwrap(),
    );
    served.serve(&[&leaked, &current]);
    let app = app_trusting(
        auth_service(&served).await,
        Duration::from_millis(100),
        Duration::from_millis(500),
    )
    .await;
    let token = tokens::user(Uuid::now_v7()).signed_with(&leaked);
    assert_eq!(status(&app, &token).await, 200);

    served.serve(&[&current]);
    testkit::eventually(
        "the dropped key to be refused",
        Duration::from_secs(10),
        || {
            let (app, token) = (&app, &token);
            async move { (status(app, token).await == 401).then_some(()) }
        },
    )
    .await;
    assert_eq!(
        status(&app, &tokens::user(Uuid::now_v7()).signed_with(&current)).await,
        200
    );
}

#[tokio::test]
async fn an_unreachable_auth_service_is_a_503_not_a_401() {
    let app = app_trusting(
        "http://127.0.0.1:1/.well-known/jwks.json".into(),
        Duration::from_secs(10),
        Duration::from_secs(300),
    )
    .await;
    let token = tokens::user(Uuid::now_v7()).mint();
    let response = app.with_token(&token).get("/me").await;
    assert_eq!(response.status(), 503);
    let problem: serde_json::Value = testkit::json(response).await;
    assert_eq!(problem["code"], "auth_unavailable");
}

/// Keys held by the caller (the auth service's ring) in a map with a generation.
#[derive(Default)]
struct Ring {
    keys: Mutex<std::collections::HashMap<String, identity::PublicKey>>,
    generation: AtomicU64,
}

impl identity::KeySource for Ring {
    fn public_key(&self, kid: &str) -> Option<identity::PublicKey> {
        self.keys.lock().unwrap().get(kid).copied()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

#[tokio::test]
async fn provided_keys_are_cached_per_generation_and_a_removed_key_is_refused_next() {
    let ring = Arc::new(Ring::default());
    let key = tokens::signing_key();
    ring.keys
        .lock()
        .unwrap()
        .insert(key.kid().to_owned(), key.public_key());
    let verifier =
        identity::Verifier::with_key_source(ring.clone(), &kit::config::AuthSettings::default());
    let token = tokens::user(Uuid::now_v7()).mint();
    assert!(verifier.verify(&token).await.is_ok());

    // Remembered: the same key set (generation) asks the source nothing.
    ring.keys.lock().unwrap().clear();
    assert!(
        verifier.verify(&token).await.is_ok(),
        "a verified token is remembered while the generation stands"
    );

    // The key set changed: the token is checked again, and its key is gone.
    ring.generation.fetch_add(1, Ordering::AcqRel);
    let refused = verifier.verify(&token).await.unwrap_err();
    assert!(
        matches!(
            refused,
            identity::AuthError::Invalid(identity::Invalid::UnknownKey)
        ),
        "{refused:?}"
    );
}
