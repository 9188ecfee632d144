//! The SMTP relay: its connections (STARTTLS/TLS and credentials from `app.smtp.url`, a timeout
//! on connecting and on each message), a bound on connections in use, the per-relay send rate,
//! and the MIME message each attempt sends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use lettre::Message;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use tokio::sync::Semaphore;

use super::smtp::{SendError, SmtpClient, Target};

use crate::config::Config;
use crate::domain::{Category, Rendered};
use crate::unsubscribe::UnsubscribeKey;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The relay accepted the message; its reply.
    Accepted { reply: String },
    /// It may work later: a 4xx reply, a timeout, a connection that failed or dropped.
    Temporary { reply: Option<String>, why: String },
    /// It will not work: a 5xx reply (its code), or a message the client cannot send.
    Permanent {
        code: Option<u16>,
        reply: Option<String>,
        why: String,
    },
}

/// One mail to hand over.
pub struct Outgoing<'a> {
    pub to: Mailbox,
    pub message_id: &'a str,
    pub date: SystemTime,
    pub category: Category,
    pub rendered: &'a Rendered,
    /// Extra headers (`Reply-To`, `X-...`), already checked when the send was accepted.
    pub headers: &'a serde_json::Value,
    pub attachments: &'a [(String, String, Vec<u8>)],
}

pub struct Relay {
    client: SmtpClient,
    /// Sends in flight (each holds a connection), at most `app.smtp.max_connections`.
    slots: Semaphore,
    pace: Option<Pace>,
    from: Mailbox,
    public_url: String,
    unsubscribe: Arc<UnsubscribeKey>,
    #[cfg(feature = "dkim")]
    dkim: Option<lettre::message::dkim::DkimConfig>,
}

impl Relay {
    pub fn new(config: &Config, unsubscribe: Arc<UnsubscribeKey>) -> anyhow::Result<Relay> {
        let smtp = &config.smtp;
        let url = &smtp.url.0;
        let target = Target::parse(url.expose())
            .map_err(|why| anyhow::anyhow!("app.smtp.url {}: {why}", url.redacted()))?;
        let client = SmtpClient::new(
            target,
            &smtp.hello_name,
            smtp.timeout,
            smtp.idle_timeout,
            smtp.max_connections,
        )?;
        Ok(Relay {
            client,
            slots: Semaphore::new(smtp.max_connections),
            pace: (smtp.max_per_second > 0).then(|| Pace::new(smtp.max_per_second)),
            from: config.from.mailbox(),
            public_url: config.public_url.as_str().to_owned(),
            unsubscribe,
            #[cfg(feature = "dkim")]
            dkim: dkim_config(config)?,
        })
    }

    /// Builds the message and hands it to the relay, waiting for a free connection and for the
    /// send rate.
    pub async fn send(&self, mail: &Outgoing<'_>) -> Attempt {
        let message = match self.build(mail) {
            Ok(message) => message,
            Err(why) => {
                return Attempt::Permanent {
                    code: None,
                    reply: None,
                    why: format!("the message cannot be built: {why}"),
                };
            }
        };
        let Ok(_slot) = self.slots.acquire().await else {
            return Attempt::Temporary {
                reply: None,
                why: "the relay is shutting down".into(),
            };
        };
        if let Some(pace) = &self.pace {
            pace.wait().await;
        }
        let started = std::time::Instant::now();
        let result = self.client.send(&message).await;
        metrics::histogram!("mail_smtp_send_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(response) => Attempt::Accepted {
                reply: format!(
                    "{} {}",
                    response.code(),
                    response.message().collect::<Vec<_>>().join(" ")
                )
                .trim()
                .to_owned(),
            },
            Err(SendError::Smtp(err)) => classify(&err),
            Err(SendError::Connect(why)) => Attempt::Temporary { reply: None, why },
            Err(SendError::Timeout) => Attempt::Temporary {
                reply: None,
                why: "the relay did not answer in time".into(),
            },
        }
    }

    fn build(&self, mail: &Outgoing<'_>) -> Result<Message, String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(mail.to.clone())
            .subject(mail.rendered.subject.clone())
            .message_id(Some(mail.message_id.to_owned()))
            .date(mail.date);
        if let Some(headers) = mail.headers.as_object() {
            for (name, value) in headers {
                let Some(value) = value.as_str() else {
                    continue;
                };
                if name.eq_ignore_ascii_case("reply-to") {
                    let mailbox = crate::domain::EmailAddress::parse_mailbox(value)?;
                    builder = builder.reply_to(mailbox);
                } else {
                    let name = HeaderName::new_from_ascii(name.clone())
                        .map_err(|_| format!("{name:?} is not a header name"))?;
                    builder = builder.raw_header(HeaderValue::new(name, value.to_owned()));
                }
            }
        }
        if mail.category == Category::Notification {
            let link =
                self.unsubscribe
                    .link(&self.public_url, mail.to.email.as_ref(), mail.category);
            builder = builder
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe"),
                    format!("<{link}>"),
                ))
                .raw_header(HeaderValue::new(
                    HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let rendered = mail.rendered;
        let body = match &rendered.html {
            Some(html) => Body::Multi(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                html.clone(),
            )),
            None => Body::Single(SinglePart::plain(rendered.text.clone())),
        };
        let result = if mail.attachments.is_empty() {
            match body {
                Body::Multi(part) => builder.multipart(part),
                Body::Single(part) => builder.singlepart(part),
            }
        } else {
            let mut mixed = match body {
                Body::Multi(part) => MultiPart::mixed().multipart(part),
                Body::Single(part) => MultiPart::mixed().singlepart(part),
            };
            for (filename, content_type, content) in mail.attachments {
                let content_type = ContentType::parse(content_type)
                    .map_err(|_| format!("{content_type:?} is not a content type"))?;
                mixed = mixed.singlepart(
                    Attachment::new(filename.clone()).body(content.clone(), content_type),
                );
            }
            builder.multipart(mixed)
        };
        #[allow(unused_mut)]
        let mut message = result.map_err(|err| err.to_string())?;
        #[cfg(feature = "dkim")]
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        Ok(message)
    }

    /// The `smtp` readiness check: a pooled connection answers `NOOP`.
    pub fn check(self: &Arc<Self>) -> SmtpCheck {
        SmtpCheck(self.clone())
    }
}

enum Body {
    Multi(MultiPart),
    Single(SinglePart),
}

/// `451 4.7.1 Try later`: the reply of a refusal, as the relay gave it.
fn reply_text(err: &lettre::transport::smtp::Error) -> Option<String> {
    let code = err.status()?;
    let text = std::error::Error::source(err)
        .map(|source| source.to_string())
        .unwrap_or_default();
    Some(format!("{code} {text}").trim().to_owned())
}

fn classify(err: &lettre::transport::smtp::Error) -> Attempt {
    if err.is_permanent() {
        Attempt::Permanent {
            code: err.status().map(u16::from),
            reply: reply_text(err),
            why: "refused by the relay".into(),
        }
    } else if err.is_transient() {
        Attempt::Temporary {
            reply: reply_text(err),
            why: "deferred by the relay".into(),
        }
    } else if err.is_client() {
        Attempt::Permanent {
            code: None,
            reply: None,
            why: err.to_string(),
        }
    } else if err.is_timeout() {
        Attempt::Temporary {
            reply: None,
            why: "the relay did not answer in time".into(),
        }
    } else {
        // Connection refused or dropped, TLS, an unreadable reply: the relay may be back soon.
        Attempt::Temporary {
            reply: None,
            why: err.to_string(),
        }
    }
}

/// Spaces sends evenly at `per_second`, across every worker of the process.
struct Pace {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

impl Pace {
    fn new(per_second: u32) -> Pace {
        Pace {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// Readiness of the relay: degraded while it cannot be reached (messages wait meanwhile).
pub struct SmtpCheck(Arc<Relay>);

impl kit::health::Check for SmtpCheck {
    fn name(&self) -> &str {
        "smtp"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.0.client.check().await })
    }
}

#[cfg(feature = "dkim")]
fn dkim_config(config: &Config) -> anyhow::Result<Option<lettre::message::dkim::DkimConfig>> {
    use lettre::message::dkim::{
        DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm,
        DkimSigningKey,
    };
    let Some(dkim) = &config.dkim else {
        return Ok(None);
    };
    let algorithm = match dkim.algorithm {
        crate::config::DkimAlgorithm::Rsa => DkimSigningAlgorithm::Rsa,
        crate::config::DkimAlgorithm::Ed25519 => DkimSigningAlgorithm::Ed25519,
    };
    let key = DkimSigningKey::new(dkim.private_key.expose(), algorithm)
        .map_err(|err| anyhow::anyhow!("app.dkim.private_key: {err}"))?;
    // The one-click unsubscribe headers must be signed for mailbox providers to honour them.
    let headers = [
        "From",
        "To",
        "Subject",
        "Date",
        "Message-ID",
        "Reply-To",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ]
    .into_iter()
    .map(HeaderName::new_from_ascii_str)
    .collect();
    Ok(Some(DkimConfig::new(
        dkim.selector.clone(),
        dkim.domain.clone(),
        key,
        headers,
        DkimCanonicalization {
            header: DkimCanonicalizationType::Relaxed,
            body: DkimCanonicalizationType::Relaxed,
        },
    )))
}

/// Whether this build signs with DKIM (the `dkim` feature).
pub const DKIM_SUPPORTED: bool = cfg!(feature = "dkim");

#[cfg(all(test, feature = "dkim"))]
mod tests {
    use super::*;
    use crate::config::{DkimAlgorithm, DkimSettings};
    use crate::domain::Locale;

    #[test]
    fn mail_is_signed_with_the_configured_key_unsubscribe_headers_included() {
        use base64::Engine;
        let config = Config {
            dkim: Some(DkimSettings {
                domain: "hatchery.test".into(),
                selector: "mail2026".into(),
                algorithm: DkimAlgorithm::Ed25519,
                private_key: kit::Secret::new(
                    base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
                ),
            }),
            ..Config::default()
        };
        let relay = Relay::new(
            &config,
            Arc::new(UnsubscribeKey::new("a test secret, long enough")),
        )
        .unwrap();
        let rendered = Rendered {
            locale: Locale::parse("en").unwrap(),
            subject: "Hello".into(),
            text: "Hello\n".into(),
            html: None,
        };
        let mail = Outgoing {
            to: "ada@example.test".parse().unwrap(),
            message_id: "<1@hatchery.test>",
            date: SystemTime::now(),
            category: Category::Notification,
            rendered: &rendered,
            headers: &serde_json::json!({}),
            attachments: &[],
        };
        let signed = String::from_utf8(relay.build(&mail).unwrap().formatted()).unwrap();
        let signature = signed
            .lines()
            .skip_while(|l| !l.starts_with("DKIM-Signature:"))
            .take_while(|l| l.starts_with("DKIM-Signature:") || l.starts_with([' ', '\t']))
            .collect::<String>();
        assert!(
            signature.contains("d=hatchery.test") && signature.contains("s=mail2026"),
            "{signed}"
        );
        assert!(signature.contains("a=ed25519-sha256"), "{signature}");
        assert!(
            signature.to_lowercase().contains("list-unsubscribe-post"),
            "{signature}"
        );
    }
}
