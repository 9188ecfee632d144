use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// The tablespace test databases are made in when the test server has it: `cargo xtask infra`
/// puts it on a RAM disk (`/dev/shm`) for a local server, where making and dropping a database's
/// few hundred files costs far less than on a disk's file system.
pub const TEST_TABLESPACE: &str = "hatchery_tests";

/// Where test databases are created: `HATCHERY_TEST_DATABASE_URL`, else the local server.
fn server_url() -> String {
    std::env::var("HATCHERY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test, dropped (forcibly) when the value is dropped.
pub struct TestDb {
    name: String,
    options: PgConnectOptions,
}

impl TestDb {
    /// Creates an empty database with a unique name.
    pub async fn create() -> TestDb {
        let server = PgConnectOptions::from_str(&server_url())
            .expect("HATCHERY_TEST_DATABASE_URL is a Postgres URL");
        let name = Self::unique_name();
        let mut conn = server
            .connect()
            .await
            .expect("Postgres must run at 127.0.0.1:5432 (cargo xtask infra starts it)");
        let plain = format!("CREATE DATABASE {}", kit::db::quote_identifier(&name));
        // On the test tablespace where the server has one; where it does not (or its
        // directory is gone), the default one.
        let placed = format!("{plain} TABLESPACE {TEST_TABLESPACE}");
        if sqlx::query(sqlx::AssertSqlSafe(placed))
            .execute(&mut conn)
            .await
            .is_err()
        {
            sqlx::query(sqlx::AssertSqlSafe(plain))
                .execute(&mut conn)
                .await
                .expect("create test database");
        }
        conn.close().await.ok();
        TestDb {
            options: server.database(&name),
            name,
        }
    }

    /// Takes charge of an existing database of the test server (a restored copy): dropped with
    /// the value.
    pub fn adopt(name: &str) -> TestDb {
        let server = PgConnectOptions::from_str(&server_url())
            .expect("HATCHERY_TEST_DATABASE_URL is a Postgres URL");
        TestDb {
            options: server.database(name),
            name: name.to_owned(),
        }
    }

    /// A fresh unique name on the test server, for a database a test makes another way.
    pub fn unique_name() -> String {
        format!("test_{}", uuid::Uuid::now_v7().simple())
    }

    /// Drops the database now (its connections closed by force), keeping the name: the
    /// "database lost" step of a restore drill.
    pub async fn drop_now(&self) {
        let server = self.options.clone().database("postgres");
        let mut conn = server.connect().await.expect("connect to the server");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE {} WITH (FORCE)",
            kit::db::quote_identifier(&self.name)
        )))
        .execute(&mut conn)
        .await
        .expect("drop the database");
        conn.close().await.ok();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://…/<test database>`.
    pub fn url(&self) -> String {
        self.options.to_url_lossy().to_string()
    }

    /// A small pool on the test database, for asserting what the service stored.
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.options.clone())
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let server = self.options.clone().database("postgres");
        let statement = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            kit::db::quote_identifier(&self.name)
        );
        // Drop runs outside any async context we could borrow: use a private runtime on a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = server.connect().await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("testkit: could not drop test database {}", self.name);
        }
    }
}
