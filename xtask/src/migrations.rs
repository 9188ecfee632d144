//! `cargo xtask lint-migrations`: squawk (PyPI `squawk-cli`) on every migration of the suite,
//! so none can lock a hot table during a deploy (Sentry's rules for Postgres: transactional DDL,
//! indexes on existing tables built concurrently, cheap nullable columns, no column type
//! rewrites, no `NOT NULL` without a default on an existing table, no long locks).
//!
//! Every migration is found, not listed: `template/service/migrations`, `services/*/migrations`
//! (a new service is linted as soon as it exists) and the tables crates own
//! (`crates/*/migrations`: kit, bus, identity). Migrations run in a transaction (sqlx), except
//! those starting with `-- no-transaction`, and squawk is told which.
//!
//! A migration that shipped can never change (sqlx refuses a database whose applied migration
//! differs from the file, comments included), so an offence in one is excepted here, per file
//! and per rule, with the reason it is safe. A new migration fixes its offence, or says why it
//! is safe in a `-- squawk-ignore <rule>` comment above the statement.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{python, services};

/// Rules the project's conventions do not follow, with the reason.
pub const EXCLUDED_RULES: &[(&str, &str)] = &[
    (
        "prefer-bigint-over-int",
        "integer columns hold counts, attempts, versions and HTTP status codes, never ids: keys are bigint identities or UUIDs",
    ),
    (
        "prefer-bigint-over-smallint",
        "smallint columns hold HTTP status codes and attachment positions, bounded by construction",
    ),
    (
        "require-lock-timeout",
        "timeouts are the migrating session's (see docs/operations.md, Migrations: the deploy's migrate step runs with lock_timeout set), not each file's",
    ),
    (
        "require-statement-timeout",
        "as require-lock-timeout; a concurrent index build may rightly run long without blocking anyone",
    ),
];

/// A shipped migration's offence, excepted.
pub struct Exception {
    /// Path from the repository root.
    pub file: &'static str,
    pub rules: &'static [&'static str],
    pub why: &'static str,
}

pub const EXCEPTIONS: &[Exception] = &[
    Exception {
        file: "crates/bus/migrations/20261201000001_outbox_inbox.sql",
        rules: &["require-concurrent-index-deletion"],
        why: "drops an index of the outbox, which the relay keeps to the rows of the last minutes: the lock lasts milliseconds",
    },
    Exception {
        file: "services/auth/migrations/20261122000001_auth.sql",
        rules: &["require-concurrent-index-creation"],
        why: "the auth service's first migration: `users` was created empty just before it (by identity's schema), so the indexes are built on no rows",
    },
    Exception {
        file: "services/auth/migrations/20261201000001_sealed_keys_email_change_account_notices.sql",
        rules: &[
            "ban-drop-not-null",
            "ban-drop-constraint",
            "constraint-missing-not-valid",
        ],
        why: "DROP NOT NULL is a catalogue change (no rewrite, no scan) and the previous release still writes the column; the purpose check is replaced by a wider one added NOT VALID and validated on one_time_tokens, which holds only unexpired links (a few rows)",
    },
];

/// Every migration file of the suite, sorted.
pub fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs = vec![root.join(services::TEMPLATE_DIR).join("migrations")];
    for parent in [services::SERVICES_DIR, "crates"] {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for entry in entries {
            dirs.push(entry?.path().join("migrations"));
        }
    }
    let mut files = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("sql") {
                files.push(path.strip_prefix(root).unwrap_or(&path).to_path_buf());
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Whether sqlx runs the migration outside a transaction (`-- no-transaction` first line).
pub fn runs_in_transaction(text: &str) -> bool {
    text.lines()
        .next()
        .is_none_or(|line| line.trim() != "-- no-transaction")
}

/// The squawk command for one migration (relative to `root`).
pub fn squawk_command(squawk: &Path, root: &Path, file: &Path) -> Result<Command> {
    let text = std::fs::read_to_string(root.join(file))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut excluded: Vec<&str> = EXCLUDED_RULES.iter().map(|(rule, _)| *rule).collect();
    for exception in EXCEPTIONS {
        if Path::new(exception.file) == file {
            excluded.extend(exception.rules);
        }
    }
    let mut command = Command::new(squawk);
    command
        .current_dir(root)
        .args([
            "--pg-version",
            "15",
            "--reporter",
            "gcc",
            "--no-error-on-unmatched-pattern",
        ])
        .arg(format!("--exclude={}", excluded.join(",")));
    if runs_in_transaction(&text) {
        command.arg("--assume-in-transaction");
    }
    command.arg(file);
    Ok(command)
}

/// Lints every migration; returns how many were checked, or the offences.
pub fn lint(root: &Path) -> Result<usize> {
    for exception in EXCEPTIONS {
        if !root.join(exception.file).is_file() {
            bail!(
                "xtask/src/migrations.rs excepts {}, which does not exist: remove the exception",
                exception.file
            );
        }
    }
    let venv = python::SQUAWK.ensure(root)?;
    let squawk = venv.join("bin/squawk");
    let files = files(root)?;
    let mut offences = Vec::new();
    for file in &files {
        let output = squawk_command(&squawk, root, file)?
            .output()
            .with_context(|| format!("cannot run {}", squawk.display()))?;
        if !output.status.success() {
            let mut report = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !stderr.trim().is_empty() {
                report.push('\n');
                report.push_str(stderr.trim());
            }
            offences.push(format!("{}:\n{report}", file.display()));
        }
    }
    if offences.is_empty() {
        Ok(files.len())
    } else {
        bail!(
            "migrations that could lock production (fix them, or say why one is safe with `-- squawk-ignore <rule>` above the statement; https://squawkhq.com/docs/rules):\n{}",
            offences.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_transaction_is_the_first_line() {
        assert!(runs_in_transaction("CREATE TABLE t (id bigint);"));
        assert!(!runs_in_transaction(
            "-- no-transaction\nCREATE INDEX CONCURRENTLY ..."
        ));
    }
}
