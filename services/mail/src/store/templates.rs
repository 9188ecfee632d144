//! Templates and their immutable versions.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use kit::PageRequest;
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::{Category, LocaleContent, TemplateContent, TemplateKey};

/// A template at one version, as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TemplateRow {
    pub key: String,
    pub description: String,
    pub category: String,
    pub version: i32,
    /// The newest version (what new messages use); `version` may be an older one.
    pub latest_version: i32,
    pub version_id: i64,
    pub default_locale: String,
    pub locales: Json<BTreeMap<String, LocaleContent>>,
    pub sample_data: serde_json::Value,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version_created_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
}

impl TemplateRow {
    /// Keyset key of the listing (by key).
    pub fn key_of(&self) -> String {
        self.key.clone()
    }
}

/// `$1` the key, `$2` the version (NULL: the newest).
const FIND: &str =
    "SELECT t.key, t.description, t.category, v.version, t.version AS latest_version,
        v.id AS version_id, v.default_locale, v.locales, v.sample_data, v.created_by,
        t.created_at, t.updated_at, v.created_at AS version_created_at, t.archived_at
    FROM templates t JOIN template_versions v ON v.template_id = t.id
    WHERE t.key = $1 AND v.version = COALESCE($2, t.version)";

/// The template `key` at `version` (the newest when `None`), archived or not.
pub async fn find(
    db: impl PgExecutor<'_>,
    key: &str,
    version: Option<i32>,
) -> sqlx::Result<Option<TemplateRow>> {
    sqlx::query_as(FIND)
        .bind(key)
        .bind(version)
        .fetch_optional(db)
        .await
}

/// What a send needs of a template: its newest version.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Current {
    pub version_id: i64,
    pub version: i32,
    pub category: String,
    pub archived: bool,
}

pub async fn current(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<Option<Current>> {
    sqlx::query_as(
        "SELECT v.id AS version_id, v.version, t.category, t.archived_at IS NOT NULL AS archived
         FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.version
         WHERE t.key = $1",
    )
    .bind(key)
    .fetch_optional(db)
    .await
}

#[derive(sqlx::FromRow)]
struct CurrentWithSuppressions {
    #[sqlx(flatten)]
    current: Current,
    emails: Vec<String>,
    reasons: Vec<String>,
}

/// [`current`], and of `emails` (lower-cased) those suppressed for mail of the send's category
/// (`category`, else the template's), with the reason: one round trip.
pub async fn current_with_suppressions(
    db: impl PgExecutor<'_>,
    key: &str,
    emails: &[String],
    category: Option<Category>,
) -> sqlx::Result<Option<(Current, std::collections::HashMap<String, String>)>> {
    let row: Option<CurrentWithSuppressions> = sqlx::query_as(
        "SELECT v.id AS version_id, v.version, t.category, t.archived_at IS NOT NULL AS archived,
             ARRAY(SELECT s.email FROM suppressions s
                   WHERE s.email = ANY($2) AND s.released_at IS NULL
                     AND (s.expires_at IS NULL OR s.expires_at > now())
                     AND (s.category IS NULL OR s.category = COALESCE($3, t.category))
                   ORDER BY s.email, s.created_at) AS emails,
             ARRAY(SELECT s.reason FROM suppressions s
                   WHERE s.email = ANY($2) AND s.released_at IS NULL
                     AND (s.expires_at IS NULL OR s.expires_at > now())
                     AND (s.category IS NULL OR s.category = COALESCE($3, t.category))
                   ORDER BY s.email, s.created_at) AS reasons
         FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.version
         WHERE t.key = $1",
    )
    .bind(key)
    .bind(emails)
    .bind(category.map(Category::as_str))
    .fetch_optional(db)
    .await?;
    Ok(row.map(|row| {
        let mut suppressed = std::collections::HashMap::new();
        for (email, reason) in row.emails.into_iter().zip(row.reasons) {
            // The oldest entry of an address gives the reason.
            suppressed.entry(email).or_insert(reason);
        }
        (row.current, suppressed)
    }))
}

/// One version's content, for rendering.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionContent {
    pub default_locale: String,
    pub locales: Json<BTreeMap<String, LocaleContent>>,
}

pub async fn version_content(
    db: impl PgExecutor<'_>,
    version_id: i64,
) -> sqlx::Result<Option<VersionContent>> {
    sqlx::query_as("SELECT default_locale, locales FROM template_versions WHERE id = $1")
        .bind(version_id)
        .fetch_optional(db)
        .await
}

/// A template's first version, or a new version of it.
pub struct NewVersion<'a> {
    pub description: &'a str,
    pub category: Category,
    pub content: &'a TemplateContent,
    pub sample_data: &'a serde_json::Value,
    pub created_by: Option<Uuid>,
}

fn locales_json(content: &TemplateContent) -> Json<BTreeMap<String, LocaleContent>> {
    Json(
        content
            .locales
            .iter()
            .map(|(locale, parts)| (locale.to_string(), parts.clone()))
            .collect(),
    )
}

/// Creates template `key` at version 1; `false` when the key is taken (archived or not).
pub async fn insert(
    conn: &mut PgConnection,
    key: &TemplateKey,
    new: &NewVersion<'_>,
) -> sqlx::Result<bool> {
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO templates (key, description, category) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO NOTHING RETURNING id",
    )
    .bind(key.as_str())
    .bind(new.description)
    .bind(new.category.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else { return Ok(false) };
    insert_version(conn, id, 1, new).await?;
    Ok(true)
}

async fn insert_version(
    conn: &mut PgConnection,
    template_id: i64,
    version: i32,
    new: &NewVersion<'_>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO template_versions (template_id, version, default_locale, locales, sample_data, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(template_id)
    .bind(version)
    .bind(new.content.default_locale.as_str())
    .bind(locales_json(new.content))
    .bind(new.sample_data)
    .bind(new.created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// Adds the next version of `key` (un-archiving it); `false` when there is no such template.
pub async fn add_version(
    conn: &mut PgConnection,
    key: &str,
    new: &NewVersion<'_>,
) -> sqlx::Result<bool> {
    let updated: Option<(i64, i32)> = sqlx::query_as(
        "UPDATE templates SET version = version + 1, description = $2, category = $3,
             updated_at = now(), archived_at = NULL
         WHERE key = $1 RETURNING id, version",
    )
    .bind(key)
    .bind(new.description)
    .bind(new.category.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((id, version)) = updated else {
        return Ok(false);
    };
    insert_version(conn, id, version, new).await?;
    Ok(true)
}

/// Archives a live template; `false` when there is none.
pub async fn archive(db: impl PgExecutor<'_>, key: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE templates SET archived_at = now(), updated_at = now()
         WHERE key = $1 AND archived_at IS NULL",
    )
    .bind(key)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Templates by key, after the page's cursor; archived ones only when asked.
pub async fn list(
    db: impl PgExecutor<'_>,
    archived: bool,
    page: &PageRequest<String>,
) -> sqlx::Result<Vec<TemplateRow>> {
    sqlx::query_as(
        "SELECT t.key, t.description, t.category, v.version, t.version AS latest_version,
             v.id AS version_id, v.default_locale, v.locales, v.sample_data, v.created_by,
             t.created_at, t.updated_at, v.created_at AS version_created_at, t.archived_at
         FROM templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.version
         WHERE ($1 OR t.archived_at IS NULL) AND ($2::text IS NULL OR t.key > $2)
         ORDER BY t.key LIMIT $3",
    )
    .bind(archived)
    .bind(page.after.as_deref())
    .bind(page.fetch_limit())
    .fetch_all(db)
    .await
}
