//! Validated mail types and rules, no I/O. Handlers, the event consumer and the populator parse
//! input into these at the edge; nothing deeper checks again.

mod address;
pub mod template;

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use address::EmailAddress;
pub use template::{Compiled, LocaleContent, RenderError, Rendered, TemplateContent};

/// What kind of mail a message is: transactional mail (a receipt, a password reset) is always
/// sent; notifications carry a one-click unsubscribe and honour it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Transactional,
    Notification,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transactional => "transactional",
            Category::Notification => "notification",
        }
    }

    pub fn parse(text: &str) -> Option<Category> {
        match text {
            "transactional" => Some(Category::Transactional),
            "notification" => Some(Category::Notification),
            _ => None,
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a message is. `queued`, `sending` and `deferred` are on the way; `sent`, `failed`,
/// `suppressed` and `canceled` are terminal: each message ends in exactly one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting to be sent (at `send_at`, when given).
    Queued,
    /// A worker is sending it.
    Sending,
    /// An attempt failed for a reason that may pass (4xx, timeout, connection); due again later.
    Deferred,
    Sent,
    /// Refused for good (5xx), or still not sent when the retry period ended.
    Failed,
    /// Not sent: the address is on the suppression list.
    Suppressed,
    /// Canceled before it was sent.
    Canceled,
}

impl Status {
    pub const ALL: [Status; 7] = [
        Status::Queued,
        Status::Sending,
        Status::Deferred,
        Status::Sent,
        Status::Failed,
        Status::Suppressed,
        Status::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Sending => "sending",
            Status::Deferred => "deferred",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Suppressed => "suppressed",
            Status::Canceled => "canceled",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Sent | Status::Failed | Status::Suppressed | Status::Canceled
        )
    }
}

/// Why an address is suppressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    /// The receiving server refused the mailbox for good (550, 551, 553).
    HardBounce,
    /// The recipient marked a mail as spam.
    Complaint,
    /// The recipient unsubscribed (from one category).
    Unsubscribe,
    /// An administrator added it.
    Manual,
}

impl SuppressionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "hard_bounce",
            SuppressionReason::Complaint => "complaint",
            SuppressionReason::Unsubscribe => "unsubscribe",
            SuppressionReason::Manual => "manual",
        }
    }

    pub fn parse(text: &str) -> Option<SuppressionReason> {
        [
            SuppressionReason::HardBounce,
            SuppressionReason::Complaint,
            SuppressionReason::Unsubscribe,
            SuppressionReason::Manual,
        ]
        .into_iter()
        .find(|r| r.as_str() == text)
    }
}

/// A language tag: `en`, `es`, `pt-BR` (language lower-case, region upper-case).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locale(String);

impl Locale {
    pub const PATTERN: &'static str = "^[a-zA-Z]{2,3}([-_][a-zA-Z]{2})?$";

    pub fn parse(input: &str) -> Result<Locale, String> {
        let invalid = || format!("{input:?} is not a language tag such as `en` or `pt-BR`");
        let (language, region) = match input.split_once(['-', '_']) {
            Some((language, region)) => (language, Some(region)),
            None => (input, None),
        };
        let letters = |s: &str, range: std::ops::RangeInclusive<usize>| {
            range.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphabetic())
        };
        if !letters(language, 2..=3) || region.is_some_and(|r| !letters(r, 2..=2)) {
            return Err(invalid());
        }
        let mut tag = language.to_ascii_lowercase();
        if let Some(region) = region {
            tag.push('-');
            tag.push_str(&region.to_ascii_uppercase());
        }
        Ok(Locale(tag))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The language alone (`es` for `es-MX`), when this tag has a region.
    pub fn language(&self) -> Option<Locale> {
        self.0
            .split_once('-')
            .map(|(language, _)| Locale(language.to_owned()))
    }
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A template's key: dot-separated lower-case words, `auth.verify_email`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TemplateKey(String);

impl TemplateKey {
    pub const MAX_LEN: usize = 100;
    pub const PATTERN: &'static str = "^[a-z][a-z0-9_-]*(\\.[a-z][a-z0-9_-]*)*$";

    pub fn parse(input: &str) -> Result<TemplateKey, String> {
        let segment_ok = |s: &str| {
            s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        };
        if input.len() > Self::MAX_LEN || !input.split('.').all(segment_ok) {
            return Err(format!(
                "must be dot-separated lower-case words (such as `auth.verify_email`), at most {} characters",
                Self::MAX_LEN
            ));
        }
        Ok(TemplateKey(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TemplateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a JSON value holds a NUL character anywhere (keys included): the database cannot
/// keep one in `jsonb`.
pub fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value)),
        _ => false,
    }
}

/// A tag on a message (for searching and reporting): 1 to 64 of `[A-Za-z0-9_.:-]`.
pub fn parse_tag(tag: &str) -> Result<String, String> {
    let ok = (1..=64).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(tag.to_owned())
    } else {
        Err(format!(
            "{tag:?}: 1 to 64 of letters, digits, `_`, `.`, `:`, `-`"
        ))
    }
}

pub const TAG_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,64}$";

/// A header a sender may add: `Reply-To` or an `X-` header, with a one-line value.
pub fn parse_header(name: &str, value: &str) -> Result<(String, String), String> {
    let name_ok = name.eq_ignore_ascii_case("reply-to")
        || (name.len() > 2
            && name.len() <= 76
            && name[..2].eq_ignore_ascii_case("x-")
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !name_ok {
        return Err(format!(
            "{name:?}: only `Reply-To` and `X-` headers (letters, digits and `-`) can be set"
        ));
    }
    if value.len() > 998 || value.contains(['\r', '\n', '\0']) || value.trim().is_empty() {
        return Err(format!(
            "{name}: the value must be one non-empty line of at most 998 bytes"
        ));
    }
    if name.eq_ignore_ascii_case("reply-to") {
        EmailAddress::parse_mailbox(value).map_err(|why| format!("Reply-To: {why}"))?;
    }
    Ok((name.to_owned(), value.trim().to_owned()))
}

pub const HEADER_NAME_PATTERN: &str = "^([Rr][Ee][Pp][Ll][Yy]-[Tt][Oo]|[Xx]-[A-Za-z0-9-]{1,74})$";

/// An attachment's file name: 1 to 255 characters, no path separators or control characters.
pub fn parse_filename(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > 255
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
        || name == "."
        || name == ".."
    {
        return Err(format!(
            "{name:?}: 1 to 255 characters without `/`, `\\` or control characters"
        ));
    }
    Ok(name.to_owned())
}

/// A MIME type such as `application/pdf`.
pub fn parse_content_type(text: &str) -> Result<String, String> {
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match text.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => Ok(text.to_ascii_lowercase()),
        _ => Err(format!(
            "{text:?} is not a MIME type such as `application/pdf`"
        )),
    }
}

pub const CONTENT_TYPE_PATTERN: &str = "^[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}$";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locales_are_normalised_and_fall_back_to_their_language() {
        assert_eq!(Locale::parse("es").unwrap().as_str(), "es");
        assert_eq!(Locale::parse("pt_br").unwrap().as_str(), "pt-BR");
        assert_eq!(
            Locale::parse("es-MX").unwrap().language(),
            Some(Locale::parse("es").unwrap())
        );
        for bad in ["", "e", "english", "es-", "es-MEX", "1s"] {
            assert!(Locale::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_keys_are_dotted_words() {
        for good in ["auth.verify_email", "welcome", "events.registration-offer2"] {
            assert!(TemplateKey::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "Auth.verify", "auth..x", ".x", "x.", "2fa", "a b"] {
            assert!(TemplateKey::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_reply_to_and_x_headers_with_one_line_values() {
        assert!(parse_header("X-Campaign", "spring").is_ok());
        assert!(parse_header("reply-to", "Desk <desk@example.com>").is_ok());
        assert!(parse_header("Reply-To", "not an address").is_err());
        assert!(parse_header("Subject", "hi").is_err());
        assert!(parse_header("X-Evil", "a\r\nBcc: x@y.z").is_err());
        assert!(parse_header("X-", "v").is_err());
    }

    #[test]
    fn filenames_and_content_types() {
        assert!(parse_filename("ticket.pdf").is_ok());
        assert!(parse_filename("../etc/passwd").is_err());
        assert_eq!(
            parse_content_type("Application/PDF").unwrap(),
            "application/pdf"
        );
        assert!(parse_content_type("pdf").is_err());
    }
}
