//! The `stripe` provider against localstripe: create, confirm, decline, refund, cancel; Stripe's
//! signed webhooks received; reconciliation reading Stripe back.

use std::time::Duration;

use payments::domain::ProviderName;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

use crate::common::*;
use crate::localstripe::{API_KEY, LocalStripe};

const WEBHOOK_SECRET: &str = "whsec_localstripe";

async fn stripe_app(localstripe: &LocalStripe, reconcile: bool) -> TestApp {
    let api = localstripe.url.clone();
    spawn(move |settings| {
        let app = &mut settings.app;
        app.provider = ProviderName::Stripe;
        app.stripe.api_key = Some(kit::Secret::new(API_KEY));
        app.stripe.api_base = api;
        app.stripe.webhook_secret = Some(kit::Secret::new(WEBHOOK_SECRET));
        app.stripe.timeout = Duration::from_secs(5);
        if reconcile {
            app.reconcile.enabled = true;
            app.reconcile.interval = Duration::from_millis(100);
            app.reconcile.age = Duration::from_millis(200);
        }
    })
    .await
}

#[tokio::test]
async fn create_confirm_decline_refund_and_cancel_at_stripe() {
    let localstripe = LocalStripe::start();
    let app = stripe_app(&localstripe, false).await;
    localstripe
        .send_webhooks_to(&app.url("/api/payments/v1/webhooks/stripe"), WEBHOOK_SECRET)
        .await;

    // Create and confirm.
    let created = create(&app, &registration(BOB, 2500)).await;
    assert_eq!(created["provider"], "stripe");
    let intent = created["provider_payment_id"].as_str().unwrap();
    assert!(intent.starts_with("pi_"), "{created}");
    assert!(
        created["client_secret"]
            .as_str()
            .unwrap()
            .starts_with(intent)
    );
    let id = created["id"].as_str().unwrap();
    let at_stripe = localstripe
        .get(&format!("/v1/payment_intents/{intent}"))
        .await;
    assert_eq!(at_stripe["amount"], 2500, "{at_stripe}");
    assert_eq!(at_stripe["currency"], "eur");
    assert_eq!(at_stripe["metadata"]["hatchery_payment"], id);
    let confirmed = confirm(&app, id, "pm_card_visa").await;
    assert_eq!(confirmed["status"], "succeeded", "{confirmed}");
    assert_eq!(confirmed["amount_captured"], 2500);

    // An unknown payment method is the client's mistake; nothing changes.
    let other = create(&app, &registration(BOB, 1000)).await;
    let other_id = other["id"].as_str().unwrap();
    let unknown = post(
        &app,
        &events_service(),
        &format!("{PAYMENTS}/{other_id}/confirm"),
        "unknown-pm",
        &json!({"payment_method": "pm_card_nobody_knows"}),
    )
    .await;
    assert_eq!(unknown.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        payment(&app, other_id).await["status"],
        "requires_payment_method"
    );

    // A card Stripe declines (localstripe's declining test card).
    let declined = confirm(&app, other_id, "pm_card_chargeCustomerFail").await;
    assert_eq!(declined["status"], "failed", "{declined}");
    assert_eq!(declined["decline_code"], "card_declined");

    // Refunds, in parts, never more than captured.
    let path = format!("{PAYMENTS}/{id}/refunds");
    let token = events_service();
    let first = post(&app, &token, &path, "stripe-r1", &json!({"amount": 1000})).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = json(first).await;
    assert_eq!(first["status"], "succeeded");
    assert!(
        first["provider_refund_id"]
            .as_str()
            .unwrap()
            .starts_with("re_")
    );
    let too_much = post(&app, &token, &path, "stripe-r2", &json!({"amount": 1501})).await;
    assert_eq!(too_much.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let rest = post(&app, &token, &path, "stripe-r3", &json!({})).await;
    assert_eq!(rest.status(), StatusCode::CREATED);
    assert_eq!(payment(&app, id).await["amount_refunded"], 2500);

    // Cancel.
    let third = create(&app, &registration(CLEO, 700)).await;
    let third_id = third["id"].as_str().unwrap();
    let canceled = post(
        &app,
        &token,
        &format!("{PAYMENTS}/{third_id}/cancel"),
        "stripe-cancel",
        &json!({}),
    )
    .await;
    assert_eq!(canceled.status(), StatusCode::OK);
    let canceled: Value = json(canceled).await;
    assert_eq!(canceled["status"], "canceled");
    let at_stripe = localstripe
        .get(&format!(
            "/v1/payment_intents/{}",
            third["provider_payment_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(at_stripe["status"], "canceled");
    // Stripe refuses to confirm it now, and so do we.
    let late = post(
        &app,
        &token,
        &format!("{PAYMENTS}/{third_id}/confirm"),
        "stripe-late",
        &json!({"payment_method": "pm_card_visa"}),
    )
    .await;
    assert_eq!(late.status(), StatusCode::CONFLICT);

    // Stripe's own signed webhooks arrive, are verified, and change nothing already known.
    testkit::eventually("Stripe's webhooks", Duration::from_secs(15), || async {
        let received: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM provider_events WHERE provider = 'stripe' AND event_type = 'payment_intent.succeeded'",
        )
        .fetch_one(&app.db)
        .await
        .unwrap();
        (received >= 1).then_some(())
    })
    .await;
    let succeeded_entries = history(&app, id)
        .await
        .iter()
        .filter(|h| h["refund"].is_null() && h["to_status"] == "succeeded")
        .count();
    assert_eq!(succeeded_entries, 1);
}

#[tokio::test]
async fn reconciliation_reads_back_what_stripe_did() {
    let localstripe = LocalStripe::start();
    let app = stripe_app(&localstripe, true).await;
    let created = create(&app, &registration(BOB, 4000)).await;
    let id = created["id"].as_str().unwrap();
    let intent = created["provider_payment_id"].as_str().unwrap();
    // Confirmed at Stripe, never recorded here (and no webhook configured).
    localstripe
        .call(
            &format!("/v1/payment_intents/{intent}"),
            &[("payment_method", "pm_card_visa")],
        )
        .await;
    let at_stripe = localstripe
        .call(&format!("/v1/payment_intents/{intent}/confirm"), &[])
        .await;
    assert_eq!(at_stripe["status"], "succeeded", "{at_stripe}");
    let repaired = until_status(&app, id, "succeeded").await;
    assert_eq!(repaired["amount_captured"], 4000);
    let last = history(&app, id).await.pop().unwrap();
    assert_eq!(last["cause"], "reconciliation");
}
