//! The claims of a Hatchery access token.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The role every service token carries, and no user token may carry.
pub const SERVICE_ROLE: &str = "service";
/// The role of platform administrators.
pub const ADMIN_ROLE: &str = "admin";

/// What a verified token says. Times are Unix seconds.
///
/// A user token has `sub` = the user's UUID, `sid` = the login session, and the user's
/// `email`, `name`, `email_verified` and `roles`. A service token (OAuth client credentials)
/// has `sub` = the client's UUID, `roles: ["service"]` and a space-separated `scope`, and no
/// session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the auth service (`auth.issuer`, default `hatchery-auth`).
    pub iss: String,
    /// Audience(s): a string or an array on the wire; must contain `auth.audience`.
    #[serde(
        serialize_with = "one_or_many::serialize",
        deserialize_with = "one_or_many::deserialize"
    )]
    pub aud: Vec<String>,
    /// The user (or, for service tokens, the client) UUID: the same in every service.
    pub sub: Uuid,
    /// The login session, checked against revocation on every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// This token's id.
    pub jti: Uuid,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub email_verified: bool,
    /// Space-separated OAuth scopes of a service token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl Claims {
    /// A service (client-credentials) token rather than a user's.
    pub fn is_service(&self) -> bool {
        self.has_role(SERVICE_ROLE)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.as_deref().unwrap_or("").split_ascii_whitespace()
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes().any(|s| s == scope)
    }

    pub fn issued_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.iat, 0).unwrap_or(DateTime::UNIX_EPOCH)
    }

    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or(DateTime::UNIX_EPOCH)
    }

    /// Time until `exp` (zero once expired): the TTL the auth service gives a revocation
    /// marker for this token's session.
    pub fn remaining_lifetime(&self) -> Duration {
        let left = self.exp - Utc::now().timestamp();
        Duration::from_secs(u64::try_from(left).unwrap_or(0))
    }
}

/// `aud` is a string or an array of strings (RFC 7519 §4.1.3); one audience is written as a
/// plain string.
mod one_or_many {
    use super::*;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }

    pub fn serialize<S: Serializer>(value: &[String], serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            [one] => serializer.serialize_str(one),
            many => many.serialize(serializer),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<String>, D::Error> {
        Ok(match OneOrMany::deserialize(deserializer)? {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_reads_both_forms_and_writes_one_as_a_string() {
        let base = serde_json::json!({
            "iss": "hatchery-auth", "sub": Uuid::nil(), "jti": Uuid::nil(),
            "iat": 1, "exp": 2, "scope": "payments:read payments:write", "roles": ["service"],
        });
        let mut one = base.clone();
        one["aud"] = "hatchery".into();
        let mut many = base;
        many["aud"] = serde_json::json!(["hatchery", "other"]);
        let one: Claims = serde_json::from_value(one).unwrap();
        let many: Claims = serde_json::from_value(many).unwrap();
        assert_eq!(one.aud, ["hatchery"]);
        assert_eq!(many.aud, ["hatchery", "other"]);
        assert_eq!(serde_json::to_value(&one).unwrap()["aud"], "hatchery");
        assert!(one.is_service() && one.has_scope("payments:write") && !one.has_scope("payments"));
    }
}
