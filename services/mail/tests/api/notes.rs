//! The notes API over HTTP, against a real Postgres database per test, with tokens minted by
//! testkit for the demo users.

use crate::common::{ADA, BOB, CLEO, ada, bob, cleo, demo_app};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json, tokens};
use uuid::Uuid;

const NOTES: &str = "/api/mail/v1/notes";
/// Ada's demo note.
const ADAS_NOTE: &str = "/api/mail/v1/notes/0193a000-0000-7000-8000-00000000a001";
/// One of Bob's demo notes.
const BOBS_NOTE: &str = "/api/mail/v1/notes/0193a000-0000-7000-8000-00000000a002";

fn titles(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn demo_scenario_is_listed_newest_first() {
    let app = demo_app().await;
    let response = app
        .with_token(&ada().mint())
        .get(&format!("{NOTES}?owner=all"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = json(response).await;
    assert_eq!(
        titles(&page),
        [
            "Workshop ideas",
            "Oven maintenance",
            "Bread order",
            "Welcome to Hatchery"
        ]
    );
    assert_eq!(page["next_cursor"], Value::Null);
}

#[tokio::test]
async fn everyone_lists_their_own_notes_by_default() {
    let app = demo_app().await;
    for (token, owner, expected) in [
        (bob().mint(), BOB, vec!["Oven maintenance", "Bread order"]),
        (cleo().mint(), CLEO, vec!["Workshop ideas"]),
        (ada().mint(), ADA, vec!["Welcome to Hatchery"]),
    ] {
        let page: Value = json(app.with_token(&token).get(NOTES).await).await;
        assert_eq!(titles(&page), expected, "{owner}");
        assert!(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["owner"] == owner)
        );
    }
}

#[tokio::test]
async fn every_notes_route_needs_a_bearer_token() {
    let app = demo_app().await;
    let forged = bob().admin().unsigned();
    for (method, path) in [
        ("GET", NOTES),
        ("POST", NOTES),
        ("GET", BOBS_NOTE),
        ("PATCH", BOBS_NOTE),
        ("DELETE", BOBS_NOTE),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for token in [None, Some(forged.as_str())] {
            let mut request = app
                .client
                .request(method.clone(), app.url(path))
                .json(&json!({"title": "x"}));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let problem: Value = json(response).await;
            assert_eq!(problem["code"], "unauthorized");
        }
    }
    // Nothing changed.
    let note: Value = json(app.with_token(&bob().mint()).get(BOBS_NOTE).await).await;
    assert_eq!(note["title"], "Bread order");
}

#[tokio::test]
async fn a_user_cannot_reach_another_users_notes() {
    let app = demo_app().await;
    let bob = bob().mint();
    let bob = app.with_token(&bob);
    // Someone else's note looks exactly like a note that does not exist.
    let missing = format!("{NOTES}/{}", Uuid::now_v7());
    let nothing: Value = json(bob.get(&missing).await).await;
    for response in [
        bob.get(ADAS_NOTE).await,
        bob.patch_json(ADAS_NOTE, &json!({"title": "mine now"}))
            .await,
        bob.delete(ADAS_NOTE).await,
    ] {
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let problem: Value = json(response).await;
        assert_eq!(
            (&problem["code"], &problem["detail"]),
            (&nothing["code"], &nothing["detail"])
        );
    }
    // Listing someone else's notes, or everyone's, is for admins.
    for query in [format!("owner={ADA}"), "owner=all".to_owned()] {
        let response = bob.get(&format!("{NOTES}?{query}")).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{query}");
        let problem: Value = json(response).await;
        assert_eq!(problem["code"], "forbidden");
    }
    let own: Value = json(bob.get(&format!("{NOTES}?owner={BOB}")).await).await;
    assert_eq!(own["items"].as_array().unwrap().len(), 2);
    let bad = bob.get(&format!("{NOTES}?owner=everyone")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // Ada's note is untouched, and Ada (admin) reaches Bob's.
    let ada = ada().mint();
    let ada = app.with_token(&ada);
    let note: Value = json(ada.get(ADAS_NOTE).await).await;
    assert_eq!(note["title"], "Welcome to Hatchery");
    let bobs: Value = json(ada.get(&format!("{NOTES}?owner={BOB}")).await).await;
    assert_eq!(titles(&bobs), ["Oven maintenance", "Bread order"]);
    let changed = ada
        .patch_json(BOBS_NOTE, &json!({"body": "60 baguettes"}))
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    let unknown: Value = json(ada.get(&format!("{NOTES}?owner={}", Uuid::now_v7())).await).await;
    assert_eq!(unknown["items"], json!([]));
}

#[tokio::test]
async fn a_first_time_user_is_created_from_the_token() {
    let app = demo_app().await;
    let newcomer = Uuid::now_v7();
    let token = tokens::user(newcomer)
        .email("nina@hatchery.test")
        .name("Nina New")
        .mint();
    let response = app
        .with_token(&token)
        .post_json(NOTES, &json!({"title": "My first note"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let note: Value = json(response).await;
    assert_eq!(note["owner"], newcomer.to_string());
    let user: (String, String) = sqlx::query_as("SELECT email, name FROM users WHERE uuid = $1")
        .bind(newcomer)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(user, ("nina@hatchery.test".into(), "Nina New".into()));
    let mine: Value = json(app.with_token(&token).get(NOTES).await).await;
    assert_eq!(titles(&mine), ["My first note"]);
}

#[tokio::test]
async fn a_signed_out_session_can_no_longer_use_the_api() {
    let app = demo_app().await;
    let session = Uuid::now_v7();
    let token = bob().session(session).mint();
    assert_eq!(
        app.with_token(&token).get(NOTES).await.status(),
        StatusCode::OK
    );
    let mut redis = redis::Client::open(crate::common::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    identity::revocation::revoke_session(&mut redis, session, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let response = app.with_token(&token).get(NOTES).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Another session of the same user carries on.
    assert_eq!(
        app.with_token(&bob().mint()).get(NOTES).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn pages_follow_the_cursor_without_gaps_or_repeats() {
    let app = demo_app().await;
    let bob = bob().mint();
    let bob = app.with_token(&bob);
    for i in 0..25 {
        let created = bob
            .post_json(NOTES, &json!({"title": format!("note {i}")}))
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("{NOTES}?limit=10&cursor={c}"),
            None => format!("{NOTES}?limit=10"),
        };
        let page: Value = json(bob.get(&path).await).await;
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            assert_eq!(item["owner"], BOB);
            seen.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 27, "25 new + 2 demo notes of Bob");
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len());
}

#[tokio::test]
async fn invalid_paging_is_a_422_naming_the_parameter() {
    let app = demo_app().await;
    let bob = bob().mint();
    let bob = app.with_token(&bob);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=garbage", "cursor"),
    ] {
        let response = bob.get(&format!("{NOTES}?{query}")).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        let problem: Value = json(response).await;
        assert!(problem["errors"][field].is_array(), "{query}: {problem}");
    }
    let response = bob.get(&format!("{NOTES}?limit=abc")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn create_read_update_and_soft_delete() {
    let app = demo_app().await;
    let ada = ada().mint();
    let ada = app.with_token(&ada);
    let response = ada
        .post_json(NOTES, &json!({"title": "  Plan  ", "body": "first"}))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let note: Value = json(response).await;
    assert_eq!(note["title"], "Plan");
    assert_eq!(note["owner"], ADA);
    let id = note["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let path = format!("{NOTES}/{id}");
    let fetched: Value = json(ada.get(&path).await).await;
    assert_eq!(fetched, note);

    let updated: Value = json(ada.patch_json(&path, &json!({"body": "second"})).await).await;
    assert_eq!(
        (updated["title"].as_str(), updated["body"].as_str()),
        (Some("Plan"), Some("second"))
    );

    assert_eq!(ada.delete(&path).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(ada.get(&path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(ada.delete(&path).await.status(), StatusCode::NOT_FOUND);
    let listed: Value = json(ada.get(NOTES).await).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["id"] != id.as_str())
    );

    // Soft delete: the row is still there, marked.
    let deleted_at: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT deleted_at FROM notes WHERE uuid = $1")
            .bind(uuid::Uuid::parse_str(&id).unwrap())
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert!(deleted_at.is_some());
}

#[tokio::test]
async fn invalid_notes_get_every_field_error_at_once() {
    let app = demo_app().await;
    let bob = bob().mint();
    let response = app
        .with_token(&bob)
        .post_json(NOTES, &json!({"title": " ", "body": "x".repeat(10_001)}))
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "validation_failed");
    for field in ["title", "body"] {
        assert!(problem["errors"][field].is_array(), "{field}: {problem}");
    }
    // The owner is whoever calls; a client still sending one is told.
    let response = app
        .with_token(&bob)
        .post_json(NOTES, &json!({"owner": ADA, "title": "sneaky"}))
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(response).await;
    assert!(problem.to_string().contains("owner"), "{problem}");
    assert_eq!(count_notes(&app).await, 4, "nothing stored");
}

async fn count_notes(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_get_problems() {
    let app = demo_app().await;
    let bob = bob().mint();
    let bob = app.with_token(&bob);
    let raw = bob
        .request(reqwest::Method::POST, NOTES)
        .header("content-type", "application/json")
        .body("{\"title\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let problem: Value = json(raw).await;
    assert_eq!(problem["code"], "malformed_json");
    assert!(problem["request_id"].is_string());

    let typed = bob.post_json(NOTES, &json!({"title": 42})).await;
    assert_eq!(typed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(typed).await;
    assert!(
        problem["errors"]["title"][0]
            .as_str()
            .unwrap()
            .contains("expected a string"),
        "{problem}"
    );

    // The fields' values in order, as an array, are not a note (serde alone would take them).
    let before = count_notes(&app).await;
    let array = bob.post_json(NOTES, &json!(["A title", "a body"])).await;
    assert_eq!(array.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(array).await;
    assert!(problem["errors"]["body"].is_array(), "{problem}");
    assert_eq!(count_notes(&app).await, before);

    let no_type = bob
        .request(reqwest::Method::POST, NOTES)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn malformed_ids_and_unknown_paths_are_404_problems() {
    let app = demo_app().await;
    let bob = bob().mint();
    let bob = app.with_token(&bob);
    for path in [
        "/api/mail/v1/notes/not-a-uuid",
        "/api/mail/v1/nothing-here",
    ] {
        let response = bob.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let response = bob
        .request(reqwest::Method::PUT, NOTES)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn populating_again_creates_nothing_and_keeps_changes() {
    let app = demo_app().await;
    let bob = bob().mint();
    let changed = app
        .with_token(&bob)
        .patch_json(BOBS_NOTE, &json!({"title": "Bread order (changed)"}))
        .await;
    assert_eq!(changed.status(), StatusCode::OK);

    let report = kit::service::populate::<mail::Mail>(
        &app.db,
        &testkit::workspace_root().join("populator"),
        "demo",
    )
    .await
    .unwrap();
    assert_eq!((report.created("users"), report.kept("users")), (0, 3));
    assert_eq!((report.created("notes"), report.kept("notes")), (0, 4));
    let note: Value = json(app.with_token(&bob).get(BOBS_NOTE).await).await;
    assert_eq!(note["title"], "Bread order (changed)");
}

#[tokio::test]
async fn openapi_documents_the_notes_api() {
    let app = demo_app().await;
    let doc: Value = json(app.get("/openapi.json").await).await;
    assert!(doc["paths"][NOTES]["get"].is_object(), "{doc}");
    assert!(doc["paths"]["/api/mail/v1/notes/{id}"]["patch"].is_object());
    assert!(doc["paths"][NOTES]["get"]["responses"]["401"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    // What a client generator needs: the token scheme, which operations need it, and error
    // bodies under the content type they are sent with.
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"][NOTES]["post"]["security"],
        json!([{"bearer": []}])
    );
    let conflict = &doc["paths"][NOTES]["post"]["responses"]["409"];
    assert!(
        conflict["content"]["application/problem+json"].is_object(),
        "{conflict}"
    );
    let title = &doc["components"]["schemas"]["CreateNote"]["properties"]["title"];
    assert!(
        title["pattern"].as_str().unwrap().contains("{0,198}"),
        "{title}"
    );

    let docs = app.get("/docs/").await;
    assert_eq!(docs.status(), StatusCode::OK);
    assert!(docs.text().await.unwrap().contains("swagger-ui-bundle.js"));
}
