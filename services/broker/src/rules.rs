//! Built-in authorization rules: decided from the session's auth fields and the topic alone, so
//! the common cases (a user's private topic, an admin feed, a public feed) need no HTTP call.

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::ServiceConfig;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Any session (authentication still applies when the service requires it).
    Public,
    /// The topic names the subscriber: it is the user's UUID or ends with `_<uuid>`
    /// (`notifications.user_<uuid>`).
    Owner,
    /// The session's `roles` include this one.
    Role(String),
}

impl Rule {
    pub fn parse(text: &str) -> Result<Rule, String> {
        match text.trim() {
            "public" => Ok(Rule::Public),
            "owner" => Ok(Rule::Owner),
            other => match other.strip_prefix("role:") {
                Some(role) if !role.trim().is_empty() => Ok(Rule::Role(role.trim().to_owned())),
                _ => Err(format!(
                    "unknown rule {text:?} (expected public, owner or role:<name>)"
                )),
            },
        }
    }

    /// Whether a session with `auth` fields may subscribe to `topic` (the part after
    /// `<service>.`).
    pub fn allows(&self, auth: &Map<String, Value>, topic: &str) -> bool {
        match self {
            Rule::Public => true,
            Rule::Owner => {
                let Some(user) = auth
                    .get("user_id")
                    .and_then(Value::as_str)
                    .and_then(|id| Uuid::parse_str(id).ok())
                else {
                    return false;
                };
                let named = topic.rsplit_once('_').map_or(topic, |(_, tail)| tail);
                Uuid::parse_str(named).is_ok_and(|named| named == user)
            }
            Rule::Role(role) => auth
                .get("roles")
                .and_then(Value::as_array)
                .is_some_and(|roles| roles.iter().any(|r| r.as_str() == Some(role))),
        }
    }
}

/// A configured service with its rule parsed.
pub struct ServiceRules {
    pub name: String,
    pub config: ServiceConfig,
    pub rule: Option<Rule>,
}

impl ServiceRules {
    /// Validates one `services.<name>` entry; errors name the offending key.
    pub fn new(name: &str, config: ServiceConfig) -> Result<ServiceRules, String> {
        let key = |field: &str| format!("app.services.{name}.{field}");
        if name.is_empty() || name.contains('.') {
            return Err(format!(
                "app.services: {name:?} is not a service name (no dots)"
            ));
        }
        let rule = match &config.authorization {
            Some(text) => {
                Some(Rule::parse(text).map_err(|err| format!("{}: {err}", key("authorization")))?)
            }
            None => None,
        };
        let urls = [
            ("authorizer", &config.authorizer),
            ("before_subscribe", &config.before_subscribe),
            ("on_subscribe", &config.on_subscribe),
            ("on_message", &config.on_message),
            ("before_unsubscribe", &config.before_unsubscribe),
            ("on_unsubscribe", &config.on_unsubscribe),
            ("on_authorization_change", &config.on_authorization_change),
            ("on_heartbeat", &config.on_heartbeat),
        ];
        for (field, url) in urls {
            if let Some(url) = url {
                check_url(url).map_err(|err| format!("{}: {err}", key(field)))?;
            }
        }
        if config
            .authorization_renewal_period
            .is_some_and(|p| p.is_zero())
        {
            return Err(format!(
                "{}: must be greater than zero",
                key("authorization_renewal_period")
            ));
        }
        if config.heartbeat_period.is_some_and(|p| p.is_zero()) {
            return Err(format!(
                "{}: must be greater than zero",
                key("heartbeat_period")
            ));
        }
        Ok(ServiceRules {
            name: name.to_owned(),
            config,
            rule,
        })
    }
}

/// An `http(s)://` URL.
pub fn check_url(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(format!("{url:?} is not an http(s) URL")),
        Err(err) => Err(format!("{url:?} is not a URL ({err})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auth(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn rules_parse_and_decide() {
        assert_eq!(Rule::parse("public"), Ok(Rule::Public));
        assert_eq!(Rule::parse("role:admin"), Ok(Rule::Role("admin".into())));
        assert!(Rule::parse("role:").is_err());
        assert!(Rule::parse("everyone").is_err());

        let ada = "0193a000-0000-7000-8000-000000000001";
        let session = auth(json!({"user_id": ada, "roles": ["admin"]}));
        assert!(Rule::Owner.allows(&session, &format!("user_{ada}")));
        assert!(Rule::Owner.allows(&session, ada));
        assert!(Rule::Owner.allows(&session, &format!("user_{}", ada.to_uppercase())));
        assert!(!Rule::Owner.allows(&session, "user_0193a000-0000-7000-8000-000000000002"));
        assert!(!Rule::Owner.allows(&session, "user_"));
        assert!(!Rule::Owner.allows(&Map::new(), &format!("user_{ada}")));
        assert!(Rule::Role("admin".into()).allows(&session, "feed"));
        assert!(!Rule::Role("staff".into()).allows(&session, "feed"));
        assert!(!Rule::Role("admin".into()).allows(&Map::new(), "feed"));
    }
}
