//! The operations every service with a database must survive, as one-line tests in its own
//! test binary: the restore drill, the anonymizer, the data changelog's declaration, and its
//! migrations running forward over the previous release's data.
//!
//! ```ignore
//! #[tokio::test]
//! async fn restore_drill() {
//!     testkit::operations::restore_drill::<template::Template, _>(write_notes, notes_served).await;
//! }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kit::anonymize::{Personal, Replace};
use kit::{Service, Settings};
use sqlx::{ConnectOptions, PgPool};

use crate::{TestApp, TestDb};

/// How a test configures the service (trusting testkit's tokens, its Redis...): applied to
/// every start of it.
pub trait Configure<S: Service>: Fn(&mut Settings<S::Config>) {}
impl<S: Service, F: Fn(&mut Settings<S::Config>)> Configure<S> for F {}

/// The service `S` serving the demo scenario on a fresh database, without a bus.
pub async fn demo_app<S: Service>(configure: &impl Configure<S>) -> TestApp {
    TestApp::spawn_with::<S>(|settings| {
        configure(settings);
        settings.populate.scenario = Some("demo".into());
    })
    .await
}

/// `S` started again on `database` (no seed data loaded: what it serves came with the
/// database), answering `/readyz` with 200.
pub async fn restart_on<S: Service>(database: TestDb, configure: &impl Configure<S>) -> TestApp {
    let app = TestApp::spawn_on::<S>(database, |settings| {
        configure(settings);
        settings.populate.scenario = None;
    })
    .await;
    let ready = crate::eventually("the service to be ready", Duration::from_secs(20), || {
        let request = app.client.get(app.url("/readyz")).send();
        async move {
            let response = request.await.ok()?;
            (response.status() == 200).then_some(())
        }
    })
    .await;
    let () = ready;
    app
}

/// A directory of its own under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("hatchery-{what}-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The restore drill: the demo data plus `writes` → backup → the database dropped → restore
/// (every table's rows and checksum as in the manifest) → the service started on it serves what
/// `serves` checks, which it checked before the backup too.
pub async fn restore_drill<S, W>(
    configure: impl Configure<S>,
    writes: impl AsyncFnOnce(&TestApp) -> W,
    serves: impl AsyncFn(&TestApp, &W),
) where
    S: Service,
{
    let app = demo_app::<S>(&configure).await;
    let written = writes(&app).await;
    serves(&app, &written).await;
    let dir = TempDir::new("backup");
    let database = app.stop().await;
    let manifest = kit::backup::backup(S::NAME, S::VERSION, &database.url(), &dir.0.join(S::NAME))
        .await
        .expect("the backup succeeds");
    assert!(manifest.rows() > 0, "the backup holds the demo rows");
    assert!(
        manifest
            .migrations
            .get("_sqlx_migrations")
            .is_some_and(|v| *v > 0),
        "the manifest names the migration version: {:?}",
        manifest.migrations
    );

    database.drop_now().await;
    let restored = kit::backup::restore(
        &dir.0.join(S::NAME),
        &database.url(),
        database.name(),
        false,
    )
    .await
    .expect("the restore succeeds and matches its manifest");
    assert_eq!(restored.manifest.tables, manifest.tables);
    assert!(!restored.replaced);

    // Restoring over the live database is refused without --replace, and nothing changes.
    let again = kit::backup::restore(
        &dir.0.join(S::NAME),
        &database.url(),
        database.name(),
        false,
    )
    .await
    .expect_err("an existing database is never restored over without replace");
    assert!(format!("{again:#}").contains("--replace"), "{again:#}");

    let app = restart_on::<S>(database, &configure).await;
    serves(&app, &written).await;
}

/// Text forms of every row of every table.
async fn all_rows(pool: &PgPool) -> BTreeMap<String, Vec<String>> {
    let tables = crate::schema::tables(pool).await;
    let mut rows = BTreeMap::new();
    for table in tables {
        let statement = format!(
            "SELECT t::text FROM {} t",
            kit::db::quote_identifier(&table)
        );
        let texts: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .fetch_all(pool)
            .await
            .expect("read a table");
        rows.insert(table, texts);
    }
    rows
}

/// Per table: its row count and the UUIDs and integer keys of its rows, in order (what
/// anonymizing must keep).
async fn identities(pool: &PgPool) -> BTreeMap<String, (i64, String)> {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, string_agg(quote_ident(c.column_name) || '::text', ' || ''|'' || '
                                            ORDER BY c.ordinal_position)
         FROM information_schema.columns c
         JOIN pg_tables t ON t.tablename = c.table_name AND t.schemaname = c.table_schema
         WHERE c.table_schema = current_schema()
           AND c.data_type IN ('uuid', 'bigint', 'integer', 'smallint')
         GROUP BY c.table_name",
    )
    .fetch_all(pool)
    .await
    .expect("read the key columns");
    let mut out = BTreeMap::new();
    for (table, expression) in columns {
        let statement = format!(
            "SELECT count(*), coalesce(md5(string_agg(k, ',' ORDER BY k)), '')
             FROM (SELECT coalesce({expression}, '') AS k FROM {} t) AS keys",
            kit::db::quote_identifier(&table)
        );
        let sums: (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(statement))
            .fetch_one(pool)
            .await
            .expect("read the keys");
        out.insert(table, sums);
    }
    out
}

/// The personal values held in the declared email, name and IP columns.
async fn originals(pool: &PgPool, personal: &[&Personal]) -> Vec<String> {
    let mut values = Vec::new();
    for rule in personal {
        let Personal::Column {
            table,
            column,
            replace: Replace::Email { .. } | Replace::Name { .. } | Replace::Ip,
        } = rule
        else {
            continue;
        };
        let statement = format!(
            "SELECT DISTINCT {c}::text FROM {t} WHERE {c} IS NOT NULL",
            c = kit::db::quote_identifier(column),
            t = kit::db::quote_identifier(table)
        );
        let found: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .fetch_all(pool)
            .await
            .expect("read a personal column");
        values.extend(found.into_iter().filter(|v| v.trim().len() >= 3));
    }
    values.sort();
    values.dedup();
    values
}

/// The anonymizer on a copy of production-shaped data: the demo data plus `writes` are backed
/// up and restored into a copy, the copy is anonymized, and then no original email, name or IP
/// address remains in any column of any table (each row read whole, as text), every row, UUID
/// and key is still there (but in the tables declared cleared), and the service started on the
/// copy serves it as `serves` checks. `known` are personal values the test wrote that must be
/// among those found (so the scan cannot pass by looking at nothing).
pub async fn anonymizer<S, W>(
    configure: impl Configure<S>,
    known: &[&str],
    writes: impl AsyncFnOnce(&TestApp) -> W,
    serves: impl AsyncFn(&TestApp, &W),
) where
    S: Service,
{
    let declared = S::DATABASE.expect("a service with a database");
    let personal = declared.all_personal();
    let app = demo_app::<S>(&configure).await;
    let written = writes(&app).await;

    // The copy, as operators make it: a backup restored under another name.
    let dir = TempDir::new("anonymize");
    let url = app.db.connect_options().to_url_lossy().to_string();
    kit::backup::backup(S::NAME, S::VERSION, &url, &dir.0.join(S::NAME))
        .await
        .expect("the backup succeeds");
    let copy = TestDb::adopt(&TestDb::unique_name());
    kit::backup::restore(&dir.0.join(S::NAME), &url, copy.name(), false)
        .await
        .expect("the restore succeeds");
    drop(app);
    let pool = copy.pool().await;

    let originals = originals(&pool, &personal).await;
    for value in known {
        assert!(
            originals.iter().any(|o| o == value),
            "{value} should be among the personal values found: {originals:?}"
        );
    }
    let keys_before = identities(&pool).await;

    let mut conn = pool.acquire().await.expect("a connection");
    let report = kit::anonymize::anonymize(&mut conn, &personal, "test-salt")
        .await
        .expect("the anonymizer runs");
    drop(conn);
    assert!(!report.rewritten.is_empty(), "{report}");

    let mut leaks = Vec::new();
    for (table, rows) in all_rows(&pool).await {
        for row in rows {
            let lower = row.to_lowercase();
            for value in &originals {
                if lower.contains(&value.to_lowercase()) {
                    leaks.push(format!("{table}: {value:?} in {row}"));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "personal data left:\n{}",
        leaks.join("\n")
    );

    let keys_after = identities(&pool).await;
    let cleared: Vec<&str> = personal
        .iter()
        .filter_map(|p| match p {
            Personal::Clear { table } => Some(*table),
            Personal::Column { .. } => None,
        })
        .collect();
    for (table, before) in &keys_before {
        if cleared.contains(&table.as_str()) {
            continue;
        }
        assert_eq!(
            keys_after.get(table),
            Some(before),
            "{table}: rows, UUIDs and keys are kept"
        );
    }
    let dangling: Vec<(String,)> = sqlx::query_as(
        "SELECT conname::text FROM pg_constraint WHERE contype = 'f' AND NOT convalidated",
    )
    .fetch_all(&pool)
    .await
    .expect("read the foreign keys");
    assert!(dangling.is_empty(), "{dangling:?}");
    pool.close().await;

    let app = restart_on::<S>(copy, &configure).await;
    serves(&app, &written).await;
}

/// The declared changelog is exactly the files in the crate's `changelog/` (in order): a file
/// nobody listed would never run.
pub fn assert_changelog_lists_every_file<S: Service>() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("changelog");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|name| name.ends_with(".sql"))
                .map(|name| name.trim_end_matches(".sql").to_owned())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let declared: Vec<String> = S::DATABASE
        .map(|d| {
            d.changelog
                .iter()
                .filter(|c| matches!(c.body, kit::changelog::ChangeBody::Sql(_)))
                .map(|c| c.name.to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        declared,
        files,
        "{}: kit::changelog![...] must list every file of {} in name order",
        S::NAME,
        dir.display()
    );
}

/// The service's migrations run forward over the previous release's data: a database at the
/// migrations up to `previous_release` (the newest version that release shipped; `None`: every
/// migration, for a service whose first release this is) holding the demo scenario is migrated
/// to this release and its pending data changes applied, cleanly, and ends with the same tables
/// as a database made fresh.
pub async fn assert_migrates_forward<S: Service>(previous_release: Option<i64>) {
    let declared = S::DATABASE.expect("a service with a database");
    let old = TestDb::create().await;
    let pool = old.pool().await;
    for schema in declared.shared {
        schema.apply(&pool).await.expect("the shared tables apply");
    }
    let kept: Vec<_> = declared
        .migrations
        .iter()
        .filter(|m| previous_release.is_none_or(|v| m.version <= v))
        .cloned()
        .collect();
    sqlx::migrate::Migrator::with_migrations(kept)
        .run(&pool)
        .await
        .expect("the previous release's migrations apply");
    kit::service::populate::<S>(&pool, &crate::workspace_root().join("populator"), "demo")
        .await
        .expect("the demo data loads at the previous release's schema");

    kit::service::migrate::<S>(&pool)
        .await
        .expect("this release's migrations run forward over the previous release's data");
    kit::service::apply_changelog::<S>(&pool, false)
        .await
        .expect("the pending data changes apply");

    let fresh = TestDb::create().await;
    let fresh_pool = fresh.pool().await;
    kit::service::migrate::<S>(&fresh_pool)
        .await
        .expect("migrate a fresh database");
    kit::service::apply_changelog::<S>(&fresh_pool, false)
        .await
        .expect("apply the data changes");
    let tables = crate::schema::tables(&fresh_pool).await;
    assert_eq!(crate::schema::tables(&pool).await, tables);
    for table in tables {
        assert_eq!(
            crate::schema::describe(&pool, &table).await,
            crate::schema::describe(&fresh_pool, &table).await,
            "{}: {table} after upgrading differs from a fresh database",
            S::NAME
        );
    }
    pool.close().await;
    fresh_pool.close().await;
}
