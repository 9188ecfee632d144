//! Seed data for Hatchery services, read from YAML "scenarios".
//!
//! A scenario is a directory under the repository's `populator/` directory, with one
//! subdirectory per service:
//!
//! ```text
//! populator/
//!   demo/                 scenario `demo`
//!     template/           data of service `template`
//!       10-users.yaml     files are read in file-name order
//!       20-notes.yaml
//!   load/
//!     …
//! ```
//!
//! Each service defines the document type of its files with serde (use
//! `#[serde(deny_unknown_fields)]` so typos are errors) and its own get-or-create insert SQL keyed
//! by the natural key, a UUID written in the file. This crate does the generic part: finding and
//! parsing files ([`Scenario`], [`Source`]), times relative to the load ([`When`]), line numbers
//! ([`Spanned`]), key and reference bookkeeping ([`Keys`]), and the [`Error`] and [`Report`]
//! types. A load runs in one database transaction; any [`Error`] aborts it and reads like
//!
//! ```text
//! populator/demo/template/notes.yaml:12: unknown field `titel`, expected one of `id`, `title`
//! ```
//!
//! # File format
//!
//! ```yaml
//! # populator/demo/template/20-notes.yaml
//! notes:
//!   - id: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d9e01
//!     owner: 0190a8f2-6c1e-7d4b-9a3e-2f1c5b7d0001   # a user defined in 10-users.yaml
//!     title: Shopping
//!     created_at: !ago 35d          # 35 days before the load
//!     due_at: !in 2h 30m            # 2.5 hours after the load
//!     edited_at: !now               # the moment of the load
//!     archived_at: 2026-01-02T10:00:00Z
//! ```
//!
//! An empty file (or one with only comments) is an empty document, `D::default()`. Mapping keys
//! must be unique, booleans are only `true`/`false`, and anchors/aliases are allowed within
//! modest limits. See [`When`] for the time syntax.
//!
//! # Example
//!
//! ```no_run
//! use populator::{Error, Keys, Report, Scenario, Spanned, When};
//! use serde::Deserialize;
//! use uuid::Uuid;
//!
//! #[derive(Debug, Default, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Doc {
//!     #[serde(default)]
//!     notes: Vec<Note>,
//! }
//!
//! #[derive(Debug, Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Note {
//!     id: Spanned<Uuid>,
//!     title: String,
//!     created_at: When,
//!     #[serde(default, deserialize_with = "populator::when::optional")]
//!     archived_at: Option<When>,
//! }
//!
//! # fn insert(_: &Note) -> Result<(i64, bool), Error> { Ok((1, true)) }
//! fn load(scenario: &Scenario, report: &mut Report) -> Result<(), Error> {
//!     let now = chrono::Utc::now();
//!     let mut notes = Keys::new("note");
//!     for source in scenario.read::<Doc>("template")? {
//!         for note in &source.doc.notes {
//!             let _created_at = note.created_at.resolve(now);
//!             let (local_id, created) = insert(note)?; // get-or-create by `note.id.value`
//!             notes.define(note.id.value, local_id, &source, note.id.line())?;
//!             report.record("notes", created);
//!         }
//!     }
//!     Ok(())
//! }
//!
//! let scenario = Scenario::open("populator", "demo")?;
//! let mut report = Report::default();
//! load(&scenario, &mut report)?;
//! println!("populated scenario {}: {report}", scenario.name());
//! # Ok::<(), Error>(())
//! ```

mod error;
mod keys;
mod report;
mod scenario;
mod spanned;
pub mod when;
mod yaml;

pub use error::Error;
pub use keys::Keys;
pub use report::Report;
pub use scenario::{Scenario, Source};
pub use spanned::Spanned;
pub use when::When;
