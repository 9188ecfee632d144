//! Layered configuration: built-in defaults → optional TOML file → environment.
//!
//! Environment keys are `<SERVICE>__<SECTION>__<KEY>` (e.g. `TEMPLATE__HTTP__PORT`), plus the
//! shared fallbacks `REDIS_URL`, `AMQP_URL` and `SENTRY_DSN` that every service understands.
//! A setting that does not parse or validate stops the service with exit code 2 and a message
//! naming the key and the environment variable that sets it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that needs it (a connection, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(\"***\")")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A URL with credentials inside (database, Redis, AMQP, Sentry DSN): `Debug` and [`Self::redacted`]
/// show it with the password replaced, so it can appear in logs and error messages.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(Secret);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// `scheme://user:***@host/path`: safe to print.
    pub fn redacted(&self) -> String {
        redact_url(self.expose())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Replaces the password (or a lone user token, as in a Sentry DSN) of `scheme://user:pass@host`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return "***".to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}{}{}", &url[..scheme_end + 3], shown, &rest[at..])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Creates its database when missing; pretty logs on a terminal.
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// Requests taking longer are answered with 504 `timeout`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Origins allowed by CORS; empty = no CORS headers, `["*"]` = any origin.
    pub cors_origins: Vec<String>,
    /// How long in-flight requests and background tasks get after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            request_timeout: Duration::from_secs(30),
            body_limit: 1024 * 1024,
            cors_origins: Vec::new(),
            shutdown_grace: Duration::from_secs(25),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info,sqlx=warn`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            level: "info,sqlx=warn,tower_http=warn".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: SecretUrl,
    #[serde(default = "defaults::max_connections")]
    pub max_connections: u32,
    #[serde(default, with = "humantime_serde")]
    pub acquire_timeout: Option<Duration>,
    /// Apply pending migrations when `serve` starts.
    #[serde(default = "defaults::yes")]
    pub migrate_on_start: bool,
    /// Create the database when it does not exist (default: only in development).
    #[serde(default)]
    pub create_if_missing: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptionalUrl {
    /// Not set = the service does not use this dependency and `/readyz` does not check it.
    pub url: Option<SecretUrl>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SentrySettings {
    pub dsn: Option<SecretUrl>,
    /// Tag attached to every event; defaults to the service environment.
    pub environment: Option<String>,
    pub sample_rate: f32,
}

impl Default for SentrySettings {
    fn default() -> Self {
        Self {
            dsn: None,
            environment: None,
            sample_rate: 1.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PopulateSettings {
    /// Scenario loaded at every start (get-or-create, so harmless to repeat).
    pub scenario: Option<String>,
    /// Directory holding `<scenario>/<service>/*.yaml`.
    pub dir: PathBuf,
}

impl Default for PopulateSettings {
    fn default() -> Self {
        Self {
            scenario: None,
            dir: PathBuf::from("populator"),
        }
    }
}

/// Every setting of one service: the shared sections plus the service's own (`app`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings<A> {
    #[serde(default)]
    pub environment: Environment,
    #[serde(default)]
    pub http: HttpSettings,
    #[serde(default)]
    pub log: LogSettings,
    pub database: DatabaseSettings,
    #[serde(default)]
    pub redis: OptionalUrl,
    #[serde(default)]
    pub amqp: OptionalUrl,
    #[serde(default)]
    pub sentry: SentrySettings,
    #[serde(default)]
    pub populate: PopulateSettings,
    #[serde(default)]
    pub app: A,
}

mod defaults {
    pub fn max_connections() -> u32 {
        10
    }
    pub fn yes() -> bool {
        true
    }
}

impl<A> Settings<A> {
    pub fn create_database_if_missing(&self) -> bool {
        self.database
            .create_if_missing
            .unwrap_or(self.environment == Environment::Development)
    }
}

/// A setting that stopped the service from starting.
#[derive(Debug)]
pub struct ConfigError {
    /// Dotted path, e.g. `http.port`.
    pub key: String,
    /// The environment variable that sets it, e.g. `TEMPLATE__HTTP__PORT`.
    pub env: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.env {
            Some(env) => write!(
                f,
                "invalid configuration: {} (env {env}): {}",
                self.key, self.message
            ),
            None => write!(f, "invalid configuration: {}: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(prefix: &str, key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            env: Some(env_name(prefix, key)),
            message: message.into(),
        }
    }
}

fn env_name(prefix: &str, key: &str) -> String {
    let path = key.replace('.', "__").to_uppercase();
    format!("{prefix}{path}")
}

/// The environment prefix of a service: `template` → `TEMPLATE__`.
pub fn env_prefix(service: &str) -> String {
    format!("{}__", service.to_uppercase())
}

/// What a service's own settings section (`app`) must be: deserialisable, with defaults.
pub trait AppSettings: DeserializeOwned + Default + Send + Sync + 'static {}
impl<T: DeserializeOwned + Default + Send + Sync + 'static> AppSettings for T {}

/// Loads settings for `service` from defaults, `file` (if given) and the environment.
pub fn load<A: AppSettings>(
    service: &str,
    default_port: u16,
    file: Option<&Path>,
) -> Result<Settings<A>, ConfigError> {
    let prefix = env_prefix(service);
    let mut figment = base_figment(service, default_port);
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError {
                key: "--config".into(),
                env: None,
                message: format!("no such file: {}", file.display()),
            });
        }
        figment = figment.merge(Toml::file(file));
    }
    figment = figment
        .merge(Env::raw().only(&["REDIS_URL"]).map(|_| "redis.url".into()))
        .merge(Env::raw().only(&["AMQP_URL"]).map(|_| "amqp.url".into()))
        .merge(
            Env::raw()
                .only(&["SENTRY_DSN"])
                .map(|_| "sentry.dsn".into()),
        )
        .merge(Env::prefixed(&prefix).split("__"));
    extract(figment, &prefix)
}

/// Defaults only (no file, no environment): what tests start from.
pub fn defaults<A: AppSettings>(
    service: &str,
    default_port: u16,
) -> Result<Settings<A>, ConfigError> {
    extract(base_figment(service, default_port), &env_prefix(service))
}

fn base_figment(service: &str, default_port: u16) -> Figment {
    Figment::new()
        .merge(Serialized::default("http.port", default_port))
        .merge(Serialized::default(
            "database.url",
            format!("postgres://postgres@127.0.0.1:5432/{service}"),
        ))
}

fn extract<A: AppSettings>(figment: Figment, prefix: &str) -> Result<Settings<A>, ConfigError> {
    let settings: Settings<A> = figment.extract().map_err(|err| {
        let key = if err.path.is_empty() {
            "(root)".to_owned()
        } else {
            err.path.join(".")
        };
        ConfigError::new(prefix, &key, err.kind.to_string())
    })?;
    validate(&settings, prefix)?;
    Ok(settings)
}

fn validate<A>(s: &Settings<A>, prefix: &str) -> Result<(), ConfigError> {
    let fail = |key: &str, message: String| Err(ConfigError::new(prefix, key, message));
    if s.http.host.parse::<std::net::IpAddr>().is_err() && s.http.host != "localhost" {
        return fail("http.host", format!("not an IP address: {:?}", s.http.host));
    }
    if s.http.request_timeout.is_zero() {
        return fail("http.request_timeout", "must be greater than zero".into());
    }
    if s.http.body_limit == 0 {
        return fail("http.body_limit", "must be greater than zero".into());
    }
    for origin in &s.http.cors_origins {
        if origin != "*" && http::HeaderValue::from_str(origin).is_err() {
            return fail(
                "http.cors_origins",
                format!("not a valid origin: {origin:?}"),
            );
        }
    }
    if let Err(err) = tracing_subscriber::EnvFilter::try_new(&s.log.level) {
        return fail("log.level", err.to_string());
    }
    let db_url = s.database.url.expose();
    if !(db_url.starts_with("postgres://") || db_url.starts_with("postgresql://")) {
        return fail(
            "database.url",
            format!("{} is not a postgres:// URL", s.database.url.redacted()),
        );
    }
    if let Err(err) = sqlx::postgres::PgConnectOptions::from_str(db_url) {
        return fail(
            "database.url",
            format!("{} ({err})", s.database.url.redacted()),
        );
    }
    if s.database.max_connections == 0 {
        return fail("database.max_connections", "must be at least 1".into());
    }
    if let Some(url) = &s.redis.url
        && redis::Client::open(url.expose()).is_err()
    {
        return fail("redis.url", format!("not a Redis URL: {}", url.redacted()));
    }
    if let Some(url) = &s.amqp.url
        && url.expose().parse::<lapin::uri::AMQPUri>().is_err()
    {
        return fail("amqp.url", format!("not an AMQP URL: {}", url.redacted()));
    }
    if let Some(dsn) = &s.sentry.dsn
        && dsn.expose().parse::<sentry::types::Dsn>().is_err()
    {
        return fail(
            "sentry.dsn",
            format!("not a Sentry DSN: {}", dsn.redacted()),
        );
    }
    if !(0.0..=1.0).contains(&s.sentry.sample_rate) {
        return fail("sentry.sample_rate", "must be between 0 and 1".into());
    }
    if let Some(name) = &s.populate.scenario
        && (name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'))
    {
        return fail(
            "populate.scenario",
            format!("not a scenario name: {name:?}"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_and_dsn_keys() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/auth"),
            "postgres://app:***@db:5432/auth"
        );
        assert_eq!(
            redact_url("https://abc123@o1.ingest.example/42"),
            "https://***@o1.ingest.example/42"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url("not a url"), "***");
    }

    #[test]
    fn secret_debug_is_redacted() {
        let url = SecretUrl::new("amqp://guest:topsecret@rabbit/%2f");
        let shown = format!("{url:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(format!("{:?}", Secret::new("topsecret")).contains("***"));
    }

    #[test]
    fn env_names_follow_the_convention() {
        assert_eq!(env_name("TEMPLATE__", "http.port"), "TEMPLATE__HTTP__PORT");
        assert_eq!(env_prefix("auth"), "AUTH__");
    }
}
