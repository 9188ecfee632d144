//! Session revocation in Redis: the auth service writes markers, every service reads them on
//! every authenticated request.
//!
//! Two keys, both with a TTL so Redis forgets them once no token they concern can still be
//! valid:
//!
//! | key | value | TTL | refuses |
//! |---|---|---|---|
//! | `revoked:session:<sid>` | `1` | remaining lifetime of the session's newest access token | every token with that `sid` |
//! | `revoked:user:<sub>` | Unix seconds `T` | the longest access-token lifetime | every token of that `sub` with `iat < T` |
//!
//! `<sid>` and `<sub>` are lower-case hyphenated UUIDs. `sub` may be a service client's UUID
//! (revoking a client's tokens). Use [`revoke_session`] and [`revoke_subject_before`] to
//! write them. With `auth.revocation_prefix` set, every key starts with it (the `_in`
//! variants of these functions, [`Revocations::with_prefix`]).
//!
//! Whatever holds a token for long (the broker's websockets) cannot wait for its next request
//! to notice: every write is also announced, in the same MULTI, as a [`Notice`] on the pub/sub
//! channel `<prefix>revocations` ([`channel_in`]), and [`publish_roles_in`] announces a user's
//! new roles there when an admin changes them. JSON, one object per message:
//!
//! | notice | meaning |
//! |---|---|
//! | `{"kind":"session","sid":"<sid>"}` | every token of that session is refused |
//! | `{"kind":"subject","sub":"<sub>","before":T}` | every token of `sub` with `iat < T` is refused |
//! | `{"kind":"roles","sub":"<sub>","roles":["admin"]}` | `sub`'s roles are now exactly these |

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kit::config::{RevocationCheck, SecretUrl};
use redis::aio::{ConnectionLike, ConnectionManager};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::claims::Claims;
use crate::error::AuthError;

/// `revoked:session:<sid>`.
pub fn session_key(sid: Uuid) -> String {
    session_key_in("", sid)
}

/// `revoked:user:<sub>`.
pub fn subject_key(sub: Uuid) -> String {
    subject_key_in("", sub)
}

/// `<prefix>revoked:session:<sid>`: the key under `auth.revocation_prefix` (empty by default;
/// tests use a unique one so their revocations stay their own).
pub fn session_key_in(prefix: &str, sid: Uuid) -> String {
    format!("{prefix}revoked:session:{sid}")
}

/// `<prefix>revoked:user:<sub>`.
pub fn subject_key_in(prefix: &str, sub: Uuid) -> String {
    format!("{prefix}revoked:user:{sub}")
}

/// `<prefix>revocations`: the pub/sub channel announcing every revocation (same prefix as the
/// keys).
pub fn channel_in(prefix: &str) -> String {
    format!("{prefix}revocations")
}

/// One announcement on [`channel_in`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    /// Every token of session `sid` is refused from now on.
    Session { sid: Uuid },
    /// Every token of `sub` issued before `before` (Unix seconds, compared with `iat`) is
    /// refused.
    Subject { sub: Uuid, before: i64 },
    /// `sub`'s roles are now exactly `roles` (an admin changed them).
    Roles { sub: Uuid, roles: Vec<String> },
}

impl Notice {
    /// Parses a message from the channel; `None` for anything else.
    pub fn parse(payload: &[u8]) -> Option<Notice> {
        serde_json::from_slice(payload).ok()
    }

    fn to_json(&self) -> String {
        // A plain enum of UUIDs, numbers and strings always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Ends one session: its tokens are refused from now on. `ttl` must cover the longest time a
/// token of the session can still be valid (the access-token lifetime is always enough).
pub async fn revoke_session(
    redis: &mut impl ConnectionLike,
    sid: Uuid,
    ttl: Duration,
) -> redis::RedisResult<()> {
    revoke_session_in(redis, "", sid, ttl).await
}

/// [`revoke_session`] under a key prefix (`auth.revocation_prefix`).
pub async fn revoke_session_in(
    redis: &mut impl ConnectionLike,
    prefix: &str,
    sid: Uuid,
    ttl: Duration,
) -> redis::RedisResult<()> {
    redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(session_key_in(prefix, sid))
        .arg(1)
        .arg("EX")
        .arg(ttl.as_secs().max(1))
        .ignore()
        .cmd("PUBLISH")
        .arg(channel_in(prefix))
        .arg(Notice::Session { sid }.to_json())
        .ignore()
        .query_async(redis)
        .await
}

/// Refuses every token of `sub` issued before `before` (Unix seconds; tokens with
/// `iat >= before` stay valid, so a login right after a global logout works). `iat` has
/// one-second resolution: also revoke the sessions you know of with [`revoke_session`] to
/// cover tokens issued in the same second. `ttl` = the longest access-token lifetime. A later
/// marker never moves back to an earlier time.
pub async fn revoke_subject_before(
    redis: &mut impl ConnectionLike,
    sub: Uuid,
    before: i64,
    ttl: Duration,
) -> redis::RedisResult<()> {
    revoke_subject_before_in(redis, "", sub, before, ttl).await
}

/// [`revoke_subject_before`] under a key prefix (`auth.revocation_prefix`).
pub async fn revoke_subject_before_in(
    redis: &mut impl ConnectionLike,
    prefix: &str,
    sub: Uuid,
    before: i64,
    ttl: Duration,
) -> redis::RedisResult<()> {
    // Keeps the larger of the stored and the new time, in one atomic step (plain EVAL: the
    // script is tiny and written rarely, so caching it with EVALSHA buys nothing).
    redis::pipe()
        .atomic()
        .cmd("EVAL")
        .arg(
            "local old = tonumber(redis.call('GET', KEYS[1]) or '0') or 0 \
             if tonumber(ARGV[1]) > old then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) \
             else redis.call('EXPIRE', KEYS[1], ARGV[2], 'GT') end \
             return 1",
        )
        .arg(1)
        .arg(subject_key_in(prefix, sub))
        .arg(before)
        .arg(ttl.as_secs().max(1))
        .ignore()
        .cmd("PUBLISH")
        .arg(channel_in(prefix))
        .arg(Notice::Subject { sub, before }.to_json())
        .ignore()
        .query_async(redis)
        .await
}

/// Announces `sub`'s new roles on [`channel_in`] (nothing is stored: tokens carry roles, and
/// auth refuses the ones it must by revoking them). Long-lived holders of `sub`'s tokens drop
/// what the removed roles allowed.
pub async fn publish_roles_in(
    redis: &mut impl ConnectionLike,
    prefix: &str,
    sub: Uuid,
    roles: &[String],
) -> redis::RedisResult<()> {
    let notice = Notice::Roles {
        sub,
        roles: roles.to_vec(),
    };
    redis::cmd("PUBLISH")
        .arg(channel_in(prefix))
        .arg(notice.to_json())
        .query_async::<i64>(redis)
        .await
        .map(|_| ())
}

/// Reads the markers for a token, bounded in time, with the configured failure mode.
pub struct Revocations {
    /// Connects on first use, reconnects by itself; every command bounded by `timeout`.
    connection: ConnectionManager,
    timeout: Duration,
    mode: RevocationCheck,
    /// Unix seconds of the last "cannot check" warning, so an outage logs once per interval.
    last_warning: AtomicU64,
    /// `auth.revocation_prefix`.
    prefix: String,
}

/// Warn about an unreachable Redis (fail-open) at most this often.
const WARN_EVERY_SECS: u64 = 10;

impl Revocations {
    pub fn new(url: &SecretUrl, timeout: Duration, mode: RevocationCheck) -> anyhow::Result<Self> {
        Ok(Self {
            connection: kit::redis::connect_bounded(url, timeout)?,
            timeout,
            mode,
            last_warning: AtomicU64::new(0),
            prefix: String::new(),
        })
    }

    /// Reads the keys under `prefix` (`auth.revocation_prefix`) instead of the bare layout.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Readiness of the store, over the connection the lookups use.
    pub fn readiness(&self) -> kit::redis::RedisCheck {
        kit::redis::RedisCheck(self.connection.clone())
    }

    /// `Ok` when the token is not revoked (or Redis is unreachable and the mode is fail-open).
    pub async fn check(&self, claims: &Claims) -> Result<(), AuthError> {
        let outcome = tokio::time::timeout(self.timeout, self.lookup(claims)).await;
        let failure = match outcome {
            Ok(Ok(true)) => return Err(AuthError::Revoked),
            Ok(Ok(false)) => return Ok(()),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no answer from Redis within {:?}", self.timeout),
        };
        match self.mode {
            RevocationCheck::FailClosed => Err(AuthError::RevocationUnavailable(failure)),
            RevocationCheck::FailOpen => {
                let now = unix_now();
                let last = self.last_warning.load(Ordering::Relaxed);
                if now.saturating_sub(last) >= WARN_EVERY_SECS
                    && self
                        .last_warning
                        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    tracing::warn!(error = %failure, "cannot check session revocation; letting tokens through (auth.revocation_check = fail_open)");
                }
                Ok(())
            }
        }
    }

    /// One round trip: `MGET revoked:session:<sid> revoked:user:<sub>`.
    async fn lookup(&self, claims: &Claims) -> redis::RedisResult<bool> {
        let mut connection = self.connection.clone();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(subject_key_in(&self.prefix, claims.sub));
        if let Some(sid) = claims.sid {
            cmd.arg(session_key_in(&self.prefix, sid));
        }
        let values: Vec<Option<String>> = cmd.query_async(&mut connection).await?;
        // A marker that is not a number revokes everything: a write gone wrong must not
        // let tokens through.
        let revoked_before = values
            .first()
            .and_then(|v| v.as_deref())
            .map(|v| v.trim().parse::<i64>().unwrap_or(i64::MAX));
        let subject_revoked = revoked_before.is_some_and(|before| claims.iat < before);
        let session_revoked = values.get(1).is_some_and(Option::is_some);
        Ok(subject_revoked || session_revoked)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
