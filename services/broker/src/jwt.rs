//! `{"event":"auth","method":"jwt","token":"<access token>"}`: access tokens verified locally
//! with the identity crate (EdDSA signature against auth's JWKS or a configured key, `iss`,
//! `aud`, `exp`/`nbf`, then session revocation in Redis), so no HTTP round trip is needed per
//! connection. Settings are kit's `auth` section, shared with every service (revocation keys
//! under `auth.revocation_prefix`, as auth writes them).

use kit::config::{AuthSettings, SecretUrl};
use serde_json::{Map, Value};

use crate::protocol;

pub struct Jwt {
    verifier: identity::Verifier,
    revocations: Option<identity::Revocations>,
}

impl Jwt {
    pub fn new(auth: &AuthSettings, redis: Option<&SecretUrl>) -> anyhow::Result<Jwt> {
        let verifier = identity::Verifier::new(auth)?;
        let revocations = redis
            .map(|url| {
                identity::Revocations::new(url, auth.revocation_timeout, auth.revocation_check)
                    .map(|r| r.with_prefix(auth.revocation_prefix.clone()))
            })
            .transpose()?;
        Ok(Jwt {
            verifier,
            revocations,
        })
    }

    /// The claims of a valid, unrevoked token; otherwise the error string for the client.
    pub async fn authenticate(&self, token: &str) -> Result<identity::Claims, &'static str> {
        let checked = async {
            let claims = self.verifier.verify(token).await?;
            if let Some(revocations) = &self.revocations {
                revocations.check(&claims).await?;
            }
            Ok::<_, identity::AuthError>(claims)
        };
        checked.await.map_err(|err| match err {
            // The token may be fine: the check itself could not be made.
            identity::AuthError::KeysUnavailable(reason)
            | identity::AuthError::RevocationUnavailable(reason) => {
                tracing::warn!(reason, "cannot verify a websocket token");
                protocol::ERR_SERVICE_UNAVAILABLE
            }
            other => {
                tracing::debug!(error = %other, "refused a websocket token");
                protocol::ERR_AUTH_FAILED
            }
        })
    }

    /// Whether Redis now holds a revocation for an accepted token (false when it cannot be
    /// asked: the connection keeps what it had).
    pub async fn is_revoked(&self, claims: &identity::Claims) -> bool {
        match &self.revocations {
            Some(revocations) => matches!(
                revocations.check(claims).await,
                Err(identity::AuthError::Revoked)
            ),
            None => false,
        }
    }
}

/// A session's auth fields for a token: `user_id` (`sub`), `session_id` (`sid`, when the
/// token has one) and `roles`.
pub fn auth_fields(claims: &identity::Claims) -> Map<String, Value> {
    let mut auth = Map::new();
    auth.insert("user_id".into(), claims.sub.to_string().into());
    if let Some(sid) = claims.sid {
        auth.insert("session_id".into(), sid.to_string().into());
    }
    auth.insert(
        "roles".into(),
        Value::Array(claims.roles.iter().cloned().map(Value::String).collect()),
    );
    auth
}
