//! The audit log: who did what, when, from where, with which request.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// Whether the action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One audit entry. `actor` acted (a user or a client); `subject` is the user it concerns.
#[derive(Debug, Clone)]
pub struct Entry {
    pub action: &'static str,
    pub outcome: Outcome,
    pub reason: Option<&'static str>,
    pub actor: Option<Uuid>,
    pub subject: Option<Uuid>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: Value,
}

impl Entry {
    /// A successful `action` by `actor` concerning `subject`, stamped with the current request
    /// id; add the address with [`Entry::from_ip`].
    pub fn success(action: &'static str, actor: Option<Uuid>, subject: Option<Uuid>) -> Entry {
        Entry {
            action,
            outcome: Outcome::Success,
            reason: None,
            actor,
            subject,
            ip: None,
            request_id: kit::request_id::current(),
            detail: Value::Object(Default::default()),
        }
    }

    pub fn failure(action: &'static str, reason: &'static str, subject: Option<Uuid>) -> Entry {
        Entry {
            outcome: Outcome::Failure,
            reason: Some(reason),
            ..Entry::success(action, None, subject)
        }
    }

    pub fn from_ip(mut self, ip: Option<String>) -> Entry {
        self.ip = ip;
        self
    }

    pub fn with_detail(mut self, detail: Value) -> Entry {
        self.detail = detail;
        self
    }
}

pub async fn record(db: impl PgExecutor<'_>, entry: &Entry) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (action, outcome, reason, actor, subject, ip, request_id, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.action)
    .bind(entry.outcome.as_str())
    .bind(entry.reason)
    .bind(entry.actor)
    .bind(entry.subject)
    .bind(entry.ip.as_deref())
    .bind(entry.request_id.as_deref())
    .bind(&entry.detail)
    .execute(db)
    .await
    .map(|_| ())
}

/// An entry as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub action: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub actor: Option<Uuid>,
    pub subject: Option<Uuid>,
    pub ip: Option<String>,
    pub request_id: Option<String>,
    pub detail: Value,
}

/// The keyset key of the listing: newest first, the row id as tie-break (never shown: it is
/// inside the opaque cursor only).
pub type AuditKey = (DateTime<Utc>, i64);

impl AuditRow {
    pub fn key(&self) -> AuditKey {
        (self.at, self.id)
    }
}

/// What the listing keeps (every part optional).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Entries this user did (actor) or that concern them (subject).
    pub user: Option<Uuid>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    /// `at >= since`.
    pub since: Option<DateTime<Utc>>,
    /// `at < until`.
    pub until: Option<DateTime<Utc>>,
}

/// One page of entries matching `filter`, newest first. The statement has only the conditions
/// asked for, so each combination gets a plan using its index (`subject`, `actor`, `at`).
pub async fn list(
    db: &sqlx::PgPool,
    filter: &AuditFilter,
    page: &kit::PageRequest<AuditKey>,
) -> sqlx::Result<Vec<AuditRow>> {
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "SELECT id, at, action, outcome, reason, actor, subject, ip, request_id, detail
         FROM audit_log WHERE true",
    );
    if let Some(user) = filter.user {
        query
            .push(" AND (actor = ")
            .push_bind(user)
            .push(" OR subject = ")
            .push_bind(user)
            .push(")");
    }
    if let Some(action) = &filter.action {
        query.push(" AND action = ").push_bind(action.clone());
    }
    if let Some(outcome) = filter.outcome {
        query.push(" AND outcome = ").push_bind(outcome.as_str());
    }
    if let Some(since) = filter.since {
        query.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = filter.until {
        query.push(" AND at < ").push_bind(until);
    }
    if let Some((at, id)) = page.after {
        query
            .push(" AND (at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    query
        .push(" ORDER BY at DESC, id DESC LIMIT ")
        .push_bind(page.fetch_limit());
    query.build_query_as().fetch_all(db).await
}
