//! The audit log: who did what, when, from where, with which request.

use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

/// Whether the action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
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
    .bind(match entry.outcome {
        Outcome::Success => "success",
        Outcome::Failure => "failure",
    })
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
