//! Seed data: `populator/<scenario>/template/*.yaml` → rows, get-or-create by UUID.
//!
//! ```yaml
//! users:
//!   - id: 0193a000-0000-7000-8000-000000000001
//!     email: ada@hatchery.test
//!     name: Ada Admin
//!     roles: [admin]
//! notes:
//!   - id: 0193a000-0000-7000-8000-00000000a001
//!     owner: 0193a000-0000-7000-8000-000000000001
//!     title: Welcome
//!     body: Hello.
//!     created_at: !ago 35d
//! ```

use chrono::Utc;
use futures_util::future::BoxFuture;
use populator::{Error, Keys, Report, Scenario, Spanned, When};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{NoteBody, NoteTitle};
use crate::store::notes;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub users: Vec<identity::users::UserSeed>,
    #[serde(default)]
    pub notes: Vec<NoteSeed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoteSeed {
    pub id: Spanned<Uuid>,
    /// A user of this scenario.
    pub owner: Spanned<Uuid>,
    pub title: Spanned<String>,
    #[serde(default)]
    pub body: String,
    #[serde(default, deserialize_with = "populator::when::optional")]
    pub created_at: Option<When>,
}

/// Loads the scenario's files for this service: users first, then the notes that reference them.
pub fn load<'a>(
    conn: &'a mut PgConnection,
    scenario: &'a Scenario,
) -> BoxFuture<'a, Result<Report, Error>> {
    Box::pin(async move {
        let sources = scenario.read::<Document>(<crate::Template as kit::Service>::NAME)?;
        let now = Utc::now();
        let max_body = Config::default().max_body_chars;
        let mut report = Report::default();
        let users = identity::users::seed(conn, &sources, |doc| &doc.users, &mut report).await?;
        let mut notes = Keys::new("note");
        for source in &sources {
            for note in &source.doc.notes {
                let line = note.id.line();
                let owner_id = users.resolve(&note.owner.value, source, note.owner.line())?;
                let title = NoteTitle::parse(&note.title.value)
                    .map_err(|why| source.error_at(note.title.line(), format!("title {why}")))?;
                let body = NoteBody::parse(&note.body, max_body)
                    .map_err(|why| source.error_at(line, format!("body {why}")))?;
                let new = notes::NewNote {
                    uuid: note.id.value,
                    owner_id,
                    title: &title,
                    body: &body,
                    created_at: note
                        .created_at
                        .as_ref()
                        .map_or(now, |when| when.resolve(now)),
                };
                let created = notes::insert(conn, &new)
                    .await
                    .map_err(|err| source.database_error(line, err))?;
                notes.define(note.id.value, 0, source, line)?;
                report.record("notes", created);
            }
        }
        Ok(report)
    })
}
