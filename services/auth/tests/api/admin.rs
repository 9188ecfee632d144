//! Account administration: only admins, and what deleting, restoring, disabling and role
//! changes do to the account's sessions and sign-ins.

use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::json;

use crate::common::*;

/// Auth with the demo users, and ada's (admin) token.
async fn with_admin() -> (Auth, String) {
    let auth = spawn_demo().await;
    let ada = sign_in(&auth, "ada@hatchery.test", "hatchery-ada").await;
    (auth, access(&ada))
}

#[tokio::test]
async fn regular_users_cannot_reach_admin_routes_or_other_users_data() {
    let (auth, _) = with_admin().await;
    let bob = access(&sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await);
    let as_bob = auth.with_token(&bob);
    let users = format!("{API}/users");
    let cleo = format!("{API}/users/{CLEO}");
    let responses = [
        as_bob.get(&users).await,
        as_bob.get(&cleo).await,
        as_bob.patch_json(&cleo, &json!({"roles": ["admin"]})).await,
        as_bob
            .patch_json(&format!("{API}/users/{BOB}"), &json!({"roles": ["admin"]}))
            .await,
        as_bob.delete(&cleo).await,
        as_bob
            .request(reqwest::Method::POST, &format!("{cleo}/restore"))
            .send()
            .await
            .unwrap(),
    ];
    for response in responses {
        assert_eq!(
            response.status(),
            StatusCode::FORBIDDEN,
            "{}",
            response.url()
        );
    }
    assert_eq!(auth.get(&users).await.status(), StatusCode::UNAUTHORIZED);
    // Bob's own data is all /me shows.
    let me: Value = json(as_bob.get(&format!("{API}/me")).await).await;
    assert_eq!(me["id"], BOB);
    let roles: Vec<String> =
        sqlx::query_scalar("SELECT unnest(roles) FROM users WHERE uuid = $1::uuid")
            .bind(BOB)
            .fetch_all(&auth.db)
            .await
            .unwrap();
    assert!(roles.is_empty());
}

#[tokio::test]
async fn admins_list_search_and_page_through_users() {
    let (auth, ada) = with_admin().await;
    let as_ada = auth.with_token(&ada);
    let all: Value = json(as_ada.get(&format!("{API}/users")).await).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    let first: Value = json(as_ada.get(&format!("{API}/users?limit=2")).await).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second: Value = json(
        as_ada
            .get(&format!("{API}/users?limit=2&cursor={cursor}"))
            .await,
    )
    .await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null());

    let found: Value = json(as_ada.get(&format!("{API}/users?q=COOPER")).await).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["id"], CLEO);
    let none: Value = json(as_ada.get(&format!("{API}/users?q=%25")).await).await;
    assert_eq!(
        none["items"].as_array().unwrap().len(),
        0,
        "% is taken literally"
    );

    let one: Value = json(as_ada.get(&format!("{API}/users/{BOB}")).await).await;
    assert_eq!(one["email"], "bob@hatchery.test");
    let missing = as_ada
        .get(&format!("{API}/users/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let bad_limit = as_ada.get(&format!("{API}/users?limit=1000")).await;
    assert_eq!(bad_limit.status(), StatusCode::UNPROCESSABLE_ENTITY);
    // Postgres text cannot hold NUL: a search with one is a client error, not a 500.
    let nul = as_ada.get(&format!("{API}/users?q=a%00b")).await;
    assert_eq!(nul.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = json(nul).await;
    assert_eq!(problem["errors"]["q"][0], "must not contain NUL characters");
}

#[tokio::test]
async fn role_changes_and_disabling_take_effect_and_are_audited() {
    let (auth, ada) = with_admin().await;
    let as_ada = auth.with_token(&ada);
    let bob_path = format!("{API}/users/{BOB}");

    let promoted = as_ada
        .patch_json(&bob_path, &json!({"roles": ["editor", "admin"]}))
        .await;
    assert_eq!(promoted.status(), StatusCode::OK);
    let promoted: Value = json(promoted).await;
    assert_eq!(promoted["roles"], json!(["admin", "editor"]));
    let event = latest_event(&auth, "auth.user.updated", "bob@hatchery.test")
        .await
        .expect("updated event");
    assert_eq!(event["roles"], json!(["admin", "editor"]));
    let bob = sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await;
    assert_eq!(decode(&access(&bob)).1["roles"], json!(["admin", "editor"]));
    assert_eq!(
        auth.with_token(&access(&bob))
            .get(&format!("{API}/users"))
            .await
            .status(),
        StatusCode::OK
    );

    // Demoted: the admin routes close at once, and his sessions end.
    let demoted = as_ada.patch_json(&bob_path, &json!({"roles": []})).await;
    assert_eq!(demoted.status(), StatusCode::OK);
    assert_eq!(
        me_status(&auth, &access(&bob)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        audit(&auth, "roles_changed", BOB).await,
        [("success".to_owned(), None), ("success".to_owned(), None)]
    );

    let invalid = as_ada
        .patch_json(&bob_path, &json!({"roles": ["service"]}))
        .await;
    assert_eq!(invalid.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let own = as_ada
        .patch_json(&format!("{API}/users/{ADA}"), &json!({"roles": []}))
        .await;
    assert_eq!(own.status(), StatusCode::CONFLICT);

    // Disabled: cannot sign in (and is told so, after the right password).
    let disabled = as_ada
        .patch_json(&bob_path, &json!({"is_active": false}))
        .await;
    assert_eq!(disabled.status(), StatusCode::OK);
    let refused = token(
        &auth,
        json!({"grant_type": "password", "email": "bob@hatchery.test", "password": "hatchery-bob"}),
    )
    .await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(
        json::<Value>(refused).await["error_description"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    as_ada
        .patch_json(&bob_path, &json!({"is_active": true}))
        .await;
    sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await;
    assert_eq!(audit(&auth, "user_disabled", BOB).await.len(), 1);
}

#[tokio::test]
async fn deleted_users_cannot_sign_in_and_can_be_restored() {
    let (auth, ada) = with_admin().await;
    let as_ada = auth.with_token(&ada);
    let cleo = sign_in(&auth, "cleo@hatchery.test", "hatchery-cleo").await;
    let cleo_path = format!("{API}/users/{CLEO}");

    let deleted = as_ada.delete(&cleo_path).await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        me_status(&auth, &access(&cleo)).await,
        StatusCode::UNAUTHORIZED
    );
    let refresh_after = token(
        &auth,
        json!({"grant_type": "refresh_token", "refresh_token": refresh(&cleo)}),
    )
    .await;
    assert_eq!(refresh_after.status(), StatusCode::BAD_REQUEST);
    let login = token(&auth, json!({"grant_type": "password", "email": "cleo@hatchery.test", "password": "hatchery-cleo"})).await;
    let unknown = token(&auth, json!({"grant_type": "password", "email": "nobody@hatchery.test", "password": "hatchery-cleo"})).await;
    assert_eq!(login.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json::<Value>(login).await,
        json::<Value>(unknown).await,
        "deleted looks like unknown"
    );

    // Kept, marked, out of the listing, visible by id.
    let listed: Value = json(as_ada.get(&format!("{API}/users")).await).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["id"] != CLEO)
    );
    let with_deleted: Value = json(
        as_ada
            .get(&format!("{API}/users?include_deleted=true"))
            .await,
    )
    .await;
    assert_eq!(with_deleted["items"].as_array().unwrap().len(), 3);
    let shown: Value = json(as_ada.get(&cleo_path).await).await;
    assert!(shown["deleted_at"].is_string());
    let event: Value =
        sqlx::query_scalar("SELECT envelope FROM outbox WHERE event_type = 'auth.user.deleted'")
            .fetch_one(&auth.db)
            .await
            .unwrap();
    assert_eq!(event["data"]["user"], CLEO);
    assert_eq!(event["actor"], ADA);
    assert_eq!(
        as_ada.delete(&cleo_path).await.status(),
        StatusCode::NO_CONTENT,
        "idempotent"
    );
    assert_eq!(
        as_ada.delete(&format!("{API}/users/{ADA}")).await.status(),
        StatusCode::CONFLICT
    );

    let restored = as_ada
        .request(reqwest::Method::POST, &format!("{cleo_path}/restore"))
        .send()
        .await
        .unwrap();
    assert_eq!(restored.status(), StatusCode::OK);
    assert!(json::<Value>(restored).await["deleted_at"].is_null());
    let again = sign_in(&auth, "cleo@hatchery.test", "hatchery-cleo").await;
    assert_eq!(me_status(&auth, &access(&again)).await, StatusCode::OK);
    // The old session stays ended.
    assert_eq!(
        me_status(&auth, &access(&cleo)).await,
        StatusCode::UNAUTHORIZED
    );
    let restored_events: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE event_type = 'auth.user.restored'")
            .fetch_one(&auth.db)
            .await
            .unwrap();
    assert_eq!(restored_events, 1);
    assert_eq!(audit(&auth, "user_deleted", CLEO).await.len(), 1);
    assert_eq!(audit(&auth, "user_restored", CLEO).await.len(), 1);
}

#[tokio::test]
async fn role_changes_reach_cached_accounts_at_once() {
    // Copies of accounts would serve an hour: only the drops on change can refresh them.
    let auth = spawn_with(|s| {
        s.populate.scenario = Some("demo".into());
        s.app.account_cache_ttl = std::time::Duration::from_secs(3600);
    })
    .await;
    let ada = access(&sign_in(&auth, "ada@hatchery.test", "hatchery-ada").await);
    let as_ada = auth.with_token(&ada);
    let bob = access(&sign_in(&auth, "bob@hatchery.test", "hatchery-bob").await);
    let as_bob = auth.with_token(&bob);
    let users = format!("{API}/users");
    // Bob's account is read (and kept): no admin role.
    assert_eq!(as_bob.get(&users).await.status(), StatusCode::FORBIDDEN);

    // Granted through this instance: Bob's token (issued before, without the role) opens the
    // admin routes on his very next request.
    let granted = as_ada
        .patch_json(&format!("{API}/users/{BOB}"), &json!({"roles": ["admin"]}))
        .await;
    assert_eq!(granted.status(), StatusCode::OK);
    assert_eq!(as_bob.get(&users).await.status(), StatusCode::OK);

    // Removed elsewhere (another instance, or by hand), his session untouched: the database
    // announces the change when it commits, and the kept copy goes.
    let started = std::time::Instant::now();
    sqlx::query("UPDATE users SET roles = '{}' WHERE uuid = $1::uuid")
        .bind(BOB)
        .execute(&auth.db)
        .await
        .unwrap();
    testkit::eventually(
        "the removed role gone",
        std::time::Duration::from_secs(5),
        || async { (as_bob.get(&users).await.status() == StatusCode::FORBIDDEN).then_some(()) },
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let me: Value = json(as_bob.get(&format!("{API}/me")).await).await;
    assert_eq!(me["roles"], json!([]));

    // Removed through the API: his sessions end as well, so the next request is refused.
    as_ada
        .patch_json(&format!("{API}/users/{BOB}"), &json!({"roles": ["admin"]}))
        .await;
    as_ada
        .patch_json(&format!("{API}/users/{BOB}"), &json!({"roles": []}))
        .await;
    assert_eq!(me_status(&auth, &bob).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admins_read_the_audit_log_filtered_and_in_pages() {
    let (auth, ada) = with_admin().await;
    let as_ada = auth.with_token(&ada);
    let person = verified_person(&auth, "audited").await;
    for _ in 0..2 {
        let refused = token(
            &auth,
            json!({"grant_type": "password", "email": person.email, "password": "wrong guess"}),
        )
        .await;
        assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    }
    let signed_in = sign_in(&auth, &person.email, &person.password).await;
    let list = |query: String| {
        let as_ada = &as_ada;
        async move {
            let response = as_ada.get(&format!("{API}/audit{query}")).await;
            let status = response.status();
            (status, json::<Value>(response).await)
        }
    };

    // One user's sign-ins, newest first.
    let (status, logins) = list(format!("?user={}&action=login", person.id)).await;
    assert_eq!(status, StatusCode::OK, "{logins}");
    let outcomes: Vec<&str> = logins["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["success", "failure", "failure"]);
    let newest = &logins["items"][0];
    assert_eq!(newest["subject"], person.id.as_str());
    assert_eq!(newest["actor"], person.id.as_str());
    assert_eq!(newest["ip"], "127.0.0.1");
    assert!(newest["request_id"].is_string());
    let (_, failures) = list(format!("?user={}&outcome=failure", person.id)).await;
    assert!(
        failures["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["reason"] == "wrong_password")
    );
    assert_eq!(failures["items"].as_array().unwrap().len(), 2);

    // Keyset pages of one entry: the same entries, each once, in the same order.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let (_, page) = list(format!(
            "?user={}&action=login&limit=1&cursor={cursor}",
            person.id
        ))
        .await;
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(paged, logins["items"].as_array().unwrap().clone());

    // A time range: no sign-in before the first, only the signup and the verification.
    let first_at = logins["items"][2]["at"].as_str().unwrap().to_owned();
    let at = chrono::DateTime::parse_from_rfc3339(&first_at).unwrap();
    let before = (at - chrono::Duration::milliseconds(1)).to_rfc3339();
    let (_, none) = list(format!(
        "?user={}&action=login&until={}",
        person.id,
        urlencode(&before)
    ))
    .await;
    assert_eq!(none["items"], json!([]));
    let (_, earlier) = list(format!("?user={}&until={}", person.id, urlencode(&before))).await;
    let actions: Vec<&str> = earlier["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["email_verified", "signup"]);
    let (_, since) = list(format!(
        "?user={}&action=login&since={}",
        person.id,
        urlencode(&first_at)
    ))
    .await;
    assert_eq!(since["items"].as_array().unwrap().len(), 3);

    // Bad filters are named; only admins read the log.
    let (status, problem) = list("?user=nobody&since=yesterday&outcome=maybe".into()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    for field in ["user", "since", "outcome"] {
        assert!(problem["errors"][field].is_array(), "{field}: {problem}");
    }
    let as_person = auth.with_token(&access(&signed_in));
    assert_eq!(
        as_person.get(&format!("{API}/audit")).await.status(),
        StatusCode::FORBIDDEN
    );
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}
