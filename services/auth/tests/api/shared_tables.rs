//! The tables services share (users, idempotency, outbox, inbox) are defined once, by their
//! crates; databases made when every service carried its own copy (which had drifted: auth's
//! outbox kept the envelope as jsonb, with an extra index) move forward to that one definition
//! without losing a row.

use std::borrow::Cow;

use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use testkit::TestDb;
use uuid::Uuid;

#[tokio::test]
async fn the_shared_tables_are_their_crates_definitions() {
    // Auth owns the platform's users: it adds their credentials to the shared `users` table.
    testkit::schema::assert_shared_tables::<auth::Auth>(&["users"]).await;
}

/// The copies every service carried in its own `migrations/` before the crates owned them,
/// as (version, description, SQL).
fn copies(outbox: &'static str) -> Vec<(i64, &'static str, &'static str)> {
    vec![
        (
            20261121000001,
            "users",
            include_str!("before_shared_tables/users.sql"),
        ),
        (
            20261121000003,
            "idempotency",
            include_str!("before_shared_tables/idempotency.sql"),
        ),
        (20261121100001, "outbox", outbox),
        (
            20261121100002,
            "inbox",
            include_str!("before_shared_tables/inbox.sql"),
        ),
    ]
}

/// Makes `pool` a database as the previous release left it: the copies, then the service's
/// own migrations, all recorded in one history.
async fn previous_release(
    pool: &PgPool,
    copies: Vec<(i64, &'static str, &'static str)>,
    own: &Migrator,
) {
    let mut migrations: Vec<Migration> = copies
        .into_iter()
        .map(|(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    migrations.extend(own.iter().cloned());
    Migrator::with_migrations(migrations)
        .run(pool)
        .await
        .expect("the previous release's migrations");
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Rows in every shared table, as a service writes them.
async fn write_rows(pool: &PgPool) -> Uuid {
    let user = Uuid::now_v7();
    sqlx::query("INSERT INTO users (uuid, email, name, roles) VALUES ($1, 'kept@example.test', 'Kept', '{admin}')")
        .bind(user)
        .execute(pool)
        .await
        .unwrap();
    let event = Uuid::now_v7();
    let envelope = json!({"id": event, "type": "test.thing.happened", "data": {"n": 1}});
    sqlx::query("INSERT INTO outbox (event_id, event_type, envelope) VALUES ($1, 'test.thing.happened', $2)")
        .bind(event)
        .bind(&envelope)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO inbox (consumer, event_id) VALUES ('test', $1)")
        .bind(event)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO idempotency (key, fingerprint, status, headers, body) VALUES ('k1', '\\x00', 201, '{}', '\\x7b7d')")
        .execute(pool)
        .await
        .unwrap();
    event
}

async fn history(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT description FROM _sqlx_migrations ORDER BY version")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn assert_moved_forward<S: kit::Service>(pool: &PgPool, event: Uuid, extended: &[&str]) {
    for table in ["users", "outbox", "inbox", "idempotency"] {
        assert_eq!(
            count(pool, table).await,
            1,
            "{}: rows of {table} kept",
            S::NAME
        );
    }
    let envelope: Value =
        sqlx::query_scalar("SELECT envelope::jsonb FROM outbox WHERE event_id = $1")
            .bind(event)
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(envelope["data"]["n"], 1);
    assert!(
        !history(pool)
            .await
            .iter()
            .any(|d| ["users", "idempotency", "outbox", "inbox"].contains(&d.as_str())),
        "the copies are no longer in {}'s own history",
        S::NAME
    );
    testkit::schema::assert_shared_tables_in::<S>(pool, extended).await;
    // Once moved, nothing more to do.
    assert_eq!(kit::service::migrate::<S>(pool).await.unwrap(), 0);
}

#[tokio::test]
async fn a_database_of_the_previous_release_moves_forward_keeping_its_rows() {
    // Auth's own copy had drifted: jsonb envelope, an index on published_at.
    let db = TestDb::create().await;
    let pool = db.pool().await;
    previous_release(
        &pool,
        copies(include_str!("before_shared_tables/outbox_jsonb.sql")),
        &Migrator::with_migrations(own_migrations::<auth::Auth>()),
    )
    .await;
    let event = write_rows(&pool).await;
    kit::service::migrate::<auth::Auth>(&pool)
        .await
        .expect("auth's database moves forward");
    assert_moved_forward::<auth::Auth>(&pool, event, &["users"]).await;

    // The template's (and so every hatched service's) copies.
    let db = TestDb::create().await;
    let pool = db.pool().await;
    previous_release(
        &pool,
        copies(include_str!("before_shared_tables/outbox_json.sql")),
        &Migrator::with_migrations(own_migrations::<template::Template>()),
    )
    .await;
    let event = write_rows(&pool).await;
    kit::service::migrate::<template::Template>(&pool)
        .await
        .expect("the template's database moves forward");
    assert_moved_forward::<template::Template>(&pool, event, &[]).await;
}

fn own_migrations<S: kit::Service>() -> Vec<Migration> {
    S::DATABASE
        .expect("a database")
        .migrations
        .iter()
        .cloned()
        .collect()
}
