//! Losing Redis (through testkit's fault-injecting proxy): clients stay connected, `/readyz`
//! says 503 meanwhile, and once Redis is back every topic is resubscribed and publications flow
//! again — socketshark would have exited instead.

use crate::common::*;
use serde_json::json;
use testkit::FaultProxy;

async fn readyz(broker: &TestBroker) -> u16 {
    broker.app.get("/readyz").await.status().as_u16()
}

/// Once `/readyz` is back to 200 every topic is resubscribed, so a publication arrives.
async fn publish_and_receive(broker: &TestBroker, client: &mut Client, data: serde_json::Value) {
    let news = publisher(&broker.prefix, "simple").await;
    news.publish("news", &data, Default::default())
        .await
        .unwrap();
    assert_eq!(client.recv().await, message("simple.news", data));
}

#[tokio::test]
async fn clients_survive_a_redis_outage_and_receive_again_after_it() {
    let proxy = FaultProxy::start("127.0.0.1:6379").await;
    let broker = spawn_broker_on(&proxy.url(REDIS), &unique_prefix(), basic_services).await;
    testkit::eventually("ready", WAIT, || async {
        (readyz(&broker).await == 200).then_some(())
    })
    .await;
    let mut client = broker.client().await;
    client.subscribe("simple.news").await;
    let news = publisher(&broker.prefix, "simple").await;
    news.publish("news", &json!("before"), Default::default())
        .await
        .unwrap();
    assert_eq!(client.recv().await, message("simple.news", json!("before")));

    // Redis goes away.
    proxy.refuse(true);
    proxy.cut_all();
    testkit::eventually("/readyz to report 503", WAIT, || async {
        (readyz(&broker).await == 503).then_some(())
    })
    .await;
    let body: serde_json::Value = broker.app.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["redis_pubsub"]["status"], "down", "{body}");
    // The websocket is untouched, and subscribing still works (it is made on reconnection).
    assert_eq!(
        client
            .request(json!({"event": "ping", "data": "up?"}))
            .await,
        json!({"event": "pong", "data": "up?"})
    );
    let mut latecomer = broker.client().await;
    latecomer.subscribe("simple.late").await;

    // Redis comes back: everything is resubscribed.
    proxy.refuse(false);
    testkit::eventually("/readyz to recover", WAIT * 2, || async {
        (readyz(&broker).await == 200).then_some(())
    })
    .await;
    news.publish("late", &json!("for the latecomer"), Default::default())
        .await
        .unwrap();
    assert_eq!(
        latecomer.recv().await,
        message("simple.late", json!("for the latecomer"))
    );
    publish_and_receive(&broker, &mut client, json!("after")).await;
    assert!(
        proxy.connections() >= 2,
        "the broker reconnected through the proxy"
    );
}

#[tokio::test]
async fn a_stalled_redis_link_is_noticed_by_ping_and_replaced() {
    let proxy = FaultProxy::start("127.0.0.1:6379").await;
    let broker = spawn_broker_on(&proxy.url(REDIS), &unique_prefix(), basic_services).await;
    let mut client = broker.client().await;
    client.subscribe("simple.news").await;

    // Bytes stop flowing but the connection stays open: only the PING timeout can tell.
    proxy.pause(true);
    testkit::eventually("/readyz to report 503", WAIT, || async {
        (readyz(&broker).await == 503).then_some(())
    })
    .await;
    proxy.pause(false);
    testkit::eventually("/readyz to recover", WAIT * 2, || async {
        (readyz(&broker).await == 200).then_some(())
    })
    .await;
    publish_and_receive(&broker, &mut client, json!("flowing again")).await;
}
