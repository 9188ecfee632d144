//! The service's own settings: the `[app]` section of its config file, or `AUTH__APP__<KEY>`
//! in the environment (nested keys with `__`, e.g. `AUTH__APP__ARGON2__MEMORY_KIB`).
//!
//! Token verification settings (`auth.issuer`, `auth.audience`, `auth.leeway`,
//! `auth.revocation_prefix`) are kit's shared `[auth]` section: auth signs with the same
//! issuer and audience every verifier expects.

use std::time::Duration;

use kit::config::Secret;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Lifetime of a user's access token (`exp - iat`).
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// Lifetime of a service (client-credentials) token.
    #[serde(with = "humantime_serde")]
    pub service_token_ttl: Duration,
    /// A refresh token not used within this time expires (each refresh issues a new one).
    #[serde(with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// A session ends this long after the login, however often it is refreshed.
    #[serde(with = "humantime_serde")]
    pub session_max_age: Duration,
    /// A rotated refresh token presented again within this time (concurrent refreshes of one
    /// client) still works; after it, the presentation ends the whole session.
    #[serde(with = "humantime_serde")]
    pub refresh_reuse_grace: Duration,
    /// The password grant refuses accounts whose email is not verified.
    pub require_verified_email: bool,
    #[serde(with = "humantime_serde")]
    pub verify_email_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub reset_password_ttl: Duration,
    /// The link a verification mail carries; `{token}` is replaced by the token.
    pub verify_email_url: String,
    /// The link a password-reset mail carries; `{token}` is replaced by the token.
    pub reset_password_url: String,
    /// The link an email-change mail (to the new address) carries; `{token}` is replaced by the
    /// token. Valid for `verify_email_ttl`.
    pub change_email_url: String,
    /// Lifetime of a websocket ticket (single use).
    #[serde(with = "humantime_serde")]
    pub ticket_ttl: Duration,
    /// `POST /tickets/validate` needs a service token (the broker's). Turn off only where
    /// the broker cannot present one yet.
    pub ticket_validation_requires_service_token: bool,
    /// Password hashing cost.
    pub argon2: Argon2Settings,
    /// Password-hashing workers: hashes computed at the same time, at most (each worker holds
    /// `argon2.memory_kib` while busy and for a while after); further logins wait their turn
    /// instead of exhausting memory. 0 = the number of CPUs.
    pub hashing_concurrency: usize,
    /// Nice value of the hashing workers (0-19, default the lowest priority): under CPU
    /// contention, request handling is scheduled before hashing, so a login storm does not slow
    /// other requests down.
    pub hashing_nice: i32,
    /// How long a signed-in account read from the database may serve later requests. Every
    /// change to an account drops its copy at once (on every instance, by a notification sent
    /// when the change commits); this bounds what a lost notification could leave behind.
    /// 0 = read the account on every request.
    #[serde(with = "humantime_serde")]
    pub account_cache_ttl: Duration,
    /// Put in front of auth's own Redis keys (rate limits, tickets).
    pub redis_prefix: String,
    pub rate_limits: RateLimits,
    /// The address clients reach this service at (e.g. `https://auth.example.com`), for the
    /// absolute URLs of the OAuth metadata. Unset: `http://` and the request's `Host`.
    pub public_url: Option<String>,
    /// Take the client address from this request header (its first entry, e.g.
    /// `x-forwarded-for`) instead of the TCP peer. Set only behind a proxy that overwrites it.
    pub client_ip_header: Option<String>,
    /// How often a running instance reloads the signing keys (to pick up `auth keys rotate`).
    #[serde(with = "humantime_serde")]
    pub key_reload: Duration,
    /// After `auth keys rotate`, the new key is published at once and signs only after this
    /// delay, so verifiers can fetch it first. At least `auth.jwks_min_refetch` of every
    /// verifier (10 s by default) plus `key_reload`.
    #[serde(with = "humantime_serde")]
    pub key_publish_delay: Duration,
    /// Seals the signing keys' private halves in the database: base64 of 32 random bytes
    /// (`auth keys generate-kek` prints one). Required in production; unset in development, a
    /// built-in development key stands in. Secret: never logged or shown.
    pub key_encryption_key: Option<Secret>,
    /// During a rotation of `key_encryption_key`: the previous one, which still opens keys
    /// until `auth keys reencrypt` has sealed them all under the new one.
    pub previous_key_encryption_key: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            access_token_ttl: Duration::from_secs(15 * 60),
            service_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_max_age: Duration::from_secs(90 * 24 * 3600),
            refresh_reuse_grace: Duration::from_secs(10),
            require_verified_email: true,
            verify_email_ttl: Duration::from_secs(24 * 3600),
            reset_password_ttl: Duration::from_secs(3600),
            verify_email_url: "http://127.0.0.1:8001/verify-email?token={token}".into(),
            reset_password_url: "http://127.0.0.1:8001/reset-password?token={token}".into(),
            change_email_url: "http://127.0.0.1:8001/change-email?token={token}".into(),
            ticket_ttl: Duration::from_secs(30),
            ticket_validation_requires_service_token: true,
            argon2: Argon2Settings::default(),
            hashing_concurrency: 0,
            hashing_nice: 19,
            account_cache_ttl: Duration::from_secs(1),
            redis_prefix: "auth:".into(),
            rate_limits: RateLimits::default(),
            public_url: None,
            client_ip_header: None,
            key_reload: Duration::from_secs(30),
            key_publish_delay: Duration::from_secs(60),
            key_encryption_key: None,
            previous_key_encryption_key: None,
        }
    }
}

/// Argon2id cost. The defaults are OWASP's recommendation (m = 19 MiB, t = 2, p = 1); hashes
/// carry their parameters, so raising them later still verifies old hashes, and a login
/// re-hashes a password stored with other parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Argon2Settings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Settings {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Requests allowed per client address and per email address within a window (fixed windows
/// counted in Redis). Beyond it: 429 `rate_limited` with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub per_ip: u32,
    pub per_email: u32,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    /// Off = no limits at all (benchmarks).
    pub enabled: bool,
    /// The password grant (and password changes: guesses at the current password).
    pub token: Limit,
    pub signup: Limit,
    pub forgot: Limit,
    pub resend: Limit,
}

impl Default for RateLimits {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            enabled: true,
            token: Limit {
                per_ip: 100,
                per_email: 10,
                window: minutes(15),
            },
            signup: Limit {
                per_ip: 20,
                per_email: 5,
                window: minutes(60),
            },
            forgot: Limit {
                per_ip: 20,
                per_email: 5,
                window: minutes(60),
            },
            resend: Limit {
                per_ip: 20,
                per_email: 5,
                window: minutes(60),
            },
        }
    }
}

impl Config {
    /// Checks what serde cannot; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let durations = [
            ("app.access_token_ttl", self.access_token_ttl),
            ("app.service_token_ttl", self.service_token_ttl),
            ("app.refresh_token_ttl", self.refresh_token_ttl),
            ("app.session_max_age", self.session_max_age),
            ("app.verify_email_ttl", self.verify_email_ttl),
            ("app.reset_password_ttl", self.reset_password_ttl),
            ("app.ticket_ttl", self.ticket_ttl),
            ("app.key_reload", self.key_reload),
        ];
        for (key, value) in durations {
            if value < Duration::from_secs(1) {
                return Err(format!("{key}: must be at least 1s"));
            }
        }
        for (key, url) in [
            ("app.verify_email_url", &self.verify_email_url),
            ("app.reset_password_url", &self.reset_password_url),
            ("app.change_email_url", &self.change_email_url),
        ] {
            if !url.contains("{token}") {
                return Err(format!("{key}: must contain {{token}}"));
            }
        }
        if !(0..=19).contains(&self.hashing_nice) {
            return Err("app.hashing_nice: must be between 0 and 19".into());
        }
        if let Some(url) = &self.public_url {
            let ok = url.parse::<http::Uri>().is_ok_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.host().is_some()
                    && uri.query().is_none()
            });
            if !ok {
                return Err(format!(
                    "app.public_url: {url:?} is not an http(s) URL such as https://auth.example.com"
                ));
            }
        }
        for (key, value) in [
            ("app.key_encryption_key", &self.key_encryption_key),
            (
                "app.previous_key_encryption_key",
                &self.previous_key_encryption_key,
            ),
        ] {
            if let Some(value) = value {
                crate::kek::Kek::parse(value.expose()).map_err(|why| format!("{key}: {why}"))?;
            }
        }
        let a = self.argon2;
        argon2::Params::new(a.memory_kib, a.iterations, a.parallelism, None)
            .map_err(|err| format!("app.argon2: {err}"))?;
        Ok(())
    }

    /// The longest any access token lives: how long revocation markers and retired keys must
    /// be kept.
    pub fn longest_token_ttl(&self) -> Duration {
        self.access_token_ttl.max(self.service_token_ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_encryption_keys_are_checked_and_never_shown() {
        let current = crate::kek::Kek::generate().unwrap();
        let previous = crate::kek::Kek::generate().unwrap();
        let config = Config {
            key_encryption_key: Some(Secret::new(current.clone())),
            previous_key_encryption_key: Some(Secret::new(previous.clone())),
            ..Config::default()
        };
        assert_eq!(config.validate(), Ok(()));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains(&current) && !shown.contains(&previous),
            "{shown}"
        );
        let short = Config {
            key_encryption_key: Some(Secret::new("c2hvcnQ=")),
            ..Config::default()
        };
        assert!(
            short
                .validate()
                .unwrap_err()
                .starts_with("app.key_encryption_key:")
        );
    }
}
