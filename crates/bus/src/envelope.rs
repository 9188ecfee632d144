//! The CloudEvents 1.0 envelope, JSON structured mode: the whole event (attributes and `data`)
//! is the message body, with content type `application/cloudevents+json`.
//!
//! ```json
//! {"specversion":"1.0","id":"<uuidv7>","source":"/auth","type":"auth.user.registered",
//!  "time":"2026-11-21T10:00:00.000000Z","subject":"<entity uuid>",
//!  "datacontenttype":"application/json","dataversion":1,"requestid":"...",
//!  "actor":"<user uuid>","data":{...}}
//! ```

use chrono::{DateTime, Utc};
use contracts::Event;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only CloudEvents version produced and accepted.
pub const SPECVERSION: &str = "1.0";
/// AMQP content type of a structured-mode CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
/// The `datacontenttype` of every event: `data` is JSON.
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// A CloudEvent with its `data` as `D` (raw JSON by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent<D = serde_json::Value> {
    pub specversion: String,
    pub id: Uuid,
    /// `/<producing service>`.
    pub source: String,
    /// `<service>.<entity>.<past-tense verb>`, also the routing key.
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<DateTime<Utc>>,
    /// The entity the event is about, usually its UUID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacontenttype: Option<String>,
    /// Schema version of `data`; absent counts as 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataversion: Option<u32>,
    /// The request that caused the event (`X-Request-Id`), carried into the consumer's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requestid: Option<String>,
    /// The user who caused the event, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Uuid>,
    pub data: D,
}

impl<'e, E: Event> CloudEvent<&'e E> {
    /// A new event (id UUIDv7, time now, request id of the current request if any) about
    /// `data`, caused by `actor`.
    pub fn new(data: &'e E, actor: Option<Uuid>) -> Self {
        CloudEvent {
            specversion: SPECVERSION.to_owned(),
            id: Uuid::now_v7(),
            source: format!("/{}", contracts::producer(E::TYPE)),
            event_type: E::TYPE.to_owned(),
            time: Some(Utc::now()),
            subject: data.subject().map(|s| s.to_string()),
            datacontenttype: Some(DATA_CONTENT_TYPE.to_owned()),
            dataversion: Some(E::DATAVERSION),
            requestid: kit::request_id::current(),
            actor,
            data,
        }
    }
}

impl<D> CloudEvent<D> {
    /// `dataversion`, 1 when absent.
    pub fn version(&self) -> u32 {
        self.dataversion.unwrap_or(1)
    }
}

/// Why an incoming message is not an event this consumer can hand to a handler. Each is
/// final: retrying cannot help, so such a message is parked at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The body is not JSON.
    InvalidJson(String),
    /// JSON, but not a CloudEvents 1.0 envelope as we write them.
    NotCloudEvent(String),
    /// No handler for this `type`.
    UnknownType(String),
    /// A handler for the type, but not for this `dataversion`.
    UnsupportedDataversion(String, u32),
    /// `data` does not match the payload type of the handler.
    InvalidData(String),
}

impl Rejection {
    /// Stable snake_case reason, written to the parked message's `x-bus-reason` header.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::InvalidJson(_) => "invalid_json",
            Rejection::NotCloudEvent(_) => "not_cloudevent",
            Rejection::UnknownType(_) => "unknown_type",
            Rejection::UnsupportedDataversion(..) => "unsupported_dataversion",
            Rejection::InvalidData(_) => "invalid_data",
        }
    }

    /// Human-readable detail, written to the `x-bus-error` header.
    pub fn detail(&self) -> String {
        match self {
            Rejection::InvalidJson(err) => format!("body is not JSON: {err}"),
            Rejection::NotCloudEvent(err) => format!("not a CloudEvents 1.0 envelope: {err}"),
            Rejection::UnknownType(t) => format!("no handler for event type {t:?}"),
            Rejection::UnsupportedDataversion(t, v) => {
                format!("no handler for dataversion {v} of {t:?}")
            }
            Rejection::InvalidData(err) => format!("data does not match the contract: {err}"),
        }
    }
}

/// Reads a message body as a CloudEvent with raw `data`.
pub fn decode(body: &[u8]) -> Result<CloudEvent, Rejection> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|err| Rejection::InvalidJson(err.to_string()))?;
    let event: CloudEvent =
        serde_json::from_value(value).map_err(|err| Rejection::NotCloudEvent(err.to_string()))?;
    if event.specversion != SPECVERSION {
        return Err(Rejection::NotCloudEvent(format!(
            "specversion {:?} (expected {SPECVERSION:?})",
            event.specversion
        )));
    }
    if event.event_type.is_empty() || event.source.is_empty() {
        return Err(Rejection::NotCloudEvent("empty type or source".into()));
    }
    if let Some(content_type) = &event.datacontenttype
        && !content_type.starts_with(DATA_CONTENT_TYPE)
    {
        return Err(Rejection::NotCloudEvent(format!(
            "datacontenttype {content_type:?} (expected {DATA_CONTENT_TYPE:?})"
        )));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Thing {
        id: Uuid,
    }

    impl Event for Thing {
        const TYPE: &'static str = "shop.thing.happened";
        const DATAVERSION: u32 = 2;
        fn subject(&self) -> Option<Uuid> {
            Some(self.id)
        }
    }

    #[test]
    fn a_new_event_is_a_complete_envelope() {
        let thing = Thing { id: Uuid::now_v7() };
        let actor = Uuid::now_v7();
        let json = serde_json::to_value(CloudEvent::new(&thing, Some(actor))).unwrap();
        assert_eq!(json["specversion"], "1.0");
        assert_eq!(json["type"], "shop.thing.happened");
        assert_eq!(json["source"], "/shop");
        assert_eq!(json["subject"], thing.id.to_string());
        assert_eq!(json["dataversion"], 2);
        assert_eq!(json["datacontenttype"], "application/json");
        assert_eq!(json["actor"], actor.to_string());
        assert_eq!(json["data"]["id"], thing.id.to_string());
        let id = Uuid::parse_str(json["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let decoded = decode(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(decoded.id, id);
        assert_eq!(decoded.version(), 2);
    }

    #[test]
    fn bad_messages_are_told_apart() {
        assert_eq!(decode(b"{nope").unwrap_err().reason(), "invalid_json");
        assert_eq!(decode(b"[1,2]").unwrap_err().reason(), "not_cloudevent");
        let missing_id = br#"{"specversion":"1.0","source":"/a","type":"a.b.c","data":{}}"#;
        assert_eq!(decode(missing_id).unwrap_err().reason(), "not_cloudevent");
        let old = br#"{"specversion":"0.3","id":"0193a000-0000-7000-8000-000000000001","source":"/a","type":"a.b.c","data":{}}"#;
        assert_eq!(decode(old).unwrap_err().reason(), "not_cloudevent");
        let ok = br#"{"specversion":"1.0","id":"0193a000-0000-7000-8000-000000000001","source":"/a","type":"a.b.c","data":null}"#;
        assert_eq!(decode(ok).unwrap().version(), 1);
    }
}
