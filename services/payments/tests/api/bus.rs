//! Events reach RabbitMQ through the outbox: a RabbitMQ outage while payments succeed loses
//! none and announces none twice (RabbitMQ reached through a fault-injecting proxy, so only
//! this service sees it go down).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kit::SecretUrl;
use serde_json::Value;
use testkit::{FaultProxy, TestApp, json};

use crate::common::*;

async fn bus_status(app: &TestApp) -> String {
    let ready: Value = json(app.get("/readyz").await).await;
    ready["checks"]["bus"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_rabbitmq_cut_while_500_payments_succeed_announces_each_once() {
    let url = bus::testing::amqp_url();
    let mut amqp = bus::testing::settings();
    let mut tap = bus::testing::Tap::bind(&url, &amqp.prefix, "payments.#")
        .await
        .expect("RabbitMQ must run at 127.0.0.1:5672 (cargo xtask infra starts it)");
    let rabbit = FaultProxy::start(bus::testing::amqp_address()).await;
    amqp.url = Some(SecretUrl::new(rabbit.url(&url)));
    amqp.reconnect_max_delay = Duration::from_millis(200);
    let prefix = amqp.prefix.clone();
    let app = Arc::new(
        spawn(move |settings| {
            settings.amqp = amqp;
            settings.database.max_connections = 20;
            // The provider's webhooks would only repeat what the answers already applied.
            settings.app.test_provider.send_webhooks = false;
        })
        .await,
    );
    testkit::eventually("the bus to be up", Duration::from_secs(10), || async {
        (bus_status(&app).await == "up").then_some(())
    })
    .await;

    let total = 500;
    let done = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = (0..16)
        .map(|worker| {
            let (app, done) = (app.clone(), done.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in (worker..total).step_by(16) {
                    ids.push(paid(&app, 1000).await);
                    done.fetch_add(1, Ordering::SeqCst);
                }
                ids
            })
        })
        .collect();
    testkit::eventually(
        "some payments to succeed",
        Duration::from_secs(30),
        || async { (done.load(Ordering::SeqCst) >= 100).then_some(()) },
    )
    .await;
    rabbit.refuse(true);
    rabbit.cut_all();
    testkit::eventually("the bus to be down", Duration::from_secs(10), || async {
        (bus_status(&app).await == "down").then_some(())
    })
    .await;
    let mut paid_ids = HashSet::new();
    for writer in writers {
        paid_ids.extend(writer.await.unwrap());
    }
    assert_eq!(
        paid_ids.len(),
        total,
        "payments succeed while RabbitMQ is down"
    );
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(waiting > 0, "events wait in the outbox meanwhile");
    rabbit.refuse(false);

    // Every payment's success reaches RabbitMQ, under one event id.
    let mut events_of: HashMap<String, HashSet<String>> = HashMap::new();
    let mut deliveries = 0;
    while events_of.len() < total {
        let (event, _) = tap
            .next(Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("only {} of {total} announced", events_of.len()));
        if event.event_type != "payments.payment.succeeded" {
            continue;
        }
        deliveries += 1;
        let payment = event.data["payment"].as_str().unwrap().to_owned();
        assert!(paid_ids.contains(&payment), "{payment} is one of ours");
        assert_eq!(event.data["reference"]["service"], "events");
        events_of
            .entry(payment)
            .or_default()
            .insert(event.id.to_string());
    }
    assert!(
        events_of.values().all(|ids| ids.len() == 1),
        "one event per payment"
    );
    testkit::eventually(
        "the outbox to be drained",
        Duration::from_secs(20),
        || async {
            let pending: i64 =
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(&app.db)
                    .await
                    .unwrap();
            (pending == 0).then_some(())
        },
    )
    .await;
    // A message whose publisher confirm was lost in the cut is sent again under the same event
    // id (consumers' inboxes drop the copy); no payment is ever announced under a second id.
    while let Some((event, _)) = tap.next(Duration::from_millis(300)).await {
        if event.event_type == "payments.payment.succeeded" {
            deliveries += 1;
            let payment = event.data["payment"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            events_of
                .entry(payment)
                .or_default()
                .insert(event.id.to_string());
        }
    }
    assert_eq!(events_of.len(), total);
    assert!(
        events_of.values().all(|ids| ids.len() == 1),
        "one event per payment"
    );
    eprintln!("{total} events, {} deliveries", deliveries);
    tap.close().await;
    let amqp = kit::config::AmqpSettings {
        prefix,
        ..Default::default()
    };
    bus::testing::cleanup(&url, &amqp, &["payments"]).await;
}
