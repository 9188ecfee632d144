//! Payments through their status machine with the built-in test provider: confirmation that
//! succeeds, declines or needs 3-D Secure (finished by the provider's own webhook), cancel,
//! manual capture, who may see and do what, listings and the history of causes.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};
use uuid::Uuid;

use crate::common::*;

async fn a_payment_is_created_then_confirmed_and_every_step_is_in_its_history(app: &TestApp) {
    let created = create(app, &registration(BOB, 2500)).await;
    assert_eq!(created["status"], "requires_payment_method");
    assert_eq!(created["user"], BOB);
    assert_eq!(created["provider"], "test");
    assert_eq!(created["amount"], 2500);
    assert_eq!(created["currency"], "EUR");
    assert!(
        created["client_secret"]
            .as_str()
            .unwrap()
            .contains("_secret_")
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let confirmed = confirm(app, &id, "pm_card_visa").await;
    assert_eq!(confirmed["status"], "succeeded");
    assert_eq!(confirmed["amount_captured"], 2500);
    assert_eq!(confirmed["amount_refundable"], 2500);
    assert_eq!(confirmed["payment_method"], "pm_card_visa");

    // Bob sees his payment; Cleo does not (not found, so ids do not leak).
    let mine = get(app, &bob().mint(), &format!("{PAYMENTS}/{id}")).await;
    assert_eq!(mine.status(), StatusCode::OK);
    let theirs = get(app, &cleo().mint(), &format!("{PAYMENTS}/{id}")).await;
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);

    let history = history(app, &id).await;
    let steps: Vec<(&str, &str)> = history
        .iter()
        .map(|h| {
            (
                h["to_status"].as_str().unwrap(),
                h["cause"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps[0], ("requires_payment_method", "api"));
    assert_eq!(steps[1].0, "succeeded");
    assert!(history[0]["request_id"].is_string(), "{history:?}");
}

async fn a_declined_card_fails_the_payment_and_frees_its_reference(app: &TestApp) {
    let body = registration(BOB, 4500);
    let created = create(app, &body).await;
    let id = created["id"].as_str().unwrap();
    let declined = confirm(app, id, "pm_card_chargeDeclinedInsufficientFunds").await;
    assert_eq!(declined["status"], "failed");
    assert_eq!(declined["decline_code"], "insufficient_funds");
    assert_eq!(declined["amount_captured"], 0);

    // A failed payment is over; the same order can be paid anew (new key), once.
    let retry = create(app, &body).await;
    assert_ne!(retry["id"], created["id"]);
    let again = post(app, &events_service(), PAYMENTS, "another-key", &body).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
}

async fn three_d_secure_waits_for_the_customer_and_the_providers_webhook_finishes_it(
    app: &TestApp,
) {
    let created = create(app, &registration(BOB, 1900)).await;
    let id = created["id"].as_str().unwrap();
    let pending = confirm(app, id, "pm_card_threeDSecureRequired").await;
    assert_eq!(pending["status"], "requires_action");
    let url = pending["next_action"]["redirect_to_url"]["url"]
        .as_str()
        .expect("where the customer authenticates")
        .to_owned();
    assert!(url.starts_with(&app.base_url), "{url}");

    // A wrong secret is "not found"; the right one completes it.
    let wrong = app
        .client
        .post(&url)
        .json(&json!({"client_secret": "pi_x_secret_y", "outcome": "succeed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::NOT_FOUND);
    let done = app
        .client
        .post(&url)
        .json(&json!({"client_secret": created["client_secret"], "outcome": "succeed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);

    let succeeded = until_status(app, id, "succeeded").await;
    assert_eq!(succeeded["amount_captured"], 1900);
    let last = history(app, id).await.pop().unwrap();
    assert_eq!(last["cause"], "webhook", "{last}");
    assert!(
        last["provider_event_id"]
            .as_str()
            .unwrap()
            .starts_with("evt_test_")
    );

    // A failed authentication fails the payment.
    let other = create(app, &registration(BOB, 1900)).await;
    let other_id = other["id"].as_str().unwrap();
    confirm(app, other_id, "pm_card_threeDSecureRequired").await;
    let failed = app
        .client
        .post(url.replace(
            created["provider_payment_id"].as_str().unwrap(),
            other["provider_payment_id"].as_str().unwrap(),
        ))
        .json(&json!({"client_secret": other["client_secret"], "outcome": "fail"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), StatusCode::OK);
    let failed = until_status(app, other_id, "failed").await;
    assert_eq!(
        failed["decline_code"],
        "payment_intent_authentication_failure"
    );
}

async fn cancel_and_manual_capture(app: &TestApp) {
    let events = events_service();
    let created = create(app, &registration(CLEO, 800)).await;
    let id = created["id"].as_str().unwrap();
    let canceled = post(
        app,
        &cleo().mint(),
        &format!("{PAYMENTS}/{id}/cancel"),
        "cancel-1",
        &json!({"cancellation_reason": "requested_by_customer"}),
    )
    .await;
    assert_eq!(canceled.status(), StatusCode::OK);
    let canceled: Value = json(canceled).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["cancellation_reason"], "requested_by_customer");
    // Terminal: it cannot be confirmed any more.
    let late = post(
        app,
        &events,
        &format!("{PAYMENTS}/{id}/confirm"),
        "confirm-late",
        &json!({"payment_method": "pm_card_visa"}),
    )
    .await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    let problem: Value = json(late).await;
    assert_eq!(problem["code"], "payment_not_confirmable");

    // Manual capture: confirmation authorizes, a capture takes (part of) it.
    let mut body = registration(CLEO, 10_000);
    body["capture_method"] = json!("manual");
    let held = create(app, &body).await;
    let held_id = held["id"].as_str().unwrap();
    let authorized = confirm(app, held_id, "pm_card_visa").await;
    assert_eq!(authorized["status"], "requires_capture");
    assert_eq!(authorized["amount_captured"], 0);
    let capture_path = format!("{PAYMENTS}/{held_id}/capture");
    let too_much = post(
        app,
        &events,
        &capture_path,
        "cap-0",
        &json!({"amount_to_capture": 10_001}),
    )
    .await;
    assert_eq!(too_much.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // The paying user cannot capture.
    let by_user = post(app, &cleo().mint(), &capture_path, "cap-1", &json!({})).await;
    assert_eq!(by_user.status(), StatusCode::FORBIDDEN);
    let captured = post(
        app,
        &events,
        &capture_path,
        "cap-2",
        &json!({"amount_to_capture": 7_500}),
    )
    .await;
    assert_eq!(captured.status(), StatusCode::OK);
    let captured: Value = json(captured).await;
    assert_eq!(captured["status"], "succeeded");
    assert_eq!(captured["amount_captured"], 7_500);
    assert_eq!(captured["amount_refundable"], 7_500);
}

async fn users_pay_for_themselves_and_services_need_their_scope(app: &TestApp) {
    let bob_token = bob().mint();
    // A user creates a payment for themselves (the reference is unique per source: theirs).
    let own =
        json!({"amount": 500, "currency": "JPY", "reference": {"service": "shop", "id": "cart-1"}});
    let response = post(app, &bob_token, PAYMENTS, "bob-1", &own).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let payment: Value = json(response).await;
    assert_eq!(payment["user"], BOB);
    assert_eq!(payment["amount"], 500);
    let confirmed = post(
        app,
        &bob_token,
        &format!("{PAYMENTS}/{}/confirm", payment["id"].as_str().unwrap()),
        "bob-confirm",
        &json!({"payment_method": "pm_card_visa"}),
    )
    .await;
    assert_eq!(confirmed.status(), StatusCode::OK);
    // Cleo may use the same reference: it is hers, not Bob's.
    let response = post(app, &cleo().mint(), PAYMENTS, "cleo-1", &own).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    // Not for someone else.
    let mut for_cleo = own.clone();
    for_cleo["user"] = json!(CLEO);
    let response = post(app, &bob_token, PAYMENTS, "bob-2", &for_cleo).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // A service token needs `payments:create`, and must name the user.
    let reader = testkit::tokens::service(Uuid::now_v7())
        .scope("payments:read")
        .mint();
    let response = post(app, &reader, PAYMENTS, "svc-1", &registration(BOB, 100)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "insufficient_scope");
    let mut nobody = registration(BOB, 100);
    nobody.as_object_mut().unwrap().remove("user");
    let response = post(app, &events_service(), PAYMENTS, "svc-2", &nobody).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(response).await;
    assert!(problem["errors"]["user"].is_array(), "{problem}");

    // A user the service names but this service never saw is known from then on.
    let newcomer = Uuid::now_v7();
    let created = create(app, &registration(&newcomer.to_string(), 700)).await;
    assert_eq!(created["user"], newcomer.to_string());
    let theirs = get(
        app,
        &testkit::tokens::user(newcomer).mint(),
        &format!("{PAYMENTS}/{}", created["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(theirs.status(), StatusCode::OK);
}

async fn listings_filter_by_status_reference_user_and_time(app: &TestApp) {
    let succeeded = paid(app, 1000).await;
    let open = create(app, &registration(BOB, 2000)).await;
    let ada = ada().mint();

    // Bob lists his own: the demo's two plus these two, newest first.
    let mine: Value = json(get(app, &bob().mint(), PAYMENTS).await).await;
    let ids: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{mine}");
    assert_eq!(ids[0], open["id"].as_str().unwrap());
    // Not someone else's, unless admin.
    let response = get(app, &bob().mint(), &format!("{PAYMENTS}?user={CLEO}")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let cleos: Value = json(get(app, &ada, &format!("{PAYMENTS}?user={CLEO}")).await).await;
    assert_eq!(cleos["items"].as_array().unwrap().len(), 2);

    let by_status: Value = json(
        get(
            app,
            &ada,
            &format!("{PAYMENTS}?status=succeeded&user={BOB}"),
        )
        .await,
    )
    .await;
    assert!(
        by_status["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["status"] == "succeeded")
    );
    assert_eq!(by_status["items"].as_array().unwrap().len(), 3);

    let reference = open["reference"]["id"].as_str().unwrap();
    let by_reference: Value = json(
        get(
            app,
            &events_service(),
            &format!("{PAYMENTS}?reference_service=events&reference_id={reference}"),
        )
        .await,
    )
    .await;
    assert_eq!(by_reference["items"][0]["id"], open["id"]);
    assert_eq!(by_reference["items"].as_array().unwrap().len(), 1);

    let created_at = payment(app, &succeeded).await["created_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let since: Value = json(
        get(
            app,
            &ada,
            &format!(
                "{PAYMENTS}?created_from={}&limit=1",
                created_at.replace('+', "%2B")
            ),
        )
        .await,
    )
    .await;
    assert_eq!(since["items"].as_array().unwrap().len(), 1);
    let next = since["next_cursor"].as_str().expect("a second page");
    let page2: Value = json(
        get(
            app,
            &ada,
            &format!(
                "{PAYMENTS}?created_from={}&limit=1&cursor={next}",
                created_at.replace('+', "%2B")
            ),
        )
        .await,
    )
    .await;
    assert_eq!(page2["items"][0]["id"], json!(succeeded));
    assert_eq!(page2["next_cursor"], Value::Null);

    let bad = get(
        app,
        &ada,
        &format!("{PAYMENTS}?reference_service=Not%20A%20Service"),
    )
    .await;
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

async fn the_demo_has_payments_and_loading_it_again_changes_nothing(app: &TestApp) {
    for seeded in 1..=5 {
        let path = format!("{PAYMENTS}/0193a000-0000-7000-8000-0000000b000{seeded}");
        assert_eq!(
            get(app, &ada().mint(), &path).await.status(),
            StatusCode::OK
        );
    }
    let cleos: Value = json(get(app, &cleo().mint(), PAYMENTS).await).await;
    let statuses: Vec<&str> = cleos["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert!(statuses.contains(&"failed") && statuses.contains(&"requires_payment_method"));
    let seat = payment(app, "0193a000-0000-7000-8000-0000000b0001").await;
    assert_eq!(
        (seat["status"].as_str(), seat["amount_refunded"].as_i64()),
        (Some("succeeded"), Some(500))
    );
    // The test provider knows the seeded payment: an admin refunds part of it.
    let refund = post(
        app,
        &ada().mint(),
        "/api/payments/v1/payments/0193a000-0000-7000-8000-0000000b0001/refunds",
        "demo-refund",
        &json!({"amount": 1000}),
    )
    .await;
    assert_eq!(refund.status(), StatusCode::CREATED);
    let report = kit::service::populate::<payments::Payments>(
        &app.db,
        &testkit::workspace_root().join("populator"),
        "demo",
    )
    .await
    .unwrap();
    assert_eq!(
        (report.created("payments"), report.kept("payments")),
        (0, 5)
    );
    let seat = payment(app, "0193a000-0000-7000-8000-0000000b0001").await;
    assert_eq!(seat["amount_refunded"], 1500, "kept what happened since");
}

/// One service for the scenarios above (each uses payments of its own), and for the realtime
/// pushes they make.
#[tokio::test]
async fn the_status_machine_with_the_test_provider() {
    let prefix = crate::realtime::realtime_prefix();
    let app = spawn({
        let prefix = prefix.clone();
        move |settings| settings.app.realtime_prefix = prefix
    })
    .await;
    crate::realtime::the_paying_user_hears_every_status_change(&app, &prefix).await;
    a_payment_is_created_then_confirmed_and_every_step_is_in_its_history(&app).await;
    a_declined_card_fails_the_payment_and_frees_its_reference(&app).await;
    three_d_secure_waits_for_the_customer_and_the_providers_webhook_finishes_it(&app).await;
    cancel_and_manual_capture(&app).await;
}

/// One service for the scenarios above, in this order (the listing counts the demo's payments).
#[tokio::test]
async fn who_sees_and_does_what() {
    let app = demo_app().await;
    listings_filter_by_status_reference_user_and_time(&app).await;
    users_pay_for_themselves_and_services_need_their_scope(&app).await;
    the_demo_has_payments_and_loading_it_again_changes_nothing(&app).await;
}
