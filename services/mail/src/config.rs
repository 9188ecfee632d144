//! The service's own settings: the `[app]` section of its config file, or `MAIL__APP__<KEY>`
//! in the environment (nested keys with `__`, e.g. `MAIL__APP__SMTP__URL`). Values that cannot
//! be right (an SMTP URL of another scheme, a sender that is not an address) stop the start with
//! exit code 2, naming the key.

use std::time::Duration;

use kit::{Secret, SecretUrl};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub smtp: SmtpSettings,
    /// The sender of every mail, `Name <address>`.
    pub from: Sender,
    /// The domain of generated Message-IDs (`<uuid@domain>`); the sender's domain when unset.
    pub message_id_domain: Option<String>,
    /// Where this service is reached from the outside: the base of unsubscribe links.
    pub public_url: PublicUrl,
    /// Signs unsubscribe links (HMAC-SHA256). Must be set in production.
    pub unsubscribe_secret: Secret,
    pub delivery: DeliverySettings,
    /// Most recipients in one `POST /messages`.
    pub max_recipients: usize,
    /// Largest total size of one send's attachments, decoded, in bytes. The request body (base64,
    /// a third larger) must also fit `http.body_limit`.
    pub max_attachment_bytes: usize,
    /// A permanent refusal of the mailbox itself (550, 551, 553) suppresses the address.
    pub suppress_hard_bounces: bool,
    /// DKIM signing of every mail (needs the `dkim` build feature).
    pub dkim: Option<DkimSettings>,
}

/// The development value of `unsubscribe_secret`; refused in production.
pub const DEVELOPMENT_UNSUBSCRIBE_SECRET: &str = "hatchery-development-unsubscribe-secret";

impl Default for Config {
    fn default() -> Self {
        Self {
            smtp: SmtpSettings::default(),
            from: Sender("Hatchery <no-reply@hatchery.test>".into()),
            message_id_domain: None,
            public_url: PublicUrl("http://127.0.0.1:8002".into()),
            unsubscribe_secret: Secret::new(DEVELOPMENT_UNSUBSCRIBE_SECRET),
            delivery: DeliverySettings::default(),
            max_recipients: 1_000,
            max_attachment_bytes: 512 * 1024,
            suppress_hard_bounces: true,
            dkim: None,
        }
    }
}

/// The SMTP relay mail is handed to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// `smtp://[user:password@]host[:port]` (plain; add `?tls=required` for STARTTLS or
    /// `?tls=opportunistic`), or `smtps://...` (TLS from the start). Credentials are sent with
    /// AUTH; the password never appears in logs.
    pub url: SmtpUrl,
    /// The name this client gives in `EHLO`.
    pub hello_name: String,
    /// Longest wait for connecting (TLS and AUTH included), and for one message's exchange.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections in use at the same time, at most (the sends in flight), and kept open.
    pub max_connections: usize,
    /// Idle connections are closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Messages handed to the relay per second, at most, by this instance (0 = no limit), so a
    /// burst never gets us throttled or blocked by the relay.
    pub max_per_second: u32,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            url: SmtpUrl(SecretUrl::new("smtp://127.0.0.1:1025")),
            hello_name: "localhost".into(),
            timeout: Duration::from_secs(20),
            max_connections: 8,
            idle_timeout: Duration::from_secs(60),
            max_per_second: 200,
        }
    }
}

/// How messages are claimed and retried.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Workers claiming due messages, each a batch at a time.
    pub workers: usize,
    /// Messages one worker claims at once.
    pub batch: u32,
    /// Workers look for due messages at least this often (besides being woken when messages
    /// are queued).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// A claimed message not finished within this (the process died) is taken again. Longer
    /// than a send can take: the SMTP timeout covers each command.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Wait before the second attempt after a temporary failure; doubles for each further one
    /// (with jitter), up to `retry_max_delay`.
    #[serde(with = "humantime_serde")]
    pub retry_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// A message still not sent this long after it was due has failed.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            workers: 4,
            batch: 50,
            poll: Duration::from_secs(1),
            lease: Duration::from_secs(300),
            retry_delay: Duration::from_secs(30),
            retry_max_delay: Duration::from_secs(3600),
            max_age: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

/// DKIM signing (RFC 6376) with a key published at `<selector>._domainkey.<domain>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    pub domain: String,
    pub selector: String,
    /// `rsa` (PKCS#1 PEM) or `ed25519` (base64 of the 32-byte seed).
    pub algorithm: DkimAlgorithm,
    pub private_key: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DkimAlgorithm {
    Rsa,
    Ed25519,
}

/// An SMTP URL (`smtp://` or `smtps://`), checked when the settings load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SmtpUrl(pub SecretUrl);

impl TryFrom<String> for SmtpUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let url = SecretUrl::new(text);
        let scheme_ok = ["smtp://", "smtps://"]
            .iter()
            .any(|scheme| url.expose().starts_with(scheme));
        if !scheme_ok {
            return Err(format!(
                "{} is not an smtp:// or smtps:// URL",
                url.redacted()
            ));
        }
        crate::delivery::smtp::Target::parse(url.expose())
            .map_err(|why| format!("{}: {why}", url.redacted()))?;
        Ok(SmtpUrl(url))
    }
}

impl From<SmtpUrl> for String {
    fn from(url: SmtpUrl) -> String {
        url.0.expose().to_owned()
    }
}

/// The sender mailbox, checked when the settings load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sender(String);

impl Sender {
    pub fn mailbox(&self) -> lettre::message::Mailbox {
        // Checked in `try_from`; the fallback is never reached.
        crate::domain::EmailAddress::parse_mailbox(&self.0).unwrap_or_else(|_| {
            lettre::message::Mailbox::new(
                None,
                lettre::Address::new_dangerous("no-reply", "localhost"),
            )
        })
    }
}

impl TryFrom<String> for Sender {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        crate::domain::EmailAddress::parse_mailbox(&text)?;
        Ok(Sender(text))
    }
}

impl From<Sender> for String {
    fn from(sender: Sender) -> String {
        sender.0
    }
}

/// An `http(s)://` base URL without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let ok = text.parse::<axum::http::Uri>().is_ok_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if !ok {
            return Err(format!("{text:?} is not an http(s) URL"));
        }
        Ok(PublicUrl(text.trim_end_matches('/').to_owned()))
    }
}

impl From<PublicUrl> for String {
    fn from(url: PublicUrl) -> String {
        url.0
    }
}

impl Config {
    /// What serde cannot check: relations between settings. Errors name the key.
    pub fn validate(&self, production: bool) -> Result<(), (String, String)> {
        let fail = |key: &str, why: &str| Err((format!("app.{key}"), why.to_owned()));
        if self.smtp.max_connections == 0 {
            return fail("smtp.max_connections", "must be at least 1");
        }
        if self.smtp.timeout.is_zero() {
            return fail("smtp.timeout", "must be greater than zero");
        }
        if self.delivery.workers == 0 || self.delivery.workers > 64 {
            return fail("delivery.workers", "must be between 1 and 64");
        }
        if !(1..=1000).contains(&self.delivery.batch) {
            return fail("delivery.batch", "must be between 1 and 1000");
        }
        if self.delivery.poll.is_zero() {
            return fail("delivery.poll", "must be greater than zero");
        }
        if self.delivery.lease <= self.smtp.timeout * 2 {
            return fail(
                "delivery.lease",
                "must be longer than twice app.smtp.timeout (a send must end before its lease)",
            );
        }
        if self.smtp.max_per_second > 0 {
            // A claimed batch waits its turn at the send rate within its lease.
            let claimed = self.delivery.workers as u64 * u64::from(self.delivery.batch);
            let paced =
                Duration::from_secs_f64(claimed as f64 / f64::from(self.smtp.max_per_second));
            if paced * 2 >= self.delivery.lease {
                return fail(
                    "delivery.lease",
                    "must be longer than twice the time the claimed messages (workers × batch) take at app.smtp.max_per_second",
                );
            }
        }
        if self.delivery.retry_delay.is_zero()
            || self.delivery.retry_max_delay < self.delivery.retry_delay
        {
            return fail(
                "delivery.retry_max_delay",
                "retry_delay must be greater than zero and retry_max_delay at least retry_delay",
            );
        }
        if self.max_recipients == 0 {
            return fail("max_recipients", "must be at least 1");
        }
        if self.hello_name_invalid() {
            return fail("smtp.hello_name", "must be a host name");
        }
        if let Some(domain) = &self.message_id_domain
            && (domain.is_empty()
                || !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        {
            return fail("message_id_domain", "must be a domain name");
        }
        if self.unsubscribe_secret.expose().len() < 16 {
            return fail("unsubscribe_secret", "must be at least 16 characters");
        }
        if production && self.unsubscribe_secret.expose() == DEVELOPMENT_UNSUBSCRIBE_SECRET {
            return fail(
                "unsubscribe_secret",
                "must be set in production (MAIL__APP__UNSUBSCRIBE_SECRET)",
            );
        }
        Ok(())
    }

    fn hello_name_invalid(&self) -> bool {
        let name = &self.smtp.hello_name;
        name.is_empty()
            || name.len() > 253
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    }

    /// The domain of Message-IDs.
    pub fn message_id_domain(&self) -> String {
        self.message_id_domain
            .clone()
            .unwrap_or_else(|| self.from.mailbox().email.domain().to_owned())
    }
}
