//! The service's database: pool, creation in development, embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection};

use crate::config::DatabaseSettings;

/// Opens the pool; with `create_if_missing`, first creates the database when it does not exist.
pub async fn connect(
    settings: &DatabaseSettings,
    create_if_missing: bool,
) -> anyhow::Result<PgPool> {
    let options = connect_options(settings)?;
    if create_if_missing {
        create_database(&options).await?;
    }
    pool_options(settings)
        .connect_with(options)
        .await
        .with_context(|| {
            format!(
                "cannot connect to the database at {}",
                settings.url.redacted()
            )
        })
}

/// A pool that connects on first use: for commands that must not need the database (`openapi`).
pub fn connect_lazy(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    Ok(pool_options(settings).connect_lazy_with(connect_options(settings)?))
}

fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    let options = PgConnectOptions::from_str(settings.url.expose())
        .with_context(|| format!("invalid database URL {}", settings.url.redacted()))?;
    // Statements slower than a second are worth a warning, with the request id of their span.
    Ok(options.log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(1)))
}

fn pool_options(settings: &DatabaseSettings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout.unwrap_or(Duration::from_secs(5)))
}

/// Creates the database named in `options` unless it exists (safe against concurrent creators).
pub async fn create_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options
        .get_database()
        .context("the database URL names no database")?
        .to_owned();
    let maintenance = options.clone().database("postgres");
    let mut conn = sqlx::PgConnection::connect_with(&maintenance)
        .await
        .context("cannot connect to the Postgres server to create the database")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let statement = format!("CREATE DATABASE {}", quote_identifier(&name));
        match sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut conn)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // 42P04 duplicate_database: another instance created it meanwhile.
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("42P04") => {}
            Err(err) => return Err(err).with_context(|| format!("cannot create database {name}")),
        }
    }
    conn.close().await.ok();
    Ok(())
}

/// `"name"` with embedded quotes doubled: an identifier that is safe to splice into DDL.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies pending migrations; returns how many were applied.
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<usize> {
    let before = applied_count(pool).await;
    migrator.run(pool).await.context("migrations failed")?;
    let after = applied_count(pool).await;
    Ok(after.saturating_sub(before))
}

async fn applied_count(pool: &PgPool) -> usize {
    applied_count_in(pool, "_sqlx_migrations").await
}

/// Successful migrations recorded in `table` (0 when it does not exist yet).
async fn applied_count_in(pool: &PgPool, table: &str) -> usize {
    let statement = format!(
        "SELECT count(*) FROM {} WHERE success",
        quote_identifier(table)
    );
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(statement))
        .fetch_one(pool)
        .await
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}

/// Tables that belong to a shared crate's behaviour (bus: `outbox`, `inbox`; kit:
/// `idempotency`; identity: `users`), defined once by that crate and applied to every service
/// that uses it. Each has its own migration history (`_sqlx_migrations_<owner>`), so the
/// crate's migrations and the service's own never share version numbers.
pub struct SharedSchema {
    /// The owning crate: names the history table.
    pub owner: &'static str,
    /// The crate's migrations (`sqlx::migrate!()` in the owning crate).
    pub migrator: &'static Migrator,
    /// Descriptions (file names without the version) of the copies services used to carry in
    /// their own `migrations/`. The crate's first migration adopts such a table as it is and
    /// brings it to the one definition; the copy's row is then dropped from the service's
    /// history, so the service's migrator does not miss the file that is gone.
    pub replaces: &'static [&'static str],
    /// The personal data in these tables and how the anonymizer replaces it, declared once
    /// here for every service that uses them.
    pub personal: &'static [crate::anonymize::Personal],
}

impl SharedSchema {
    /// The table recording which of this schema's migrations ran.
    pub fn history_table(&self) -> String {
        format!("_sqlx_migrations_{}", self.owner)
    }

    /// Applies this schema's pending migrations; returns how many were applied.
    pub async fn apply(&self, pool: &PgPool) -> anyhow::Result<usize> {
        let mut migrator = Migrator::with_migrations(self.migrator.iter().cloned().collect());
        migrator.dangerous_set_table_name(self.history_table());
        let table = self.history_table();
        let before = applied_count_in(pool, &table).await;
        migrator
            .run(pool)
            .await
            .with_context(|| format!("the {} tables' migrations failed", self.owner))?;
        Ok(applied_count_in(pool, &table).await.saturating_sub(before))
    }
}

/// Applies the shared schemas a service uses, forgets the copies they replace, then applies the
/// service's own migrations. Returns how many migrations were applied in all.
pub async fn migrate_service(
    pool: &PgPool,
    shared: &[&SharedSchema],
    own: &Migrator,
) -> anyhow::Result<usize> {
    let mut applied = 0;
    for schema in shared {
        applied += schema.apply(pool).await?;
    }
    forget_replaced_copies(pool, shared, own).await?;
    Ok(applied + migrate(pool, own).await?)
}

/// Drops from the service's history the rows of migrations that were copies of a shared schema
/// (same description, a version the service no longer ships).
async fn forget_replaced_copies(
    pool: &PgPool,
    shared: &[&SharedSchema],
    own: &Migrator,
) -> anyhow::Result<()> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    if !exists {
        return Ok(());
    }
    let replaced: Vec<String> = shared
        .iter()
        .flat_map(|schema| schema.replaces.iter().map(|name| (*name).to_owned()))
        .collect();
    let kept: Vec<i64> = own.iter().map(|migration| migration.version).collect();
    let forgotten = sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE description = ANY($1) AND NOT (version = ANY($2))",
    )
    .bind(&replaced)
    .bind(&kept)
    .execute(pool)
    .await
    .context("cannot update the migration history")?
    .rows_affected();
    if forgotten > 0 {
        tracing::info!(
            forgotten,
            "migration history: copies of shared tables now owned by their crates"
        );
    }
    Ok(())
}
