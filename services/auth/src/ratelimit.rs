//! Rate limits: fixed-window counters per client address and per email address, in Redis so
//! every instance counts together. A request counts against both; beyond either limit it is
//! refused with `Retry-After` set to the end of the window.
//!
//! When Redis cannot be reached, the same limits are counted in this process instead (a
//! warning says so, at most every [`WARN_EVERY`]): an outage of Redis neither locks everyone
//! out nor lifts the limits. Each instance then counts on its own, so across `n` instances a
//! client gets at most `n` times the limit until Redis is back.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Counts while Redis is unreachable.
    local: Arc<LocalWindows>,
}

/// The "counting locally" warning is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// Counters kept in the process at most: beyond, expired ones are dropped, then all (a flood of
/// distinct addresses and emails during a Redis outage must not grow memory without end).
const LOCAL_CAPACITY: usize = 100_000;

/// Fixed windows counted in this process: key → (count, end of the window).
#[derive(Default)]
struct LocalWindows {
    counts: Mutex<HashMap<String, (u32, Instant)>>,
    last_warning: Mutex<Option<Instant>>,
}

impl LocalWindows {
    /// Counts one request against each key; each key's count and time left in its window.
    fn count(&self, keys: &[String], window: Duration) -> Vec<(u32, Duration)> {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() >= LOCAL_CAPACITY {
            counts.retain(|_, (_, end)| *end > now);
            if counts.len() >= LOCAL_CAPACITY {
                counts.clear();
            }
        }
        keys.iter()
            .map(|key| {
                let entry = counts.entry(key.clone()).or_insert((0, now + window));
                if entry.1 <= now {
                    *entry = (0, now + window);
                }
                entry.0 = entry.0.saturating_add(1);
                (entry.0, entry.1 - now)
            })
            .collect()
    }

    /// Whether to log the outage now (at most every [`WARN_EVERY`]).
    fn should_warn(&self) -> bool {
        let mut last = self.last_warning.lock().unwrap_or_else(|p| p.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
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
            local: Arc::default(),
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
        let counts: Vec<(u32, Duration)> = match cmd.query_async::<Vec<i64>>(&mut redis).await {
            Ok(counts) => counts
                .chunks(2)
                .map(|pair| match pair {
                    [count, ttl_ms] => (
                        u32::try_from(*count).unwrap_or(u32::MAX),
                        Duration::from_millis(u64::try_from(*ttl_ms).unwrap_or(window_ms)),
                    ),
                    _ => (u32::MAX, limit.window),
                })
                .collect(),
            Err(err) => {
                if self.local.should_warn() {
                    tracing::warn!(error = %err, action, "cannot count requests in Redis; counting in this process until it is back");
                }
                self.local.count(&keys, limit.window)
            }
        };
        let mut retry_after: Option<Duration> = None;
        for ((count, left), max) in counts.into_iter().zip(limits) {
            if count > max {
                retry_after = Some(retry_after.map_or(left, |w| w.max(left)));
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
