//! `/messages`: send mail (one message per recipient) and follow each message.
//!
//! Senders are services with the `mail:send` scope and admins ([`Caller`]). A service reads
//! the messages it sent; an admin reads all. Someone else's message is answered 404.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use kit::idempotency::{self, Claim, Idempotent};
use kit::{ApiError, ApiResult, FieldErrors, Json, Page, PageParams, Path, Query};
use serde::{Deserialize, Serialize};
use utoipa::openapi::{ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, Caller};
use crate::domain::{self, Category, EmailAddress, Locale, Status, TemplateKey};
use crate::store::messages::{self, EventRow, Filter, MessageRow, NewAttachment};
use crate::submit::{self, Origin, Recipient, Refused, SendRequest};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_messages, send_messages))
        .routes(routes!(get_message))
        .routes(routes!(cancel_message))
}

/// Most tags, headers, metadata entries and attachments one send carries.
const MAX_TAGS: usize = 20;
const MAX_HEADERS: usize = 20;
const MAX_METADATA: usize = 20;
const MAX_ATTACHMENTS: usize = 10;
/// Longest recipient name and metadata value, in characters.
const MAX_NAME_CHARS: usize = 200;
const MAX_METADATA_VALUE_CHARS: usize = 500;
/// How far ahead a send can be scheduled.
const MAX_SCHEDULE_DAYS: i64 = 90;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessages {
    /// The template's key.
    #[schema(
        pattern = "^[a-z][a-z0-9_-]*(\\.[a-z][a-z0-9_-]*)*$",
        max_length = 100,
        example = "auth.verify_email"
    )]
    pub template: String,
    /// Language tag; the template's closest locale is used (`es-MX` → `es` → its default).
    #[serde(default)]
    #[schema(pattern = "^[a-zA-Z]{2,3}([-_][a-zA-Z]{2})?$", example = "es")]
    pub locale: Option<String>,
    /// The template's variables (each recipient's `recipient.email` and `recipient.name` are
    /// added); none (or `null`) is an empty object.
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"name": "Ada", "email": "ada@hatchery.test", "url": "https://hatchery.test/verify-email?token=abc", "expires_at": "2026-12-02T10:00:00Z"}))]
    pub data: serde_json::Map<String, serde_json::Value>,
    /// One message is created per recipient.
    #[schema(min_items = 1, max_items = 1000)]
    pub recipients: Vec<RecipientInput>,
    /// `notification` mail carries a one-click unsubscribe; default: the template's category.
    #[serde(default)]
    pub category: Option<Category>,
    /// Send at this time (at most 90 days ahead) instead of now.
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    /// `Reply-To` and `X-` headers.
    #[serde(default)]
    #[schema(schema_with = headers_schema)]
    pub headers: BTreeMap<String, String>,
    /// Labels to find the messages by; echoed in their events.
    #[serde(default)]
    #[schema(max_items = 20, value_type = Vec<String>, example = json!(["welcome"]))]
    pub tags: Vec<String>,
    /// The sender's own data, echoed in the messages' events.
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    #[schema(max_items = 10)]
    pub attachments: Vec<AttachmentInput>,
}

fn headers_schema() -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(domain::HEADER_NAME_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(998))
                .pattern(Some(r"^[^\r\n]*[^\s][^\r\n]*$")),
        ))
        .max_properties(Some(MAX_HEADERS))
        .description(Some("`Reply-To` and `X-` headers, one line each."))
        .build()
}

fn metadata_schema() -> utoipa::openapi::Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(METADATA_KEY_PATTERN)),
        ))
        .additional_properties(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(MAX_METADATA_VALUE_CHARS)),
        ))
        .max_properties(Some(MAX_METADATA))
        .description(Some(
            "Up to 20 string values under keys of 1 to 40 of `[A-Za-z0-9_.-]`.",
        ))
        .build()
}

const METADATA_KEY_PATTERN: &str = "^[A-Za-z0-9_.-]{1,40}$";

/// A recipient: an address, a platform user (whose address this service knows from auth's
/// events), or both (the address wins).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientInput {
    #[serde(default)]
    #[schema(format = "email", max_length = 254, example = "ada@hatchery.test")]
    pub email: Option<String>,
    /// Shown in `To:`; default: the user's name.
    #[serde(default)]
    #[schema(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$",
        example = "Ada Admin"
    )]
    pub name: Option<String>,
    #[serde(default)]
    pub user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachmentInput {
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^/\\\x00-\x1f\x7f-\x9f]+$",
        example = "ticket.pdf"
    )]
    pub filename: String,
    #[schema(
        pattern = "^[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}$",
        example = "application/pdf"
    )]
    pub content_type: String,
    /// The file, base64 (standard alphabet). All attachments of a send together: at most
    /// `app.max_attachment_bytes` decoded (512 KiB by default).
    #[schema(
        content_encoding = "base64",
        pattern = "^[A-Za-z0-9+/]*={0,2}$",
        example = "JVBERi0xLjQK"
    )]
    pub content: String,
}

/// One message created by a send.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AcceptedMessage {
    pub id: Uuid,
    pub email: String,
    /// `queued`, or `suppressed` when the address is on the suppression list.
    pub status: Status,
    /// The `Message-ID` header every attempt carries.
    pub message_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// In the order of `recipients`.
    pub messages: Vec<AcceptedMessage>,
}

/// Reads the body into a send: every invalid field is reported at once.
fn parse(
    input: SendMessages,
    caller: &Caller,
    max_recipients: usize,
    max_attachment_bytes: usize,
) -> Result<SendRequest, ApiError> {
    let mut errors = FieldErrors::default();
    let template = errors.take("template", TemplateKey::parse(&input.template));
    let locale = input.locale.as_deref().map(Locale::parse).transpose();
    let locale = errors.take("locale", locale).flatten();
    if input.recipients.is_empty() {
        errors.add("recipients", "must name at least one recipient");
    }
    if input.recipients.len() > max_recipients {
        errors.add(
            "recipients",
            format!("must name at most {max_recipients} recipients"),
        );
    }
    let mut recipients = Vec::with_capacity(input.recipients.len());
    for (index, recipient) in input.recipients.iter().enumerate() {
        let field = format!("recipients[{index}]");
        let email = recipient
            .email
            .as_deref()
            .map(EmailAddress::parse)
            .transpose();
        let email = errors.take(&format!("{field}.email"), email).flatten();
        if recipient.email.is_none() && recipient.user_id.is_none() {
            errors.add(&field, "needs an email or a user_id");
        }
        if let Some(name) = &recipient.name
            && (name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control))
        {
            errors.add(
                format!("{field}.name"),
                format!("must be one line of at most {MAX_NAME_CHARS} characters"),
            );
        }
        recipients.push(Recipient {
            email,
            name: recipient.name.as_ref().map(|n| n.trim().to_owned()),
            user: recipient.user_id,
        });
    }
    if domain::contains_nul(&serde_json::Value::Object(input.data.clone())) {
        errors.add("data", "must not contain NUL characters");
    }
    let now = Utc::now();
    if let Some(at) = input.send_at
        && at > now + chrono::Duration::days(MAX_SCHEDULE_DAYS)
    {
        errors.add(
            "send_at",
            format!("must be at most {MAX_SCHEDULE_DAYS} days ahead"),
        );
    }
    if input.headers.len() > MAX_HEADERS {
        errors.add(
            "headers",
            format!("must have at most {MAX_HEADERS} headers"),
        );
    }
    let mut headers = BTreeMap::new();
    for (name, value) in &input.headers {
        if let Some((name, value)) = errors.take(
            &format!("headers.{name}"),
            domain::parse_header(name, value),
        ) {
            headers.insert(name, value);
        }
    }
    if input.tags.len() > MAX_TAGS {
        errors.add("tags", format!("must have at most {MAX_TAGS} tags"));
    }
    let tags: Vec<String> = input
        .tags
        .iter()
        .enumerate()
        .filter_map(|(i, tag)| errors.take(&format!("tags[{i}]"), domain::parse_tag(tag)))
        .collect();
    if input.metadata.len() > MAX_METADATA {
        errors.add(
            "metadata",
            format!("must have at most {MAX_METADATA} entries"),
        );
    }
    for (key, value) in &input.metadata {
        let key_ok = (1..=40).contains(&key.len())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !key_ok {
            errors.add(
                format!("metadata.{key}"),
                "keys are 1 to 40 of letters, digits, `_`, `.`, `-`",
            );
        } else if value.chars().count() > MAX_METADATA_VALUE_CHARS || value.contains('\0') {
            errors.add(
                format!("metadata.{key}"),
                format!("must be at most {MAX_METADATA_VALUE_CHARS} characters"),
            );
        }
    }
    if input.attachments.len() > MAX_ATTACHMENTS {
        errors.add(
            "attachments",
            format!("must have at most {MAX_ATTACHMENTS} attachments"),
        );
    }
    let mut attachments = Vec::new();
    let mut total = 0usize;
    for (index, attachment) in input.attachments.iter().enumerate() {
        let field = format!("attachments[{index}]");
        let filename = errors.take(
            &format!("{field}.filename"),
            domain::parse_filename(&attachment.filename),
        );
        let content_type = errors.take(
            &format!("{field}.content_type"),
            domain::parse_content_type(&attachment.content_type),
        );
        let content = errors.take(
            &format!("{field}.content"),
            STANDARD
                .decode(attachment.content.as_bytes())
                .map_err(|_| "is not base64 (standard alphabet, with padding)"),
        );
        if let Some(content) = &content {
            total += content.len();
        }
        if let (Some(filename), Some(content_type), Some(content)) =
            (filename, content_type, content)
        {
            attachments.push(NewAttachment {
                filename,
                content_type,
                content,
            });
        }
    }
    if total > max_attachment_bytes {
        errors.add(
            "attachments",
            format!("must be at most {max_attachment_bytes} bytes together (decoded)"),
        );
    }
    errors.into_result()?;
    let template =
        template.ok_or_else(|| ApiError::internal(anyhow::anyhow!("template checked above")))?;
    Ok(SendRequest {
        template,
        locale,
        data: serde_json::Value::Object(input.data),
        recipients,
        category: input.category,
        send_at: input.send_at,
        headers,
        tags,
        metadata: input.metadata,
        attachments,
        origin: Origin {
            request_id: kit::request_id::current(),
            sender: Some(caller.id),
            event: None,
        },
    })
}

/// The 422 for a send that cannot be accepted.
fn refused(refused: Refused) -> ApiError {
    let one = |code: &'static str, field: String, message: String| {
        let mut errors = FieldErrors::default();
        errors.add(field, message.clone());
        ApiError::unprocessable(code, message).with_errors(errors)
    };
    match refused {
        Refused::UnknownTemplate(_) => {
            one("unknown_template", "template".into(), refused.to_string())
        }
        Refused::ArchivedTemplate(_) => {
            one("template_archived", "template".into(), refused.to_string())
        }
        Refused::UnknownUser { index, .. } => one(
            "unknown_user",
            format!("recipients[{index}].user_id"),
            "is not a user this service knows; give an email too".into(),
        ),
        Refused::NoAddress { index } => one(
            "validation_failed",
            format!("recipients[{index}]"),
            "needs an email or a user_id".into(),
        ),
        Refused::Render { index, ref error } => {
            let code = if error.undefined.is_some() {
                "missing_variable"
            } else {
                "template_error"
            };
            let message = if index == 0 {
                error.to_string()
            } else {
                format!("for recipient {index}: {error}")
            };
            one(code, error.field(), message)
        }
        Refused::Database(err) => ApiError::internal(err),
        Refused::Internal(err) => ApiError::internal(err),
    }
}

/// Send mail: one message per recipient, each delivered (and retried) on its own. The answer
/// lists the messages; follow each at `/messages/{id}`. With an `Idempotency-Key`, a retry of the
/// same request returns the same messages instead of sending again.
#[utoipa::path(
    post, path = "/messages", tag = "messages",
    request_body = SendMessages,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1, max_length = 255,
        pattern = r"^[!-~]+$",
        description = "Makes retries safe: 1 to 255 visible ASCII characters")),
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Accepted: one message per recipient (or, for a repeated `Idempotency-Key`, the messages of the first request)", body = Accepted,
            links(
                ("GetMessage" = (operation_id = "get_message", parameters(("id" = "$response.body#/messages/0/id")))),
                ("CancelMessage" = (operation_id = "cancel_message", parameters(("id" = "$response.body#/messages/0/id")))),
            )),
        (status = 409, description = "A request with this `Idempotency-Key` is still running (`idempotency_key_in_use`)", body = kit::Problem),
        (status = 422, description = "Invalid fields (`validation_failed`); no such template (`unknown_template`) or an archived one (`template_archived`); a variable the template needs is not in `data` (`missing_variable`, named under `errors`); a user given by id only who is unknown here (`unknown_user`); or the key was used with another request (`idempotency_key_reused`). Nothing was sent.", body = kit::Problem),
    )
)]
async fn send_messages(
    State(state): State<AppState>,
    caller: Caller,
    request: Idempotent<SendMessages>,
) -> ApiResult<Response> {
    let scope = format!("messages.send:{}", caller.id);
    let (mut tx, input, key) = match request.claim(&state.db, &scope).await? {
        Claim::Replay(stored) => return Ok(stored),
        Claim::Fresh { tx, body, key } => (tx, body, key),
    };
    let app = &state.settings.app;
    let send = parse(input, &caller, app.max_recipients, app.max_attachment_bytes)?;
    let queued = submit::submit(&mut tx, &state.renderer, &send, &state.message_id_domain)
        .await
        .map_err(refused)?;
    tracing::info!(
        template = %send.template,
        messages = queued.len(),
        "mail accepted"
    );
    let body = Accepted {
        messages: queued
            .into_iter()
            .map(|q| AcceptedMessage {
                id: q.id,
                email: q.email,
                status: q.status,
                message_id: q.message_id,
            })
            .collect(),
    };
    let response = (StatusCode::ACCEPTED, Json(body)).into_response();
    idempotency::complete(tx, key.as_ref(), response).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct To {
    pub email: String,
    /// Empty when none was given.
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CausingEvent {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
}

/// A message (one recipient of a send) and where it is.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageSummary {
    pub id: Uuid,
    pub status: Status,
    pub to: To,
    /// The recipient's user id, when the message went to a platform user.
    pub user_id: Option<Uuid>,
    pub template: String,
    /// The template version it was (or will be) rendered from.
    pub template_version: u32,
    /// The locale rendered.
    pub locale: String,
    pub category: Category,
    /// The `Message-ID` header, the same on every attempt.
    pub message_id: String,
    /// SMTP attempts made so far.
    pub attempts: u32,
    /// The relay's last reply (`250 ...`, `451 ...`, `550 ...`).
    pub last_reply: Option<String>,
    /// When it is due (queued or deferred).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub send_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    /// The request id of the API call or event that caused it.
    pub request_id: Option<String>,
    /// The platform event it came from, if any.
    pub event: Option<CausingEvent>,
    /// The service client or admin who sent it (none for event-driven mail).
    pub sender: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// When it reached its terminal state.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<MessageRow> for MessageSummary {
    fn from(row: MessageRow) -> Self {
        let waiting = matches!(row.status.as_str(), "queued" | "deferred");
        MessageSummary {
            id: row.uuid,
            status: Status::parse(&row.status).unwrap_or(Status::Queued),
            to: To {
                email: row.to_email,
                name: row.to_name,
            },
            user_id: row.user_uuid,
            template: row.template_key,
            template_version: row.template_version.unsigned_abs(),
            locale: row.locale,
            category: Category::parse(&row.category).unwrap_or(Category::Transactional),
            message_id: row.message_id,
            attempts: row.attempts.unsigned_abs(),
            last_reply: row.last_reply,
            next_attempt_at: row.next_attempt_at.filter(|_| waiting),
            send_at: row.send_at,
            tags: row.tags,
            metadata: serde_json::from_value(row.metadata).unwrap_or_default(),
            request_id: row.request_id,
            event: row
                .event_id
                .zip(row.event_type)
                .map(|(id, event_type)| CausingEvent { id, event_type }),
            sender: row.sender,
            created_at: row.created_at,
            updated_at: row.updated_at,
            finished_at: row.finished_at,
        }
    }
}

/// One entry of a message's timeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    /// `queued`, `deferred`, `sent`, `failed`, `suppressed`, `canceled`, or `interrupted` (a
    /// worker stopped mid-attempt; the message is sent again with the same Message-ID).
    pub kind: String,
    /// The attempt it is about.
    pub attempt: Option<u32>,
    /// The relay's reply.
    pub reply: Option<String>,
    pub detail: Option<String>,
}

impl From<EventRow> for TimelineEntry {
    fn from(row: EventRow) -> Self {
        TimelineEntry {
            at: row.at,
            kind: row.kind,
            attempt: row.attempt.map(i32::unsigned_abs),
            reply: row.reply,
            detail: row.detail,
        }
    }
}

/// A message with its timeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Message {
    #[serde(flatten)]
    pub message: MessageSummary,
    /// Everything that happened to it, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

async fn with_timeline(state: &AppState, row: MessageRow) -> ApiResult<Message> {
    let timeline = messages::timeline(&state.db, row.id).await?;
    Ok(Message {
        message: row.into(),
        timeline: timeline.into_iter().map(Into::into).collect(),
    })
}

/// A message: its status, attempts, last SMTP reply, template version, the request or event
/// that caused it, and its timeline.
#[utoipa::path(
    get, path = "/messages/{id}", tag = "messages",
    params(("id" = Uuid, Path, description = "The message's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The message", body = Message),
        (status = 404, description = "No such message, or not one you sent", body = kit::Problem),
    )
)]
async fn get_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Message>> {
    let row = messages::find(&state.db, id, caller.access())
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    Ok(Json(with_timeline(&state, row).await?))
}

/// Cancel a message that has not been sent yet (queued, scheduled or deferred).
#[utoipa::path(
    post, path = "/messages/{id}/cancel", tag = "messages",
    params(("id" = Uuid, Path, description = "The message's id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Canceled", body = Message),
        (status = 404, description = "No such message, or not one you sent", body = kit::Problem),
        (status = 409, description = "It is being sent or has ended already (`not_cancelable`)", body = kit::Problem),
    )
)]
async fn cancel_message(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Message>> {
    let mut tx = state.db.begin().await?;
    let outcome = messages::cancel(&mut tx, id, caller.access())
        .await?
        .ok_or_else(|| ApiError::not_found("message"))?;
    tx.commit().await?;
    match outcome {
        Ok(row) => {
            tracing::info!(message = %id, "message canceled");
            Ok(Json(with_timeline(&state, row).await?))
        }
        Err(status) => Err(ApiError::conflict(
            "not_cancelable",
            format!("The message is {status}; only queued or deferred messages can be canceled."),
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageFilter {
    /// The recipient's address (case-insensitive).
    #[param(
        max_length = 254,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$",
        example = "ada@hatchery.test"
    )]
    pub recipient: Option<String>,
    pub status: Option<Status>,
    /// A template key.
    #[param(
        max_length = 100,
        pattern = "^[a-z][a-z0-9_-]*(\\.[a-z][a-z0-9_-]*)*$",
        example = "auth.verify_email"
    )]
    pub template: Option<String>,
    /// A platform user's id.
    pub user_id: Option<Uuid>,
    /// Created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Created before this time.
    pub until: Option<DateTime<Utc>>,
}

/// List messages, newest first, by recipient, status, template, user and time range.
#[utoipa::path(
    get, path = "/messages", tag = "messages",
    params(MessageFilter, PageParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of messages", body = Page<MessageSummary>),
        (status = 422, description = "A cursor this listing did not issue, or a filter that cannot match (`validation_failed`)", body = kit::Problem),
    )
)]
async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    Query(filter): Query<MessageFilter>,
    Query(paging): Query<PageParams>,
) -> ApiResult<Json<Page<MessageSummary>>> {
    let mut errors = FieldErrors::default();
    if filter.recipient.as_ref().is_some_and(|r| {
        r.chars().count() > EmailAddress::MAX_LEN || r.chars().any(char::is_control)
    }) {
        errors.add(
            "recipient",
            format!(
                "must be at most {} characters, without control characters",
                EmailAddress::MAX_LEN
            ),
        );
    }
    if let Some(template) = &filter.template {
        errors.take("template", TemplateKey::parse(template));
    }
    let page = match paging.parse::<(DateTime<Utc>, Uuid)>() {
        Ok(page) => Some(page),
        Err(err) if errors.is_empty() => return Err(err),
        Err(_) => None,
    };
    errors.into_result()?;
    let page = page.ok_or_else(|| ApiError::internal(anyhow::anyhow!("paging checked above")))?;
    let user_id = match filter.user_id {
        Some(user) => Some(identity::users::local_id(&state.db, user).await?),
        None => None,
    };
    let filter = Filter {
        recipient: filter.recipient.map(|r| r.trim().to_lowercase()),
        status: filter.status.map(Status::as_str),
        template: filter.template,
        user_id,
        since: filter.since,
        until: filter.until,
    };
    let rows = messages::list(&state.db, caller.access(), &filter, &page).await?;
    Ok(Json(Page::from_rows(
        rows,
        &page,
        MessageRow::key,
        MessageSummary::from,
    )))
}
