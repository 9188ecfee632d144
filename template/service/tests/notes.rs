//! The notes API over HTTP, against a real Postgres database per test.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{TestApp, json};

const ADA: &str = "0193a000-0000-7000-8000-000000000001";
const BOB: &str = "0193a000-0000-7000-8000-000000000002";

async fn demo_app() -> TestApp {
    TestApp::spawn_with(template::service(), |settings| {
        settings.populate.scenario = Some("demo".into());
    })
    .await
}

#[tokio::test]
async fn demo_scenario_is_listed_newest_first() {
    let app = demo_app().await;
    let response = app.get("/api/template/v1/notes").await;
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = json(response).await;
    let titles: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
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
async fn pages_follow_the_cursor_without_gaps_or_repeats() {
    let app = demo_app().await;
    for i in 0..25 {
        let created = app
            .post_json(
                "/api/template/v1/notes",
                &json!({"owner": BOB, "title": format!("note {i}")}),
            )
            .await;
        assert_eq!(created.status(), StatusCode::CREATED);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/template/v1/notes?owner={BOB}&limit=10&cursor={c}"),
            None => format!("/api/template/v1/notes?owner={BOB}&limit=10"),
        };
        let page: Value = json(app.get(&path).await).await;
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
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("cursor=garbage", "cursor"),
    ] {
        let response = app.get(&format!("/api/template/v1/notes?{query}")).await;
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{query}"
        );
        let problem: Value = json(response).await;
        assert!(problem["errors"][field].is_array(), "{query}: {problem}");
    }
    let response = app.get("/api/template/v1/notes?limit=abc").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn create_read_update_and_soft_delete() {
    let app = demo_app().await;
    let response = app
        .post_json(
            "/api/template/v1/notes",
            &json!({"owner": ADA, "title": "  Plan  ", "body": "first"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let note: Value = json(response).await;
    assert_eq!(note["title"], "Plan");
    let id = note["id"].as_str().unwrap().to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);

    let path = format!("/api/template/v1/notes/{id}");
    let fetched: Value = json(app.get(&path).await).await;
    assert_eq!(fetched, note);

    let updated: Value = json(app.patch_json(&path, &json!({"body": "second"})).await).await;
    assert_eq!(
        (updated["title"].as_str(), updated["body"].as_str()),
        (Some("Plan"), Some("second"))
    );

    assert_eq!(app.delete(&path).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get(&path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.delete(&path).await.status(), StatusCode::NOT_FOUND);
    let listed: Value = json(
        app.get(&format!("/api/template/v1/notes?owner={ADA}"))
            .await,
    )
    .await;
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
    let response = app
        .post_json(
            "/api/template/v1/notes",
            &json!({"owner": "0193a000-0000-7000-8000-00000000ffff", "title": " ", "body": "x".repeat(10_001)}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = json(response).await;
    assert_eq!(problem["code"], "validation_failed");
    for field in ["owner", "title", "body"] {
        assert!(problem["errors"][field].is_array(), "{field}: {problem}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(count, 4, "nothing stored");
}

#[tokio::test]
async fn malformed_and_mistyped_bodies_get_problems() {
    let app = demo_app().await;
    let raw = app
        .client
        .post(app.url("/api/template/v1/notes"))
        .header("content-type", "application/json")
        .body("{\"owner\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let problem: Value = json(raw).await;
    assert_eq!(problem["code"], "malformed_json");
    assert!(problem["request_id"].is_string());

    let typed = app
        .post_json(
            "/api/template/v1/notes",
            &json!({"owner": ADA, "title": 42}),
        )
        .await;
    assert_eq!(typed.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(typed).await;
    assert!(
        problem["errors"]["title"][0]
            .as_str()
            .unwrap()
            .contains("expected a string"),
        "{problem}"
    );

    let no_type = app
        .client
        .post(app.url("/api/template/v1/notes"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(no_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn malformed_ids_and_unknown_paths_are_404_problems() {
    let app = demo_app().await;
    for path in [
        "/api/template/v1/notes/not-a-uuid",
        "/api/template/v1/nothing-here",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    let response = app
        .client
        .put(app.url("/api/template/v1/notes"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn populating_again_creates_nothing_and_keeps_changes() {
    let app = demo_app().await;
    let path = "/api/template/v1/notes/0193a000-0000-7000-8000-00000000a002";
    let changed = app
        .patch_json(path, &json!({"title": "Bread order (changed)"}))
        .await;
    assert_eq!(changed.status(), StatusCode::OK);

    let report = template::service()
        .populate(
            &app.db,
            &testkit::workspace_root().join("populator"),
            "demo",
        )
        .await
        .unwrap();
    assert_eq!((report.created("users"), report.kept("users")), (0, 3));
    assert_eq!((report.created("notes"), report.kept("notes")), (0, 4));
    let note: Value = json(app.get(path).await).await;
    assert_eq!(note["title"], "Bread order (changed)");
}

#[tokio::test]
async fn openapi_documents_the_notes_api() {
    let app = demo_app().await;
    let doc: Value = json(app.get("/openapi.json").await).await;
    assert!(
        doc["paths"]["/api/template/v1/notes"]["get"].is_object(),
        "{doc}"
    );
    assert!(doc["paths"]["/api/template/v1/notes/{id}"]["patch"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}
