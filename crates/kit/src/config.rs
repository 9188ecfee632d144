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
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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

/// Serialised as the plain value: settings are serialised only to become the defaults layer of
/// the configuration, never to be shown.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// A URL with credentials inside (database, Redis, AMQP, Sentry DSN): `Debug` and [`Self::redacted`]
/// show it with the password replaced, so it can appear in logs and error messages.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// Creates its database when missing; pretty logs on a terminal.
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Apply pending data changes (`changelog/`) when `serve` starts, after the migrations
    /// (default: only in development; in production the deploy runs `changelog apply`).
    #[serde(default)]
    pub changelog_on_start: Option<bool>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptionalUrl {
    /// Not set = the service does not use this dependency and `/readyz` does not check it.
    pub url: Option<SecretUrl>,
}

/// RabbitMQ and the event bus (`bus` crate): connection, names, retries, outbox relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpSettings {
    /// Not set = no bus: events wait in the outbox, no consumer runs, `/readyz` skips RabbitMQ.
    pub url: Option<SecretUrl>,
    /// First part of every exchange and queue name (`<prefix>.events`, `<prefix>.<service>`).
    pub prefix: String,
    /// Unacknowledged deliveries RabbitMQ sends ahead to one consumer.
    pub prefetch: u16,
    /// Deliveries handled at the same time (each holds a database connection).
    pub concurrency: usize,
    /// Handler runs before a failing event is parked (the first run counts).
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles for each further one, up to `retry_max_delay`.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// A handler still running after this counts as failed.
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// Longest wait between two attempts to reconnect to RabbitMQ.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
    /// The outbox relay wakes on NOTIFY, and at least this often.
    #[serde(with = "humantime_serde")]
    pub outbox_poll: Duration,
    /// Outbox rows published per relay transaction.
    pub outbox_batch: u32,
    /// Published outbox rows are deleted after this.
    #[serde(with = "humantime_serde")]
    pub outbox_retention: Duration,
    /// Inbox rows (ids of handled events, for de-duplication) are deleted after this.
    #[serde(with = "humantime_serde")]
    pub inbox_retention: Duration,
    /// RabbitMQ deletes the service's queues once unused (no consumer) this long. Unset (the
    /// default) in every real deployment; tests set it so their throw-away queues do not pile
    /// up in a shared RabbitMQ.
    #[serde(default, with = "humantime_serde")]
    pub queue_expires: Option<Duration>,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            url: None,
            prefix: "hatchery".into(),
            // Measured (bus-bench, 2 cores): deliveries that are already here are applied
            // in one transaction, so a deep prefetch with few workers beats many workers.
            prefetch: 256,
            concurrency: 4,
            max_attempts: 5,
            retry_delay: Duration::from_secs(1),
            retry_max_delay: Duration::from_secs(300),
            handler_timeout: Duration::from_secs(30),
            reconnect_max_delay: Duration::from_secs(30),
            outbox_poll: Duration::from_secs(1),
            outbox_batch: 500,
            outbox_retention: Duration::from_secs(7 * DAY),
            inbox_retention: Duration::from_secs(30 * DAY),
            queue_expires: None,
        }
    }
}

fn validate_amqp(amqp: &AmqpSettings, prefix: &str) -> Result<(), ConfigError> {
    let fail = |key: &str, message: String| Err(ConfigError::new(prefix, key, message));
    if let Some(url) = &amqp.url
        && url.expose().parse::<lapin::uri::AMQPUri>().is_err()
    {
        return fail("amqp.url", format!("not an AMQP URL: {}", url.redacted()));
    }
    let name_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if amqp.prefix.is_empty() || amqp.prefix.len() > 100 || !amqp.prefix.chars().all(name_ok) {
        return fail(
            "amqp.prefix",
            format!("1 to 100 of [a-z0-9_-] expected, got {:?}", amqp.prefix),
        );
    }
    if amqp.prefetch == 0 {
        return fail("amqp.prefetch", "must be at least 1".into());
    }
    if !(1..=1024).contains(&amqp.concurrency) {
        return fail("amqp.concurrency", "must be between 1 and 1024".into());
    }
    if !(1..=20).contains(&amqp.max_attempts) {
        return fail("amqp.max_attempts", "must be between 1 and 20".into());
    }
    if amqp.retry_delay < Duration::from_millis(10) {
        return fail("amqp.retry_delay", "must be at least 10ms".into());
    }
    if amqp.retry_max_delay < amqp.retry_delay {
        return fail(
            "amqp.retry_max_delay",
            "must not be shorter than amqp.retry_delay".into(),
        );
    }
    for (key, value) in [
        ("amqp.handler_timeout", amqp.handler_timeout),
        ("amqp.reconnect_max_delay", amqp.reconnect_max_delay),
        ("amqp.outbox_poll", amqp.outbox_poll),
        ("amqp.outbox_retention", amqp.outbox_retention),
        ("amqp.inbox_retention", amqp.inbox_retention),
    ] {
        if value.is_zero() {
            return fail(key, "must be greater than zero".into());
        }
    }
    if amqp.queue_expires.is_some_and(|after| after.is_zero()) {
        return fail("amqp.queue_expires", "must be greater than zero".into());
    }
    if !(1..=10_000).contains(&amqp.outbox_batch) {
        return fail("amqp.outbox_batch", "must be between 1 and 10000".into());
    }
    Ok(())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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

/// What to do when the session-revocation store (Redis) cannot be asked in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RevocationCheck {
    /// Refuse the request (503 `auth_unavailable`): a revoked session never slips through.
    #[default]
    FailClosed,
    /// Let the request through on the token alone, and log a warning.
    FailOpen,
}

/// How a service verifies the bearer tokens the auth service issues (`identity` crate).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The auth service's key set (JWKS). Neither this nor `public_key` set = the local auth
    /// service, [`AuthSettings::LOCAL_JWKS_URL`] (not allowed in production).
    pub jwks_url: Option<String>,
    /// A fixed Ed25519 public key instead of a JWKS: base64 of the 32 raw bytes (or of the DER
    /// `SubjectPublicKeyInfo`), a PEM `PUBLIC KEY` block, or a JWK object.
    pub public_key: Option<String>,
    /// Expected `iss` claim.
    pub issuer: String,
    /// Expected `aud` claim.
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    pub revocation_check: RevocationCheck,
    /// How long one revocation lookup in Redis may take before `revocation_check` decides.
    #[serde(with = "humantime_serde")]
    pub revocation_timeout: Duration,
    /// Put in front of every revocation key in Redis (`<prefix>revoked:session:<sid>`); empty
    /// by default. The auth service and every verifier must use the same value; tests set a
    /// unique one so they cannot see each other's revocations.
    pub revocation_prefix: String,
    /// Age after which the cached key set is fetched again (keys removed by auth stop working).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Least time between two fetches caused by tokens with an unknown `kid`, so a flood of
    /// made-up key ids cannot hammer the auth service.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
}

impl AuthSettings {
    /// Where the auth service serves its key set when it runs locally on its default port.
    pub const LOCAL_JWKS_URL: &str = "http://127.0.0.1:8001/.well-known/jwks.json";

    /// The configured public key as its 32 raw bytes (`None` when a JWKS is used).
    pub fn public_key_bytes(&self) -> Result<Option<[u8; 32]>, String> {
        self.public_key
            .as_deref()
            .map(parse_ed25519_public_key)
            .transpose()
    }
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwks_url: None,
            public_key: None,
            issuer: "hatchery-auth".into(),
            audience: "hatchery".into(),
            leeway: Duration::from_secs(30),
            revocation_check: RevocationCheck::FailClosed,
            revocation_timeout: Duration::from_millis(250),
            revocation_prefix: String::new(),
            jwks_refresh: Duration::from_secs(300),
            jwks_min_refetch: Duration::from_secs(10),
        }
    }
}

/// DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410); the 32 key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Reads an Ed25519 public key written as base64 (standard or URL-safe, padding optional) of
/// the 32 raw bytes or of the DER `SubjectPublicKeyInfo`, as a PEM `PUBLIC KEY` block, or as a
/// JWK object (`{"kty":"OKP","crv":"Ed25519","x":"..."}`).
pub fn parse_ed25519_public_key(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let text = text.trim();
    let encoded: String = if text.starts_with('{') {
        let jwk: serde_json::Value =
            serde_json::from_str(text).map_err(|err| format!("not a JWK: {err}"))?;
        if jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" {
            return Err("the JWK is not an Ed25519 key (kty OKP, crv Ed25519)".into());
        }
        jwk["x"].as_str().ok_or("the JWK has no \"x\"")?.to_owned()
    } else if text.starts_with("-----BEGIN") {
        if !text.starts_with("-----BEGIN PUBLIC KEY-----") {
            return Err("expected a PEM \"PUBLIC KEY\" block".into());
        }
        text.lines()
            .filter(|line| !line.starts_with("-----"))
            .collect()
    } else {
        text.to_owned()
    };
    let encoded = encoded.trim_end_matches('=');
    let bytes = STANDARD_NO_PAD
        .decode(encoded)
        .or_else(|_| URL_SAFE_NO_PAD.decode(encoded))
        .map_err(|_| "not base64, PEM or a JWK".to_owned())?;
    let raw = match bytes.len() {
        32 => &bytes[..],
        44 if bytes.starts_with(&ED25519_SPKI_PREFIX) => &bytes[12..],
        n => {
            return Err(format!(
                "not an Ed25519 public key ({n} bytes; expected 32)"
            ));
        }
    };
    let mut key = [0u8; 32];
    key.copy_from_slice(raw);
    Ok(key)
}

/// Every setting of one service: the shared sections plus the service's own (`app`).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    pub amqp: AmqpSettings,
    #[serde(default)]
    pub sentry: SentrySettings,
    #[serde(default)]
    pub populate: PopulateSettings,
    #[serde(default)]
    pub auth: AuthSettings,
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

impl<A: Default> Settings<A> {
    /// The built-in defaults of every section.
    pub fn built_in(service: &str, default_port: u16) -> Self {
        Settings {
            environment: Environment::default(),
            http: HttpSettings {
                port: default_port,
                ..HttpSettings::default()
            },
            log: LogSettings::default(),
            database: DatabaseSettings {
                url: SecretUrl::new(format!("postgres://postgres@127.0.0.1:5432/{service}")),
                max_connections: defaults::max_connections(),
                acquire_timeout: None,
                migrate_on_start: true,
                create_if_missing: None,
                changelog_on_start: None,
            },
            redis: OptionalUrl::default(),
            amqp: AmqpSettings::default(),
            sentry: SentrySettings::default(),
            populate: PopulateSettings::default(),
            auth: AuthSettings::default(),
            app: A::default(),
        }
    }
}

impl<A> Settings<A> {
    pub fn create_database_if_missing(&self) -> bool {
        self.database
            .create_if_missing
            .unwrap_or(self.environment == Environment::Development)
    }

    pub fn apply_changelog_on_start(&self) -> bool {
        self.database
            .changelog_on_start
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

/// What a service's own settings section (`app`) must be: (de)serialisable, with defaults.
/// Every nested struct gets its defaults from `A::default()` serialised as the bottom layer,
/// so overriding one key of a nested section (`AUTH__APP__RATE_LIMITS__SIGNUP__PER_IP=100`)
/// keeps the other keys of that section at their defaults.
pub trait AppSettings: Serialize + DeserializeOwned + Default + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Default + Send + Sync + 'static> AppSettings for T {}

/// A server a service talks to besides its database. A service declares what it uses
/// (`kit::Service::USES`); in development an unset URL then defaults to the local server, in
/// production it is a configuration error naming the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uses {
    /// `redis.url` (or `REDIS_URL`).
    Redis,
    /// `amqp.url` (or `AMQP_URL`).
    RabbitMq,
}

impl Uses {
    /// The setting that names the server.
    pub fn key(self) -> &'static str {
        match self {
            Uses::Redis => "redis.url",
            Uses::RabbitMq => "amqp.url",
        }
    }

    /// The shared environment variable that sets it for every service.
    pub fn shared_env(self) -> &'static str {
        match self {
            Uses::Redis => "REDIS_URL",
            Uses::RabbitMq => "AMQP_URL",
        }
    }

    /// Where the server listens on a developer's machine.
    pub fn local_url(self) -> &'static str {
        match self {
            Uses::Redis => "redis://127.0.0.1:6379",
            Uses::RabbitMq => "amqp://guest:guest@127.0.0.1:5672/%2f",
        }
    }

    fn url<A>(self, settings: &mut Settings<A>) -> &mut Option<SecretUrl> {
        match self {
            Uses::Redis => &mut settings.redis.url,
            Uses::RabbitMq => &mut settings.amqp.url,
        }
    }
}

/// Loads settings for `service` from defaults, `file` (if given) and the environment; then, for
/// each server in `uses` left unset, the local one in development, or an error in production.
pub fn load<A: AppSettings>(
    service: &str,
    default_port: u16,
    uses: &[Uses],
    file: Option<&Path>,
) -> Result<Settings<A>, ConfigError> {
    let prefix = env_prefix(service);
    let mut figment = base_figment::<A>(service, default_port);
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
    let mut settings = extract(figment, &prefix)?;
    for &server in uses {
        let environment = settings.environment;
        let url = server.url(&mut settings);
        if url.is_none() {
            match environment {
                Environment::Development => *url = Some(SecretUrl::new(server.local_url())),
                Environment::Production => {
                    return Err(ConfigError::new(
                        &prefix,
                        server.key(),
                        format!(
                            "required: this service uses it (or set {})",
                            server.shared_env()
                        ),
                    ));
                }
            }
        }
    }
    Ok(settings)
}

/// Defaults only (no file, no environment, no server URLs): what tests start from.
pub fn defaults<A: AppSettings>(
    service: &str,
    default_port: u16,
) -> Result<Settings<A>, ConfigError> {
    extract(
        base_figment::<A>(service, default_port),
        &env_prefix(service),
    )
}

/// Every setting at its default, as the bottom layer: nested sections stay complete whatever
/// subset of their keys a file or the environment sets.
fn base_figment<A: AppSettings>(service: &str, default_port: u16) -> Figment {
    Figment::from(Serialized::defaults(Settings::<A>::built_in(
        service,
        default_port,
    )))
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
    validate_amqp(&s.amqp, prefix)?;
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
    validate_auth(&s.auth, s.environment, prefix)
}

fn validate_auth(
    auth: &AuthSettings,
    environment: Environment,
    prefix: &str,
) -> Result<(), ConfigError> {
    let fail = |key: &str, message: String| Err(ConfigError::new(prefix, key, message));
    match (&auth.jwks_url, &auth.public_key) {
        (Some(_), Some(_)) => {
            return fail(
                "auth.public_key",
                "set either auth.jwks_url or auth.public_key, not both".into(),
            );
        }
        (None, None) if environment == Environment::Production => {
            return fail(
                "auth.jwks_url",
                "required in production (or auth.public_key)".into(),
            );
        }
        _ => {}
    }
    if let Some(url) = &auth.jwks_url {
        let ok = url.parse::<http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if !ok {
            return fail("auth.jwks_url", format!("not an http(s) URL: {url:?}"));
        }
    }
    if let Err(err) = auth.public_key_bytes() {
        return fail("auth.public_key", err);
    }
    if auth.issuer.trim().is_empty() {
        return fail("auth.issuer", "must not be empty".into());
    }
    if auth.audience.trim().is_empty() {
        return fail("auth.audience", "must not be empty".into());
    }
    if auth.leeway > Duration::from_secs(300) {
        return fail("auth.leeway", "must be at most 5 minutes".into());
    }
    if auth.revocation_timeout.is_zero() {
        return fail(
            "auth.revocation_timeout",
            "must be greater than zero".into(),
        );
    }
    if auth.jwks_refresh.is_zero() {
        return fail("auth.jwks_refresh", "must be greater than zero".into());
    }
    if auth.jwks_min_refetch > auth.jwks_refresh {
        return fail(
            "auth.jwks_min_refetch",
            "must not be longer than auth.jwks_refresh".into(),
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
    fn data_changes_apply_at_start_in_development_only_unless_set() {
        let mut settings = Settings::<()>::built_in("probe", 1);
        assert!(settings.apply_changelog_on_start());
        settings.environment = Environment::Production;
        assert!(!settings.apply_changelog_on_start());
        settings.database.changelog_on_start = Some(true);
        assert!(settings.apply_changelog_on_start());
    }

    #[test]
    fn secret_debug_is_redacted() {
        let url = SecretUrl::new("amqp://guest:topsecret@rabbit/%2f");
        let shown = format!("{url:?}");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(format!("{:?}", Secret::new("topsecret")).contains("***"));
    }

    #[test]
    fn ed25519_public_keys_are_read_in_every_accepted_form() {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let raw: [u8; 32] = std::array::from_fn(|i| i as u8 + 1);
        let mut der = ED25519_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&raw);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(&der)
        );
        let jwk = format!(
            r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(raw)
        );
        for text in [
            STANDARD.encode(raw),
            URL_SAFE_NO_PAD.encode(raw),
            STANDARD.encode(&der),
            pem,
            jwk,
        ] {
            assert_eq!(parse_ed25519_public_key(&text), Ok(raw), "{text}");
        }
        for bad in [
            "",
            "not base64!",
            &STANDARD.encode([1u8; 31]),
            r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ] {
            assert!(parse_ed25519_public_key(bad).is_err(), "{bad:?}");
        }
    }

    /// A service's own section with a nested one, as services have (`app.rate_limits.signup`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct App {
        greeting: String,
        limits: Limits,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        signup: Limit,
        login: Limit,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Limit {
        per_ip: u32,
        per_email: u32,
    }

    impl Default for App {
        fn default() -> Self {
            App {
                greeting: "hello".into(),
                limits: Limits {
                    signup: Limit {
                        per_ip: 5,
                        per_email: 3,
                    },
                    login: Limit {
                        per_ip: 50,
                        per_email: 10,
                    },
                },
            }
        }
    }

    fn load_app(uses: &[Uses]) -> Result<Settings<App>, ConfigError> {
        load::<App>("probe", 8999, uses, None)
    }

    /// Runs `check` with exactly the environment variables `vars` set (figment's jail keeps
    /// tests that set variables apart from each other).
    #[allow(clippy::result_large_err)] // figment's Jail API: its error type, test-only.
    fn with_env(vars: &[(&str, &str)], check: impl FnOnce()) {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (name, value) in vars {
                jail.set_env(name, value);
            }
            check();
            Ok(())
        });
    }

    #[test]
    fn every_shared_key_that_does_not_parse_or_validate_is_named_with_its_variable() {
        let cases = [
            ("PROBE__HTTP__PORT", "eighty", "http.port"),
            ("PROBE__HTTP__HOST", "not an ip", "http.host"),
            ("PROBE__HTTP__REQUEST_TIMEOUT", "0s", "http.request_timeout"),
            ("PROBE__HTTP__PROT", "1", "prot"),
            ("PROBE__DATABASE__URL", "mysql://nope", "database.url"),
            (
                "PROBE__DATABASE__MAX_CONNECTIONS",
                "0",
                "database.max_connections",
            ),
            ("PROBE__LOG__LEVEL", "info,[[[", "log.level"),
            ("PROBE__REDIS__URL", "http://not-redis", "redis.url"),
            ("PROBE__AMQP__URL", "redis://not-amqp", "amqp.url"),
            ("PROBE__AMQP__PREFIX", "Upper Case", "amqp.prefix"),
            ("PROBE__SENTRY__DSN", "not a dsn", "sentry.dsn"),
            ("PROBE__POPULATE__SCENARIO", "../etc", "populate.scenario"),
            ("PROBE__AUTH__PUBLIC_KEY", "not-a-key", "auth.public_key"),
            ("PROBE__AUTH__JWKS_URL", "ftp://auth/keys", "auth.jwks_url"),
            (
                "PROBE__AUTH__REVOCATION_CHECK",
                "sometimes",
                "auth.revocation_check",
            ),
            ("PROBE__APP__GREETING", "[1, 2]", "app.greeting"),
        ];
        for (name, value, key) in cases {
            with_env(&[(name, value)], || {
                let err = load_app(&[]).expect_err(name);
                assert!(err.key.contains(key), "{name}={value}: {err}");
                assert!(err.to_string().contains("invalid configuration"), "{err}");
            });
        }
    }

    #[test]
    fn one_key_of_a_nested_section_keeps_the_others_at_their_defaults() {
        with_env(&[("PROBE__APP__LIMITS__SIGNUP__PER_IP", "100")], || {
            let settings = load_app(&[]).expect("loads");
            let limits = &settings.app.limits;
            assert_eq!(
                limits.signup,
                Limit {
                    per_ip: 100,
                    per_email: 3
                }
            );
            assert_eq!(limits.login, App::default().limits.login);
            assert_eq!(settings.app.greeting, "hello");
        });
        with_env(&[("PROBE__HTTP__BODY_LIMIT", "2048")], || {
            let settings = load_app(&[]).expect("loads");
            assert_eq!(settings.http.body_limit, 2048);
            assert_eq!(settings.http.port, 8999);
        });
    }

    #[test]
    fn servers_a_service_uses_default_to_the_local_ones_in_development_only() {
        with_env(&[], || {
            let settings = load_app(&[Uses::Redis, Uses::RabbitMq]).expect("loads");
            assert_eq!(
                settings.redis.url.as_ref().map(SecretUrl::expose),
                Some("redis://127.0.0.1:6379")
            );
            assert_eq!(
                settings.amqp.url.as_ref().map(SecretUrl::expose),
                Some("amqp://guest:guest@127.0.0.1:5672/%2f")
            );
            // What a service does not use stays unset (and unchecked).
            let settings = load_app(&[Uses::Redis]).expect("loads");
            assert!(settings.amqp.url.is_none());
        });
        with_env(&[("REDIS_URL", "redis://cache:6379")], || {
            let settings = load_app(&[Uses::Redis]).expect("loads");
            assert_eq!(
                settings.redis.url.as_ref().map(SecretUrl::expose),
                Some("redis://cache:6379")
            );
        });
        with_env(
            &[
                ("PROBE__ENVIRONMENT", "production"),
                (
                    "PROBE__AUTH__JWKS_URL",
                    "http://auth:8001/.well-known/jwks.json",
                ),
                ("AMQP_URL", "amqp://guest:guest@rabbit:5672/%2f"),
            ],
            || {
                let err = load_app(&[Uses::Redis, Uses::RabbitMq]).expect_err("no Redis");
                assert_eq!(err.key, "redis.url");
                assert_eq!(err.env.as_deref(), Some("PROBE__REDIS__URL"));
                assert!(err.message.contains("REDIS_URL"), "{err}");
            },
        );
    }

    #[test]
    fn env_names_follow_the_convention() {
        assert_eq!(env_name("TEMPLATE__", "http.port"), "TEMPLATE__HTTP__PORT");
        assert_eq!(env_prefix("auth"), "AUTH__");
    }
}
