//! `/templates`: versions, previews that name what is missing, archiving; admins only.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

fn reminder(subject: &str) -> Value {
    json!({
        "description": "The day before",
        "default_locale": "en",
        "locales": {
            "en": {"subject": subject, "text": "Hello {{ name }}, see you at {{ venue }}.\n",
                   "html": "<p>Hello {{ name }}, see you at {{ venue }}.</p>"},
            "es": {"subject": "Mañana", "text": "Hola {{ name }}, nos vemos en {{ venue }}.\n"}
        },
        "sample_data": {"name": "Ada", "venue": "The Hatchery"}
    })
}

#[tokio::test]
async fn editing_adds_versions_and_archiving_stops_sends() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let admin = ada();
    let admin = app.with_token(&admin);
    let mut body = reminder("Tomorrow");
    body["key"] = json!("events.reminder");
    let created = admin.post_json(TEMPLATES, &body).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        created.headers()["location"],
        "/api/mail/v1/templates/events.reminder"
    );
    let created: Value = json(created).await;
    assert_eq!(
        (
            created["version"].as_u64(),
            created["latest_version"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(created["locales"]["es"]["subject"], "Mañana");
    assert!(created["locales"]["es"]["html"].is_null());

    let path = format!("{TEMPLATES}/events.reminder");
    let updated = admin
        .request(reqwest::Method::PUT, &path)
        .json(&reminder("Tomorrow: {{ venue }}"))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
    let updated: Value = json(updated).await;
    assert_eq!(updated["version"], 2);
    let first: Value = json(admin.get(&format!("{path}?version=1")).await).await;
    assert_eq!(first["locales"]["en"]["subject"], "Tomorrow");
    assert_eq!(first["latest_version"], 2);
    assert_eq!(
        admin.get(&format!("{path}?version=3")).await.status(),
        StatusCode::NOT_FOUND
    );

    // Mail records the version it used.
    let to = unique_email("reminded");
    let sent: Value = json(
        send(
            &app,
            &ada(),
            &json!({"template": "events.reminder", "data": {"name": "Bob", "venue": "Room 2"},
                    "recipients": [{"email": to}]}),
        )
        .await,
    )
    .await;
    let id = sent["messages"][0]["id"].as_str().unwrap().to_owned();
    let message = wait_for_status(&app, &id, "sent").await;
    assert_eq!(message["template_version"], 2);
    assert_eq!(
        wait_for_mail(&sink, &to).await.subject().as_deref(),
        Some("Tomorrow: Room 2")
    );

    // Archived: kept, no longer listed, and sends naming it are refused.
    assert_eq!(admin.delete(&path).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(admin.delete(&path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(admin.get(&path).await.status(), StatusCode::NOT_FOUND);
    let listed: Value = json(admin.get(TEMPLATES).await).await;
    let keys: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["key"].as_str().unwrap())
        .collect();
    assert!(
        !keys.contains(&"events.reminder") && keys.contains(&"auth.verify_email"),
        "{keys:?}"
    );
    let with_archived: Value = json(admin.get(&format!("{TEMPLATES}?archived=true")).await).await;
    let archived = with_archived["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == "events.reminder")
        .expect("the archived template is listed");
    assert!(archived["archived_at"].is_string(), "{archived}");
    let refused = send(
        &app,
        &ada(),
        &json!({"template": "events.reminder", "data": {"name": "Bob", "venue": "x"},
                "recipients": [{"email": to}]}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(refused).await;
    assert_eq!(problem["code"], "template_archived");

    // The key stays taken; editing restores it.
    let again = admin.post_json(TEMPLATES, &body).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let restored: Value = json(
        admin
            .request(reqwest::Method::PUT, &path)
            .json(&reminder("Back"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (
            restored["version"].as_u64(),
            restored["archived_at"].is_null()
        ),
        (Some(3), true)
    );
}

#[tokio::test]
async fn previews_name_what_is_missing_broken_templates_are_refused_and_only_admins_manage() {
    let sink = sink(10);
    let app = spawn(&sink).await;
    let admin = ada();
    let admin = app.with_token(&admin);
    let render = format!("{TEMPLATES}/auth.verify_email/render");

    // The sample data, in the default locale.
    let preview: Value = json(admin.post_json(&render, &json!({})).await).await;
    assert_eq!(preview["subject"], "Confirm your email address");
    assert_eq!(preview["locale"], "en");
    assert!(
        preview["text"]
            .as_str()
            .unwrap()
            .contains("expires on 2026-12-02 10:00 UTC")
    );
    // (The HTML part escapes `/` too, as `&#x2f;`: still the same link in any HTML reader.)
    let html = preview["html"].as_str().unwrap().replace("&#x2f;", "/");
    assert!(
        html.contains("href=\"http://127.0.0.1:8001/verify-email?token=sample-token\""),
        "{html}"
    );

    // Spanish, also for a regional tag; the HTML is escaped, the text is not.
    let data = json!({"name": "Zoë & <Co>", "email": "z@example.test", "url": "https://x.test/?a=1&b=2",
                      "expires_at": "2026-12-02T10:00:00Z"});
    let spanish: Value = json(
        admin
            .post_json(&render, &json!({"locale": "es-MX", "data": data}))
            .await,
    )
    .await;
    assert_eq!(spanish["locale"], "es");
    assert_eq!(spanish["subject"], "Confirma tu dirección de correo");
    assert!(
        spanish["text"]
            .as_str()
            .unwrap()
            .contains("Hola Zoë & <Co>:")
    );
    assert!(
        spanish["text"]
            .as_str()
            .unwrap()
            .contains("https://x.test/?a=1&b=2")
    );
    let html = spanish["html"].as_str().unwrap().replace("&#x2f;", "/");
    assert!(
        html.contains("Hola Zoë &amp; &lt;Co&gt;:") && html.contains("?a=1&amp;b=2"),
        "{html}"
    );

    // A variable the data lacks: named, never a blank.
    let missing = admin
        .post_json(&render, &json!({"data": {"name": "Ada", "email": "a@example.test", "expires_at": "2026-12-02T10:00:00Z"}}))
        .await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(missing).await;
    assert_eq!(problem["code"], "missing_variable");
    let message = problem["errors"]["data.url"][0].as_str().unwrap();
    assert!(
        message.contains("`url` is missing") && message.contains("en text"),
        "{problem}"
    );

    let unknown = admin
        .post_json(&format!("{TEMPLATES}/nope/render"), &json!({}))
        .await;
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);

    // Broken templates are refused, naming the part.
    {
        let admin = ada();
        let admin = app.with_token(&admin);
        let response = admin
            .post_json(
                TEMPLATES,
                &json!({
                    "key": "Bad Key",
                    "default_locale": "fr",
                    "locales": {
                        "en": {"subject": "{{ unclosed", "text": "fine", "html": "{% if %}"},
                        "english": {"subject": "x", "text": "y"}
                    }
                }),
            )
            .await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = json(response).await;
        for field in ["key", "default_locale", "locales.english"] {
            assert!(problem["errors"][field].is_array(), "{field}: {problem}");
        }
        let response = admin
        .post_json(
            TEMPLATES,
            &json!({"key": "broken", "default_locale": "en",
                    "locales": {"en": {"subject": "{{ unclosed", "text": "fine", "html": "{% if %}"}}}),
        )
        .await;
        let problem: Value = json(response).await;
        let subject = problem["errors"]["locales.en.subject"][0].as_str().unwrap();
        assert!(subject.contains("line 1"), "{problem}");
        assert!(problem["errors"]["locales.en.html"].is_array(), "{problem}");
        assert!(
            problem["errors"].get("locales.en.text").is_none(),
            "{problem}"
        );
        let listed: Value = json(
            admin
                .get(&format!("{TEMPLATES}?archived=true&limit=100"))
                .await,
        )
        .await;
        assert_eq!(
            listed["items"].as_array().unwrap().len(),
            6,
            "only the demo templates"
        );
    }

    // Admins only.
    assert_eq!(app.get(TEMPLATES).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.with_token(&bob()).get(TEMPLATES).await.status(),
        StatusCode::FORBIDDEN
    );
    let (_, sender) = service(Some("mail:send"));
    assert_eq!(
        app.with_token(&sender).get(TEMPLATES).await.status(),
        StatusCode::FORBIDDEN
    );
    let mut body = reminder("x");
    body["key"] = json!("sneaky");
    assert_eq!(
        app.with_token(&bob())
            .post_json(TEMPLATES, &body)
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
}
