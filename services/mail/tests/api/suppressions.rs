//! The suppression list: suppressed mail is recorded, not sent; a released address gets mail
//! again; one-click unsubscribe stops notifications, not account mail.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

#[tokio::test]
async fn a_suppressed_address_gets_no_mail_until_released_even_if_suppressed_while_waiting() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let to = unique_email("blocked");
    let admin = ada();
    let admin = app.with_token(&admin);
    let added = admin
        .post_json(
            SUPPRESSIONS,
            &json!({"email": to.to_uppercase(), "note": "asked by phone"}),
        )
        .await;
    assert_eq!(added.status(), StatusCode::CREATED);
    let added: Value = json(added).await;
    assert_eq!(added["email"], to.as_str());
    assert_eq!(
        (added["reason"].as_str(), added["active"].as_bool()),
        (Some("manual"), Some(true))
    );

    let accepted = send_verification(&app, &[to.clone(), unique_email("free")]).await;
    assert_eq!(accepted[0]["status"], "suppressed");
    assert_eq!(accepted[1]["status"], "queued");
    let suppressed = message(&app, accepted[0]["id"].as_str().unwrap()).await;
    assert_eq!(suppressed["status"], "suppressed");
    assert_eq!(kinds(&suppressed), ["queued", "suppressed"]);
    assert!(
        suppressed["timeline"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("manual")
    );
    wait_for_status(&app, accepted[1]["id"].as_str().unwrap(), "sent").await;
    assert!(mail_to(&sink, &to).is_empty());

    // Released: kept on the list, marked, and mail flows again.
    let entry = format!("{SUPPRESSIONS}/{}", added["id"].as_str().unwrap());
    assert_eq!(admin.delete(&entry).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&entry).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(admin.get(&entry).await.status(), StatusCode::NOT_FOUND);
    let released: Value = json(
        admin
            .get(&format!("{SUPPRESSIONS}?email={to}&active=false"))
            .await,
    )
    .await;
    assert_eq!(released["items"][0]["active"], false);
    assert!(released["items"][0]["released_at"].is_string());
    let again = send_verification(&app, std::slice::from_ref(&to)).await;
    wait_for_status(&app, again[0]["id"].as_str().unwrap(), "sent").await;
    assert_eq!(mail_to(&sink, &to).len(), 1);

    let active: Value = json(
        admin
            .get(&format!("{SUPPRESSIONS}?email={to}&active=true"))
            .await,
    )
    .await;
    assert_eq!(active["items"], json!([]));
    let all: Value = json(admin.get(&format!("{SUPPRESSIONS}?email={to}")).await).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
    let invalid = admin
        .post_json(SUPPRESSIONS, &json!({"email": "nope", "reason": "because"}))
        .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.with_token(&bob()).get(SUPPRESSIONS).await.status(),
        StatusCode::FORBIDDEN
    );

    // Suppressed while its message waits (scheduled): checked again before sending.
    {
        let to = unique_email("late-block");
        let at = (chrono::Utc::now() + chrono::Duration::milliseconds(600)).to_rfc3339();
        let response = send(
        &app,
        &ada(),
        &json!({"template": "auth.verify_email", "data": verification_data(), "recipients": [{"email": to}], "send_at": at}),
    )
    .await;
        let accepted: Value = json(response).await;
        assert_eq!(accepted["messages"][0]["status"], "queued");
        let added = app
            .with_token(&ada())
            .post_json(SUPPRESSIONS, &json!({"email": to, "reason": "complaint"}))
            .await;
        assert_eq!(added.status(), StatusCode::CREATED);
        let suppressed = wait_for_status(
            &app,
            accepted["messages"][0]["id"].as_str().unwrap(),
            "suppressed",
        )
        .await;
        assert_eq!(suppressed["attempts"], 0);
        assert!(
            suppressed["timeline"][1]["detail"]
                .as_str()
                .unwrap()
                .contains("complaint")
        );
        assert!(mail_to(&sink, &to).is_empty());
    }
}

#[tokio::test]
async fn one_click_unsubscribe_stops_notifications_but_not_account_mail() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let to = unique_email("unsubscriber");
    let notify = |category: &'static str| {
        json!({"template": "auth.verify_email", "data": verification_data(), "recipients": [{"email": to}],
               "category": category})
    };
    let first: Value = json(send(&app, &ada(), &notify("notification")).await).await;
    wait_for_status(&app, first["messages"][0]["id"].as_str().unwrap(), "sent").await;
    let mail = wait_for_mail(&sink, &to).await;
    let header = mail.header("List-Unsubscribe").unwrap();
    let link = header.trim_start_matches('<').trim_end_matches('>');
    let path = link.strip_prefix("http://127.0.0.1:8002").unwrap();

    // A person following the link sees a page; nothing happens until the button is pressed.
    let page = app.get(path).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<form method=\"post\">")
    );
    // What a mailbox provider sends (RFC 8058).
    let one_click = app
        .client
        .post(app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status(), StatusCode::OK);
    let again = app.client.post(app.url(path)).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    let entries: Value = json(
        app.with_token(&ada())
            .get(&format!("{SUPPRESSIONS}?email={to}"))
            .await,
    )
    .await;
    assert_eq!(
        entries["items"].as_array().unwrap().len(),
        1,
        "repeating it adds nothing"
    );
    assert_eq!(entries["items"][0]["reason"], "unsubscribe");
    assert_eq!(entries["items"][0]["category"], "notification");

    let notification: Value = json(send(&app, &ada(), &notify("notification")).await).await;
    assert_eq!(notification["messages"][0]["status"], "suppressed");
    let account: Value = json(send(&app, &ada(), &notify("transactional")).await).await;
    assert_eq!(account["messages"][0]["status"], "queued");
    wait_for_status(&app, account["messages"][0]["id"].as_str().unwrap(), "sent").await;
    assert_eq!(mail_to(&sink, &to).len(), 2);

    // A forged or truncated link is refused.
    let forged = app
        .client
        .post(app.url(&format!("{}x", path.trim_end_matches(|c| c != '.'))))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::UNPROCESSABLE_ENTITY);
}
