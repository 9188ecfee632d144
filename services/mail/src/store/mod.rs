//! Queries. Rows reference users by the local key; what leaves the service carries UUIDs only.
//! The `users` table itself is `identity::users`' (kept current from `auth.user.*` events).

pub mod event_mails;
pub mod messages;
pub mod suppressions;
pub mod templates;

use uuid::Uuid;

/// Whose messages a reader reaches: an admin every message, a service the ones it sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Any,
    Sender(Uuid),
}

impl Access {
    /// The sender to filter on (`None`: no filter), as a query parameter.
    pub fn sender(self) -> Option<Uuid> {
        match self {
            Access::Any => None,
            Access::Sender(sender) => Some(sender),
        }
    }
}
