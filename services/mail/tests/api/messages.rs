//! `POST /messages` and reading messages: one message per recipient, refusals that store
//! nothing, who may send and read, idempotent retries, listings, scheduling and canceling.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

async fn count_messages(app: &testkit::TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_send_becomes_one_delivered_message_per_recipient() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let recipients: Vec<String> = (0..3).map(|i| unique_email(&format!("r{i}"))).collect();
    let response = app
        .with_token(&ada())
        .request(reqwest::Method::POST, MESSAGES)
        .header("x-request-id", "send-three-1")
        .json(&json!({
            "template": "auth.verify_email",
            "data": verification_data(),
            "recipients": [{"email": recipients[0], "name": "Zoë Zed"}, {"email": recipients[1]}, {"email": recipients[2]}],
            "tags": ["welcome"],
            "metadata": {"campaign": "spring"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = json(response).await;
    let messages = accepted["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    for (message, email) in messages.iter().zip(&recipients) {
        assert_eq!(message["email"], email.as_str());
        assert_eq!(message["status"], "queued");
        let id = message["id"].as_str().unwrap();
        let sent = wait_for_status(&app, id, "sent").await;
        assert_eq!(sent["attempts"], 1);
        assert!(
            sent["last_reply"].as_str().unwrap().starts_with("250"),
            "{sent}"
        );
        assert_eq!(sent["request_id"], "send-three-1");
        assert_eq!(sent["template"], "auth.verify_email");
        assert_eq!(sent["template_version"], 1);
        assert_eq!(sent["tags"], json!(["welcome"]));
        assert_eq!(sent["metadata"], json!({"campaign": "spring"}));
        assert_eq!(kinds(&sent), ["queued", "sent"]);
        let mail = wait_for_mail(&sink, email).await;
        assert_eq!(
            mail.header("Message-ID"),
            sent["message_id"].as_str().map(str::to_owned)
        );
        assert_eq!(
            mail.subject().as_deref(),
            Some("Confirm your email address")
        );
        let text = mail.text_body().unwrap();
        assert!(
            text.contains("https://hatchery.test/verify-email?token=t0k3n&x=1"),
            "{text}"
        );
        assert!(mail.html_body().unwrap().contains("token=t0k3n&amp;x=1"));
    }
    // The name is encoded (RFC 2047) in the header; the sink's API decodes it.
    let first = wait_for_mail(&sink, &recipients[0]).await;
    let to = first.header("To").unwrap();
    assert!(
        to.contains(&recipients[0]) && to.starts_with("=?utf-8?b?"),
        "{to}"
    );
    assert_eq!(sink.messages().len(), 3);
}

#[tokio::test]
async fn refused_sends_name_the_problem_and_store_nothing() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let admin = ada();
    let cases = [
        (
            json!({"template": "auth.verify_email", "data": {"name": "Ada", "email": "a@x.test", "expires_at": "2026-12-02T10:00:00Z"},
                   "recipients": [{"email": "ada@example.test"}]}),
            "missing_variable",
            "data.url",
        ),
        (
            json!({"template": "no.such_template", "recipients": [{"email": "ada@example.test"}]}),
            "unknown_template",
            "template",
        ),
        (
            json!({"template": "auth.verify_email", "data": verification_data(),
                   "recipients": [{"email": "ok@example.test"}, {"email": "not an address"}, {"name": "nobody"}],
                   "headers": {"Bcc": "x@example.test"}, "tags": ["bad tag"], "locale": "english"}),
            "validation_failed",
            "recipients[1].email",
        ),
        (
            json!({"template": "auth.verify_email", "data": verification_data(),
                   "recipients": [{"user_id": uuid::Uuid::now_v7()}]}),
            "unknown_user",
            "recipients[0].user_id",
        ),
    ];
    for (body, code, field) in cases {
        let response = send(&app, &admin, &body).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}"
        );
        let problem: Value = json(response).await;
        assert_eq!(problem["code"], code, "{problem}");
        assert!(problem["errors"][field].is_array(), "{field}: {problem}");
    }
    let problem: Value = json(
        send(
            &app,
            &admin,
            &json!({"template": "auth.verify_email", "data": verification_data(),
                    "recipients": [{"email": "ok@example.test"}, {"email": "not an address"}, {"name": "nobody"}],
                    "headers": {"Bcc": "x@example.test"}, "tags": ["bad tag"], "locale": "english"}),
        )
        .await,
    )
    .await;
    for field in ["recipients[2]", "headers.Bcc", "tags[0]", "locale"] {
        assert!(
            problem["errors"][field].is_array(),
            "every field at once: {field}: {problem}"
        );
    }

    // Not JSON at all, and JSON of the wrong shape.
    let malformed = app
        .with_token(&admin)
        .request(reqwest::Method::POST, MESSAGES)
        .header("content-type", "application/json")
        .body("{\"template\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let problem: Value = json(malformed).await;
    assert_eq!(problem["code"], "malformed_json");
    let shape = send(
        &app,
        &admin,
        &json!({"template": "auth.verify_email", "recipients": "ada@example.test"}),
    )
    .await;
    assert_eq!(shape.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(count_messages(&app).await, 0);
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn services_need_the_send_scope_read_only_their_own_and_can_retry_safely() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let body = json!({"template": "auth.verify_email", "data": verification_data(),
                      "recipients": [{"email": unique_email("scoped")}]});
    assert_eq!(
        app.post_json(MESSAGES, &body).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, &bob(), &body).await.status(),
        StatusCode::FORBIDDEN
    );
    let (_, unscoped) = service(Some("payments:read"));
    let refused = send(&app, &unscoped, &body).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = json(refused).await;
    assert_eq!(problem["code"], "insufficient_scope");

    let (client, sender) = service(Some("payments:read mail:send"));
    let accepted = send(&app, &sender, &body).await;
    assert_eq!(accepted.status(), StatusCode::ACCEPTED);
    let accepted: Value = json(accepted).await;
    let id = accepted["messages"][0]["id"].as_str().unwrap().to_owned();
    let mine: Value = json(
        app.with_token(&sender)
            .get(&format!("{MESSAGES}/{id}"))
            .await,
    )
    .await;
    assert_eq!(mine["sender"], client.to_string());

    // Another service sees none of it; the admin sees it.
    let (_, other) = service(Some("mail:send"));
    assert_eq!(
        app.with_token(&other)
            .get(&format!("{MESSAGES}/{id}"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let others: Value = json(app.with_token(&other).get(MESSAGES).await).await;
    assert_eq!(others["items"], json!([]));
    let listed: Value = json(app.with_token(&sender).get(MESSAGES).await).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(message(&app, &id).await["id"], id.as_str());
    // A retry with the same Idempotency-Key sends nothing more.
    let to = unique_email("once");
    let before = count_messages(&app).await;
    let body = json!({"template": "auth.verify_email", "data": verification_data(), "recipients": [{"email": to}]});
    let post = || {
        app.with_token(&sender)
            .request(reqwest::Method::POST, MESSAGES)
            .header("idempotency-key", "welcome-42")
            .json(&body)
            .send()
    };
    let first = post().await.unwrap();
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = json(first).await;
    let again = post().await.unwrap();
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = json(again).await;
    assert_eq!(again, first);
    wait_for_status(&app, first["messages"][0]["id"].as_str().unwrap(), "sent").await;
    assert_eq!(count_messages(&app).await, before + 1);
    assert_eq!(mail_to(&sink, &to).len(), 1);

    let reused = app
        .with_token(&sender)
        .request(reqwest::Method::POST, MESSAGES)
        .header("idempotency-key", "welcome-42")
        .json(&json!({"template": "auth.verify_email", "data": verification_data(), "recipients": [{"email": unique_email("other")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn platform_users_headers_and_attachments_reach_the_mail() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let to = unique_email("extras");
    let pdf = b"%PDF-1.4 not really\n";
    let response = send(
        &app,
        &ada(),
        &json!({
            "template": "auth.verify_email", "data": verification_data(),
            "recipients": [{"email": to}],
            "category": "notification",
            "headers": {"Reply-To": "Help Desk <help@hatchery.test>", "X-Campaign": "spring"},
            "attachments": [{"filename": "ticket.pdf", "content_type": "application/pdf",
                             "content": base64::engine::general_purpose::STANDARD.encode(pdf)}]
        }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let mail = wait_for_mail(&sink, &to).await;
    assert_eq!(mail.header("X-Campaign").as_deref(), Some("spring"));
    assert!(
        mail.header("Reply-To")
            .unwrap()
            .contains("help@hatchery.test")
    );
    let unsubscribe = mail.header("List-Unsubscribe").unwrap();
    assert!(
        unsubscribe.starts_with("<http://127.0.0.1:8002/api/mail/v1/unsubscribe?token="),
        "{unsubscribe}"
    );
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let raw = mail.text();
    assert!(
        raw.contains("filename=\"ticket.pdf\"") || raw.contains("filename=ticket.pdf"),
        "{raw}"
    );
    assert!(
        raw.contains("Content-Type: application/pdf") && raw.contains("%PDF-1.4 not really"),
        "{raw}"
    );
    assert!(mail.text_body().unwrap().contains("Hello Test Person"));

    // Too large together.
    let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; 600 * 1024]);
    let response = app
        .with_token(&ada())
        .post_json(
            MESSAGES,
            &json!({"template": "auth.verify_email", "data": verification_data(), "recipients": [{"email": to}],
                    "attachments": [{"filename": "big.bin", "content_type": "application/octet-stream", "content": big}]}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(response).await;
    assert!(problem["errors"]["attachments"].is_array(), "{problem}");

    // Bob is in the demo data of every service: his address comes from the local copy.
    let response = send(
        &app,
        &ada(),
        &json!({"template": "auth.reset_password", "locale": "es",
                "data": {"name": "Bob", "email": "bob@hatchery.test", "url": "https://x.test/r", "expires_at": "2026-12-01T11:00:00Z"},
                "recipients": [{"user_id": BOB}]}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let accepted: Value = json(response).await;
    assert_eq!(accepted["messages"][0]["email"], "bob@hatchery.test");
    let id = accepted["messages"][0]["id"].as_str().unwrap();
    let sent = wait_for_status(&app, id, "sent").await;
    assert_eq!(sent["user_id"], BOB);
    assert_eq!(sent["locale"], "es");
    assert_eq!(sent["to"]["name"], "Bob Baker");
    let mail = wait_for_mail(&sink, "bob@hatchery.test").await;
    assert_eq!(
        mail.subject().as_deref(),
        Some("Restablece tu contraseña de Hatchery")
    );
    assert!(mail.header("To").unwrap().contains("Bob Baker"));

    // Listed by user.
    let listed: Value = json(
        app.with_token(&ada())
            .get(&format!("{MESSAGES}?user_id={BOB}"))
            .await,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn listings_filter_and_page_and_scheduled_mail_can_be_canceled() {
    let sink = sink(50);
    let app = spawn(&sink).await;
    let repeated = unique_email("repeat");
    let mut recipients: Vec<String> = (0..20).map(|i| unique_email(&format!("l{i}"))).collect();
    recipients.push(repeated.clone());
    recipients.push(repeated.to_uppercase());
    let sent = send_verification(&app, &recipients).await;
    for message in &sent {
        wait_for_status(&app, message["id"].as_str().unwrap(), "sent").await;
    }
    let admin = ada();
    let admin = app.with_token(&admin);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{MESSAGES}?limit=7&cursor={c}"),
            None => format!("{MESSAGES}?limit=7"),
        };
        let page: Value = json(admin.get(&path).await).await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 22);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 22);

    let by_recipient: Value = json(
        admin
            .get(&format!("{MESSAGES}?recipient={}", repeated.to_uppercase()))
            .await,
    )
    .await;
    assert_eq!(by_recipient["items"].as_array().unwrap().len(), 2);
    let sent_ones: Value = json(
        admin
            .get(&format!(
                "{MESSAGES}?status=sent&template=auth.verify_email&limit=100"
            ))
            .await,
    )
    .await;
    assert_eq!(sent_ones["items"].as_array().unwrap().len(), 22);
    let none: Value = json(admin.get(&format!("{MESSAGES}?status=failed")).await).await;
    assert_eq!(none["items"], json!([]));
    let future = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let later: Value = json(admin.get(&format!("{MESSAGES}?since={future}")).await).await;
    assert_eq!(later["items"], json!([]));
    assert_eq!(
        admin.get(&format!("{MESSAGES}?status=lost")).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin
            .get(&format!("{MESSAGES}?cursor=garbage"))
            .await
            .status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        admin
            .get(&format!("{MESSAGES}/{}", uuid::Uuid::now_v7()))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    // Scheduled mail waits, and can be canceled until it is sent.
    let to = unique_email("later");
    let at = chrono::Utc::now() + chrono::Duration::hours(2);
    let response = send(
        &app,
        &ada(),
        &json!({"template": "auth.verify_email", "data": verification_data(), "recipients": [{"email": to}],
                "send_at": at.to_rfc3339()}),
    )
    .await;
    let accepted: Value = json(response).await;
    let id = accepted["messages"][0]["id"].as_str().unwrap().to_owned();
    let queued = message(&app, &id).await;
    assert_eq!(queued["status"], "queued");
    assert!(
        queued["timeline"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("scheduled for")
    );

    let cancel = format!("{MESSAGES}/{id}/cancel");
    let canceled = app.with_token(&ada()).post_json(&cancel, &json!({})).await;
    assert_eq!(canceled.status(), StatusCode::OK);
    let canceled: Value = json(canceled).await;
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(kinds(&canceled), ["queued", "canceled"]);
    let again = app.with_token(&ada()).post_json(&cancel, &json!({})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);

    // A sent message cannot be canceled either.
    let sent = send_verification(&app, &[unique_email("now")]).await;
    let sent_id = sent[0]["id"].as_str().unwrap();
    wait_for_status(&app, sent_id, "sent").await;
    let late = app
        .with_token(&ada())
        .post_json(&format!("{MESSAGES}/{sent_id}/cancel"), &json!({}))
        .await;
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert!(mail_to(&sink, &to).is_empty());
}
