//! Mailpit's v1 message API, with Mailpit's paths, field names and shapes, so Mailpit
//! clients and habits work unchanged. One addition: every message carries `Envelope`
//! (`{"From": "...", "To": ["..."]}`, the `MAIL FROM` and accepted `RCPT TO` paths), which
//! is what per-recipient chaos tests need to see.
//!
//! `{ID}` is the message's sequence number as text, or `latest`.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State as Extract};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use super::{Problem, State};
use crate::mime::{self, Address, ListUnsubscribe, PartInfo};
use crate::search::Query as Search;
use crate::store::Entry;
use crate::time::rfc3339;

/// Page size when `limit` is not given (Mailpit's).
const DEFAULT_LIMIT: usize = 50;

pub(super) fn router() -> Router<State> {
    Router::new()
        .route(
            "/api/v1/messages",
            get(list).delete(delete_messages).put(set_read),
        )
        .route("/api/v1/search", get(search).delete(delete_search))
        .route("/api/v1/message/{id}", get(message))
        .route("/api/v1/message/{id}/raw", get(raw))
        .route("/api/v1/message/{id}/headers", get(headers))
        .route("/api/v1/message/{id}/part/{part}", get(part))
        .route("/view/{file}", get(view))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
}

#[derive(Serialize)]
struct Envelope<'a> {
    #[serde(rename = "From")]
    from: &'a str,
    #[serde(rename = "To")]
    to: &'a [String],
}

/// Mailpit's `MessageSummary`.
#[derive(Serialize)]
struct Summary<'a> {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "MessageID")]
    message_id: &'a str,
    #[serde(rename = "Read")]
    read: bool,
    #[serde(rename = "From")]
    from: Option<&'a Address>,
    #[serde(rename = "To")]
    to: &'a [Address],
    #[serde(rename = "Cc")]
    cc: &'a [Address],
    #[serde(rename = "Bcc")]
    bcc: &'a [Address],
    #[serde(rename = "ReplyTo")]
    reply_to: &'a [Address],
    #[serde(rename = "Subject")]
    subject: &'a str,
    #[serde(rename = "Created")]
    created: String,
    #[serde(rename = "Username")]
    username: &'static str,
    #[serde(rename = "Tags")]
    tags: [&'static str; 0],
    #[serde(rename = "Size")]
    size: usize,
    #[serde(rename = "Attachments")]
    attachments: usize,
    #[serde(rename = "Snippet")]
    snippet: &'a str,
    #[serde(rename = "Envelope")]
    envelope: Envelope<'a>,
}

impl<'a> Summary<'a> {
    fn of(entry: &'a Entry) -> Self {
        let summary = &entry.summary;
        Summary {
            id: entry.api_id(),
            message_id: &summary.message_id,
            read: entry.is_read(),
            from: summary.from.as_ref(),
            to: &summary.to,
            cc: &summary.cc,
            bcc: &summary.bcc,
            reply_to: &summary.reply_to,
            subject: &summary.subject,
            created: rfc3339(entry.received),
            username: "",
            tags: [],
            size: entry.message.data.len(),
            attachments: summary.attachments,
            snippet: &summary.snippet,
            envelope: Envelope {
                from: &entry.message.from,
                to: &entry.message.recipients,
            },
        }
    }
}

/// Mailpit's `MessagesSummary`: one page of a (filtered) list, newest first.
#[derive(Serialize)]
struct Page<'a> {
    /// Messages in the mailbox.
    total: usize,
    /// Unread messages in the mailbox.
    unread: usize,
    /// Messages on this page (Mailpit keeps it for old clients).
    count: usize,
    /// Messages matching the query.
    messages_count: usize,
    /// Unread messages matching the query.
    messages_unread: usize,
    start: usize,
    tags: [&'static str; 0],
    messages: Vec<Summary<'a>>,
}

#[derive(Deserialize)]
struct PageParams {
    start: Option<String>,
    limit: Option<String>,
    query: Option<String>,
}

fn number(name: &str, value: Option<&str>, default: usize) -> Result<usize, Problem> {
    match value.map(str::trim) {
        None | Some("") => Ok(default),
        Some(text) => text.parse().map_err(|_| {
            Problem::bad_request(format!(
                "`{name}` must be a non-negative whole number, got {text:?}"
            ))
        }),
    }
}

fn params(query: Result<Query<PageParams>, QueryRejection>) -> Result<PageParams, Problem> {
    query
        .map(|Query(params)| params)
        .map_err(|rejection| Problem::bad_request(rejection.body_text()))
}

/// The non-empty `query` parameter, parsed.
fn search_query(params: &PageParams) -> Result<Search, Problem> {
    match params.query.as_deref().map(str::trim) {
        Some(query) if !query.is_empty() => Ok(Search::parse(query)),
        _ => Err(Problem::bad_request("no search query: pass `query`")),
    }
}

fn page(state: &State, params: &PageParams, filter: Option<&Search>) -> Result<Response, Problem> {
    let start = number("start", params.start.as_deref(), 0)?;
    let limit = number("limit", params.limit.as_deref(), DEFAULT_LIMIT)?;
    let entries = state.mailbox.entries_oldest_first();
    let total = entries.len();
    let unread = entries.iter().filter(|entry| !entry.is_read()).count();
    let matching: Vec<&Entry> = entries
        .iter()
        .rev()
        .map(AsRef::as_ref)
        .filter(|entry| filter.is_none_or(|query| query.matches(entry)))
        .collect();
    let messages: Vec<Summary<'_>> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|entry| Summary::of(entry))
        .collect();
    let body = Page {
        total,
        unread,
        count: messages.len(),
        messages_count: matching.len(),
        messages_unread: matching.iter().filter(|entry| !entry.is_read()).count(),
        start,
        tags: [],
        messages,
    };
    Ok(axum::Json(body).into_response())
}

async fn list(
    Extract(state): Extract<State>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, Problem> {
    page(&state, &params(query)?, None)
}

async fn search(
    Extract(state): Extract<State>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let params = params(query)?;
    let filter = search_query(&params)?;
    page(&state, &params, Some(&filter))
}

async fn delete_search(
    Extract(state): Extract<State>,
    query: Result<Query<PageParams>, QueryRejection>,
) -> Result<Response, Problem> {
    let filter = search_query(&params(query)?)?;
    let ids: Vec<usize> = state
        .mailbox
        .entries_oldest_first()
        .iter()
        .filter(|entry| filter.matches(entry))
        .map(|entry| entry.message.id)
        .collect();
    state.mailbox.delete(&ids);
    Ok(ok())
}

/// Mailpit answers changes with a plain `ok`.
fn ok() -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], "ok").into_response()
}

/// A JSON body, or `None` for an empty one; malformed JSON is a 400 (never "delete all").
fn optional_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<Option<T>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|error| Problem::bad_request(format!("invalid JSON body: {error}")))
}

fn numeric_ids(ids: &[String]) -> Result<Vec<usize>, Problem> {
    ids.iter()
        .map(|id| {
            id.parse()
                .map_err(|_| Problem::bad_request(format!("unknown message ID {id:?}")))
        })
        .collect()
}

#[derive(Deserialize)]
struct DeleteBody {
    #[serde(rename = "IDs", default)]
    ids: Vec<String>,
}

/// `DELETE /api/v1/messages`: the messages listed in `{"IDs": [...]}`, or all of them
/// when the body is empty or lists none (Mailpit's rule).
async fn delete_messages(Extract(state): Extract<State>, body: Bytes) -> Result<Response, Problem> {
    let ids = optional_json::<DeleteBody>(&body)?
        .map(|body| body.ids)
        .unwrap_or_default();
    if ids.is_empty() {
        state.mailbox.clear();
    } else {
        state.mailbox.delete(&numeric_ids(&ids)?);
    }
    Ok(ok())
}

#[derive(Deserialize)]
struct ReadBody {
    #[serde(rename = "Read", default)]
    read: bool,
    #[serde(rename = "IDs", default)]
    ids: Vec<String>,
    #[serde(rename = "Search", default)]
    search: String,
}

/// `PUT /api/v1/messages`: mark the listed, the matching, or all messages (un)read.
async fn set_read(Extract(state): Extract<State>, body: Bytes) -> Result<Response, Problem> {
    let Some(body) = optional_json::<ReadBody>(&body)? else {
        return Err(Problem::bad_request(
            "expected a JSON body like {\"Read\": true, \"IDs\": [...]}",
        ));
    };
    if !body.ids.is_empty() && !body.search.trim().is_empty() {
        return Err(Problem::bad_request(
            "give either IDs or a search, not both",
        ));
    }
    let ids = numeric_ids(&body.ids)?;
    let search = (!body.search.trim().is_empty()).then(|| Search::parse(&body.search));
    for entry in state.mailbox.entries_oldest_first() {
        let chosen = if !ids.is_empty() {
            ids.contains(&entry.message.id)
        } else {
            search.as_ref().is_none_or(|query| query.matches(&entry))
        };
        if chosen {
            entry.set_read(body.read);
        }
    }
    Ok(ok())
}

fn find(state: &State, id: &str) -> Result<std::sync::Arc<Entry>, Problem> {
    state
        .mailbox
        .get(id)
        .ok_or_else(|| Problem::not_found(format!("no message with ID {id:?}")))
}

/// Mailpit's `Message`.
#[derive(Serialize)]
struct Full<'a> {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "MessageID")]
    message_id: &'a str,
    #[serde(rename = "From")]
    from: Option<&'a Address>,
    #[serde(rename = "To")]
    to: &'a [Address],
    #[serde(rename = "Cc")]
    cc: &'a [Address],
    #[serde(rename = "Bcc")]
    bcc: &'a [Address],
    #[serde(rename = "ReplyTo")]
    reply_to: &'a [Address],
    #[serde(rename = "ReturnPath")]
    return_path: String,
    #[serde(rename = "Subject")]
    subject: &'a str,
    #[serde(rename = "ListUnsubscribe")]
    list_unsubscribe: ListUnsubscribe,
    #[serde(rename = "Date")]
    date: String,
    #[serde(rename = "Tags")]
    tags: [&'static str; 0],
    #[serde(rename = "Username")]
    username: &'static str,
    #[serde(rename = "Text")]
    text: String,
    #[serde(rename = "HTML")]
    html: String,
    #[serde(rename = "Size")]
    size: usize,
    #[serde(rename = "Inline")]
    inline: Vec<PartInfo>,
    #[serde(rename = "Attachments")]
    attachments: Vec<PartInfo>,
    #[serde(rename = "Envelope")]
    envelope: Envelope<'a>,
}

/// `GET /api/v1/message/{ID}`: the decoded message; marks it read, as Mailpit does.
async fn message(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let entry = find(&state, &id)?;
    entry.set_read(true);
    let details = mime::details(&entry.message.data);
    let summary = &entry.summary;
    let body = Full {
        id: entry.api_id(),
        message_id: &summary.message_id,
        from: summary.from.as_ref(),
        to: &summary.to,
        cc: &summary.cc,
        bcc: &summary.bcc,
        reply_to: &summary.reply_to,
        return_path: details
            .return_path
            .unwrap_or_else(|| entry.message.from.clone()),
        subject: &summary.subject,
        list_unsubscribe: details.list_unsubscribe,
        date: details.date.unwrap_or_else(|| rfc3339(entry.received)),
        tags: [],
        username: "",
        text: details.text,
        html: details.html,
        size: entry.message.data.len(),
        inline: details.inline,
        attachments: details.attachments,
        envelope: Envelope {
            from: &entry.message.from,
            to: &entry.message.recipients,
        },
    };
    Ok(axum::Json(body).into_response())
}

/// `GET /api/v1/message/{ID}/raw`: the bytes as received; `?dl=1` downloads them.
async fn raw(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Problem> {
    let entry = find(&state, &id)?;
    let mut response = (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        entry.message.data.clone(),
    )
        .into_response();
    if params.get("dl").is_some_and(|value| value == "1")
        && let Ok(value) =
            HeaderValue::from_str(&format!("attachment; filename=\"{}.eml\"", entry.api_id()))
    {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `GET /api/v1/message/{ID}/headers`: `{"Header-Name": ["raw value", ...]}`.
async fn headers(
    Extract(state): Extract<State>,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let entry = find(&state, &id)?;
    Ok(axum::Json(mime::headers(&entry.message.data)).into_response())
}

/// `GET /api/v1/message/{ID}/part/{PartID}`: an attachment or inline part, decoded.
async fn part(
    Extract(state): Extract<State>,
    Path((id, part_id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let entry = find(&state, &id)?;
    let content = mime::part(&entry.message.data, &part_id).ok_or_else(|| {
        Problem::not_found(format!("message {id} has no attachment part {part_id:?}"))
    })?;
    let content_type = HeaderValue::from_str(&content.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut response = ([(header::CONTENT_TYPE, content_type)], content.bytes).into_response();
    let name = content
        .file_name
        .replace(|c: char| c == '"' || c == '\\' || c.is_control(), "_");
    if let Ok(value) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// Scripts in a message must never run, even when its HTML is opened directly.
const VIEW_POLICY: &str = "sandbox; default-src 'none'; img-src * data:; \
                           style-src * 'unsafe-inline'; font-src * data:";

/// `GET /view/{ID}.html` (inline `cid:` images linked to their parts) and
/// `GET /view/{ID}.txt`.
async fn view(
    Extract(state): Extract<State>,
    Path(file): Path<String>,
) -> Result<Response, Problem> {
    if let Some(id) = file.strip_suffix(".html") {
        let entry = find(&state, id)?;
        let details = mime::details(&entry.message.data);
        if details.html.is_empty() {
            return Err(Problem::not_found(format!("message {id} has no HTML part")));
        }
        let mut html = details.html;
        for (content_id, part_id) in mime::content_ids(&entry.message.data) {
            let url = format!("/api/v1/message/{}/part/{part_id}", entry.api_id());
            html = html.replace(&format!("cid:{content_id}"), &url);
        }
        Ok((
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, VIEW_POLICY),
            ],
            html,
        )
            .into_response())
    } else if let Some(id) = file.strip_suffix(".txt") {
        let entry = find(&state, id)?;
        let details = mime::details(&entry.message.data);
        Ok((
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            details.text,
        )
            .into_response())
    } else {
        Err(Problem::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "use /view/{ID}.html or /view/{ID}.txt",
        ))
    }
}
