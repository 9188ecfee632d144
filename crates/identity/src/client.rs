//! Calling another service: the one way a service presents its own token. The token comes from
//! the auth service's client-credentials grant, is reused until shortly before it expires, is
//! fetched again after the called service answers 401 (rotated key, revoked client), and every
//! call carries the current request id (`X-Request-Id`), so one user action can be followed
//! across services in the logs.
//!
//! ```ignore
//! let client = identity::ServiceClient::new(settings.app.payments_client.clone(), http);
//! let response = client
//!     .send(|http| http.post(format!("{base}/api/payments/v1/payments")).json(&body))
//!     .await?;
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A token is replaced this long before it expires (or at half its lifetime, if shorter).
const RENEW_BEFORE: Duration = Duration::from_secs(30);

/// How this service gets its token: a client registered at auth (`auth clients create`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    /// Auth's token endpoint (`POST /api/auth/v1/token`).
    pub token_url: String,
    pub client_id: String,
    pub client_secret: kit::Secret,
    /// Scopes to ask for (space-separated); none = every scope the client was granted.
    #[serde(default)]
    pub scope: Option<String>,
}

/// Why a call could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot get a service token from {url}: {reason}")]
    Token { url: String, reason: String },
    #[error("the call failed: {0}")]
    Http(#[from] reqwest::Error),
}

/// A token and when to replace it.
struct Cached {
    token: String,
    renew_at: Instant,
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    expires_in: u64,
}

/// This service's identity towards others: its cached token and one pooled HTTP client.
pub struct ServiceClient {
    http: reqwest::Client,
    credentials: ClientCredentials,
    cached: Mutex<Option<Cached>>,
}

impl ServiceClient {
    /// Fetches tokens with `credentials` and calls with `http` (the service's pooled client,
    /// with its timeouts).
    pub fn new(credentials: ClientCredentials, http: reqwest::Client) -> Self {
        Self {
            http,
            credentials,
            cached: Mutex::new(None),
        }
    }

    /// The HTTP client calls are made with.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A valid token: the cached one, or a new one from auth. Concurrent callers wait for one
    /// fetch rather than each asking auth.
    pub async fn token(&self) -> Result<String, CallError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && Instant::now() < token.renew_at
        {
            return Ok(token.token.clone());
        }
        let granted = self.fetch().await.map_err(|reason| CallError::Token {
            url: self.credentials.token_url.clone(),
            reason,
        })?;
        let lifetime = Duration::from_secs(granted.expires_in);
        let renew_at = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE).max(lifetime / 2);
        *cached = Some(Cached {
            token: granted.access_token.clone(),
            renew_at,
        });
        Ok(granted.access_token)
    }

    /// Forgets the cached token (the called service refused it): the next call fetches anew.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    /// Sends the request `build` makes with the service token and the current request id;
    /// after a 401, once more with a fresh token. Other statuses are the caller's to read.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let response = self.send_once(&build).await?;
        if response.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        // The token was rotated away, revoked or expired early: one fresh try, at once.
        self.invalidate().await;
        self.send_once(&build).await
    }

    async fn send_once(
        &self,
        build: &impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CallError> {
        let token = self.token().await?;
        let mut request = build(&self.http).bearer_auth(token);
        if let Some(id) = kit::request_id::current() {
            request = request.header(kit::request_id::HEADER.clone(), id);
        }
        Ok(request.send().await?)
    }

    async fn fetch(&self) -> Result<Granted, String> {
        let mut body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": self.credentials.client_id,
            "client_secret": self.credentials.client_secret.expose(),
        });
        if let Some(scope) = &self.credentials.scope {
            body["scope"] = scope.clone().into();
        }
        let mut request = self.http.post(&self.credentials.token_url).json(&body);
        if let Some(id) = kit::request_id::current() {
            request = request.header(kit::request_id::HEADER.clone(), id);
        }
        let response = request.send().await.map_err(|err| err.to_string())?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let shown: String = text.chars().take(200).collect();
            return Err(format!("the token endpoint answered {status}: {shown}"));
        }
        response
            .json::<Granted>()
            .await
            .map_err(|err| format!("the token endpoint's answer is not a token: {err}"))
    }
}
