//! Capacity is exact under any concurrency: 1,000 people register at once for 100 seats, half
//! through this process and half through a second events process on the same database.
//! Exactly 100 get a seat, 900 wait, and a cancellation confirms the first in line.

use std::time::Duration;

use futures_util::StreamExt;
use kit::config::SecretUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::cli::Running;
use testkit::{TestDb, json, tokens};
use uuid::Uuid;

use crate::common::{API, ada, get, post, published_event, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_registrations_for_a_hundred_seats_take_exactly_a_hundred() {
    let db = TestDb::create().await;
    let url = db.url();
    let one = spawn(|settings| {
        settings.database.url = SecretUrl::new(url.clone());
        settings.database.acquire_timeout = Some(Duration::from_secs(60));
        // A thousand sessions checked at once on a busy machine: more than the default 250 ms.
        settings.auth.revocation_timeout = Duration::from_secs(10);
    })
    .await;
    let two = Running::spawn(
        testkit::cli::command(env!("CARGO_BIN_EXE_events"), "events")
            .env("EVENTS__DATABASE__URL", &url)
            .env("EVENTS__DATABASE__ACQUIRE_TIMEOUT", "60s")
            .env("EVENTS__HTTP__PORT", "0")
            .env("EVENTS__AUTH__REVOCATION_TIMEOUT", "10s")
            .env("EVENTS__AUTH__PUBLIC_KEY", tokens::public_key()),
    );
    let event = published_event(&one, &ada(), json!({"capacity": 100})).await;
    let id = event["id"].as_str().unwrap().to_owned();

    let people: Vec<(Uuid, String)> = (0..1_000)
        .map(|_| {
            let user = Uuid::now_v7();
            (user, tokens::user(user).mint())
        })
        .collect();
    let client = reqwest::Client::new();
    let path = format!("{API}/events/{id}/registrations");
    let answers: Vec<(Uuid, StatusCode, Value)> =
        futures_util::stream::iter(people.iter().enumerate())
            .map(|(index, (user, token))| {
                let base = if index % 2 == 0 {
                    one.base_url.clone()
                } else {
                    two.address.clone()
                };
                let request = client
                    .post(format!("{base}{path}"))
                    .bearer_auth(token)
                    .json(&json!({}));
                async move {
                    let response = request.send().await.expect("POST");
                    let status = response.status();
                    (*user, status, response.json::<Value>().await.expect("JSON"))
                }
            })
            .buffer_unordered(1_000)
            .collect()
            .await;

    let count = |status: &str| {
        answers
            .iter()
            .filter(|(_, _, body)| body["status"] == status)
            .count()
    };
    assert!(
        answers
            .iter()
            .all(|(_, status, _)| *status == StatusCode::CREATED),
        "{:?}",
        answers
            .iter()
            .find(|(_, status, _)| *status != StatusCode::CREATED)
    );
    assert_eq!((count("confirmed"), count("waitlisted")), (100, 900));
    let seen = get(&one, &ada(), &format!("/events/{id}")).await;
    assert_eq!(
        seen["availability"],
        json!({"capacity": 100, "confirmed": 100, "held": 0, "waitlisted": 900, "left": 0})
    );

    // Someone with a seat cancels: the first in the waitlist's order gets it, nobody else.
    let first_waiting = answers
        .iter()
        .filter(|(_, _, body)| body["status"] == "waitlisted")
        .min_by_key(|(_, _, body)| body["waitlist_position"].as_i64().unwrap())
        .unwrap();
    let (leaver, _, seat) = answers
        .iter()
        .find(|(_, _, body)| body["status"] == "confirmed")
        .unwrap();
    let leaver_token = &people.iter().find(|(user, _)| user == leaver).unwrap().1;
    let response = post(
        &one,
        leaver_token,
        &format!("/registrations/{}/cancel", seat["id"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let cancelled: Value = json(response).await;
    assert_eq!(cancelled["status"], "cancelled");
    let first_token = &people
        .iter()
        .find(|(user, _)| *user == first_waiting.0)
        .unwrap()
        .1;
    let promoted = get(
        &one,
        first_token,
        &format!("/registrations/{}", first_waiting.2["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(promoted["status"], "confirmed", "{promoted}");
    let seen = get(&one, &ada(), &format!("/events/{id}")).await;
    assert_eq!(
        seen["availability"],
        json!({"capacity": 100, "confirmed": 100, "held": 0, "waitlisted": 899, "left": 0})
    );
    drop(two);
}
