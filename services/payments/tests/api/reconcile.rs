//! Reconciliation repairs what a crash between the provider's answer and our commit left
//! behind: the provider acted, we never recorded it, and no webhook came. It re-reads the
//! provider and applies what it says, never guessing.

use std::time::Duration;

use payments::provider::{Provider, TestProvider};
use serde_json::json;
use testkit::TestApp;

use crate::common::*;

async fn a_confirmation_the_service_never_recorded_is_repaired_from_the_provider(app: &TestApp) {
    let created = create(app, &registration(BOB, 6400)).await;
    let id = created["id"].as_str().unwrap();
    let intent = created["provider_payment_id"].as_str().unwrap();

    // The provider confirms, and the service "crashes" before recording it.
    let provider = TestProvider::new(
        app.db.clone(),
        kit::Secret::new("whsec_hatchery_test_provider"),
        None,
        String::new(),
    );
    let at_provider = provider
        .confirm_intent(intent, "pm_card_visa", "crashed-confirm")
        .await
        .unwrap();
    assert_eq!(at_provider.status, "succeeded");
    assert_eq!(payment(app, id).await["status"], "requires_payment_method");

    let repaired = until_status(app, id, "succeeded").await;
    assert_eq!(repaired["amount_captured"], 6400);
    let last = history(app, id).await.pop().unwrap();
    assert_eq!(last["cause"], "reconciliation");
}

async fn a_refund_the_provider_settled_later_is_read_back(app: &TestApp) {
    let created = create(app, &registration(BOB, 700)).await;
    let id = created["id"].as_str().unwrap();
    confirm(app, id, "pm_card_refundFail").await;
    let refund = app
        .client
        .post(app.url(&format!("{PAYMENTS}/{id}/refunds")))
        .bearer_auth(ada().mint())
        .header("idempotency-key", "r-1")
        .json(&json!({"amount": 700}))
        .send()
        .await
        .unwrap();
    assert_eq!(refund.status(), reqwest::StatusCode::CREATED);
    let refund: serde_json::Value = refund.json().await.unwrap();
    assert_eq!(refund["status"], "pending");
    // The provider failed it afterwards and told no one: reconciliation finds out.
    let released = testkit::eventually(
        "the refund to be read back",
        Duration::from_secs(10),
        || async {
            let payment = payment(app, id).await;
            (payment["amount_refund_pending"] == 0).then_some(payment)
        },
    )
    .await;
    assert_eq!(released["amount_refundable"], 700);
    let last = history(app, id).await.pop().unwrap();
    assert_eq!(
        (last["to_status"].as_str(), last["cause"].as_str()),
        (Some("failed"), Some("reconciliation"))
    );
}

async fn a_payment_whose_provider_side_was_never_recorded_is_made_with_its_first_key(
    app: &TestApp,
) {
    let created = create(app, &registration(CLEO, 999)).await;
    let id = created["id"].as_str().unwrap();
    let intent = created["provider_payment_id"].as_str().unwrap().to_owned();
    // As if the service had died after recording the payment, before the provider answered.
    sqlx::query(
        "UPDATE payments SET provider_payment_id = NULL, client_secret = NULL,
             updated_at = now() - interval '1 minute'
         WHERE uuid = $1::uuid",
    )
    .bind(id)
    .execute(&app.db)
    .await
    .unwrap();
    let repaired = testkit::eventually(
        "the provider side to be recorded",
        Duration::from_secs(10),
        || async {
            let payment = payment(app, id).await;
            payment["provider_payment_id"]
                .is_string()
                .then_some(payment)
        },
    )
    .await;
    assert_eq!(
        repaired["provider_payment_id"],
        intent.as_str(),
        "the same intent, not a second one"
    );
    let intents: i64 =
        sqlx::query_scalar("SELECT count(*) FROM test_provider_intents WHERE amount = 999")
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(intents, 1);
}

/// One service for the scenarios above: no provider webhooks, so only reconciliation (every
/// 100 ms, for what has not changed for 200 ms) learns what the provider did.
#[tokio::test]
async fn reconciliation_repairs_from_the_provider() {
    let app = spawn(|settings| {
        let app = &mut settings.app;
        app.test_provider.send_webhooks = false;
        app.reconcile.enabled = true;
        app.reconcile.interval = Duration::from_millis(100);
        app.reconcile.age = Duration::from_millis(200);
    })
    .await;
    a_confirmation_the_service_never_recorded_is_repaired_from_the_provider(&app).await;
    a_refund_the_provider_settled_later_is_read_back(&app).await;
    a_payment_whose_provider_side_was_never_recorded_is_made_with_its_first_key(&app).await;
}
