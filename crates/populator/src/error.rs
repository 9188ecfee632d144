//! The one error type of a scenario load.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a scenario could not be loaded, and where.
///
/// Displayed as `<file>:<line>: <reason>`, `<file>: <reason>` when no line is known, or just
/// `<reason>` when no file is involved. Paths are shown as they were built from the root passed to
/// [`Scenario::open`](crate::Scenario::open), so a relative root gives relative paths.
#[derive(Debug, thiserror::Error)]
#[error("{}", Located(.file.as_deref(), *.line, .reason))]
pub struct Error {
    /// The seed file the problem is in, if any.
    pub file: Option<PathBuf>,
    /// The 1-based line in `file`, if known.
    pub line: Option<usize>,
    /// What is wrong, as a sentence fragment without location.
    pub reason: String,
}

impl Error {
    /// An error not tied to a file.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            reason: reason.into(),
        }
    }

    /// An error at `line` (1-based) of `file`; line `0` means "unknown line".
    pub fn at(file: impl Into<PathBuf>, line: usize, reason: impl Into<String>) -> Self {
        Self {
            file: Some(file.into()),
            line: (line > 0).then_some(line),
            reason: reason.into(),
        }
    }

    /// An error about a whole file, without a line.
    pub fn in_file(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self {
            file: Some(file.into()),
            line: None,
            reason: reason.into(),
        }
    }

    /// A database error, optionally attributed to the seed file being inserted.
    ///
    /// The reason reads `database: <message>`; for Postgres errors the server's detail line
    /// (e.g. which key violated a constraint) is appended in parentheses.
    pub fn database(file: Option<&Path>, err: sqlx::Error) -> Self {
        Self {
            file: file.map(Path::to_path_buf),
            line: None,
            reason: format!("database: {}", describe_sqlx(&err)),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(err: sqlx::Error) -> Self {
        Self::database(None, err)
    }
}

fn describe_sqlx(err: &sqlx::Error) -> String {
    let sqlx::Error::Database(db) = err else {
        return err.to_string();
    };
    let detail = db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .and_then(|pg| pg.detail());
    match detail {
        Some(detail) => format!("{} ({detail})", db.message()),
        None => db.message().to_owned(),
    }
}

/// Display helper: file, line, reason.
struct Located<'a>(Option<&'a Path>, Option<usize>, &'a str);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(file, line, reason) = *self;
        match (file, line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: {reason}", file.display()),
            (Some(file), None) => write!(f, "{}: {reason}", file.display()),
            (None, _) => f.write_str(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        let path = Path::new("populator/demo/template/notes.yaml");
        assert_eq!(
            Error::at(path, 12, "boom").to_string(),
            "populator/demo/template/notes.yaml:12: boom"
        );
        assert_eq!(
            Error::at(path, 0, "boom").to_string(),
            "populator/demo/template/notes.yaml: boom"
        );
        assert_eq!(
            Error::in_file(path, "boom").to_string(),
            "populator/demo/template/notes.yaml: boom"
        );
        assert_eq!(Error::new("boom").to_string(), "boom");
    }

    #[test]
    fn database_errors_are_prefixed() {
        let err = Error::database(Some(Path::new("a.yaml")), sqlx::Error::RowNotFound);
        assert_eq!(err.file.as_deref(), Some(Path::new("a.yaml")));
        assert!(err.to_string().starts_with("a.yaml: database: "), "{err}");
        let err: Error = sqlx::Error::PoolTimedOut.into();
        assert!(err.to_string().starts_with("database: "), "{err}");
    }
}
