//! Natural keys → local database ids, for references between entities.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Display;
use std::hash::Hash;
use std::path::PathBuf;

use crate::{Error, Source};

/// The entities of one kind defined so far in a scenario load: natural key (typically the
/// UUID written in YAML) → local database id, plus where each key was defined.
///
/// ```
/// # use populator::{Keys, Source};
/// # let users_yaml = Source { path: "populator/demo/svc/users.yaml".into(), doc: () };
/// let mut users = Keys::new("user");
/// users.define("alice", 1, &users_yaml, 3)?;
/// assert_eq!(users.resolve(&"alice", &users_yaml, 9)?, 1);
/// let err = users.resolve(&"bob", &users_yaml, 10).unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "populator/demo/svc/users.yaml:10: dangling reference: no user bob in this scenario"
/// );
/// # Ok::<(), populator::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Keys<K> {
    entity: &'static str,
    defined: HashMap<K, Defined>,
}

#[derive(Debug, Clone)]
struct Defined {
    local_id: i64,
    path: PathBuf,
    line: usize,
}

impl<K: Eq + Hash + Clone + Display> Keys<K> {
    /// No keys yet; `entity` names the kind in messages, e.g. `"user"`.
    pub fn new(entity: &'static str) -> Self {
        Self {
            entity,
            defined: HashMap::new(),
        }
    }

    /// Records that `key` is stored as `local_id`, defined at `line` of `source`.
    ///
    /// # Errors
    /// If `key` was already defined in this scenario; the error is located at the second
    /// definition and names the first.
    pub fn define<D>(
        &mut self,
        key: K,
        local_id: i64,
        source: &Source<D>,
        line: usize,
    ) -> Result<(), Error> {
        match self.defined.entry(key) {
            Entry::Occupied(first) => {
                let Defined {
                    path,
                    line: first_line,
                    ..
                } = first.get();
                let first_at = match first_line {
                    0 => path.display().to_string(),
                    n => format!("{}:{n}", path.display()),
                };
                Err(source.error_at(
                    line,
                    format!(
                        "duplicate {} {}: already defined at {first_at}",
                        self.entity,
                        first.key()
                    ),
                ))
            }
            Entry::Vacant(slot) => {
                slot.insert(Defined {
                    local_id,
                    path: source.path.clone(),
                    line,
                });
                Ok(())
            }
        }
    }

    /// The local id of `key`, referenced at `line` of `source`.
    ///
    /// # Errors
    /// If `key` has not been defined (yet) in this scenario.
    pub fn resolve<D>(&self, key: &K, source: &Source<D>, line: usize) -> Result<i64, Error> {
        self.get(key).ok_or_else(|| {
            source.error_at(
                line,
                format!(
                    "dangling reference: no {} {key} in this scenario",
                    self.entity
                ),
            )
        })
    }

    /// The local id of `key`, if defined.
    pub fn get(&self, key: &K) -> Option<i64> {
        self.defined.get(key).map(|defined| defined.local_id)
    }

    /// How many keys are defined.
    pub fn len(&self) -> usize {
        self.defined.len()
    }

    /// Whether no key is defined.
    pub fn is_empty(&self) -> bool {
        self.defined.is_empty()
    }
}
