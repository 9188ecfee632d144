//! The hot path's shared statements, below HTTP, against the real database: a batch answers
//! each request on its own (one that fails does not take the others with it), and a write at a
//! version the payment has left writes nothing.

use axum::response::IntoResponse;
use chrono::{SubsecRound, Utc};
use futures_util::future::join_all;
use kit::idempotency::{IdempotencyKey, Storable};
use payments::domain::{CaptureMethod, Cause, PaymentStatus, ProviderName};
use payments::store::payments::{
    self as store, AtOnce, HistoryCause, Hot, NewPayment, ProviderNote, StatusWrite,
};
use serde_json::json;
use uuid::Uuid;

use crate::common::*;

const API: HistoryCause<'static> = HistoryCause {
    cause: Cause::Api,
    provider_event_id: None,
    request_id: None,
};

async fn history_len(app: &testkit::TestApp, payment: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM payment_history h JOIN payments p ON p.id = h.payment_id
         WHERE p.uuid = $1",
    )
    .bind(payment)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_batch_answers_each_request_even_when_one_of_them_fails() {
    let app = demo_app().await;
    let hot = Hot::start(app.db.connect_options());
    let bob = Uuid::parse_str(BOB).unwrap();
    let source = Uuid::now_v7();
    let keys: Vec<String> = (0..8).map(|n| format!("hot-{n}-{source}")).collect();
    let references: Vec<String> = (0..8).map(|_| Uuid::now_v7().to_string()).collect();
    let new = |n: usize| NewPayment {
        uuid: Uuid::now_v7(),
        user_id: 0,
        amount: 100 + n as i64,
        // The table's CHECK refuses a lower-case currency: that request fails.
        currency: if n == 3 { "eur" } else { "EUR" },
        description: None,
        metadata: json!({}),
        reference_service: "events",
        reference_id: &references[n],
        source,
        provider: ProviderName::Test,
        payment_method: None,
        capture_method: CaptureMethod::Automatic,
        status: PaymentStatus::RequiresPaymentMethod,
        request_key: Some(&keys[n]),
        request_fingerprint: Some(b"fingerprint"),
        created_at: Utc::now(),
    };
    let requests: Vec<NewPayment> = (0..8).map(new).collect();
    // Sent together, they wait for the same statement.
    let outcomes = join_all(
        requests
            .iter()
            .map(|request| store::insert_at_once(&hot, request, bob, &API)),
    )
    .await;
    for (n, (request, outcome)) in requests.iter().zip(&outcomes).enumerate() {
        if n == 3 {
            assert!(
                outcome.is_err(),
                "the refused request is an error: {outcome:?}"
            );
            assert_eq!(history_len(&app, request.uuid).await, 0);
            continue;
        }
        let row = outcome.as_ref().unwrap().as_ref().expect("inserted");
        assert_eq!((row.uuid, row.amount), (request.uuid, 100 + n as i64));
        assert_eq!(row.user_uuid, bob);
        assert_eq!(row.status, PaymentStatus::RequiresPaymentMethod);
        assert_eq!(history_len(&app, request.uuid).await, 1);
    }

    // Declined, not failed, for the general way to answer: the same request key again, a
    // user this service has never seen.
    let again = NewPayment {
        uuid: Uuid::now_v7(),
        ..new(0)
    };
    let stranger = NewPayment {
        reference_id: "another",
        ..new(1)
    };
    let (again, stranger) = tokio::join!(
        store::insert_at_once(&hot, &again, bob, &API),
        store::insert_at_once(&hot, &stranger, Uuid::now_v7(), &API),
    );
    assert!(again.unwrap().is_none());
    assert!(stranger.unwrap().is_none());
}

#[tokio::test]
async fn a_write_at_a_version_the_payment_has_left_writes_nothing() {
    let app = demo_app().await;
    let hot = Hot::start(app.db.connect_options());
    let created = create(&app, &registration(BOB, 2500)).await;
    let id = Uuid::parse_str(created["id"].as_str().unwrap()).unwrap();
    let row = store::find(&app.db, id).await.unwrap().unwrap();
    let key = IdempotencyKey::new(format!("hot-{id}"), b"fingerprint".to_vec());
    let stored = Storable::new(
        &key,
        "test",
        (http::StatusCode::OK, "{\"answer\":1}").into_response(),
    )
    .await
    .unwrap();
    let stored_rows = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM idempotency WHERE key = $1")
            .bind(&stored.key)
            .fetch_one(&app.db)
            .await
            .unwrap()
    };
    let write = StatusWrite {
        status: PaymentStatus::Succeeded,
        amount_captured: 2500,
        decline_code: None,
        failure_message: None,
        next_action: None,
        cancellation_reason: None,
    };
    let note = ProviderNote::default();
    let at = Utc::now().trunc_subsecs(6);
    let change = |version| AtOnce {
        id: row.id,
        version,
        note: &note,
        write: Some((&write, row.status, &API, at)),
        announcement: None,
        stored: &stored,
    };

    // Read at an older version: nothing is written, for the general way to decide.
    assert!(
        !store::change_at_once(&hot, &change(row.version - 1))
            .await
            .unwrap()
    );
    assert_eq!(
        payment(&app, &id.to_string()).await["status"],
        "requires_payment_method"
    );
    assert_eq!(history_len(&app, id).await, 1);
    assert_eq!(stored_rows().await, 0);

    // At the version it was read at: the status, its history entry and the response together.
    assert!(
        store::change_at_once(&hot, &change(row.version))
            .await
            .unwrap()
    );
    let now = payment(&app, &id.to_string()).await;
    assert_eq!(now["status"], "succeeded");
    assert_eq!(now["version"], row.version + 1);
    let last = history(&app, &id.to_string()).await.pop().unwrap();
    assert_eq!(
        (last["from_status"].as_str(), last["to_status"].as_str()),
        (Some("requires_payment_method"), Some("succeeded"))
    );
    assert_eq!(stored_rows().await, 1);

    // The same write again is at a version the payment has left.
    assert!(
        !store::change_at_once(&hot, &change(row.version))
            .await
            .unwrap()
    );
    assert_eq!(history_len(&app, id).await, 2);
}
