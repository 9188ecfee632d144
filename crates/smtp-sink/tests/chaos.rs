//! Scripted failures for chosen recipients, set over HTTP and met in real SMTP
//! conversations.

use reqwest::StatusCode;
use serde_json::{Value, json};
use smtp_sink::{ChaosResponse, Stage};

use crate::support::{Api, Client, problem, simple, start};

async fn script(api: &Api, email: &str, responses: Value) -> Value {
    let response = api
        .put(
            &format!("/api/v1/chaos/recipients/{email}"),
            &json!({ "responses": responses }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn rule(api: &Api, email: &str) -> Value {
    api.json(&format!("/api/v1/chaos/recipients/{email}"), StatusCode::OK)
        .await
}

fn mail() -> String {
    simple(
        "app@example.com",
        "flaky@example.com, steady@example.com",
        "Retry me",
        "body",
    )
}

#[tokio::test]
async fn temporary_failures_twice_then_accept_for_one_recipient_only() {
    let sink = start();
    let api = Api::of(&sink);
    let set = script(
        &api,
        "Flaky@Example.com",
        json!([
            {"action": "reply", "code": 451, "text": "4.7.1 Greylisted, try again"},
            {"action": "reply", "stage": "rcpt", "code": 450},
            {"action": "accept"}
        ]),
    )
    .await;
    assert_eq!(set["email"], "flaky@example.com");
    assert_eq!(set["consumed"], 0);
    assert_eq!(set["responses"][1]["stage"], "rcpt");

    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    // First try: the flaky recipient is refused, the other one of the same transaction is
    // accepted and gets the message.
    let (replies, end) = client.transaction(
        "app@example.com",
        &["flaky@example.com", "steady@example.com"],
        &mail(),
    );
    assert_eq!(replies[0], "451 4.7.1 Greylisted, try again");
    assert!(replies[1].starts_with("250 "), "{replies:?}");
    assert!(end.unwrap().starts_with("250 "));
    // Second try, the flaky recipient alone: refused again (default text for its class).
    let (replies, end) = client.transaction("app@example.com", &["flaky@example.com"], &mail());
    assert!(replies[0].starts_with("450 4."), "{replies:?}");
    assert_eq!(end, None, "nothing to send without a recipient");
    // Third try: accepted.
    let (replies, end) = client.transaction("app@example.com", &["flaky@example.com"], &mail());
    assert!(replies[0].starts_with("250 "), "{replies:?}");
    assert!(end.unwrap().starts_with("250 "));
    // Beyond the script: accepted as usual.
    let (replies, _) = client.transaction("app@example.com", &["flaky@example.com"], &mail());
    assert!(replies[0].starts_with("250 "), "{replies:?}");
    client.expect("QUIT", "221");

    let messages = api.json("/api/v1/messages", StatusCode::OK).await["messages"].clone();
    let envelopes: Vec<Value> = messages
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|m| m["Envelope"]["To"].clone())
        .collect();
    assert_eq!(
        envelopes,
        vec![
            json!(["steady@example.com"]),
            json!(["flaky@example.com"]),
            json!(["flaky@example.com"])
        ]
    );
    let state = rule(&api, "flaky@example.com").await;
    assert_eq!(state["consumed"], 3);
    assert_eq!(state["attempts"], 4);
    let all = api.json("/api/v1/chaos/recipients", StatusCode::OK).await;
    assert_eq!(all["recipients"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn permanent_failure_at_rcpt() {
    let sink = start();
    let api = Api::of(&sink);
    script(
        &api,
        "gone@example.com",
        json!([{"action": "reply", "code": 550, "text": "5.1.1 No such user"}]),
    )
    .await;
    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    client.expect("MAIL FROM:<app@example.com>", "250");
    assert_eq!(
        client.cmd("RCPT TO:<gone@example.com>"),
        "550 5.1.1 No such user"
    );
    client.expect("DATA", "503");
    client.expect("QUIT", "221");
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn disconnect_at_rcpt_drops_the_connection_and_stores_nothing() {
    let sink = start();
    let api = Api::of(&sink);
    script(&api, "cut@example.com", json!([{"action": "disconnect"}])).await;
    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    client.expect("MAIL FROM:<app@example.com>", "250");
    client.expect("RCPT TO:<other@example.com>", "250");
    client.send_raw(b"RCPT TO:<cut@example.com>\r\n");
    assert_eq!(client.try_read_reply(), None, "no reply, connection closed");
    assert!(sink.messages().is_empty());

    // The next connection gets through: the script is used up.
    crate::support::send(&sink, "app@example.com", &["cut@example.com"], &mail());
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(rule(&api, "cut@example.com").await["consumed"], 1);
}

#[tokio::test]
async fn failures_at_end_of_data_refuse_the_whole_message() {
    let sink = start();
    let api = Api::of(&sink);
    script(
        &api,
        "late@example.com",
        json!([
            {"action": "reply", "stage": "data", "code": 452, "text": "4.3.1 Out of storage"},
            {"action": "disconnect", "stage": "data"},
            {"action": "reply", "stage": "data", "code": 554}
        ]),
    )
    .await;
    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    let (replies, end) = client.transaction(
        "app@example.com",
        &["steady@example.com", "late@example.com"],
        &mail(),
    );
    assert!(
        replies.iter().all(|reply| reply.starts_with("250 ")),
        "{replies:?}"
    );
    assert_eq!(end.as_deref(), Some("452 4.3.1 Out of storage"));
    // The connection stays usable after a refused message.
    let (_, end) = client.transaction("app@example.com", &["late@example.com"], &mail());
    assert_eq!(end, None, "hung up after the final dot");
    assert!(sink.messages().is_empty());

    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    let (_, end) = client.transaction("app@example.com", &["late@example.com"], &mail());
    assert!(end.unwrap().starts_with("554 5."));
    let (_, end) = client.transaction("app@example.com", &["late@example.com"], &mail());
    assert!(end.unwrap().starts_with("250 "));
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn rules_are_validated_listed_and_cleared() {
    let sink = start();
    let api = Api::of(&sink);
    let path = "/api/v1/chaos/recipients/x@example.com";

    let response = api.put_raw(path, "{\"responses\": [").await;
    problem(response, StatusCode::BAD_REQUEST).await;
    let response = api.put_raw(path, "[451]").await;
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(body["errors"]["body"].is_array(), "{body}");

    let response = api
        .put(
            path,
            &json!({"responses": [
                {"action": "reply", "code": 250},
                {"action": "reply"},
                {"action": "explode"},
                {"action": "disconnect", "stage": "helo"},
                {"action": "reply", "code": 451, "text": "two\r\nlines"},
                {"action": "accept", "extra": 1}
            ]}),
        )
        .await;
    let body = problem(response, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["code"], "validation_failed");
    let errors = body["errors"].as_object().unwrap();
    let mut fields: Vec<&str> = errors.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        vec![
            "responses[0].code",
            "responses[1].code",
            "responses[2].action",
            "responses[3].stage",
            "responses[4].text",
            "responses[5]"
        ]
    );
    problem(api.get(path).await, StatusCode::NOT_FOUND).await;

    // The library API sets the same rules.
    sink.set_recipient_chaos(
        "lib@example.com",
        vec![ChaosResponse::reply(Stage::Data, 451)],
    )
    .unwrap();
    script(&api, "x@example.com", json!([{"action": "accept"}])).await;
    let listed = api.json("/api/v1/chaos/recipients", StatusCode::OK).await;
    let emails: Vec<&str> = listed["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| rule["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec!["lib@example.com", "x@example.com"]);
    assert_eq!(listed["recipients"][0]["responses"][0]["stage"], "data");

    let response = api.delete(path, None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(sink.chaos_rules().len(), 1);
    let response = api.delete("/api/v1/chaos/recipients", None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(sink.chaos_rules().is_empty());
}
