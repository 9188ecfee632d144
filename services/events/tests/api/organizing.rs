//! An organizer's event from draft to cancellation, and everything around one registration:
//! bad input refused with clear codes, guests and questions, one registration per person,
//! `Idempotency-Key`, the ticket and its QR code, check-in with nonces, calendar feeds.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::{API, ada, bob, cleo, get, post, problem, published_event, register, spawn};

#[tokio::test]
async fn an_event_from_draft_to_cancellation_with_tickets_checkins_and_calendars() {
    let app = spawn(|_| {}).await;

    // Only organizers create; invalid fields are all named at once.
    let body = json!({"title": "Meetup", "starts_at": "2030-06-01T18:00:00Z",
        "ends_at": "2030-06-01T17:00:00Z", "time_zone": "Mars/Olympus", "capacity": 3,
        "ticket_types": [{"name": "Seat", "capacity": 5}]});
    let response = post(&app, &bob(), "/events", &body).await;
    assert_eq!(problem(response, StatusCode::FORBIDDEN).await, "forbidden");
    let response = post(&app, &ada(), "/events", &body).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let refused: Value = json(response).await;
    assert_eq!(refused["code"], "validation_failed");
    for field in ["ends_at", "time_zone", "ticket_types[0].capacity"] {
        assert!(refused["errors"][field].is_array(), "{field}: {refused}");
    }

    let event = published_event(
        &app,
        &ada(),
        json!({"capacity": 3, "max_guests": 1,
            "questions": [{"id": "diet", "label": "Dietary needs", "required": true}]}),
    )
    .await;
    let id = event["id"].as_str().unwrap().to_owned();
    let listed = get(&app, &bob(), "/events?limit=100").await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id.as_str())
    );

    // Registering: guests and answers checked, one registration per person.
    let path = format!("/events/{id}/registrations");
    let too_many = post(
        &app,
        &bob(),
        &path,
        &json!({"guests": 2, "answers": {"diet": "none"}}),
    )
    .await;
    assert_eq!(
        problem(too_many, StatusCode::UNPROCESSABLE_ENTITY).await,
        "too_many_guests"
    );
    let unanswered = post(&app, &bob(), &path, &json!({"guests": 1})).await;
    assert_eq!(
        problem(unanswered, StatusCode::UNPROCESSABLE_ENTITY).await,
        "validation_failed"
    );
    let bobs = register(
        &app,
        &bob(),
        &id,
        json!({"guests": 1, "answers": {"diet": "vegan"}}),
    )
    .await;
    assert_eq!(
        (bobs["status"].as_str(), bobs["seats"].as_i64()),
        (Some("confirmed"), Some(2))
    );
    let twice = post(&app, &bob(), &path, &json!({"answers": {"diet": "vegan"}})).await;
    assert_eq!(
        problem(twice, StatusCode::CONFLICT).await,
        "already_registered"
    );

    // A retried request with the same key gets the same registration.
    let retry = |key: &'static str| {
        app.client
            .post(app.url(&format!("{API}{path}")))
            .bearer_auth(cleo())
            .header("idempotency-key", key)
            .json(&json!({"answers": {"diet": "none"}}))
            .send()
    };
    let first: Value = json(retry("cleo-1").await.unwrap()).await;
    let again: Value = json(retry("cleo-1").await.unwrap()).await;
    assert_eq!(
        (first["id"].clone(), first["status"].as_str()),
        (again["id"].clone(), Some("confirmed"))
    );

    // Three seats taken: the capacity cannot go below that.
    let smaller = app
        .with_token(&ada())
        .patch_json(&format!("{API}/events/{id}"), &json!({"capacity": 2}))
        .await;
    assert_eq!(
        problem(smaller, StatusCode::UNPROCESSABLE_ENTITY).await,
        "capacity_below_taken"
    );

    // The ticket, and its QR code as an image anyone holding the secret can load.
    let bob_registration = bobs["id"].as_str().unwrap();
    let ticket = get(
        &app,
        &bob(),
        &format!("/registrations/{bob_registration}/ticket"),
    )
    .await;
    let secret = ticket["secret"].as_str().unwrap().to_owned();
    assert!(
        ticket["qr_svg"].as_str().unwrap().contains("<svg"),
        "{ticket}"
    );
    let image = app.get(&format!("{API}/tickets/{secret}/qr.svg")).await;
    assert_eq!(image.status(), StatusCode::OK);
    assert_eq!(image.headers()["content-type"], "image/svg+xml");

    // Check-in: ok, then already redeemed; the same nonce gets the same answer.
    let scan = |secret: String, nonce: &'static str| {
        let app = &app;
        let id = id.clone();
        async move {
            let response = post(
                app,
                &ada(),
                &format!("/events/{id}/checkins"),
                &json!({"secret": secret, "nonce": nonce, "type": "entry"}),
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK);
            json::<Value>(response).await
        }
    };
    let entry = scan(secret.clone(), "scan-1").await;
    assert_eq!(
        (entry["result"].as_str(), entry["attendee"].as_str()),
        (Some("ok"), Some("Bob Baker"))
    );
    assert_eq!(
        scan(secret.clone(), "scan-2").await["result"],
        "already_redeemed"
    );
    let replay = scan(secret.clone(), "scan-1").await;
    assert_eq!(
        (replay["id"].clone(), replay["result"].as_str()),
        (entry["id"].clone(), Some("ok"))
    );
    assert_eq!(
        scan("not-a-ticket".into(), "scan-3").await["result"],
        "invalid"
    );
    let by_bob = post(
        &app,
        &bob(),
        &format!("/events/{id}/checkins"),
        &json!({"secret": secret, "nonce": "x", "type": "entry"}),
    )
    .await;
    assert_eq!(by_bob.status(), StatusCode::FORBIDDEN);
    // A mistaken scan is annulled: the ticket is good again.
    let annulled = post(
        &app,
        &ada(),
        &format!("/checkins/{}/annul", entry["id"].as_str().unwrap()),
        &json!({}),
    )
    .await;
    assert_eq!(annulled.status(), StatusCode::OK);
    assert_eq!(scan(secret.clone(), "scan-4").await["result"], "ok");

    // Calendars: the public one, and Bob's personal feed behind its secret URL.
    let calendar = app.get(&format!("{API}/calendar.ics")).await;
    assert_eq!(
        calendar.headers()["content-type"],
        "text/calendar; charset=utf-8"
    );
    let text = calendar.text().await.unwrap();
    assert!(
        text.contains(&format!("UID:{id}@events.hatchery")),
        "{text}"
    );
    assert!(
        text.contains("DTSTART:20300601T163000Z") && text.contains("SEQUENCE:0"),
        "{text}"
    );
    let feed = get(&app, &bob(), "/calendar/feed").await;
    let feed_url = feed["url"].as_str().unwrap();
    let feed_path = &feed_url[feed_url.find("/api/").unwrap()..];
    assert_eq!(
        get(&app, &bob(), "/calendar/feed").await["url"],
        feed_url,
        "the feed URL is stable"
    );

    // Moving the event tells the calendars (SEQUENCE grows); cancelling cancels everyone.
    let moved = app
        .with_token(&ada())
        .patch_json(
            &format!("{API}/events/{id}"),
            &json!({"starts_at": "2030-06-01T17:00:00Z"}),
        )
        .await;
    assert_eq!(moved.status(), StatusCode::OK);
    let moved: Value = json(moved).await;
    assert_eq!(moved["sequence"], 1);
    let cancelled = post(
        &app,
        &ada(),
        &format!("/events/{id}/cancel"),
        &json!({"reason": "The room flooded."}),
    )
    .await;
    assert_eq!(cancelled.status(), StatusCode::OK);
    let cancelled: Value = json(cancelled).await;
    assert_eq!(
        (
            cancelled["status"].as_str(),
            cancelled["availability"]["left"].as_i64()
        ),
        (Some("cancelled"), Some(3))
    );
    let bobs = get(&app, &bob(), &format!("/registrations/{bob_registration}")).await;
    assert_eq!(bobs["status"], "cancelled");
    assert_eq!(
        bobs["cancel_reason"],
        "The event was cancelled: The room flooded."
    );
    let personal = app.get(feed_path).await.text().await.unwrap();
    assert!(
        personal.contains("STATUS:CANCELLED") && personal.contains("SEQUENCE:2"),
        "{personal}"
    );
    crate::calendars::parsed_by_icalendar(&personal, &id, "CANCELLED", 2);
    let again = post(&app, &bob(), &path, &json!({"answers": {"diet": "none"}})).await;
    assert_eq!(
        problem(again, StatusCode::CONFLICT).await,
        "event_cancelled"
    );

    // An event that needs approval: a request holds no seat until the organizer decides.
    let curated = published_event(
        &app,
        &ada(),
        json!({"title": "Salon", "capacity": 1, "requires_approval": true}),
    )
    .await;
    let curated = curated["id"].as_str().unwrap().to_owned();
    let asked = register(&app, &bob(), &curated, json!({})).await;
    assert_eq!(asked["status"], "pending_approval");
    let decide = |registration: Value, verdict: &'static str| {
        let app = &app;
        async move {
            let path = format!(
                "/registrations/{}/{verdict}",
                registration["id"].as_str().unwrap()
            );
            json::<Value>(post(app, &ada(), &path, &json!({})).await).await
        }
    };
    assert_eq!(decide(asked, "approve").await["status"], "confirmed");
    let second = register(&app, &cleo(), &curated, json!({})).await;
    assert_eq!(decide(second, "reject").await["status"], "rejected");

    // An event that ends becomes `completed`: no more edits or registrations, while the
    // people at the door can still be checked in.
    let now = chrono::Utc::now();
    let ending = published_event(
        &app,
        &ada(),
        json!({"title": "Late talk", "capacity": 5,
            "starts_at": (now - chrono::Duration::hours(1)).to_rfc3339(),
            "ends_at": (now + chrono::Duration::seconds(2)).to_rfc3339()}),
    )
    .await;
    let ending = ending["id"].as_str().unwrap().to_owned();
    let attendee = register(&app, &bob(), &ending, json!({})).await;
    assert_eq!(attendee["status"], "confirmed");
    let path = format!("/events/{ending}");
    testkit::eventually(
        "the ended event completed",
        std::time::Duration::from_secs(15),
        || async { (get(&app, &ada(), &path).await["status"] == "completed").then_some(()) },
    )
    .await;
    let edit = app
        .with_token(&ada())
        .patch_json(&format!("{API}{path}"), &json!({"title": "Later talk"}))
        .await;
    assert_eq!(problem(edit, StatusCode::CONFLICT).await, "event_closed");
    let late = post(&app, &cleo(), &format!("{path}/registrations"), &json!({})).await;
    assert_eq!(
        problem(late, StatusCode::CONFLICT).await,
        "registration_closed"
    );
    let ticket = get(
        &app,
        &bob(),
        &format!("/registrations/{}/ticket", attendee["id"].as_str().unwrap()),
    )
    .await;
    let door = post(
        &app,
        &ada(),
        &format!("{path}/checkins"),
        &json!({"secret": ticket["secret"], "nonce": "after-the-end", "type": "entry"}),
    )
    .await;
    assert_eq!(json::<Value>(door).await["result"], "ok");

    // The tables shared with every service are their crates' definitions, not copies.
    testkit::schema::assert_shared_tables_in::<events::Events>(&app.db, &[]).await;
}
