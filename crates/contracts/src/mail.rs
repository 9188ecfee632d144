//! Events published by the mail service: what became of each message (one message = one
//! recipient). Exactly one of them is published per message, when it reaches its terminal
//! state (a canceled message publishes none). `subject` is the message's id; `requestid` is
//! that of the request or event that caused the message, so a sender can match the outcome to
//! what it did (with `tags` and `metadata`, which are the sender's own, echoed).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Event;

/// The relay accepted the message (`250`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSent {
    pub message: Uuid,
    pub email: String,
    /// The recipient's user id, when the message was addressed to a platform user.
    #[serde(default)]
    pub user: Option<Uuid>,
    pub template: String,
    pub template_version: u32,
    /// The RFC 5322 `Message-ID` header, angle brackets included.
    pub message_id: String,
    pub attempts: u32,
    /// The relay's reply, e.g. `250 2.0.0 OK queued as 1F3A`.
    pub reply: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub sent_at: DateTime<Utc>,
}

impl Event for MessageSent {
    const TYPE: &'static str = "mail.message.sent";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.message)
    }
}

/// The message was refused for good (a 5xx reply), or could not be sent before the retry
/// period ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageFailed {
    pub message: Uuid,
    pub email: String,
    #[serde(default)]
    pub user: Option<Uuid>,
    pub template: String,
    pub template_version: u32,
    pub message_id: String,
    pub attempts: u32,
    /// The last SMTP reply, when the relay gave one (`550 5.1.1 No such user`).
    #[serde(default)]
    pub reply: Option<String>,
    /// Why, in words (`refused by the relay`, `gave up after 12 attempts over 3 days`).
    pub reason: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub failed_at: DateTime<Utc>,
}

impl Event for MessageFailed {
    const TYPE: &'static str = "mail.message.failed";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.message)
    }
}

/// The message was not sent: the address is on the suppression list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSuppressed {
    pub message: Uuid,
    pub email: String,
    #[serde(default)]
    pub user: Option<Uuid>,
    pub template: String,
    pub template_version: u32,
    /// The suppression's reason: `hard_bounce`, `complaint`, `unsubscribe` or `manual`.
    pub reason: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub suppressed_at: DateTime<Utc>,
}

impl Event for MessageSuppressed {
    const TYPE: &'static str = "mail.message.suppressed";
    const DATAVERSION: u32 = 1;
    fn subject(&self) -> Option<Uuid> {
        Some(self.message)
    }
}
