//! What the service publishes and consumes.
//!
//! Published (through the outbox, in the transaction that records the outcome; payloads in
//! `contracts::mail`), one per message when it reaches its terminal state:
//! `mail.message.sent`, `mail.message.failed`, `mail.message.suppressed` (a canceled message
//! publishes nothing). Each carries the request id of the request or event that caused the
//! message.
//!
//! Consumed:
//! - `auth.user.*`, keeping the local `users` table current (as `identity::events` does);
//! - every event type listed in the `event_mails` table (seed data): each becomes one message,
//!   rendered from the mapped template with the event's `data`, to the address found in it.
//!   The consumer binds to the listed types when the service starts, so a new mapping takes
//!   effect at the next start. Handled through the inbox, so a redelivered event never queues
//!   a second mail; an event that cannot become mail (unknown template, a variable missing
//!   from its data, no address) fails its handler and, after the retries, is parked with the
//!   reason, to be replayed once the template is fixed (`mail events replay`).

use std::sync::Arc;

use chrono::Utc;
use contracts::Event as _;
use contracts::auth::{UserDeleted, UserRegistered, UserRestored, UserUpdated};
use identity::users;
use serde_json::Value;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::domain::{Category, EmailAddress, Locale, TemplateKey};
use crate::renderer::Renderer;
use crate::store::event_mails::{self, EventMail};
use crate::submit::{self, Origin, Recipient, SendRequest};

/// Writes `events` to the outbox in `tx`, in one statement, each carrying its request id (that
/// of the request or event that caused the message) rather than whatever request is current.
pub async fn publish<E: contracts::Event>(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(E, Option<String>)],
) -> sqlx::Result<()> {
    let envelopes: Vec<bus::CloudEvent<&E>> = events
        .iter()
        .map(|(event, request_id)| {
            let mut envelope = bus::CloudEvent::new(event, None);
            envelope.requestid = request_id.clone();
            envelope
        })
        .collect();
    bus::enqueue_all(tx, &envelopes).await
}

/// The `auth.user.*` types, which have typed handlers of their own.
const USER_EVENTS: [&str; 4] = [
    UserRegistered::TYPE,
    UserUpdated::TYPE,
    UserDeleted::TYPE,
    UserRestored::TYPE,
];

/// Turns mapped platform events into messages.
#[derive(Clone)]
pub struct EventMails {
    pub renderer: Renderer,
    pub message_id_domain: Arc<str>,
}

/// The event handlers: the user copy, and a handler for each mapped event type.
pub fn consumers(mapped: &[EventMail], mails: EventMails) -> bus::Consumers {
    macro_rules! user_handler {
        ($payload:ty, $apply:expr) => {{
            let mails = mails.clone();
            move |tx: &mut bus::Tx, event: bus::Received<$payload>| {
                let mails = mails.clone();
                Box::pin(async move {
                    let at = event.time.unwrap_or_else(Utc::now);
                    $apply(&mut **tx, &event.data, at).await?;
                    let data = serde_json::to_value(&event.data)?;
                    mails.handle(tx, event.id, &event.event_type, &data).await
                }) as futures_util::future::BoxFuture<'_, anyhow::Result<()>>
            }
        }};
    }
    let mut consumers = bus::Consumers::new()
        .on::<UserRegistered, _>(user_handler!(UserRegistered, users::apply_registered))
        .on::<UserUpdated, _>(user_handler!(UserUpdated, users::apply_updated))
        .on::<UserDeleted, _>(user_handler!(UserDeleted, users::apply_deleted))
        .on::<UserRestored, _>(user_handler!(UserRestored, users::apply_restored));
    for mapping in mapped {
        if USER_EVENTS.contains(&mapping.event_type.as_str())
            || !contracts::is_valid_type(&mapping.event_type)
        {
            continue;
        }
        let mails = mails.clone();
        consumers = consumers.on_pattern(&mapping.event_type, move |tx, event| {
            let mails = mails.clone();
            Box::pin(async move {
                mails
                    .handle(tx, event.id, &event.event_type, &event.data)
                    .await
            })
        });
    }
    consumers
}

impl EventMails {
    /// Queues the mail `event_type` is mapped to, if any.
    async fn handle(
        &self,
        tx: &mut bus::Tx,
        event_id: Uuid,
        event_type: &str,
        data: &Value,
    ) -> anyhow::Result<()> {
        let Some(mapping) = event_mails::find(&mut **tx, event_type).await? else {
            return Ok(());
        };
        let request = request_for(&mapping, event_id, data)
            .map_err(|why| anyhow::anyhow!("{event_type} {event_id} cannot become mail: {why}"))?;
        match submit::submit(tx, &self.renderer, &request, &self.message_id_domain).await {
            Ok(queued) => {
                for message in &queued {
                    tracing::info!(
                        message = %message.id,
                        status = message.status.as_str(),
                        template = %request.template,
                        "mail queued from event"
                    );
                }
                Ok(())
            }
            Err(submit::Refused::Database(err)) => Err(err.into()),
            Err(refused) => Err(anyhow::anyhow!(
                "{event_type} {event_id} cannot become mail: {refused}"
            )),
        }
    }
}

/// The send an event comes to under `mapping`.
pub fn request_for(
    mapping: &EventMail,
    event_id: Uuid,
    data: &Value,
) -> Result<SendRequest, String> {
    let text = |pointer: &Option<String>| -> Option<String> {
        pointer
            .as_deref()
            .and_then(|p| data.pointer(p))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let email = data
        .pointer(&mapping.email_pointer)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("no address at {}", mapping.email_pointer))?;
    let email = EmailAddress::parse(email).map_err(|why| format!("the address {why}"))?;
    let user = match text(&mapping.user_pointer) {
        Some(user) => Some(
            Uuid::parse_str(&user).map_err(|_| format!("the user id {user:?} is not a UUID"))?,
        ),
        None => None,
    };
    let template = TemplateKey::parse(&mapping.template_key)
        .map_err(|why| format!("template key {:?} {why}", mapping.template_key))?;
    if !data.is_object() {
        return Err("its data is not an object".into());
    }
    Ok(SendRequest {
        template,
        locale: text(&mapping.locale_pointer).and_then(|l| Locale::parse(&l).ok()),
        data: data.clone(),
        recipients: vec![Recipient {
            email: Some(email),
            name: text(&mapping.name_pointer),
            user,
        }],
        category: mapping.category.as_deref().and_then(Category::parse),
        send_at: None,
        headers: Default::default(),
        tags: vec![mapping.event_type.clone()],
        metadata: Default::default(),
        attachments: Vec::new(),
        origin: Origin {
            request_id: kit::request_id::current(),
            sender: None,
            event: Some((event_id, mapping.event_type.clone())),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> EventMail {
        EventMail {
            event_type: "auth.email.verification_requested".into(),
            template_key: "auth.verify_email".into(),
            email_pointer: "/email".into(),
            name_pointer: Some("/name".into()),
            user_pointer: Some("/user".into()),
            locale_pointer: Some("/locale".into()),
            category: None,
        }
    }

    #[test]
    fn the_recipient_comes_from_the_pointers() {
        let user = Uuid::now_v7();
        let data = serde_json::json!({"email": "ada@example.com", "name": "Ada", "user": user, "locale": "es"});
        let request = request_for(&mapping(), Uuid::now_v7(), &data).unwrap();
        let recipient = &request.recipients[0];
        assert_eq!(
            recipient.email.as_ref().unwrap().as_str(),
            "ada@example.com"
        );
        assert_eq!(recipient.name.as_deref(), Some("Ada"));
        assert_eq!(recipient.user, Some(user));
        assert_eq!(request.locale.unwrap().as_str(), "es");
        assert_eq!(request.tags, ["auth.email.verification_requested"]);
    }

    #[test]
    fn an_event_without_a_usable_address_is_refused() {
        let no_address = serde_json::json!({"name": "Ada"});
        assert!(
            request_for(&mapping(), Uuid::now_v7(), &no_address)
                .unwrap_err()
                .contains("/email")
        );
        let bad = serde_json::json!({"email": "not an address"});
        assert!(request_for(&mapping(), Uuid::now_v7(), &bad).is_err());
        let bad_user = serde_json::json!({"email": "a@example.com", "user": "nope"});
        assert!(
            request_for(&mapping(), Uuid::now_v7(), &bad_user)
                .unwrap_err()
                .contains("UUID")
        );
    }
}
