//! What the sink reads out of a message: addresses, subject, bodies and parts, decoded by
//! `mail-parser` (multipart, quoted-printable, base64, RFC 2047 encoded words, charsets).
//!
//! A message that does not parse is still kept and served raw; its decoded fields are
//! empty. Nothing here fails on input: every accessor degrades to "absent".

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use mail_parser::{
    Address as ParsedAddress, HeaderName, HeaderValue, Message as Parsed, MessageParser,
    MessagePart, MimeHeaders, PartType,
};
use serde::Serialize;
use sha1::Digest as _;

/// Longest snippet, in characters (Mailpit's length), before `...` is appended.
const SNIPPET_CHARS: usize = 200;

/// A mailbox as Mailpit shows it: `{"Name": "...", "Address": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Address {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Address")]
    pub address: String,
}

impl Address {
    /// Case-insensitive substring match on `Name <address>`, as Mailpit's search does.
    pub(crate) fn contains(&self, needle_lower: &str) -> bool {
        self.name.to_lowercase().contains(needle_lower)
            || self.address.to_lowercase().contains(needle_lower)
    }
}

/// The fields a message list shows, computed once when a message arrives.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    pub message_id: String,
    pub from: Option<Address>,
    pub to: Vec<Address>,
    pub cc: Vec<Address>,
    /// The `Bcc` header, plus every envelope recipient named in no `To`/`Cc`/`Bcc` header.
    pub bcc: Vec<Address>,
    pub reply_to: Vec<Address>,
    pub subject: String,
    pub snippet: String,
    pub attachments: usize,
    pub inline: usize,
    /// Lower-cased subject, addresses, body text and file names, for free-text search.
    pub search_text: String,
}

/// One attachment or inline part, in Mailpit's shape.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PartInfo {
    #[serde(rename = "PartID")]
    pub part_id: String,
    #[serde(rename = "FileName")]
    pub file_name: String,
    #[serde(rename = "ContentType")]
    pub content_type: String,
    #[serde(rename = "ContentID")]
    pub content_id: String,
    #[serde(rename = "Size")]
    pub size: usize,
    #[serde(rename = "Checksums")]
    pub checksums: Checksums,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Checksums {
    #[serde(rename = "MD5")]
    pub md5: String,
    #[serde(rename = "SHA1")]
    pub sha1: String,
    #[serde(rename = "SHA256")]
    pub sha256: String,
}

/// `List-Unsubscribe` as Mailpit reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ListUnsubscribe {
    #[serde(rename = "Header")]
    pub header: String,
    #[serde(rename = "Links")]
    pub links: Vec<String>,
    #[serde(rename = "Errors")]
    pub errors: String,
    #[serde(rename = "HeaderPost")]
    pub header_post: String,
}

/// Everything the full message view needs beyond the [`Summary`].
#[derive(Debug, Clone, Default)]
pub(crate) struct Details {
    pub text: String,
    pub html: String,
    /// The `Date` header as RFC 3339, if present and valid.
    pub date: Option<String>,
    pub return_path: Option<String>,
    pub list_unsubscribe: ListUnsubscribe,
    pub inline: Vec<PartInfo>,
    pub attachments: Vec<PartInfo>,
}

/// The decoded content of one part, for download.
pub(crate) struct PartContent {
    pub content_type: String,
    pub file_name: String,
    pub bytes: Vec<u8>,
}

fn parse(data: &[u8]) -> Option<Parsed<'_>> {
    MessageParser::new().parse(data)
}

fn addresses(value: Option<&ParsedAddress<'_>>) -> Vec<Address> {
    value
        .map(|list| {
            list.iter()
                .map(|addr| Address {
                    name: addr.name().unwrap_or_default().to_string(),
                    address: addr.address().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The decoded `Subject`, if the message parses and has one.
pub(crate) fn subject(data: &[u8]) -> Option<String> {
    parse(data)?.subject().map(str::to_string)
}

/// The text body: the first `text/plain` part, else the HTML body turned into text.
pub(crate) fn text_body(data: &[u8]) -> Option<String> {
    let parsed = parse(data)?;
    text_of(&parsed)
}

/// The first `text/html` part.
pub(crate) fn html_body(data: &[u8]) -> Option<String> {
    let parsed = parse(data)?;
    html_of(&parsed)
}

fn text_of(parsed: &Parsed<'_>) -> Option<String> {
    parsed.body_text(0).map(Cow::into_owned)
}

fn html_of(parsed: &Parsed<'_>) -> Option<String> {
    parsed.html_bodies().find_map(|part| match &part.body {
        PartType::Html(html) => Some(html.to_string()),
        _ => None,
    })
}

/// Parts with their ids in the message's part list.
type Parts<'a> = Vec<(u32, &'a MessagePart<'a>)>;

/// Parts that are neither the text nor the HTML body, split like Mailpit: a part with a
/// `Content-ID` that is not explicitly an attachment is inline (an embedded image).
fn non_body_parts<'a>(parsed: &'a Parsed<'a>) -> (Parts<'a>, Parts<'a>) {
    let mut inline = Vec::new();
    let mut attachments = Vec::new();
    for &id in &parsed.attachments {
        let Some(part) = parsed.part(id) else {
            continue;
        };
        let explicit_attachment = part
            .content_disposition()
            .is_some_and(|disposition| disposition.is_attachment());
        if part.content_id().is_some() && !explicit_attachment {
            inline.push((id, part));
        } else {
            attachments.push((id, part));
        }
    }
    (inline, attachments)
}

fn content_type_of(part: &MessagePart<'_>) -> String {
    match part.content_type() {
        Some(content_type) => match content_type.subtype() {
            Some(subtype) => format!("{}/{}", content_type.ctype(), subtype).to_lowercase(),
            None => content_type.ctype().to_lowercase(),
        },
        None if matches!(part.body, PartType::Message(_)) => "message/rfc822".to_string(),
        None => "application/octet-stream".to_string(),
    }
}

fn file_name_of(part: &MessagePart<'_>) -> String {
    part.attachment_name().unwrap_or_default().to_string()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn part_info(id: u32, part: &MessagePart<'_>) -> PartInfo {
    let contents = part.contents();
    PartInfo {
        part_id: id.to_string(),
        file_name: file_name_of(part),
        content_type: content_type_of(part),
        content_id: part.content_id().unwrap_or_default().to_string(),
        size: contents.len(),
        checksums: Checksums {
            md5: hex(&md5::Md5::digest(contents)),
            sha1: hex(&sha1::Sha1::digest(contents)),
            sha256: hex(&sha2::Sha256::digest(contents)),
        },
    }
}

/// `text` with runs of whitespace collapsed, cut at [`SNIPPET_CHARS`] characters.
fn snippet(text: &str) -> String {
    let mut out = String::new();
    let mut chars = 0;
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
            chars += 1;
        }
        for c in word.chars() {
            if chars == SNIPPET_CHARS {
                out.push_str("...");
                return out;
            }
            out.push(c);
            chars += 1;
        }
    }
    out
}

/// Read the list fields of a message. `recipients` are the envelope's `RCPT TO` paths.
pub(crate) fn summarize(data: &[u8], recipients: &[String]) -> Summary {
    let Some(parsed) = parse(data) else {
        return Summary {
            bcc: recipients
                .iter()
                .map(|address| Address {
                    name: String::new(),
                    address: address.clone(),
                })
                .collect(),
            ..Summary::default()
        };
    };
    let to = addresses(parsed.to());
    let cc = addresses(parsed.cc());
    let mut bcc = addresses(parsed.bcc());
    for recipient in recipients {
        let named = to
            .iter()
            .chain(&cc)
            .chain(&bcc)
            .any(|address| address.address.eq_ignore_ascii_case(recipient));
        if !named {
            bcc.push(Address {
                name: String::new(),
                address: recipient.clone(),
            });
        }
    }
    let from = addresses(parsed.from()).into_iter().next();
    let reply_to = addresses(parsed.reply_to());
    let subject = parsed.subject().unwrap_or_default().to_string();
    let text = text_of(&parsed).unwrap_or_default();
    let (inline, attachments) = non_body_parts(&parsed);

    let mut search_text = String::with_capacity(subject.len() + text.len() + 256);
    search_text.push_str(&subject);
    for address in from
        .iter()
        .chain(&to)
        .chain(&cc)
        .chain(&bcc)
        .chain(&reply_to)
    {
        let _ = write!(search_text, "\n{} <{}>", address.name, address.address);
    }
    for (_, part) in inline.iter().chain(&attachments) {
        search_text.push('\n');
        search_text.push_str(&file_name_of(part));
    }
    search_text.push('\n');
    search_text.push_str(&text);

    Summary {
        message_id: parsed.message_id().unwrap_or_default().to_string(),
        from,
        to,
        cc,
        bcc,
        reply_to,
        snippet: snippet(&text),
        subject,
        attachments: attachments.len(),
        inline: inline.len(),
        search_text: search_text.to_lowercase(),
    }
}

/// Read the full view of a message.
pub(crate) fn details(data: &[u8]) -> Details {
    let Some(parsed) = parse(data) else {
        return Details::default();
    };
    let (inline, attachments) = non_body_parts(&parsed);
    let header_text =
        |name: HeaderName<'static>| parsed.header_raw(name).map(unfold).unwrap_or_default();
    let list_header = header_text(HeaderName::ListUnsubscribe);
    let links = list_header
        .split(',')
        .filter_map(|item| {
            let item = item.trim();
            item.strip_prefix('<')?
                .strip_suffix('>')
                .map(str::to_string)
        })
        .collect();
    Details {
        text: text_of(&parsed).unwrap_or_default(),
        html: html_of(&parsed).unwrap_or_default(),
        date: parsed.date().map(|date| date.to_rfc3339()),
        return_path: match parsed.return_path() {
            HeaderValue::Text(path) => Some(path.trim_matches(['<', '>']).to_string()),
            HeaderValue::TextList(paths) => paths
                .first()
                .map(|path| path.trim_matches(['<', '>']).to_string()),
            _ => None,
        },
        list_unsubscribe: ListUnsubscribe {
            header: list_header,
            links,
            errors: String::new(),
            header_post: header_text(HeaderName::Other("List-Unsubscribe-Post".into())),
        },
        inline: inline
            .iter()
            .map(|&(id, part)| part_info(id, part))
            .collect(),
        attachments: attachments
            .iter()
            .map(|&(id, part)| part_info(id, part))
            .collect(),
    }
}

/// The decoded content of the attachment or inline part `part_id`.
pub(crate) fn part(data: &[u8], part_id: &str) -> Option<PartContent> {
    let id: u32 = part_id.parse().ok()?;
    let parsed = parse(data)?;
    if !parsed.attachments.contains(&id) {
        return None;
    }
    let part = parsed.part(id)?;
    Some(PartContent {
        content_type: content_type_of(part),
        file_name: file_name_of(part),
        bytes: part.contents().to_vec(),
    })
}

/// Content-IDs of the inline parts with their part ids, to link `cid:` references.
pub(crate) fn content_ids(data: &[u8]) -> Vec<(String, String)> {
    let Some(parsed) = parse(data) else {
        return Vec::new();
    };
    parsed
        .attachments
        .iter()
        .filter_map(|&id| {
            let part = parsed.part(id)?;
            Some((part.content_id()?.to_string(), id.to_string()))
        })
        .collect()
}

/// A folded header value on one line: every line trimmed, joined by single spaces.
fn unfold(raw: &str) -> String {
    raw.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `content-TYPE` -> `Content-Type`, as Go's `textproto` (and so Mailpit) spells names.
fn canonical_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.extend(c.to_uppercase());
        } else {
            out.extend(c.to_lowercase());
        }
        upper = c == '-';
    }
    out
}

/// Every top-level header, raw (not decoded) but unfolded, under its canonical name.
pub(crate) fn headers(data: &[u8]) -> BTreeMap<String, Vec<String>> {
    let text = String::from_utf8_lossy(data);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut flush = |current: &mut Option<(String, String)>| {
        if let Some((name, value)) = current.take() {
            headers.entry(name).or_default().push(unfold(&value));
        }
    };
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.as_mut() {
                value.push('\n');
                value.push_str(line);
            }
            continue;
        }
        flush(&mut current);
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if !name.is_empty() && !name.contains(' ') {
                current = Some((canonical_name(name), value.to_string()));
            }
        }
    }
    flush(&mut current);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_collapse_whitespace_and_stop_at_the_limit() {
        assert_eq!(snippet("  Hello\r\n\r\n  world\t!  "), "Hello world !");
        let long = "é".repeat(300);
        let cut = snippet(&long);
        assert_eq!(cut.chars().count(), SNIPPET_CHARS + 3);
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn header_names_are_canonical_and_values_unfolded() {
        let headers = headers(
            b"message-ID: <a@b>\r\nX-Long: one\r\n\ttwo\r\nTo: a@b\r\nto: c@d\r\n\r\nX-Body: no\r\n",
        );
        assert_eq!(headers["Message-Id"], vec!["<a@b>"]);
        assert_eq!(headers["X-Long"], vec!["one two"]);
        assert_eq!(headers["To"], vec!["a@b", "c@d"]);
        assert!(!headers.contains_key("X-Body"));
    }

    #[test]
    fn envelope_recipients_missing_from_headers_become_bcc() {
        let summary = summarize(
            b"From: A <a@example.com>\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nbody\r\n",
            &[
                "B@example.com".to_string(),
                "hidden@example.com".to_string(),
            ],
        );
        assert_eq!(summary.to.len(), 1);
        assert_eq!(
            summary.bcc,
            vec![Address {
                name: String::new(),
                address: "hidden@example.com".to_string()
            }]
        );
        assert_eq!(summary.from.map(|from| from.name), Some("A".to_string()));
    }

    #[test]
    fn unparseable_input_gives_empty_fields() {
        let summary = summarize(b"", &["x@y".to_string()]);
        assert_eq!(summary.subject, "");
        assert_eq!(summary.bcc.len(), 1);
        assert!(details(b"").html.is_empty());
        assert!(part(b"", "1").is_none());
        assert!(part(b"Subject: x\r\n\r\nbody", "not-a-number").is_none());
    }
}
