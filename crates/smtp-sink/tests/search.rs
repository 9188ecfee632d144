//! `GET`/`DELETE /api/v1/search` with Mailpit's query words.

use reqwest::StatusCode;

use crate::support::{Api, problem, send, start};

/// Three mails; returns their subjects' IDs in sending order.
async fn three_mails(sink: &smtp_sink::Sink, api: &Api) -> [String; 3] {
    send(
        sink,
        "shop@example.com",
        &["alice@example.com"],
        "From: Shop <shop@example.com>\r\nTo: alice@example.com\r\n\
         Subject: Welcome aboard\r\n\r\nHi Alice\r\n",
    );
    send(
        sink,
        "auth@example.com",
        &["bob@example.com"],
        "From: auth@example.com\r\nTo: Bob <bob@example.com>\r\n\
         Subject: =?UTF-8?Q?Password_reset?=\r\n\r\nYour code is 123456\r\n",
    );
    send(
        sink,
        "news@example.com",
        &["carol@example.com", "alice@example.com"],
        "From: news@example.com\r\nTo: carol@example.com\r\nCc: alice@example.com\r\n\
         Subject: Weekly digest\r\n\r\nhello world zebra-token\r\n",
    );
    let ids = api.ids("/api/v1/messages").await;
    [ids[2].clone(), ids[1].clone(), ids[0].clone()]
}

async fn found(api: &Api, query: &str) -> Vec<String> {
    let encoded: String = query
        .bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect();
    api.ids(&format!("/api/v1/search?query={encoded}")).await
}

#[tokio::test]
async fn search_by_recipient_sender_subject_and_text() {
    let sink = start();
    let api = Api::of(&sink);
    let [welcome, reset, digest] = three_mails(&sink, &api).await;

    assert_eq!(
        found(&api, "to:alice@example.com").await,
        vec![welcome.clone()]
    );
    assert_eq!(found(&api, "TO:Bob").await, vec![reset.clone()]);
    assert_eq!(
        found(&api, "cc:alice@example.com").await,
        vec![digest.clone()]
    );
    assert_eq!(
        found(&api, "addressed:alice@example.com").await,
        vec![digest.clone(), welcome.clone()]
    );
    assert_eq!(
        found(&api, "rcpt:alice@example.com").await,
        vec![digest.clone(), welcome.clone()]
    );
    assert_eq!(
        found(&api, "from:auth@example.com").await,
        vec![reset.clone()]
    );
    assert_eq!(
        found(&api, r#"subject:"password reset""#).await,
        vec![reset.clone()]
    );
    assert_eq!(found(&api, "zebra-token").await, vec![digest.clone()]);
    assert_eq!(found(&api, r#""hello world""#).await, vec![digest.clone()]);
    assert_eq!(
        found(&api, "-to:alice@example.com").await,
        vec![digest.clone(), reset.clone()]
    );
    assert_eq!(
        found(&api, "from:example.com !subject:digest").await,
        vec![reset.clone(), welcome.clone()]
    );
    assert!(found(&api, "to:nobody@example.com").await.is_empty());

    let page = api
        .json(
            "/api/v1/search?query=addressed%3Aalice%40example.com&limit=1",
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["messages_count"], 2);
    assert_eq!(page["count"], 1);
    assert_eq!(page["total"], 3);

    let response = api.get("/api/v1/search?query=%20").await;
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(body["code"], "bad_request");
    problem(api.get("/api/v1/search").await, StatusCode::BAD_REQUEST).await;
}

#[tokio::test]
async fn delete_by_search_removes_only_matches() {
    let sink = start();
    let api = Api::of(&sink);
    let [welcome, _reset, digest] = three_mails(&sink, &api).await;

    let response = api
        .delete("/api/v1/search?query=to%3Abob%40example.com", None)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api.ids("/api/v1/messages").await, vec![digest, welcome]);
    problem(
        api.delete("/api/v1/search?query=", None).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(sink.messages().len(), 2);
}
