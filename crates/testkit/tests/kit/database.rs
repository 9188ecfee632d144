//! kit's database helpers against a real Postgres.

use kit::{ApiError, ConstraintExt};
use testkit::TestDb;

#[tokio::test]
async fn a_named_unique_violation_becomes_the_chosen_problem() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    sqlx::query("CREATE TABLE accounts (email text CONSTRAINT accounts_email_key UNIQUE, name text NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let insert = |email: &'static str, name: Option<&'static str>| {
        let pool = pool.clone();
        async move {
            sqlx::query("INSERT INTO accounts (email, name) VALUES ($1, $2)")
                .bind(email)
                .bind(name)
                .execute(&pool)
                .await
                .on_constraint("accounts_email_key", || {
                    ApiError::conflict("email_taken", "An account with this email exists.")
                })
        }
    };
    insert("a@b.test", Some("A")).await.unwrap();
    let taken = insert("a@b.test", Some("B"))
        .await
        .unwrap_err()
        .to_problem();
    assert_eq!((taken.status, taken.code.as_str()), (409, "email_taken"));
    // Another violation stays an internal error (its cause is logged, not shown).
    let other = insert("c@d.test", None).await.unwrap_err().to_problem();
    assert_eq!((other.status, other.code.as_str()), (500, "internal_error"));
    assert!(!other.detail.unwrap_or_default().contains("null value"));
}

#[tokio::test]
async fn missing_databases_are_created_only_when_allowed() {
    let server = TestDb::create().await;
    let name = format!("{}_created", server.name());
    let url = server.url().replace(server.name(), &name);
    let mut settings = kit::config::defaults::<()>("probe", 0).unwrap();
    settings.database.url = kit::SecretUrl::new(url.clone());

    let refused = kit::db::connect(&settings.database, false)
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("does not exist"),
        "{refused:#}"
    );

    let pool = kit::db::connect(&settings.database, true)
        .await
        .expect("created and connected");
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(current, name);
    // A second creator (another instance starting) is fine.
    kit::db::connect(&settings.database, true)
        .await
        .unwrap()
        .close()
        .await;
    pool.close().await;

    let admin = server.pool().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {} WITH (FORCE)",
        kit::db::quote_identifier(&name)
    )))
    .execute(&admin)
    .await
    .unwrap();
}

#[tokio::test]
async fn test_databases_are_made_in_the_test_tablespace_when_the_server_has_it() {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    let (has_it, placed): (bool, String) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM pg_tablespace WHERE spcname = $1),
                (SELECT t.spcname::text FROM pg_database d
                 JOIN pg_tablespace t ON t.oid = d.dattablespace
                 WHERE d.datname = current_database())",
    )
    .bind(testkit::TEST_TABLESPACE)
    .fetch_one(&pool)
    .await
    .unwrap();
    // CI runs `cargo xtask infra` first, which makes it under this very name.
    assert!(
        has_it || std::env::var_os("CI").is_none(),
        "no tablespace {} on the test server",
        testkit::TEST_TABLESPACE
    );
    let expected = if has_it {
        testkit::TEST_TABLESPACE
    } else {
        "pg_default"
    };
    assert_eq!(placed, expected);
    // The database works there: its own tables are made in it too.
    sqlx::query("CREATE TABLE probe (id int PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}
