//! Refunds never overshoot: concurrent refunds are refused beyond what was captured, partial
//! refunds add up, and a refund that fails later gives its amount back.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

use crate::common::*;

fn refunds(id: &str) -> String {
    format!("{PAYMENTS}/{id}/refunds")
}

async fn two_concurrent_refunds_of_60_on_100_one_succeeds_one_is_refused(app: &TestApp) {
    let id = paid(app, 100).await;
    let token = events_service();
    let (path, sixty) = (refunds(&id), json!({"amount": 60}));
    let (first, second) = tokio::join!(
        post(app, &token, &path, "refund-a", &sixty),
        post(app, &token, &path, "refund-b", &sixty),
    );
    let mut statuses = [first.status(), second.status()];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY]
    );
    let refused = if first.status() == StatusCode::CREATED {
        second
    } else {
        first
    };
    let problem: Value = json(refused).await;
    assert_eq!(problem["code"], "refund_exceeds_available");
    assert!(
        problem["detail"].as_str().unwrap().contains("40"),
        "{problem}"
    );

    // The remainder goes through; anything more does not.
    let rest = post(
        app,
        &token,
        &refunds(&id),
        "refund-c",
        &json!({"amount": 40}),
    )
    .await;
    assert_eq!(rest.status(), StatusCode::CREATED);
    let rest: Value = json(rest).await;
    assert_eq!(rest["status"], "succeeded");
    let over = post(
        app,
        &token,
        &refunds(&id),
        "refund-d",
        &json!({"amount": 1}),
    )
    .await;
    assert_eq!(over.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let all = post(app, &token, &refunds(&id), "refund-e", &json!({})).await;
    assert_eq!(all.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let payment = payment(app, &id).await;
    assert_eq!(payment["amount_refunded"], 100);
    assert_eq!(payment["amount_refund_pending"], 0);
    assert_eq!(payment["amount_refundable"], 0);
    let listed: Value = json(get(app, &token, &refunds(&id)).await).await;
    let amounts: Vec<i64> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [40, 60]);
    // The provider gave back exactly what we did.
    let provider_refunded: i64 = sqlx::query_scalar(
        "SELECT i.amount_refunded FROM test_provider_intents i JOIN payments p ON p.provider_payment_id = i.id
         WHERE p.uuid = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(provider_refunded, 100);
}

async fn many_concurrent_refunds_never_exceed_the_captured_amount(app: &TestApp) {
    let id = paid(app, 1_000).await;
    let token = events_service();
    let attempts = (0..30).map(|i| {
        let path = refunds(&id);
        let token = token.clone();
        let app = &app;
        async move {
            post(
                app,
                &token,
                &path,
                &format!("r-{i}"),
                &json!({"amount": 70}),
            )
            .await
            .status()
        }
    });
    let statuses = futures_util::future::join_all(attempts).await;
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    assert_eq!(created, 14, "1000 / 70 = 14 refunds fit: {statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::UNPROCESSABLE_ENTITY)
    );
    let payment = payment(app, &id).await;
    assert_eq!(payment["amount_refunded"], 980);
}

async fn who_may_refund_and_what(app: &TestApp) {
    let id = paid(app, 500).await;
    // The paying user cannot refund themselves; a service needs `payments:refund`.
    let response = post(app, &bob().mint(), &refunds(&id), "u-1", &json!({})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let creator = testkit::tokens::service(EVENTS_CLIENT.parse().unwrap())
        .scope("payments:create")
        .mint();
    let response = post(app, &creator, &refunds(&id), "s-1", &json!({})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Only succeeded payments.
    let open = create(app, &registration(BOB, 500)).await;
    let response = post(
        app,
        &ada().mint(),
        &refunds(open["id"].as_str().unwrap()),
        "a-1",
        &json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "payment_not_refundable");
    // Bad amounts.
    for bad in [json!(0), json!(-5), json!(2.5), json!("10")] {
        let response = post(
            app,
            &ada().mint(),
            &refunds(&id),
            &format!("bad-{bad}"),
            &json!({"amount": bad}),
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    // An admin refunds everything that is left when no amount is given.
    let all = post(
        app,
        &ada().mint(),
        &refunds(&id),
        "a-2",
        &json!({"reason": "requested_by_customer"}),
    )
    .await;
    assert_eq!(all.status(), StatusCode::CREATED);
    let all: Value = json(all).await;
    assert_eq!(
        (all["amount"].as_i64(), all["reason"].as_str()),
        (Some(500), Some("requested_by_customer"))
    );
}

async fn a_refund_failing_later_gives_its_amount_back(app: &TestApp) {
    let created = create(app, &registration(BOB, 900)).await;
    let id = created["id"].as_str().unwrap();
    confirm(app, id, "pm_card_refundFail").await;
    let response = post(
        app,
        &events_service(),
        &refunds(id),
        "rf-1",
        &json!({"amount": 900}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let refund: Value = json(response).await;
    // Accepted by the provider; its failure may already be known by the time we answer.
    assert!(
        refund["status"] == "pending" || refund["status"] == "failed",
        "{refund}"
    );

    // The provider's webhook says it failed: the reservation is released.
    let released = testkit::eventually(
        "the refund to fail",
        std::time::Duration::from_secs(10),
        || async {
            let payment = payment(app, id).await;
            (payment["amount_refund_pending"] == 0).then_some(payment)
        },
    )
    .await;
    assert_eq!(
        (
            released["amount_refunded"].as_i64(),
            released["amount_refundable"].as_i64()
        ),
        (Some(0), Some(900))
    );
    let listed: Value = json(get(app, &ada().mint(), &refunds(id)).await).await;
    assert_eq!(listed["items"][0]["status"], "failed");
    assert_eq!(
        listed["items"][0]["failure_reason"],
        "expired_or_canceled_card"
    );
    let causes: Vec<String> = history(app, id)
        .await
        .iter()
        .filter(|h| h["refund"].is_string())
        .map(|h| {
            format!(
                "{} {}",
                h["to_status"].as_str().unwrap(),
                h["cause"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(causes, ["pending api", "failed webhook"]);
}

/// One service for the scenarios above (each refunds a payment of its own).
#[tokio::test]
async fn refunds_never_overshoot() {
    let app = demo_app().await;
    two_concurrent_refunds_of_60_on_100_one_succeeds_one_is_refused(&app).await;
    many_concurrent_refunds_never_exceed_the_captured_amount(&app).await;
    who_may_refund_and_what(&app).await;
    a_refund_failing_later_gives_its_amount_back(&app).await;
}
