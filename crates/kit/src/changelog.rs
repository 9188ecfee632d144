//! The data changelog: one-off data changes (a backfill, a fix of rows a bug wrote, a new
//! default for existing accounts) shipped with a service and applied in order, exactly once per
//! database, like migrations but for data.
//!
//! A service keeps them in `changelog/NNNN_name.sql`, embedded at compile time with
//! [`changelog!`](crate::changelog!), and lists them in `kit::Database::changelog`; a change
//! that needs code is a [`Change::code`] function. Each change runs in a transaction of its own
//! together with the row that records it in `_data_changelog` (name, checksum, applied at, by
//! which release, how long it took): a change that fails rolls back and stays pending, and the
//! next run tries it again. A recorded SQL change whose file has changed since stops `apply`
//! before anything runs ([`ChangelogError::Modified`]): a change that ran is history, and a fix
//! to it is a new change.
//!
//! `<service> changelog status|apply [--dry-run]`; `serve` applies pending changes after the
//! migrations when `database.changelog_on_start` says so (default: in development only; in
//! production the deploy runs `changelog apply` as a step of its own).

use std::fmt;
use std::time::Instant;

use anyhow::Context;
use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

/// What a code change runs, inside the transaction that records it.
pub type ChangeFn = for<'a> fn(&'a mut PgConnection) -> BoxFuture<'a, anyhow::Result<()>>;

/// One data change.
pub struct Change {
    /// `NNNN_name` (the file name without `.sql`): changes run in name order.
    pub name: &'static str,
    pub body: ChangeBody,
}

pub enum ChangeBody {
    /// SQL statements, run as one script.
    Sql(&'static str),
    /// A Rust function, for changes that need code. Its checksum is its name and `revision`:
    /// bump `revision` only to document that the code changed on purpose (a recorded change
    /// whose revision differs stops `apply`, like an edited SQL file).
    Code { run: ChangeFn, revision: u32 },
}

impl Change {
    pub const fn sql(name: &'static str, sql: &'static str) -> Change {
        Change {
            name,
            body: ChangeBody::Sql(sql),
        }
    }

    pub const fn code(name: &'static str, run: ChangeFn) -> Change {
        Change {
            name,
            body: ChangeBody::Code { run, revision: 1 },
        }
    }

    /// SHA-256 of the SQL text, or of the name and revision of a code change.
    pub fn checksum(&self) -> Vec<u8> {
        let mut hash = Sha256::new();
        match &self.body {
            ChangeBody::Sql(sql) => hash.update(sql.as_bytes()),
            ChangeBody::Code { revision, .. } => {
                hash.update(format!("code:{}:{revision}", self.name).as_bytes());
            }
        }
        hash.finalize().to_vec()
    }
}

/// Embeds `changelog/<file>` of the calling crate for each file named, as a [`Change`]:
/// `static CHANGELOG: &[kit::changelog::Change] = kit::changelog!["0001_backfill.sql"];`
/// (each service's tests check that every file of `changelog/` is listed).
#[macro_export]
macro_rules! changelog {
    ($($file:literal),* $(,)?) => {
        &[$($crate::changelog::Change::sql(
            $crate::changelog::strip_sql($file),
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/changelog/", $file)),
        )),*]
    };
}

/// `0001_name.sql` → `0001_name`.
pub const fn strip_sql(file: &'static str) -> &'static str {
    match file.as_bytes() {
        [rest @ .., b'.', b's', b'q', b'l'] => match std::str::from_utf8(rest) {
            Ok(name) => name,
            Err(_) => file,
        },
        _ => file,
    }
}

/// The table recording applied changes.
pub const TABLE: &str = "_data_changelog";

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS _data_changelog (
    name         text        PRIMARY KEY,
    checksum     bytea       NOT NULL,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    release      text        NOT NULL,
    duration_ms  bigint      NOT NULL
)";

/// Serialises appliers (several replicas starting at once): a transaction-scoped advisory lock.
const LOCK_KEY: i64 = 0x6861_7463_6c6f_6701;

/// Why `apply` stopped.
#[derive(Debug)]
pub enum ChangelogError {
    /// A recorded change differs from the one this build carries.
    Modified {
        name: String,
        recorded: String,
        now: String,
    },
    /// A change failed; it was rolled back and stays pending.
    Failed { name: String, cause: anyhow::Error },
    /// The service's list of changes is not in name order, or names one twice.
    Declaration(String),
}

impl fmt::Display for ChangelogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChangelogError::Modified {
                name,
                recorded,
                now,
            } => write!(
                f,
                "changelog {name} was applied with checksum {recorded} but is now {now}: a change \
                 that ran is history; restore it and ship the correction as a new change"
            ),
            ChangelogError::Failed { name, cause } => write!(
                f,
                "changelog {name} failed and was rolled back (it stays pending): {cause:#}"
            ),
            ChangelogError::Declaration(message) => write!(f, "changelog: {message}"),
        }
    }
}

impl std::error::Error for ChangelogError {}

/// Exit code of `changelog apply` when a recorded change was modified.
pub const EXIT_MODIFIED: u8 = 3;

/// Where one change stands in a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Pending,
    Applied {
        applied_at: chrono::DateTime<chrono::Utc>,
        release: String,
        duration_ms: i64,
    },
    /// Recorded with another checksum than the one this build carries.
    Modified,
    /// Recorded, but this build does not know it (applied by a newer release).
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub state: State,
}

/// What `apply` did.
#[derive(Debug, Default, Clone)]
pub struct Applied {
    pub names: Vec<String>,
    /// Rows the SQL changes reported (inserted, updated, deleted).
    pub rows: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short(bytes: &[u8]) -> String {
    hex(&bytes[..bytes.len().min(6)])
}

fn check_declaration(changes: &[Change]) -> Result<(), ChangelogError> {
    for pair in changes.windows(2) {
        if pair[0].name >= pair[1].name {
            return Err(ChangelogError::Declaration(format!(
                "changes must be listed in name order, each once: {} comes before {}",
                pair[0].name, pair[1].name
            )));
        }
    }
    Ok(())
}

type Recorded = (String, Vec<u8>, chrono::DateTime<chrono::Utc>, String, i64);

/// The recorded changes. `create`: make the table first (only under the appliers' lock:
/// concurrent `CREATE TABLE IF NOT EXISTS` can collide); otherwise a missing table is an empty
/// record.
async fn recorded(conn: &mut PgConnection, create: bool) -> anyhow::Result<Vec<Recorded>> {
    if create {
        sqlx::query(CREATE_TABLE)
            .execute(&mut *conn)
            .await
            .context("cannot create the changelog table")?;
    } else {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_data_changelog') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
    }
    Ok(sqlx::query_as(
        "SELECT name, checksum, applied_at, release, duration_ms FROM _data_changelog ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// Every declared change and every recorded one, in name order, with its state.
pub async fn status(pool: &PgPool, changes: &[Change]) -> anyhow::Result<Vec<Entry>> {
    let mut conn = pool.acquire().await?;
    let recorded = recorded(&mut conn, false).await?;
    let mut entries: Vec<Entry> = changes
        .iter()
        .map(|change| {
            let state = match recorded.iter().find(|r| r.0 == change.name) {
                None => State::Pending,
                Some((_, checksum, ..)) if *checksum != change.checksum() => State::Modified,
                Some((_, _, applied_at, release, duration_ms)) => State::Applied {
                    applied_at: *applied_at,
                    release: release.clone(),
                    duration_ms: *duration_ms,
                },
            };
            Entry {
                name: change.name.to_owned(),
                state,
            }
        })
        .collect();
    for (name, ..) in &recorded {
        if !changes.iter().any(|c| c.name == name) {
            entries.push(Entry {
                name: name.clone(),
                state: State::Unknown,
            });
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Applies the pending changes in name order, each in its own transaction with its record.
/// Stops before running anything when a recorded change was modified; stops at the first
/// failing change (rolled back, still pending). With `dry_run`, runs every pending change in
/// one transaction and rolls it back: what would be applied, and the rows it would touch.
pub async fn apply(
    pool: &PgPool,
    changes: &[Change],
    release: &str,
    dry_run: bool,
) -> Result<Applied, ChangelogError> {
    let internal = |cause: anyhow::Error| ChangelogError::Failed {
        name: "(changelog table)".into(),
        cause,
    };
    check_declaration(changes)?;
    let mut done = Applied::default();
    let mut dry = if dry_run {
        Some(pool.begin().await.map_err(|e| internal(e.into()))?)
    } else {
        None
    };
    for change in changes {
        let mut tx = match dry.as_mut() {
            Some(tx) => sqlx::Acquire::begin(&mut **tx).await,
            None => pool.begin().await,
        }
        .map_err(|e| internal(e.into()))?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(|e| internal(e.into()))?;
        let recorded = recorded(&mut tx, true).await.map_err(internal)?;
        // Every recorded change is checked before the first pending one runs.
        for (name, checksum, ..) in &recorded {
            if let Some(known) = changes.iter().find(|c| c.name == name)
                && known.checksum() != *checksum
            {
                return Err(ChangelogError::Modified {
                    name: name.clone(),
                    recorded: short(checksum),
                    now: short(&known.checksum()),
                });
            }
        }
        if recorded.iter().any(|r| r.0 == change.name) {
            continue;
        }
        let started = Instant::now();
        let result: anyhow::Result<u64> = match &change.body {
            ChangeBody::Sql(sql) => sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map(|r| r.rows_affected())
                .map_err(Into::into),
            ChangeBody::Code { run, .. } => run(&mut tx).await.map(|()| 0),
        };
        let rows = match result {
            Ok(rows) => rows,
            Err(cause) => {
                let _ = tx.rollback().await;
                return Err(ChangelogError::Failed {
                    name: change.name.to_owned(),
                    cause,
                });
            }
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO _data_changelog (name, checksum, release, duration_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(change.name)
        .bind(change.checksum())
        .bind(release)
        .bind(duration_ms)
        .execute(&mut *tx)
        .await
        .map_err(|e| internal(e.into()))?;
        tx.commit().await.map_err(|e| ChangelogError::Failed {
            name: change.name.to_owned(),
            cause: e.into(),
        })?;
        if !dry_run {
            tracing::info!(
                change = change.name,
                rows,
                duration_ms,
                "applied data change"
            );
        }
        done.names.push(change.name.to_owned());
        done.rows += rows;
    }
    if let Some(tx) = dry {
        tx.rollback().await.map_err(|e| internal(e.into()))?;
    }
    Ok(done)
}

/// `changelog status` as text, one line per change.
pub fn render_status(entries: &[Entry]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no data changes\n");
    }
    for entry in entries {
        let line = match &entry.state {
            State::Pending => format!("{:<40} pending\n", entry.name),
            State::Applied {
                applied_at,
                release,
                duration_ms,
            } => format!(
                "{:<40} applied   {} by {release} in {duration_ms} ms\n",
                entry.name,
                applied_at.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            State::Modified => format!(
                "{:<40} MODIFIED  (the file differs from the one applied)\n",
                entry.name
            ),
            State::Unknown => format!(
                "{:<40} applied   (not in this build: applied by another release)\n",
                entry.name
            ),
        };
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_file_names() {
        assert_eq!(strip_sql("0001_backfill.sql"), "0001_backfill");
        assert_eq!(strip_sql("0002_code"), "0002_code");
    }

    #[test]
    fn the_declaration_must_be_in_order() {
        let ok = [Change::sql("0001_a", "SELECT 1"), Change::sql("0002_b", "")];
        assert!(check_declaration(&ok).is_ok());
        let bad = [Change::sql("0002_b", ""), Change::sql("0001_a", "")];
        assert!(check_declaration(&bad).is_err());
        let twice = [Change::sql("0001_a", ""), Change::sql("0001_a", "")];
        assert!(check_declaration(&twice).is_err());
    }

    #[test]
    fn a_checksum_follows_the_text() {
        let a = Change::sql("0001_a", "UPDATE t SET x = 1");
        let b = Change::sql("0001_a", "UPDATE t SET x = 2");
        assert_ne!(a.checksum(), b.checksum());
        assert_eq!(
            a.checksum(),
            Change::sql("0001_a", "UPDATE t SET x = 1").checksum()
        );
    }
}
