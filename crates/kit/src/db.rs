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
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map_or(0, |n| usize::try_from(n).unwrap_or(0))
}
