//! `{"event":"auth","method":"jwt","token":"<access token>"}`: access tokens verified locally
//! with the identity crate (EdDSA signature against auth's JWKS or a configured key, `iss`,
//! `aud`, `exp`/`nbf`, then session revocation in Redis), so no HTTP round trip is needed per
//! connection. Settings are kit's `auth` section, shared with every service.

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
            })
            .transpose()?;
        Ok(Jwt {
            verifier,
            revocations,
        })
    }

    /// The session's auth fields for a valid, unrevoked token: `user_id`, `session_id` (when
    /// the token has one) and `roles`; otherwise the error string for the client.
    pub async fn authenticate(&self, token: &str) -> Result<Map<String, Value>, &'static str> {
        let checked = async {
            let claims = self.verifier.verify(token).await?;
            if let Some(revocations) = &self.revocations {
                revocations.check(&claims).await?;
            }
            Ok::<_, identity::AuthError>(claims)
        };
        let claims = checked.await.map_err(|err| match err {
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
        })?;
        let mut auth = Map::new();
        auth.insert("user_id".into(), claims.sub.to_string().into());
        if let Some(sid) = claims.sid {
            auth.insert("session_id".into(), sid.to_string().into());
        }
        auth.insert(
            "roles".into(),
            Value::Array(claims.roles.into_iter().map(Value::String).collect()),
        );
        Ok(auth)
    }
}
