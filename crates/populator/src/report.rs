//! What a scenario load did.

use std::fmt;

/// Per entity kind, how many rows a load created and how many already existed (kept), in the
/// order the kinds were first recorded.
///
/// Displays as `users 3 created, 0 kept; notes 5 created, 0 kept`, or `nothing` when empty.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    entity: &'static str,
    created: u64,
    kept: u64,
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one row of `entity` (e.g. `"users"`): `created` if inserted now, otherwise kept.
    pub fn record(&mut self, entity: &'static str, created: bool) {
        let index = match self.entries.iter().position(|entry| entry.entity == entity) {
            Some(index) => index,
            None => {
                self.entries.push(Entry {
                    entity,
                    created: 0,
                    kept: 0,
                });
                self.entries.len() - 1
            }
        };
        let entry = &mut self.entries[index];
        if created {
            entry.created += 1;
        } else {
            entry.kept += 1;
        }
    }

    /// How many rows of `entity` were created.
    pub fn created(&self, entity: &str) -> u64 {
        self.find(entity).map_or(0, |entry| entry.created)
    }

    /// How many rows of `entity` already existed.
    pub fn kept(&self, entity: &str) -> u64 {
        self.find(entity).map_or(0, |entry| entry.kept)
    }

    /// `(entity, created, kept)` in recording order.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        self.entries
            .iter()
            .map(|entry| (entry.entity, entry.created, entry.kept))
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, entity: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.entity == entity)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entries.is_empty() {
            return f.write_str("nothing");
        }
        for (i, entry) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} {} created, {} kept",
                entry.entity, entry.created, entry.kept
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_in_order() {
        let mut report = Report::new();
        assert_eq!(report.to_string(), "nothing");
        for created in [true, true, true] {
            report.record("users", created);
        }
        report.record("notes", false);
        report.record("notes", true);
        assert_eq!(report.created("users"), 3);
        assert_eq!(report.kept("notes"), 1);
        assert_eq!(report.created("tags"), 0);
        assert_eq!(
            report.to_string(),
            "users 3 created, 0 kept; notes 1 created, 1 kept"
        );
        assert_eq!(
            report.entries().collect::<Vec<_>>(),
            [("users", 3, 0), ("notes", 1, 1)]
        );
    }
}
