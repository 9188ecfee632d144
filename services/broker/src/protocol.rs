//! socketshark's client protocol: event names, the exact error strings (a public contract that
//! frontends match on) and the shapes of the broker's replies.

use serde_json::{Map, Value};

/// Authentication method used when an `auth` event names none.
pub const DEFAULT_AUTH_METHOD: &str = "ticket";
/// Longest event name accepted (in characters): longer ones are not echoed back.
pub const MAX_EVENT_LEN: usize = 40;
/// Longest ping payload echoed in the pong (in characters).
pub const MAX_PING_DATA_LEN: usize = 128;

pub const ERR_INVALID_EVENT: &str = "Messages must be JSON and contain an event field.";
pub const ERR_UNHANDLED_EXCEPTION: &str = "Unhandled exception.";
pub const ERR_EVENT_NOT_FOUND: &str = "Event not found.";
pub const ERR_SERVICE_UNAVAILABLE: &str = "Service unavailable.";
pub const ERR_AUTH_UNSUPPORTED: &str = "Authentication method unsupported.";
pub const ERR_UNAUTHORIZED: &str = "Unauthorized.";
pub const ERR_NEEDS_TICKET: &str = "Must specify ticket.";
pub const ERR_AUTH_FAILED: &str = "Authentication failed.";
pub const ERR_AUTH_REQUIRED: &str = "Authentication required.";
pub const ERR_INVALID_SUBSCRIPTION_FORMAT: &str = "Invalid subscription format.";
pub const ERR_INVALID_SERVICE: &str = "Invalid service.";
pub const ERR_ALREADY_SUBSCRIBED: &str = "Already subscribed.";
pub const ERR_SUBSCRIPTION_NOT_FOUND: &str = "Subscription does not exist.";
/// Ours (socketshark has no cap): a subscribe past `limits.max_subscriptions`.
pub const ERR_TOO_MANY_SUBSCRIPTIONS: &str = "Too many subscriptions.";
/// Ours: `{"event":"auth","method":"jwt"}` without a token.
pub const ERR_NEEDS_TOKEN: &str = "Must specify token.";
/// Ours: a session authenticated with a token presents another user's token.
pub const ERR_OTHER_USER: &str = "Token belongs to another user.";
/// Ours, in the unsubscribe push: the session's token expired without a new one.
pub const ERR_TOKEN_EXPIRED: &str = "Token expired.";
/// Ours, in the unsubscribe push: auth revoked the session's token (logout, logout everywhere,
/// refresh-token reuse, account disabled or deleted).
pub const ERR_SESSION_REVOKED: &str = "Session revoked.";

/// Websocket close codes the broker sends.
pub mod close {
    /// SIGTERM: reconnect (to another process).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame over `limits.max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    /// Outgoing queue overflow, or no pong in time.
    pub const POLICY: u16 = 1008;
    /// `limits.max_connections` reached or Redis unusable at connect time.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// A client event, parsed from one text frame.
pub enum ClientEvent {
    /// Not JSON, not an object, no (or no string) `event`, or a name over 40 characters.
    Invalid,
    Known(Event, Map<String, Value>),
    /// A well-formed event with a name the broker does not know.
    Unknown(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Auth,
    Subscribe,
    Message,
    Unsubscribe,
    Ping,
}

impl Event {
    pub fn name(self) -> &'static str {
        match self {
            Event::Auth => "auth",
            Event::Subscribe => "subscribe",
            Event::Message => "message",
            Event::Unsubscribe => "unsubscribe",
            Event::Ping => "ping",
        }
    }
}

impl ClientEvent {
    pub fn parse(text: &str) -> ClientEvent {
        let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(text) else {
            return ClientEvent::Invalid;
        };
        let Some(Value::String(name)) = fields.get("event") else {
            return ClientEvent::Invalid;
        };
        // Long names are not echoed back (socketshark's guard against reflecting big input).
        if name.chars().count() > MAX_EVENT_LEN {
            return ClientEvent::Invalid;
        }
        let event = match name.as_str() {
            "auth" => Event::Auth,
            "subscribe" => Event::Subscribe,
            "message" => Event::Message,
            "unsubscribe" => Event::Unsubscribe,
            "ping" => Event::Ping,
            _ => return ClientEvent::Unknown(name.clone()),
        };
        ClientEvent::Known(event, fields)
    }
}

/// `{"status":"error","error":"Messages must be JSON and contain an event field."}`
pub fn invalid_event() -> String {
    r#"{"status":"error","error":"Messages must be JSON and contain an event field."}"#.to_owned()
}

/// `{"event":"pong","data":...}`: a string ping payload (up to 128 characters) is echoed,
/// anything else becomes `null`.
pub fn pong(data: Option<&Value>) -> String {
    let echoed = match data {
        Some(Value::String(text)) => Value::String(text.chars().take(MAX_PING_DATA_LEN).collect()),
        _ => Value::Null,
    };
    let mut reply = Map::new();
    reply.insert("event".into(), "pong".into());
    reply.insert("data".into(), echoed);
    Value::Object(reply).to_string()
}

/// A reply to a client event: `{"event":..,"status":"ok"|"error","error"?,"data"?,
/// ...extra fields, "subscription"?}`.
pub struct Reply {
    fields: Map<String, Value>,
}

impl Reply {
    pub fn ok(event: &str) -> Reply {
        let mut fields = Map::new();
        fields.insert("event".into(), event.into());
        fields.insert("status".into(), "ok".into());
        Reply { fields }
    }

    pub fn error(event: &str, error: impl Into<Value>) -> Reply {
        let mut fields = Map::new();
        fields.insert("event".into(), event.into());
        fields.insert("status".into(), "error".into());
        fields.insert("error".into(), error.into());
        Reply { fields }
    }

    /// Adds `data` unless it is absent or `null` (socketshark omits a `None` data).
    pub fn data(mut self, data: Option<Value>) -> Reply {
        if let Some(data) = data.filter(|d| !d.is_null()) {
            self.fields.insert("data".into(), data);
        }
        self
    }

    /// The subscription's extra fields (and, for subscription events, its name).
    pub fn extend(mut self, extra: &Map<String, Value>) -> Reply {
        for (key, value) in extra {
            self.fields.insert(key.clone(), value.clone());
        }
        self
    }

    pub fn field(mut self, key: &str, value: Value) -> Reply {
        self.fields.insert(key.into(), value);
        self
    }

    pub fn into_text(self) -> String {
        Value::Object(self.fields).to_string()
    }
}

/// The push sent when the broker ends a subscription itself (re-authorization refused):
/// `{"event":"unsubscribe","subscription":..,"error":..,"data"?,...extra fields}`.
pub fn forced_unsubscribe(
    subscription: &str,
    error: Value,
    data: Option<Value>,
    extra: &Map<String, Value>,
) -> String {
    let mut fields = Map::new();
    fields.insert("event".into(), "unsubscribe".into());
    fields.insert("subscription".into(), subscription.into());
    if let Some(data) = data.filter(|d| !d.is_null()) {
        fields.insert("data".into(), data);
    }
    fields.insert("error".into(), error);
    for (key, value) in extra {
        fields.insert(key.clone(), value.clone());
    }
    Value::Object(fields).to_string()
}

/// Whether a JSON value is "falsy" as Python sees it (`not value`): socketshark tests tickets
/// and subscription names that way.
pub fn is_falsy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_classified_like_socketshark() {
        for invalid in [
            "",
            "hello",
            "null",
            "[]",
            "{}",
            r#"{"event":null}"#,
            r#"{"event":1}"#,
        ] {
            assert!(
                matches!(ClientEvent::parse(invalid), ClientEvent::Invalid),
                "{invalid}"
            );
        }
        let long = format!(r#"{{"event":"{}"}}"#, "x".repeat(41));
        assert!(matches!(ClientEvent::parse(&long), ClientEvent::Invalid));
        let forty = format!(r#"{{"event":"{}"}}"#, "x".repeat(40));
        assert!(matches!(
            ClientEvent::parse(&forty),
            ClientEvent::Unknown(_)
        ));
        assert!(
            matches!(ClientEvent::parse(r#"{"event":""}"#), ClientEvent::Unknown(name) if name.is_empty())
        );
        assert!(matches!(
            ClientEvent::parse(r#"{"event":"ping"}"#),
            ClientEvent::Known(Event::Ping, _)
        ));
    }

    #[test]
    fn pong_echoes_only_strings_cut_to_128() {
        let pong_of = |data: Value| -> Value { serde_json::from_str(&pong(Some(&data))).unwrap() };
        assert_eq!(pong_of(json!("x")), json!({"event":"pong","data":"x"}));
        assert_eq!(pong_of(json!(123)), json!({"event":"pong","data":null}));
        let long = "é".repeat(200);
        assert_eq!(
            pong_of(json!(long))["data"]
                .as_str()
                .unwrap()
                .chars()
                .count(),
            128
        );
        assert_eq!(
            serde_json::from_str::<Value>(&pong(None)).unwrap(),
            json!({"event":"pong","data":null})
        );
    }

    #[test]
    fn falsiness_follows_python() {
        assert!(is_falsy(None));
        assert!(is_falsy(Some(&json!(""))));
        assert!(is_falsy(Some(&json!(0))));
        assert!(is_falsy(Some(&json!(false))));
        assert!(!is_falsy(Some(&json!("t"))));
        assert!(!is_falsy(Some(&json!(1))));
    }
}
