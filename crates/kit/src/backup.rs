//! Backups and restores of a service's database: `pg_dump` in its custom format, taken inside
//! the same snapshot as a manifest of what it holds (the service, its migration versions, the
//! time, each table's row count and checksum, the dump file's SHA-256), and restores that check
//! every one of those before they say a database is back.
//!
//! `<service> backup --to DIR` writes `DIR/<service>/<service>.dump` and
//! `DIR/<service>/manifest.json`; `<service> restore --from DIR [--into NAME] [--replace]`
//! restores into a new database (the configured one's name by default) and never over an
//! existing database without `--replace`; even then the old one is dropped only once the new one
//! is restored and verified. `cargo xtask backup|restore` runs them for every service.
//!
//! The `pg_dump`/`pg_restore` used are of the server's major version (`/usr/lib/postgresql/<N>/bin`
//! and the like, or `$HATCHERY_PG_BIN_DIR`): an older client cannot dump a newer server, and a
//! dump restores with a client at least as new as the one that wrote it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::db::quote_identifier;

/// One table's contents, as the manifest records them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableSum {
    pub rows: i64,
    /// MD5 of every row's text form, sorted: equal exactly when the rows are.
    pub checksum: String,
}

/// What a backup holds: written next to the dump, checked by the restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub service: String,
    /// The release that took it.
    pub release: String,
    pub database: String,
    pub taken_at: chrono::DateTime<chrono::Utc>,
    /// Newest applied migration per history table (`_sqlx_migrations`: the service's own;
    /// `_sqlx_migrations_<crate>`: the shared tables').
    pub migrations: BTreeMap<String, i64>,
    pub server_version: String,
    pub pg_dump: String,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    pub tables: BTreeMap<String, TableSum>,
}

impl Manifest {
    pub const FILE: &str = "manifest.json";

    pub fn read(dir: &Path) -> anyhow::Result<Manifest> {
        let path = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a manifest", path.display()))
    }

    /// Total rows over all tables.
    pub fn rows(&self) -> i64 {
        self.tables.values().map(|t| t.rows).sum()
    }
}

/// Session settings under which row texts are compared: the same on every connection.
const STABLE_TEXT: &str = "SET TIME ZONE 'UTC'; SET datestyle = 'ISO, YMD'; \
     SET intervalstyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'";

/// Every table of the database (the current schema), with its row count and checksum.
pub async fn table_sums(conn: &mut PgConnection) -> anyhow::Result<BTreeMap<String, TableSum>> {
    sqlx::raw_sql(STABLE_TEXT).execute(&mut *conn).await?;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut sums = BTreeMap::new();
    for table in tables {
        let statement = format!(
            "SELECT count(*), coalesce(md5(string_agg(r, E'\\n' ORDER BY r)), md5(''))
             FROM (SELECT t::text AS r FROM {} t) AS rows",
            quote_identifier(&table)
        );
        let (rows, checksum): (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(statement))
            .fetch_one(&mut *conn)
            .await
            .with_context(|| format!("cannot read table {table}"))?;
        sums.insert(table, TableSum { rows, checksum });
    }
    Ok(sums)
}

async fn migrations(conn: &mut PgConnection) -> anyhow::Result<BTreeMap<String, i64>> {
    let histories: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables
         WHERE schemaname = current_schema() AND tablename LIKE '\\_sqlx\\_migrations%' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut versions = BTreeMap::new();
    for table in histories {
        let statement = format!(
            "SELECT coalesce(max(version), 0) FROM {} WHERE success",
            quote_identifier(&table)
        );
        let version: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(statement))
            .fetch_one(&mut *conn)
            .await?;
        versions.insert(table, version);
    }
    Ok(versions)
}

/// The PostgreSQL client tools matching a server.
#[derive(Debug, Clone)]
pub struct PgTools {
    pub bin: Option<PathBuf>,
    pub major: u32,
}

impl PgTools {
    /// Finds `pg_dump`/`pg_restore` of the server's major version (or newer).
    pub async fn for_server(conn: &mut PgConnection) -> anyhow::Result<PgTools> {
        let number: String = sqlx::query_scalar("SHOW server_version_num")
            .fetch_one(&mut *conn)
            .await?;
        let major = number.parse::<u32>().context("server_version_num")? / 10000;
        let mut candidates: Vec<Option<PathBuf>> = Vec::new();
        if let Some(dir) = std::env::var_os("HATCHERY_PG_BIN_DIR") {
            candidates.push(Some(PathBuf::from(dir)));
        }
        for dir in [
            format!("/usr/lib/postgresql/{major}/bin"),
            format!("/usr/pgsql-{major}/bin"),
            format!("/opt/homebrew/opt/postgresql@{major}/bin"),
            format!("/usr/local/opt/postgresql@{major}/bin"),
        ] {
            candidates.push(Some(PathBuf::from(dir)));
        }
        candidates.push(None); // PATH
        let mut seen = Vec::new();
        for bin in candidates {
            let tools = PgTools { bin, major };
            let Ok(version) = tools.version("pg_dump") else {
                continue;
            };
            let found = version_major(&version);
            if found.is_some_and(|found| found >= major) {
                return Ok(tools);
            }
            seen.push(version);
        }
        bail!(
            "no pg_dump of PostgreSQL {major} or newer found (the server is {major}; seen: {}): \
             install the PostgreSQL {major} client tools or set HATCHERY_PG_BIN_DIR",
            if seen.is_empty() {
                "none".to_owned()
            } else {
                seen.join(", ")
            }
        )
    }

    pub fn command(&self, tool: &str) -> Command {
        match &self.bin {
            Some(dir) => Command::new(dir.join(tool)),
            None => Command::new(tool),
        }
    }

    /// `pg_dump (PostgreSQL) 15.20 ...`
    pub fn version(&self, tool: &str) -> anyhow::Result<String> {
        let output = self.command(tool).arg("--version").output()?;
        if !output.status.success() {
            bail!("{tool} --version failed");
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

fn version_major(version: &str) -> Option<u32> {
    version
        .split_whitespace()
        .find_map(|word| word.split('.').next()?.parse::<u32>().ok())
}

/// Connection parameters for a libpq tool: everything but the password in `--dbname`, the
/// password in `PGPASSWORD` (never on a command line other users can read).
fn libpq(command: &mut Command, options: &PgConnectOptions, url: &str) {
    let database = options.get_database().unwrap_or("postgres");
    let mut dsn = format!(
        "host={} port={} user={} dbname={}",
        quote_libpq(options.get_host()),
        options.get_port(),
        quote_libpq(options.get_username()),
        quote_libpq(database)
    );
    if let Some(name) = options.get_application_name() {
        dsn.push_str(&format!(" application_name={}", quote_libpq(name)));
    }
    // TLS and session options written in the URL's query apply to the tools too.
    if let Some((_, query)) = url.split_once('?') {
        for pair in query.split('&') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            if LIBPQ_PASSED.contains(&key) {
                dsn.push_str(&format!(" {key}={}", quote_libpq(&percent_decode(value))));
            }
        }
    }
    command.arg(format!("--dbname={dsn}"));
    if let Some(password) = password_of(url) {
        command.env("PGPASSWORD", password);
    }
}

/// URL query parameters that mean the same to libpq's tools as to the service's connection.
const LIBPQ_PASSED: [&str; 6] = [
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "connect_timeout",
];

fn quote_libpq(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The percent-decoded password of `postgres://user:password@host/...`.
fn password_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    Some(percent_decode(password))
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn sha256_file(path: &Path) -> anyhow::Result<(String, u64)> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok((
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect(),
        bytes,
    ))
}

fn run_tool(mut command: Command, what: &str) -> anyhow::Result<()> {
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Backs up the database at `url` into `dir` (created; the service's folder of a backup):
/// the dump and its manifest, both from one snapshot.
pub async fn backup(
    service: &str,
    release: &str,
    url: &str,
    dir: &Path,
) -> anyhow::Result<Manifest> {
    let options = PgConnectOptions::from_str(url).context("invalid database URL")?;
    let database = options
        .get_database()
        .context("the database URL names no database")?
        .to_owned();
    let mut conn = options
        .connect()
        .await
        .with_context(|| format!("cannot connect to database {database}"))?;
    let tools = PgTools::for_server(&mut conn).await?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = format!("{service}.dump");
    let path = dir.join(&file);
    // One snapshot for the manifest and the dump: the checksums describe exactly what is dumped.
    sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut conn)
        .await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    let migrations = migrations(&mut conn).await?;
    let tables = table_sums(&mut conn).await?;
    let mut dump = tools.command("pg_dump");
    dump.args(["--format=custom", "--no-owner", "--no-privileges"])
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--file={}", path.display()));
    libpq(&mut dump, &options, url);
    let dumped = tokio::task::spawn_blocking(move || run_tool(dump, "pg_dump")).await?;
    sqlx::raw_sql("COMMIT").execute(&mut conn).await?;
    conn.close().await.ok();
    dumped?;
    let (sha256, bytes) = sha256_file(&path)?;
    let manifest = Manifest {
        service: service.to_owned(),
        release: release.to_owned(),
        database,
        taken_at: chrono::Utc::now(),
        migrations,
        server_version,
        pg_dump: tools.version("pg_dump")?,
        file,
        bytes,
        sha256,
        tables,
    };
    let manifest_path = dir.join(Manifest::FILE);
    std::fs::write(
        &manifest_path,
        serde_json::to_string_pretty(&manifest)? + "\n",
    )
    .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    Ok(manifest)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub database: String,
    pub manifest: Manifest,
    /// An existing database of that name was replaced.
    pub replaced: bool,
    pub took: Duration,
}

async fn database_exists(conn: &mut PgConnection, name: &str) -> anyhow::Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await?,
    )
}

async fn execute(conn: &mut PgConnection, statement: String) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Restores the backup in `dir` (a service's folder: `manifest.json` and the dump) into
/// database `into` on the server of `url`. Checks the file against the manifest before, and
/// every table's rows after; refuses an existing database unless `replace`, and even then
/// drops it only once the new copy is restored and verified.
pub async fn restore(dir: &Path, url: &str, into: &str, replace: bool) -> anyhow::Result<Restored> {
    let started = Instant::now();
    let manifest = Manifest::read(dir)?;
    let path = dir.join(&manifest.file);
    let (sha256, bytes) = sha256_file(&path)?;
    if sha256 != manifest.sha256 || bytes != manifest.bytes {
        bail!(
            "{} does not match its manifest (sha256 {sha256}, {bytes} bytes; the manifest says {}, {} bytes): the backup is damaged",
            path.display(),
            manifest.sha256,
            manifest.bytes
        );
    }
    let server = PgConnectOptions::from_str(url)
        .context("invalid database URL")?
        .database("postgres");
    let mut admin = server
        .connect()
        .await
        .context("cannot connect to the Postgres server")?;
    let exists = database_exists(&mut admin, into).await?;
    if exists && !replace {
        bail!(
            "database {into} exists: restore into another one (--into NAME) or pass --replace to \
             replace it (it is dropped only once the restored copy is verified)"
        );
    }
    let tools = PgTools::for_server(&mut admin).await?;
    // Restored under a name of its own first, so a failure leaves the existing database as it was.
    let staging = if exists {
        format!("{}_restoring", into.chars().take(40).collect::<String>())
    } else {
        into.to_owned()
    };
    if exists {
        // A staging copy left by an interrupted restore.
        execute(
            &mut admin,
            format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_identifier(&staging)
            ),
        )
        .await?;
    }
    execute(
        &mut admin,
        format!("CREATE DATABASE {}", quote_identifier(&staging)),
    )
    .await
    .with_context(|| format!("cannot create database {staging}"))?;
    let target = server.clone().database(&staging);
    let outcome = async {
        let mut command = tools.command("pg_restore");
        command.args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
        ]);
        libpq(&mut command, &target, url);
        command.arg(&path);
        tokio::task::spawn_blocking(move || run_tool(command, "pg_restore")).await??;
        let mut conn = target.connect().await?;
        let sums = table_sums(&mut conn).await?;
        conn.close().await.ok();
        verify(&manifest, &sums)
    }
    .await;
    if let Err(err) = outcome {
        execute(
            &mut admin,
            format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_identifier(&staging)
            ),
        )
        .await
        .ok();
        return Err(err.context(format!(
            "restoring {} failed; nothing was replaced",
            path.display()
        )));
    }
    if staging != into {
        execute(
            &mut admin,
            format!("DROP DATABASE {} WITH (FORCE)", quote_identifier(into)),
        )
        .await
        .with_context(|| format!("cannot drop database {into} to replace it"))?;
        execute(
            &mut admin,
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_identifier(&staging),
                quote_identifier(into)
            ),
        )
        .await?;
    }
    admin.close().await.ok();
    Ok(Restored {
        database: into.to_owned(),
        manifest,
        replaced: exists,
        took: started.elapsed(),
    })
}

/// The restored tables are the manifest's: the same tables, rows and checksums.
pub fn verify(manifest: &Manifest, sums: &BTreeMap<String, TableSum>) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for (table, want) in &manifest.tables {
        match sums.get(table) {
            None => problems.push(format!("{table} is missing")),
            Some(have) if have != want => problems.push(format!(
                "{table}: {} row(s), checksum {} (the manifest says {} row(s), {})",
                have.rows, have.checksum, want.rows, want.checksum
            )),
            Some(_) => {}
        }
    }
    for table in sums.keys() {
        if !manifest.tables.contains_key(table) {
            problems.push(format!("{table} is not in the manifest"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "the restored database differs from the backup's manifest:\n  {}",
            problems.join("\n  ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_leave_the_url_decoded() {
        assert_eq!(
            password_of("postgres://app:s%40cret@db:5432/x").as_deref(),
            Some("s@cret")
        );
        assert_eq!(password_of("postgres://app@db/x"), None);
        assert_eq!(password_of("postgres://db/x"), None);
    }

    #[test]
    fn tools_connect_like_the_service_without_the_password_in_their_arguments() {
        let url = "postgres://app:s3cret@db.internal:6432/payments?sslmode=verify-full&options=-c%20lock_timeout%3D5s&application_name=x";
        let options = PgConnectOptions::from_str(url).unwrap();
        let mut command = Command::new("pg_dump");
        libpq(&mut command, &options, url);
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args.len(), 1);
        let dsn = &args[0];
        assert!(
            dsn.contains("host='db.internal' port=6432 user='app' dbname='payments'"),
            "{dsn}"
        );
        assert!(dsn.contains("sslmode='verify-full'"), "{dsn}");
        assert!(dsn.contains("options='-c lock_timeout=5s'"), "{dsn}");
        assert!(!dsn.contains("s3cret"), "{dsn}");
        let password = command
            .get_envs()
            .find(|(key, _)| *key == "PGPASSWORD")
            .and_then(|(_, value)| value);
        assert_eq!(password.and_then(|p| p.to_str()), Some("s3cret"));
    }

    #[test]
    fn reads_tool_versions() {
        assert_eq!(
            version_major("pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            Some(15)
        );
    }
}
