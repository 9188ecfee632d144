//! Submitting mail: a send (from `POST /messages` or a platform event) becomes one queued
//! message per recipient, in the caller's transaction. Everything that can be known before
//! sending is checked here, for every recipient, so a request that would send a blank or
//! broken mail is refused as a whole and nothing is stored: the template exists and is live,
//! each recipient's parts render (a missing variable is named), users are known. An address on
//! the suppression list gets its message too, already `suppressed` (and its event), so every
//! recipient can be traced.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::domain::template::context;
use crate::domain::{Category, EmailAddress, Locale, RenderError, Status, TemplateKey};
use crate::events;
use crate::renderer::Renderer;
use crate::store::messages::{self, Common, NewAttachment, NewMessages, NewSend};
use crate::store::{suppressions, templates};

/// One recipient: an address, or a platform user (whose address the local user copy has), or
/// both (the address wins).
#[derive(Debug, Clone)]
pub struct Recipient {
    pub email: Option<EmailAddress>,
    pub name: Option<String>,
    pub user: Option<Uuid>,
}

/// What caused a send.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The request id of the API call, or the one the event carried.
    pub request_id: Option<String>,
    /// The service client or admin who called the API.
    pub sender: Option<Uuid>,
    /// The platform event (id, type) it came from.
    pub event: Option<(Uuid, String)>,
}

/// A send, validated at the edge.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub template: TemplateKey,
    pub locale: Option<Locale>,
    /// A JSON object.
    pub data: serde_json::Value,
    pub recipients: Vec<Recipient>,
    pub category: Option<Category>,
    pub send_at: Option<DateTime<Utc>>,
    pub headers: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
    pub attachments: Vec<NewAttachment>,
    pub origin: Origin,
}

/// Why a send is refused (nothing was stored).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("there is no template `{0}`")]
    UnknownTemplate(String),
    #[error("template `{0}` is archived")]
    ArchivedTemplate(String),
    #[error("recipient {index}: user {user} is unknown here and no email was given")]
    UnknownUser { index: usize, user: Uuid },
    #[error("recipient {index}: neither an email nor a user id")]
    NoAddress { index: usize },
    #[error("recipient {index}: {error}")]
    Render { index: usize, error: RenderError },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// One queued (or suppressed) message.
#[derive(Debug, Clone)]
pub struct Queued {
    pub id: Uuid,
    pub email: String,
    pub status: Status,
    pub message_id: String,
}

/// A recipient with everything resolved.
struct Resolved {
    email: EmailAddress,
    name: String,
    user_id: Option<i64>,
    user_uuid: Option<Uuid>,
}

/// Validates `request` and stores its messages in `tx`.
pub async fn submit(
    tx: &mut Transaction<'_, Postgres>,
    renderer: &Renderer,
    request: &SendRequest,
    message_id_domain: &str,
) -> Result<Vec<Queued>, Refused> {
    let key = request.template.as_str();
    // Addresses known up front (no recipient given by user id alone, the usual case): the
    // template and the suppressions in one round trip.
    let known: Option<Vec<String>> = request
        .recipients
        .iter()
        .map(|r| r.email.as_ref().map(EmailAddress::normalized))
        .collect();
    let (template, early) = match &known {
        Some(emails) => {
            let found =
                templates::current_with_suppressions(&mut **tx, key, emails, request.category)
                    .await?
                    .ok_or_else(|| Refused::UnknownTemplate(key.to_owned()))?;
            (found.0, Some(found.1))
        }
        None => (
            templates::current(&mut **tx, key)
                .await?
                .ok_or_else(|| Refused::UnknownTemplate(key.to_owned()))?,
            None,
        ),
    };
    if template.archived {
        return Err(Refused::ArchivedTemplate(key.to_owned()));
    }
    let compiled = renderer.compiled(&mut **tx, template.version_id).await?;
    let locale = compiled.locale_for(request.locale.as_ref());
    let category = request
        .category
        .or_else(|| Category::parse(&template.category))
        .unwrap_or(Category::Transactional);

    let recipients = resolve(tx, &request.recipients).await?;
    for (index, recipient) in recipients.iter().enumerate() {
        let context = context(&request.data, recipient.email.as_str(), &recipient.name);
        compiled
            .render(&locale, &context)
            .map_err(|error| Refused::Render { index, error })?;
    }

    let normalized: Vec<String> = recipients.iter().map(|r| r.email.normalized()).collect();
    let suppressed = match early {
        Some(suppressed) => suppressed,
        None => suppressions::active_for(&mut **tx, &normalized, category).await?,
    };

    let headers = serde_json::to_value(&request.headers).map_err(anyhow::Error::from)?;
    let now = Utc::now();
    let due = request.send_at.unwrap_or(now).max(now);
    let mut new = NewMessages::default();
    let mut statuses = Vec::with_capacity(recipients.len());
    for (recipient, email) in recipients.iter().zip(&normalized) {
        let uuid = Uuid::now_v7();
        let reason = suppressed.get(email);
        let status = if reason.is_some() {
            Status::Suppressed
        } else {
            Status::Queued
        };
        new.uuid.push(uuid);
        new.to_email.push(recipient.email.as_str().to_owned());
        new.to_name.push(recipient.name.clone());
        new.user_id.push(recipient.user_id);
        new.status.push(status.as_str().to_owned());
        new.next_attempt_at
            .push((status == Status::Queued).then_some(due));
        new.message_id
            .push(format!("<{}@{message_id_domain}>", uuid.simple()));
        new.suppressed
            .push(reason.map(|reason| format!("the address is suppressed ({reason})")));
        statuses.push(status);
    }
    let metadata = serde_json::to_value(&request.metadata).map_err(anyhow::Error::from)?;
    let queued_detail = match (&request.origin.event, request.send_at) {
        (Some((_, event_type)), _) => Some(format!("from event {event_type}")),
        (None, Some(at)) if at > now => Some(format!("scheduled for {}", at.to_rfc3339())),
        _ => None,
    };
    let common = Common {
        template_key: key,
        template_version: template.version,
        locale: locale.as_str(),
        category: category.as_str(),
        send_at: request.send_at,
        tags: &request.tags,
        metadata: &metadata,
        request_id: request.origin.request_id.as_deref(),
        event_id: request.origin.event.as_ref().map(|(id, _)| *id),
        event_type: request.origin.event.as_ref().map(|(_, t)| t.as_str()),
        sender: request.origin.sender,
        queued_detail: queued_detail.as_deref(),
    };
    let send = NewSend {
        template_version_id: template.version_id,
        data: &request.data,
        headers: &headers,
        attachments: &request.attachments,
    };
    let (_, ids) = messages::insert_send(tx, &send, &common, &new).await?;

    let mut queued = Vec::with_capacity(ids.len());
    let mut outcomes = Vec::new();
    for (index, recipient) in recipients.iter().enumerate() {
        let status = statuses[index];
        if status == Status::Suppressed {
            let reason = suppressed
                .get(&normalized[index])
                .cloned()
                .unwrap_or_default();
            let event = contracts::mail::MessageSuppressed {
                message: new.uuid[index],
                email: recipient.email.as_str().to_owned(),
                user: recipient.user_uuid,
                template: key.to_owned(),
                template_version: template.version.unsigned_abs(),
                reason,
                tags: request.tags.clone(),
                metadata: request.metadata.clone(),
                suppressed_at: now,
            };
            outcomes.push((event, request.origin.request_id.clone()));
            metrics::counter!("mail_messages_suppressed_total").increment(1);
        } else {
            metrics::counter!("mail_messages_queued_total").increment(1);
        }
        queued.push(Queued {
            id: new.uuid[index],
            email: recipient.email.as_str().to_owned(),
            status,
            message_id: new.message_id[index].clone(),
        });
    }
    events::publish(tx, &outcomes).await?;
    Ok(queued)
}

/// Addresses and names from the local user copy, for recipients given by user id. A user seen
/// here for the first time (with an address given) gets a placeholder row that any event or
/// token about them overwrites.
async fn resolve(
    conn: &mut PgConnection,
    recipients: &[Recipient],
) -> Result<Vec<Resolved>, Refused> {
    let uuids: Vec<Uuid> = recipients.iter().filter_map(|r| r.user).collect();
    let mut known: HashMap<Uuid, (i64, String, String)> = HashMap::new();
    if !uuids.is_empty() {
        let rows: Vec<(i64, Uuid, String, String)> = sqlx::query_as(
            "SELECT id, uuid, email, name FROM users WHERE uuid = ANY($1) AND deleted_at IS NULL",
        )
        .bind(&uuids)
        .fetch_all(&mut *conn)
        .await?;
        known = rows
            .into_iter()
            .map(|(id, uuid, email, name)| (uuid, (id, email, name)))
            .collect();
    }
    let mut resolved = Vec::with_capacity(recipients.len());
    for (index, recipient) in recipients.iter().enumerate() {
        let Some(user) = recipient.user else {
            let email = recipient
                .email
                .clone()
                .ok_or(Refused::NoAddress { index })?;
            resolved.push(Resolved {
                email,
                name: recipient.name.clone().unwrap_or_default(),
                user_id: None,
                user_uuid: None,
            });
            continue;
        };
        let (user_id, email, name) = match (known.get(&user), &recipient.email) {
            (Some((id, email, name)), given) => {
                let email = match given {
                    Some(given) => given.clone(),
                    None => EmailAddress::parse(email)
                        .map_err(|_| Refused::UnknownUser { index, user })?,
                };
                (*id, email, name.clone())
            }
            (None, Some(given)) => {
                let name = recipient.name.clone().unwrap_or_default();
                let id = placeholder_user(conn, user, given, &name).await?;
                known.insert(user, (id, given.to_string(), name.clone()));
                (id, given.clone(), name)
            }
            (None, None) => return Err(Refused::UnknownUser { index, user }),
        };
        resolved.push(Resolved {
            email,
            name: recipient.name.clone().unwrap_or(name),
            user_id: Some(user_id),
            user_uuid: Some(user),
        });
    }
    Ok(resolved)
}

/// A user row known only from a send: dated at the epoch, so the first real event or token
/// about the user replaces its data.
async fn placeholder_user(
    conn: &mut PgConnection,
    user: Uuid,
    email: &EmailAddress,
    name: &str,
) -> Result<i64, Refused> {
    let seed = identity::users::UserRegistered {
        user,
        email: email.to_string(),
        name: name.to_owned(),
        roles: Vec::new(),
    };
    let row = identity::users::apply_registered(conn, &seed, DateTime::<Utc>::UNIX_EPOCH).await?;
    Ok(row.id)
}
