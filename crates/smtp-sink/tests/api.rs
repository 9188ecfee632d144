//! Mailpit's v1 API: a real multipart mail sent over SMTP, read back over HTTP.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::support::{Api, Client, problem, send, simple, start};

const SUBJECT: &str = "Your order ✓ — Ünïcödé";
const HTML: &str =
    "<p>Hello <b>Alice</b>, your order ✓ is confirmed.</p><img src=\"cid:logo@shop\">";

fn invoice() -> Vec<u8> {
    // Binary content, every byte value, so a decoding slip changes the checksum.
    let mut bytes = b"%PDF-1.4\n".to_vec();
    bytes.extend((0..=255u8).cycle().take(3000));
    bytes
}

fn logo() -> Vec<u8> {
    b"\x89PNG\r\n\x1a\n fake image bytes".to_vec()
}

/// What a service sends: text and HTML alternatives (quoted-printable, base64) around an
/// inline image, an attachment, and an RFC 2047 subject and display name.
fn order_mail() -> String {
    let wrap = |data: &[u8]| {
        BASE64
            .encode(data)
            .as_bytes()
            .chunks(76)
            .map(|line| format!("{}\r\n", String::from_utf8_lossy(line)))
            .collect::<String>()
    };
    format!(
        "From: \"Shop Team\" <shop@example.com>\r\n\
         To: =?UTF-8?Q?Alice_=C3=84rger?= <alice@example.com>\r\n\
         Cc: Bob <bob@example.com>\r\n\
         Reply-To: help@example.com\r\n\
         Subject: =?UTF-8?B?{subject}?=\r\n\
         Message-ID: <order-1@shop.example.com>\r\n\
         Date: Tue, 01 Dec 2026 10:00:00 +0100\r\n\
         List-Unsubscribe: <https://shop.example.com/unsubscribe?u=1>,\r\n <mailto:unsubscribe@shop.example.com>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"mixed-b\"\r\n\
         \r\n\
         --mixed-b\r\n\
         Content-Type: multipart/related; boundary=\"related-b\"\r\n\
         \r\n\
         --related-b\r\n\
         Content-Type: multipart/alternative; boundary=\"alt-b\"\r\n\
         \r\n\
         --alt-b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\
         \r\n\
         Hello Alice, your order =E2=9C=93 is con=\r\n\
         firmed.\r\n\
         .A line starting with a dot.\r\n\
         --alt-b\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {html}\
         --alt-b--\r\n\
         --related-b\r\n\
         Content-Type: image/png\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-ID: <logo@shop>\r\n\
         Content-Disposition: inline\r\n\
         \r\n\
         {logo}\
         --related-b--\r\n\
         --mixed-b\r\n\
         Content-Type: application/pdf; name=\"invoice.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         \r\n\
         {invoice}\
         --mixed-b--\r\n",
        subject = BASE64.encode(SUBJECT),
        html = wrap(HTML.as_bytes()),
        logo = wrap(&logo()),
        invoice = wrap(&invoice()),
    )
}

fn address(value: &Value) -> (String, String) {
    (
        value["Name"].as_str().unwrap_or_default().to_string(),
        value["Address"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test]
async fn multipart_mail_is_listed_and_read_back() {
    let sink = start();
    let api = Api::of(&sink);
    let raw = order_mail();
    send(
        &sink,
        "bounces@shop.example.com",
        &["alice@example.com", "bob@example.com", "audit@example.com"],
        &raw,
    );

    // The list: Mailpit's page shape and summary fields.
    let page = api.json("/api/v1/messages", StatusCode::OK).await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["unread"], 1);
    assert_eq!(page["messages_count"], 1);
    assert_eq!(page["count"], 1);
    assert_eq!(page["start"], 0);
    let summary = &page["messages"][0];
    let id = summary["ID"].as_str().expect("ID").to_string();
    assert_eq!(summary["MessageID"], "order-1@shop.example.com");
    assert_eq!(summary["Subject"], SUBJECT);
    assert_eq!(summary["Read"], false);
    assert_eq!(
        address(&summary["From"]),
        ("Shop Team".into(), "shop@example.com".into())
    );
    assert_eq!(
        address(&summary["To"][0]),
        ("Alice Ärger".into(), "alice@example.com".into())
    );
    assert_eq!(address(&summary["Cc"][0]).1, "bob@example.com");
    // Envelope-only recipients show up as Bcc, as in Mailpit.
    assert_eq!(summary["Bcc"].as_array().unwrap().len(), 1);
    assert_eq!(address(&summary["Bcc"][0]).1, "audit@example.com");
    assert_eq!(address(&summary["ReplyTo"][0]).1, "help@example.com");
    assert_eq!(summary["Attachments"], 1);
    assert_eq!(summary["Size"], raw.len());
    assert_eq!(
        summary["Snippet"],
        "Hello Alice, your order ✓ is confirmed. .A line starting with a dot."
    );
    assert!(summary["Created"].as_str().unwrap().ends_with('Z'));
    assert_eq!(summary["Envelope"]["From"], "bounces@shop.example.com");
    assert_eq!(
        summary["Envelope"]["To"],
        json!(["alice@example.com", "bob@example.com", "audit@example.com"])
    );

    // The full message, decoded.
    let message = api
        .json(&format!("/api/v1/message/{id}"), StatusCode::OK)
        .await;
    assert_eq!(message["ID"], id.as_str());
    assert_eq!(message["Subject"], SUBJECT);
    assert_eq!(
        message["Text"],
        // The line break before a boundary belongs to the boundary.
        "Hello Alice, your order ✓ is confirmed.\r\n.A line starting with a dot."
    );
    assert_eq!(message["HTML"], HTML);
    assert_eq!(message["Date"], "2026-12-01T10:00:00+01:00");
    assert_eq!(message["ReturnPath"], "bounces@shop.example.com");
    assert_eq!(
        message["ListUnsubscribe"]["Links"],
        json!([
            "https://shop.example.com/unsubscribe?u=1",
            "mailto:unsubscribe@shop.example.com"
        ])
    );
    let attachment = &message["Attachments"][0];
    assert_eq!(message["Attachments"].as_array().unwrap().len(), 1);
    assert_eq!(attachment["FileName"], "invoice.pdf");
    assert_eq!(attachment["ContentType"], "application/pdf");
    assert_eq!(attachment["Size"], invoice().len());
    let sha256: String = sha2::Sha256::digest(invoice())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(attachment["Checksums"]["SHA256"], sha256.as_str());
    let inline = &message["Inline"][0];
    assert_eq!(inline["ContentID"], "logo@shop");
    assert_eq!(inline["ContentType"], "image/png");

    // Reading it marked it read.
    let page = api.json("/api/v1/messages", StatusCode::OK).await;
    assert_eq!(page["unread"], 0);
    assert_eq!(page["messages"][0]["Read"], true);

    // Raw bytes exactly as sent (dot-stuffing undone).
    let raw_back = api.get(&format!("/api/v1/message/{id}/raw")).await;
    assert_eq!(raw_back.status(), StatusCode::OK);
    assert_eq!(raw_back.bytes().await.unwrap().as_ref(), raw.as_bytes());
    let download = api.get(&format!("/api/v1/message/{id}/raw?dl=1")).await;
    assert_eq!(
        download.headers()["content-disposition"],
        format!("attachment; filename=\"{id}.eml\"").as_str()
    );

    // Attachments download decoded.
    let part_id = attachment["PartID"].as_str().unwrap();
    let file = api
        .get(&format!("/api/v1/message/{id}/part/{part_id}"))
        .await;
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.headers()["content-type"], "application/pdf");
    assert_eq!(file.bytes().await.unwrap().as_ref(), invoice().as_slice());

    // Headers: raw values under canonical names.
    let headers = api
        .json(&format!("/api/v1/message/{id}/headers"), StatusCode::OK)
        .await;
    assert_eq!(headers["Message-Id"], json!(["<order-1@shop.example.com>"]));
    assert_eq!(
        headers["Subject"],
        json!([format!("=?UTF-8?B?{}?=", BASE64.encode(SUBJECT))])
    );
    assert_eq!(headers["Mime-Version"], json!(["1.0"]));

    // The rendered views: HTML with the inline image linked to its part, and text.
    let view = api.get(&format!("/view/{id}.html")).await;
    assert_eq!(view.status(), StatusCode::OK);
    let policy = view.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(policy.starts_with("sandbox"), "{policy}");
    let inline_part = inline["PartID"].as_str().unwrap();
    assert_eq!(
        view.text().await.unwrap(),
        HTML.replace(
            "cid:logo@shop",
            &format!("/api/v1/message/{id}/part/{inline_part}")
        )
    );
    let image = api
        .get(&format!("/api/v1/message/{id}/part/{inline_part}"))
        .await;
    assert_eq!(image.bytes().await.unwrap().as_ref(), logo().as_slice());
    assert_eq!(
        api.text(&format!("/view/{id}.txt")).await,
        message["Text"].as_str().unwrap()
    );
    // `latest` names the newest message.
    let latest = api.json("/api/v1/message/latest", StatusCode::OK).await;
    assert_eq!(latest["ID"], id.as_str());

    // In process, the same decoding.
    let kept = sink.messages();
    assert_eq!(kept[0].subject().as_deref(), Some(SUBJECT));
    assert_eq!(kept[0].html_body().as_deref(), Some(HTML));
}

#[tokio::test]
async fn plain_text_mail_has_no_html_and_latin1_is_decoded() {
    let sink = start();
    let api = Api::of(&sink);
    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    client.expect("MAIL FROM:<a@example.com>", "250");
    client.expect("RCPT TO:<b@example.com>", "250");
    client.expect("DATA", "354");
    // ISO-8859-1 bytes, sent 8-bit.
    let mut content = b"From: a@example.com\r\nTo: b@example.com\r\n\
        Subject: =?ISO-8859-1?Q?Gr=FC=DFe?=\r\n\
        Content-Type: text/plain; charset=iso-8859-1\r\n\r\nSch\xf6ne Gr\xfc\xdfe\r\n"
        .to_vec();
    content.extend_from_slice(b".\r\n");
    client.send_raw(&content);
    assert!(client.read_reply().starts_with("250 "));

    let message = api.json("/api/v1/message/latest", StatusCode::OK).await;
    assert_eq!(message["Subject"], "Grüße");
    assert_eq!(message["Text"], "Schöne Grüße\r\n");
    assert_eq!(message["HTML"], "");
    assert_eq!(message["Attachments"], json!([]));
    let id = message["ID"].as_str().unwrap();
    let view = api.get(&format!("/view/{id}.html")).await;
    problem(view, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn messages_are_deleted_by_id_or_all_and_bad_bodies_delete_nothing() {
    let sink = start();
    let api = Api::of(&sink);
    for n in 1..=3 {
        send(
            &sink,
            "a@example.com",
            &["b@example.com"],
            &simple("a@example.com", "b@example.com", &format!("n{n}"), "x"),
        );
    }
    let ids = api.ids("/api/v1/messages").await;
    assert_eq!(ids.len(), 3);

    // A malformed body is refused and loses nothing.
    let response = api.delete("/api/v1/messages", Some("{\"IDs\": [")).await;
    problem(response, StatusCode::BAD_REQUEST).await;
    let response = api
        .delete("/api/v1/messages", Some("{\"IDs\": [\"abc\"]}"))
        .await;
    problem(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(api.ids("/api/v1/messages").await.len(), 3);

    let response = api
        .delete(
            "/api/v1/messages",
            Some(&json!({"IDs": [ids[1].clone()]}).to_string()),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "ok");
    assert_eq!(
        api.ids("/api/v1/messages").await,
        vec![ids[0].clone(), ids[2].clone()]
    );
    let gone = api.get(&format!("/api/v1/message/{}", ids[1])).await;
    let body = problem(gone, StatusCode::NOT_FOUND).await;
    assert_eq!(body["code"], "not_found");
    assert_eq!(sink.messages().len(), 2);

    // No body: everything.
    let response = api.delete("/api/v1/messages", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = api.json("/api/v1/messages", StatusCode::OK).await;
    assert_eq!(page["total"], 0);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn list_pages_newest_first_and_read_state_can_be_set() {
    let sink = start();
    let api = Api::of(&sink);
    for n in 1..=5 {
        send(
            &sink,
            "a@example.com",
            &["b@example.com"],
            &simple("a@example.com", "b@example.com", &format!("n{n}"), "x"),
        );
    }
    let all = api.ids("/api/v1/messages").await;
    let subjects: Vec<String> = api.json("/api/v1/messages", StatusCode::OK).await["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Subject"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(subjects, vec!["n5", "n4", "n3", "n2", "n1"]);
    let page = api
        .json("/api/v1/messages?start=1&limit=2", StatusCode::OK)
        .await;
    assert_eq!(crate::support::ids(&page), all[1..3].to_vec());
    assert_eq!(page["start"], 1);
    assert_eq!(page["count"], 2);
    assert_eq!(page["messages_count"], 5);
    assert_eq!(page["total"], 5);

    let response = api.get("/api/v1/messages?limit=lots").await;
    let body = problem(response, StatusCode::BAD_REQUEST).await;
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");

    let response = api
        .put(
            "/api/v1/messages",
            &json!({"Read": true, "IDs": [all[0].clone()]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page = api.json("/api/v1/messages", StatusCode::OK).await;
    assert_eq!(page["unread"], 4);
    assert_eq!(page["messages"][0]["Read"], true);
    let response = api.put("/api/v1/messages", &json!({"Read": true})).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        api.json("/api/v1/messages", StatusCode::OK).await["unread"],
        0
    );
}

#[tokio::test]
async fn unknown_paths_and_messages_are_problems_and_the_ui_is_served() {
    let sink = start();
    let api = Api::of(&sink);
    problem(api.get("/api/v1/message/42").await, StatusCode::NOT_FOUND).await;
    problem(
        api.get("/api/v1/message/latest").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        api.get("/api/v1/message/x/raw").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(api.get("/view/1.pdf").await, StatusCode::NOT_FOUND).await;
    problem(api.get("/nowhere").await, StatusCode::NOT_FOUND).await;

    let page = api.get("/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    assert!(html.contains("/api/v1/messages"), "the page reads the API");
    assert!(
        !html.contains("https://"),
        "the page loads nothing from elsewhere"
    );
    assert_eq!(api.text("/readyz").await, "ok");
}
