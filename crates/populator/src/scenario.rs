//! Locating and reading the seed files of a scenario.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::{Error, yaml};

const MAX_NAME_LEN: usize = 64;

/// A named set of seed data: the directory `<root>/<name>/`, holding one subdirectory of YAML
/// files per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    root: PathBuf,
    name: String,
}

impl Scenario {
    /// Opens scenario `name` under `root`, the `populator/` directory.
    ///
    /// # Errors
    /// If `name` is not a valid name (`[a-z0-9][a-z0-9_-]*`, at most 64 characters), or there is
    /// no directory `root/name`; the latter error lists the scenarios that do exist.
    pub fn open(root: impl Into<PathBuf>, name: &str) -> Result<Self, Error> {
        let root = root.into();
        check_name("scenario", name)?;
        if root.join(name).is_dir() {
            return Ok(Self {
                root,
                name: name.to_owned(),
            });
        }
        let available = Self::list(&root)?;
        let reason = if available.is_empty() {
            format!("unknown scenario `{name}`: there are no scenarios here")
        } else {
            let names: Vec<String> = available.iter().map(|name| format!("`{name}`")).collect();
            format!("unknown scenario `{name}`; available: {}", names.join(", "))
        };
        Err(Error::in_file(root, reason))
    }

    /// The names of the scenarios under `root`, sorted: its subdirectories with valid names.
    ///
    /// # Errors
    /// If `root` cannot be listed.
    pub fn list(root: impl AsRef<Path>) -> Result<Vec<String>, Error> {
        let root = root.as_ref();
        let unreadable =
            |err: io::Error| Error::in_file(root, format!("cannot list scenarios: {err}"));
        let mut names = Vec::new();
        for entry in fs::read_dir(root).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name("scenario", &name).is_ok() && entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The scenario's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The scenario's directory, `root/name`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    /// Reads and parses the seed files of `service`: the `*.yaml` and `*.yml` files directly in
    /// `root/name/service`, sorted by file name (hidden files are skipped). A scenario without
    /// that directory simply has no data for the service. An empty file, or one holding only
    /// comments or `~`, is `D::default()`.
    ///
    /// # Errors
    /// If `service` is not a valid name, a directory or file cannot be read, or a file does not
    /// parse into `D`; parse errors carry the file and line.
    pub fn read<D: DeserializeOwned + Default>(
        &self,
        service: &str,
    ) -> Result<Vec<Source<D>>, Error> {
        check_name("service", service)?;
        let dir = self.dir().join(service);
        let unreadable =
            |err: io::Error| Error::in_file(&dir, format!("cannot list seed files: {err}"));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(unreadable(err)),
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(unreadable)?.path();
            if path.file_name().is_some_and(is_seed_file_name) && path.is_file() {
                paths.push(path);
            }
        }
        // All in one directory, so this orders by file name.
        paths.sort();
        paths
            .into_iter()
            .map(|path| {
                let text = fs::read_to_string(&path)
                    .map_err(|err| Error::in_file(&path, format!("cannot read: {err}")))?;
                let doc = yaml::parse(&path, &text)?;
                Ok(Source { path, doc })
            })
            .collect()
    }
}

fn is_seed_file_name(name: &OsStr) -> bool {
    let hidden = name.as_encoded_bytes().starts_with(b".");
    let yaml = Path::new(name)
        .extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml");
    yaml && !hidden
}

fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= MAX_NAME_LEN;
    if valid {
        Ok(())
    } else {
        Err(Error::new(format!(
            "invalid {what} name `{}`: use lowercase letters, digits, `_` and `-`, starting with a \
             letter or digit, at most {MAX_NAME_LEN} characters",
            name.escape_debug()
        )))
    }
}

/// One parsed seed file.
#[derive(Debug, Clone, PartialEq)]
pub struct Source<D> {
    /// The file, as `root/scenario/service/file.yaml` (relative if the root was).
    pub path: PathBuf,
    /// Its content.
    pub doc: D,
}

impl<D> Source<D> {
    /// An error located in this file at `line` (1-based; `0` = unknown, shown without a line).
    pub fn error_at(&self, line: usize, reason: impl Into<String>) -> Error {
        Error::at(&self.path, line, reason)
    }

    /// A database error while inserting what this file defines at `line` (`0` = unknown).
    pub fn database_error(&self, line: usize, err: sqlx::Error) -> Error {
        Error {
            line: (line > 0).then_some(line),
            ..Error::database(Some(&self.path), err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["demo", "0", "load-test_2", &"a".repeat(64)] {
            assert!(check_name("scenario", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Demo",
            "-x",
            "_x",
            "a b",
            "../x",
            "a/b",
            "é",
            &"a".repeat(65),
        ] {
            assert!(check_name("scenario", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn seed_file_names() {
        for good in ["a.yaml", "10-users.yml"] {
            assert!(is_seed_file_name(OsStr::new(good)), "{good}");
        }
        for bad in [".a.yaml", "a.json", "a.yaml~", "yaml", "a.YAML"] {
            assert!(!is_seed_file_name(OsStr::new(bad)), "{bad}");
        }
    }
}
