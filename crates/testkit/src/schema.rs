//! Shared tables defined once: a service's `outbox`, `inbox`, `idempotency` and `users` must be
//! exactly what their crates define, never a copy that drifted.
//!
//! ```ignore
//! testkit::schema::assert_shared_tables::<template::Template>(&[]).await;
//! ```

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::TestDb;

/// What a table is made of, as Postgres reports it: columns (type, nullability, default,
/// identity), indexes and triggers, each as text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableDefinition {
    pub columns: BTreeMap<String, String>,
    pub indexes: BTreeMap<String, String>,
    pub triggers: BTreeMap<String, String>,
}

/// The definition of `table` in the database behind `pool`.
pub async fn describe(pool: &PgPool, table: &str) -> TableDefinition {
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text,
                concat_ws(' ', udt_name, CASE WHEN is_nullable = 'NO' THEN 'not null' END,
                          'default ' || column_default,
                          CASE WHEN is_identity = 'YES' THEN 'identity ' || identity_generation END)
         FROM information_schema.columns
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .expect("read the columns");
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename = $1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .expect("read the indexes");
    let triggers: Vec<(String, String)> = sqlx::query_as(
        "SELECT t.tgname::text, pg_get_triggerdef(t.oid) FROM pg_trigger t
         JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace
           AND NOT t.tgisinternal",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .expect("read the triggers");
    TableDefinition {
        columns: columns.into_iter().collect(),
        indexes: indexes.into_iter().collect(),
        triggers: triggers.into_iter().collect(),
    }
}

/// The tables in the database behind `pool`, migration histories left out.
pub async fn tables(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables
         WHERE schemaname = current_schema() AND tablename NOT LIKE '\\_sqlx\\_migrations%'
         ORDER BY tablename",
    )
    .fetch_all(pool)
    .await
    .expect("list the tables")
}

/// Asserts that the shared tables in `pool` (a database migrated for service `S`) are exactly
/// what their crates define. `extended` names shared tables the service may add columns and
/// indexes to (auth adds credentials to `users`); their crate's own columns and indexes must
/// still be there unchanged.
pub async fn assert_shared_tables_in<S: kit::Service>(pool: &PgPool, extended: &[&str]) {
    let database = S::DATABASE.expect("a service with a database");
    let reference = TestDb::create().await;
    let reference_pool = reference.pool().await;
    for schema in database.shared {
        schema
            .apply(&reference_pool)
            .await
            .expect("apply the shared schema");
    }
    for table in tables(&reference_pool).await {
        let expected = describe(&reference_pool, &table).await;
        let actual = describe(pool, &table).await;
        if extended.contains(&table.as_str()) {
            for (kind, want, have) in [
                ("column", &expected.columns, &actual.columns),
                ("index", &expected.indexes, &actual.indexes),
                ("trigger", &expected.triggers, &actual.triggers),
            ] {
                for (name, definition) in want {
                    assert_eq!(
                        have.get(name),
                        Some(definition),
                        "{}: {table}'s {kind} {name} differs from its crate's definition",
                        S::NAME
                    );
                }
            }
        } else {
            assert_eq!(
                actual,
                expected,
                "{}: table {table} differs from its crate's definition",
                S::NAME
            );
        }
    }
}

/// [`assert_shared_tables_in`] on a fresh database migrated for `S`.
pub async fn assert_shared_tables<S: kit::Service>(extended: &[&str]) {
    let db = TestDb::create().await;
    let pool = db.pool().await;
    kit::service::migrate::<S>(&pool)
        .await
        .expect("the service's migrations apply");
    assert_shared_tables_in::<S>(&pool, extended).await;
}
