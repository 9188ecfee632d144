//! Operating the service's database: data changes applied once, the restore drill, the
//! anonymizer, and migrations running forward over the previous release's data.

use kit::changelog::{self, Change, ChangelogError, State};
use kit::config::SecretUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use template::Template;
use testkit::cli::run;
use testkit::operations::Drill;
use testkit::{TestApp, TestDb, json, tokens};

use crate::common::{ADA, ada, redis_url};

const NOTES: &str = "/api/template/v1/notes";

fn binary() -> std::process::Command {
    testkit::cli::command(env!("CARGO_BIN_EXE_template"), "template")
}

fn configure(settings: &mut kit::Settings<template::config::Config>) {
    settings.redis.url = Some(SecretUrl::new(redis_url()));
    tokens::trust(settings);
}

/// A migrated database holding one of Ada's notes whose title was stored untrimmed (as the
/// service did before it trimmed titles).
async fn migrated_with_untrimmed_title() -> (TestDb, PgPool) {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    kit::service::migrate::<Template>(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO users (uuid, email, name) VALUES ('0193a000-0000-7000-8000-000000000001', 'ada@hatchery.test', 'Ada Admin');
         INSERT INTO notes (uuid, owner_id, title, body)
         SELECT '0193a000-0000-7000-8000-00000000a0f1', id, '  Plan  ', 'first' FROM users;",
    )
    .execute(&pool)
    .await
    .unwrap();
    (db, pool)
}

async fn title(pool: &PgPool) -> String {
    sqlx::query_scalar(
        "SELECT title FROM notes WHERE uuid = '0193a000-0000-7000-8000-00000000a0f1'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

fn changes() -> &'static [Change] {
    <Template as kit::Service>::DATABASE
        .expect("a database")
        .changelog
}

#[test]
fn the_changelog_lists_every_file() {
    testkit::operations::assert_changelog_lists_every_file::<Template>();
}

#[tokio::test]
async fn a_data_change_applies_once_and_is_recorded() {
    let (db, pool) = migrated_with_untrimmed_title().await;
    let changes = changes();

    let status = changelog::status(&pool, changes).await.unwrap();
    assert_eq!(status[0].name, "0001_trim_note_titles");
    assert_eq!(status[0].state, State::Pending);

    // A dry run says what would change and changes nothing.
    let (output, stdout, stderr) = run(binary()
        .args(["changelog", "apply", "--dry-run"])
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("would apply 0001_trim_note_titles"),
        "{stdout}"
    );
    assert!(stdout.contains("1 row(s) (rolled back)"), "{stdout}");
    assert_eq!(title(&pool).await, "  Plan  ");

    let (output, stdout, stderr) = run(binary()
        .args(["changelog", "apply"])
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("1 data change(s) applied, 1 row(s)"),
        "{stdout}"
    );
    assert_eq!(title(&pool).await, "Plan");

    // Once: the second run applies nothing, and the record says when and by which release.
    sqlx::query("UPDATE notes SET title = '  Again  '")
        .execute(&pool)
        .await
        .unwrap();
    let again = changelog::apply(&pool, changes, "test", false)
        .await
        .unwrap();
    assert!(again.names.is_empty());
    assert_eq!(title(&pool).await, "  Again  ");
    let (output, stdout, _) = run(binary()
        .args(["changelog", "status"])
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert!(output.status.success());
    assert!(
        stdout.contains("0001_trim_note_titles")
            && stdout.contains("applied")
            && stdout.contains(env!("CARGO_PKG_VERSION")),
        "{stdout}"
    );
}

#[tokio::test]
async fn a_changed_file_stops_apply_with_exit_code_3() {
    let (db, pool) = migrated_with_untrimmed_title().await;
    changelog::apply(&pool, changes(), "test", false)
        .await
        .unwrap();
    // What a file edited after it ran looks like: the recorded checksum is another one.
    sqlx::query("UPDATE _data_changelog SET checksum = '\\x00'")
        .execute(&pool)
        .await
        .unwrap();
    let (output, stdout, stderr) = run(binary()
        .args(["changelog", "apply"])
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert_eq!(output.status.code(), Some(3), "{stdout}{stderr}");
    assert!(
        stderr.contains("0001_trim_note_titles")
            && stderr.contains("checksum")
            && stderr.contains("new change"),
        "{stderr}"
    );
    let (_, stdout, _) = run(binary()
        .args(["changelog", "status"])
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert!(stdout.contains("MODIFIED"), "{stdout}");
}

#[tokio::test]
async fn a_failing_change_rolls_back_and_stays_pending() {
    let (_db, pool) = migrated_with_untrimmed_title().await;
    let failing = [
        Change::sql("0001_titles", "UPDATE notes SET title = 'first'"),
        Change::sql(
            "0002_breaks",
            "UPDATE notes SET body = 'lost'; SELECT 1 / 0",
        ),
    ];
    let err = changelog::apply(&pool, &failing, "test", false)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ChangelogError::Failed { name, .. } if name == "0002_breaks"),
        "{err}"
    );
    assert!(err.to_string().contains("division by zero"), "{err}");
    let body: String = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(body, "first", "the failed change left nothing behind");
    assert_eq!(
        title(&pool).await,
        "first",
        "the change before it stays applied"
    );
    let status = changelog::status(&pool, &failing).await.unwrap();
    assert!(matches!(status[0].state, State::Applied { .. }));
    assert_eq!(status[1].state, State::Pending);

    // Fixed, it applies on the next run.
    let fixed = [
        Change::sql("0001_titles", "UPDATE notes SET title = 'first'"),
        Change::sql("0002_breaks", "UPDATE notes SET body = 'kept'"),
    ];
    let applied = changelog::apply(&pool, &fixed, "test", false)
        .await
        .unwrap();
    assert_eq!(applied.names, ["0002_breaks"]);

    // A change written in Rust runs once too.
    let with_code = [
        Change::sql("0001_titles", "UPDATE notes SET title = 'first'"),
        Change::sql("0002_breaks", "UPDATE notes SET body = 'kept'"),
        Change::code("0003_mark_checked", mark_checked),
    ];
    for _ in 0..2 {
        changelog::apply(&pool, &with_code, "test", false)
            .await
            .unwrap();
    }
    let body: String = sqlx::query_scalar("SELECT body FROM notes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(body, "kept (checked)");
}

fn mark_checked(
    conn: &mut sqlx::PgConnection,
) -> futures_util::future::BoxFuture<'_, anyhow::Result<()>> {
    Box::pin(async move {
        sqlx::query("UPDATE notes SET body = body || ' (checked)'")
            .execute(&mut *conn)
            .await?;
        Ok(())
    })
}

/// `serve` applies pending changes when `database.changelog_on_start` says so (development's
/// default), and leaves them to the deploy otherwise (production's).
#[tokio::test]
async fn serve_applies_pending_changes_when_configured() {
    let app = TestApp::spawn_with::<Template>(|settings| {
        configure(settings);
        settings.database.changelog_on_start = Some(false);
    })
    .await;
    let recorded: bool = sqlx::query_scalar("SELECT to_regclass('_data_changelog') IS NOT NULL")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert!(!recorded, "nothing applied when turned off");

    let app = TestApp::spawn_on::<Template>(app.stop().await, configure).await;
    let applied: Vec<String> = sqlx::query_scalar("SELECT name FROM _data_changelog")
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(applied, ["0001_trim_note_titles"]);
}

/// Ada writes a note; the note is what the service serves back.
async fn ada_writes(app: &TestApp) -> String {
    let token = ada().mint();
    let response = app
        .with_token(&token)
        .post_json(
            NOTES,
            &json!({"title": "Call Bob Baker", "body": "Ada Admin <ada@hatchery.test> from 203.0.113.7"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let note: Value = json(response).await;
    note["id"].as_str().unwrap().to_owned()
}

async fn note_of(app: &TestApp, id: &str) -> Value {
    let token = ada().mint();
    let response = app.with_token(&token).get(&format!("{NOTES}/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    json(response).await
}

#[tokio::test]
async fn restore_drill_and_anonymized_copy() {
    testkit::operations::restore_drill_and_anonymize::<Template, _, _, _, _, _>(Drill {
        configure,
        known: &[
            "ada@hatchery.test",
            "Ada Admin",
            "bob@hatchery.test",
            "Cleo Cooper",
        ],
        writes: ada_writes,
        serves: async |app: &TestApp, id: &String| {
            let note = note_of(app, id).await;
            assert_eq!(note["title"], "Call Bob Baker");
            assert_eq!(note["owner"], ADA);
            let page: Value = json(app.with_token(&ada().mint()).get(NOTES).await).await;
            let items = page["items"].as_array().unwrap();
            assert!(items.iter().any(|n| n["id"] == id.as_str()), "{page}");
            assert!(items.len() > 1, "the demo notes are back too: {page}");
        },
        // Served from the anonymized copy: the same note, its owner intact, its text redacted.
        serves_anonymized: async |app: &TestApp, id: &String| {
            let note = note_of(app, id).await;
            assert_eq!(note["owner"], ADA);
            assert_eq!(note["title"], "[redacted]");
        },
    })
    .await;
}

#[test]
fn anonymize_refuses_the_services_own_database() {
    let (output, _, stderr) = run(binary()
        .args(["anonymize", "--database", "template_live"])
        .env(
            "TEMPLATE__DATABASE__URL",
            "postgres://postgres@127.0.0.1:5432/template_live",
        ));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("own database") && stderr.contains("--i-mean-it"),
        "{stderr}"
    );
}

#[tokio::test]
async fn migrations_run_forward_over_the_previous_release() {
    testkit::operations::assert_migrates_forward::<Template>(None).await;
}

/// The commands operators (and `cargo xtask backup|restore`) run: a backup, a restore into a
/// new database, an existing database refused, a damaged dump refused before anything is made.
#[tokio::test]
async fn backup_and_restore_commands() {
    let db = TestDb::create().await;
    let (output, _, stderr) = run(binary()
        .args(["populate", "--scenario", "demo"])
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    let dir = testkit::operations::TempDir::new("backup-cli");
    let (output, stdout, stderr) = run(binary()
        .args(["backup", "--to"])
        .arg(&dir.0)
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains(&format!("backed up database {}", db.name())),
        "{stdout}"
    );

    let copy = TestDb::adopt(&TestDb::unique_name());
    let (output, stdout, stderr) = run(binary()
        .args(["restore", "--from"])
        .arg(&dir.0)
        .args(["--into", copy.name()])
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.contains("every checksum as in the manifest") && stdout.contains(copy.name()),
        "{stdout}"
    );
    let notes: i64 = sqlx::query_scalar("SELECT count(*) FROM notes")
        .fetch_one(&copy.pool().await)
        .await
        .unwrap();
    assert_eq!(notes, 4);

    // The configured database exists: never restored over without --replace.
    let (output, _, stderr) = run(binary()
        .args(["restore", "--from"])
        .arg(&dir.0)
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("exists") && stderr.contains("--replace"),
        "{stderr}"
    );

    // A damaged dump is refused before any database is made.
    let dump = dir.0.join("template/template.dump");
    let mut bytes = std::fs::read(&dump).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    let other = TestDb::unique_name();
    let (output, _, stderr) = run(binary()
        .args(["restore", "--from"])
        .arg(&dir.0)
        .args(["--into", &other])
        .env("TEMPLATE__DATABASE__URL", db.url()));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not match its manifest"), "{stderr}");
    let made: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&other)
            .fetch_one(&db.pool().await)
            .await
            .unwrap();
    assert!(!made);
}
