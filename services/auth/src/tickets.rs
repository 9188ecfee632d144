//! Websocket tickets: short-lived, single-use secrets a signed-in client hands to the broker,
//! which exchanges them here (`POST /tickets/validate`) for the user's identity. Kept in
//! Redis under the ticket's SHA-256, so neither Redis nor its backups hold usable tickets.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{OpaqueToken, TokenDigest};

/// What a ticket stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub user_id: Uuid,
    pub session_id: Option<Uuid>,
    pub roles: Vec<String>,
}

#[derive(Clone)]
pub struct Tickets {
    redis: ConnectionManager,
    prefix: String,
}

impl Tickets {
    pub fn new(redis: ConnectionManager, prefix: &str) -> Tickets {
        Tickets {
            redis,
            prefix: format!("{prefix}ticket:"),
        }
    }

    fn key(&self, digest: &TokenDigest) -> String {
        format!("{}{}", self.prefix, digest.hex())
    }

    /// A new ticket for `holder`, valid for `ttl`.
    pub async fn issue(&self, holder: &Holder, ttl: Duration) -> anyhow::Result<OpaqueToken> {
        let ticket = OpaqueToken::generate()?;
        let value = serde_json::to_string(holder)?;
        let mut redis = self.redis.clone();
        redis::cmd("SET")
            .arg(self.key(&ticket.digest()))
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async::<()>(&mut redis)
            .await?;
        Ok(ticket)
    }

    /// The holder of `ticket`, once: the ticket is deleted as it is read (`GETDEL`), so two
    /// concurrent redemptions cannot both succeed.
    pub async fn redeem(&self, ticket: &str) -> anyhow::Result<Option<Holder>> {
        let mut redis = self.redis.clone();
        let value: Option<String> = redis::cmd("GETDEL")
            .arg(self.key(&TokenDigest::of(ticket)))
            .query_async(&mut redis)
            .await?;
        match value {
            None => Ok(None),
            Some(text) => Ok(Some(serde_json::from_str(&text)?)),
        }
    }
}
