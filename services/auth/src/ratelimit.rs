//! Rate limits in Redis: fixed-window counters per client address and per email address.
//! A request counts against both; beyond either limit it is refused with `Retry-After` set to
//! the end of the window. Redis being unreachable lets requests through (with a warning):
//! limits protect against abuse, and an outage of Redis must not lock everyone out.

use std::net::IpAddr;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::config::Limit;
use crate::domain::{Email, TokenDigest};

/// Refused: try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: u64,
}

#[derive(Clone)]
pub struct RateLimiter {
    redis: ConnectionManager,
    prefix: String,
    enabled: bool,
}

/// Increments every key given and sets its expiry when it was just created; answers each
/// key's count and remaining milliseconds, in one round trip.
const COUNT: &str = "local out = {} \
    for i, key in ipairs(KEYS) do \
      local n = redis.call('INCR', key) \
      if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end \
      local ttl = redis.call('PTTL', key) \
      if ttl < 0 then redis.call('PEXPIRE', key, ARGV[1]) ttl = tonumber(ARGV[1]) end \
      out[#out + 1] = n \
      out[#out + 1] = ttl \
    end \
    return out";

impl RateLimiter {
    pub fn new(redis: ConnectionManager, prefix: &str, enabled: bool) -> RateLimiter {
        RateLimiter {
            redis,
            prefix: format!("{prefix}rl:"),
            enabled,
        }
    }

    /// Counts one `action` request from `ip` about `email` against `limit`.
    pub async fn hit(
        &self,
        action: &str,
        limit: &Limit,
        ip: Option<IpAddr>,
        email: Option<&Email>,
    ) -> Result<(), Limited> {
        if !self.enabled {
            return Ok(());
        }
        let mut keys = Vec::with_capacity(2);
        let mut limits = Vec::with_capacity(2);
        if let Some(ip) = ip {
            keys.push(format!("{}{action}:ip:{ip}", self.prefix));
            limits.push(limit.per_ip);
        }
        if let Some(email) = email {
            // Hashed: the key names no address in clear.
            let digest = TokenDigest::of(email.as_str()).hex();
            keys.push(format!("{}{action}:email:{}", self.prefix, &digest[..32]));
            limits.push(limit.per_email);
        }
        if keys.is_empty() {
            return Ok(());
        }
        let window_ms = u64::try_from(limit.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(COUNT).arg(keys.len());
        for key in &keys {
            cmd.arg(key);
        }
        cmd.arg(window_ms);
        let mut redis = self.redis.clone();
        let counts: Vec<i64> = match cmd.query_async(&mut redis).await {
            Ok(counts) => counts,
            Err(err) => {
                tracing::warn!(error = %err, action, "cannot count requests in Redis; not rate limiting");
                return Ok(());
            }
        };
        let mut retry_after: Option<Duration> = None;
        for (pair, max) in counts.chunks(2).zip(limits) {
            let [count, ttl_ms] = pair else { continue };
            if *count > i64::from(max) {
                let wait = Duration::from_millis(u64::try_from(*ttl_ms).unwrap_or(window_ms));
                retry_after = Some(retry_after.map_or(wait, |w| w.max(wait)));
            }
        }
        match retry_after {
            None => Ok(()),
            Some(wait) => Err(Limited {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            }),
        }
    }
}

impl From<Limited> for kit::ApiError {
    fn from(limited: Limited) -> Self {
        kit::ApiError::new(
            http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "Too many requests; try again in {} seconds.",
                limited.retry_after
            ),
        )
        .with_header(http::header::RETRY_AFTER, limited.retry_after.into())
    }
}
