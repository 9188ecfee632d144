//! The operations every service with a database must survive, as one-line tests in its own
//! test binary: the restore drill, the anonymizer, the data changelog's declaration, and its
//! migrations running forward over the previous release's data.
//!
//! ```ignore
//! #[tokio::test]
//! async fn restore_drill_and_anonymized_copy() {
//!     testkit::operations::restore_drill_and_anonymize::<template::Template, _, _, _, _, _>(Drill {
//!         configure, known: &["ada@hatchery.test"], writes, serves, serves_anonymized,
//!     }).await;
//! }
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kit::anonymize::{Personal, Replace};
use kit::{Service, Settings};
use sqlx::PgPool;

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

/// What a service's test gives the drill: how it configures the service, personal values its
/// writes put in the database, the writes, and what the service must serve from the restored
/// database and from the anonymized one.
pub struct Drill<C, Wr, Se, An> {
    pub configure: C,
    /// Personal values (addresses, names, IPs) the demo data and the writes hold: they must be
    /// among those the scan looks for, so it cannot pass by looking at nothing.
    pub known: &'static [&'static str],
    pub writes: Wr,
    pub serves: Se,
    pub serves_anonymized: An,
}

/// The restore drill, then the anonymizer on the restored copy:
///
/// 1. the demo data plus `writes` → backup (a manifest naming the migration version) → the
///    database dropped → restore (every table's rows and checksum as in the manifest; the
///    existing database is then refused without `--replace`) → the service started on it
///    serves what `serves` checks, which it checked before the backup too;
/// 2. the restored database is a copy, as operators make them: anonymized, then no original
///    email, name or IP address remains in any column of any table (each row read whole, as
///    text), every row, UUID and key is still there (but in the tables declared cleared), no
///    foreign key is broken, and the service started on it serves what `serves_anonymized`
///    checks.
pub async fn restore_drill_and_anonymize<S, W, C, Wr, Se, An>(drill: Drill<C, Wr, Se, An>)
where
    S: Service,
    C: Configure<S>,
    Wr: AsyncFnOnce(&TestApp) -> W,
    Se: AsyncFn(&TestApp, &W),
    An: AsyncFnOnce(&TestApp, &W),
{
    let Drill {
        configure,
        known,
        writes,
        serves,
        serves_anonymized,
    } = drill;
    let app = demo_app::<S>(&configure).await;
    let written = writes(&app).await;
    serves(&app, &written).await;
    let dir = TempDir::new("backup");
    let database = app.stop().await;
    let backup_dir = dir.0.join(S::NAME);
    let manifest = kit::backup::backup(S::NAME, S::VERSION, &database.url(), &backup_dir)
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
    let restored = kit::backup::restore(&backup_dir, &database.url(), database.name(), false)
        .await
        .expect("the restore succeeds and matches its manifest");
    assert_eq!(restored.manifest.tables, manifest.tables);
    assert!(!restored.replaced);
    let again = kit::backup::restore(&backup_dir, &database.url(), database.name(), false)
        .await
        .expect_err("an existing database is never restored over without replace");
    assert!(format!("{again:#}").contains("--replace"), "{again:#}");

    let app = restart_on::<S>(database, &configure).await;
    serves(&app, &written).await;
    let copy = app.stop().await;
    anonymize_and_scan::<S>(&copy, known).await;
    let app = restart_on::<S>(copy, &configure).await;
    serves_anonymized(&app, &written).await;
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

/// Anonymizes the database `copy` (the service stopped) and asserts that no personal value of
/// the declared email, name and IP columns (`known` among them) remains in any row of any
/// table, and that rows, UUIDs, keys and foreign keys are intact.
pub async fn anonymize_and_scan<S: Service>(copy: &TestDb, known: &[&str]) {
    let declared = S::DATABASE.expect("a service with a database");
    let personal = declared.all_personal();
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

    if previous_release.is_none() {
        // Nothing ran forward: the schema is a fresh one by construction.
        pool.close().await;
        return;
    }
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
