//! The broker's own service token (OAuth client-credentials grant against auth's token
//! endpoint), presented to ticket validation. Fetched on first use, reused until shortly before
//! it expires, fetched again after a 401.

use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::ClientCredentials;

/// A token is replaced this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

pub struct ServiceToken {
    credentials: ClientCredentials,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct Granted {
    access_token: String,
    expires_in: u64,
}

impl ServiceToken {
    pub fn new(credentials: ClientCredentials) -> ServiceToken {
        ServiceToken {
            credentials,
            cached: Mutex::new(None),
        }
    }

    /// A valid token, fetching one when none is cached (None when auth cannot give one; the
    /// cause is logged).
    pub async fn get(&self, http: &reqwest::Client, timeout: Duration) -> Option<String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref()
            && Instant::now() < *renew_at
        {
            return Some(token.clone());
        }
        let body = serde_json::json!({
            "grant_type": "client_credentials",
            "client_id": self.credentials.client_id,
            "client_secret": self.credentials.client_secret.expose(),
        });
        let answer = http
            .post(&self.credentials.token_url)
            .timeout(timeout)
            .json(&body)
            .send()
            .await;
        let granted = match answer {
            Ok(response) if response.status().is_success() => {
                response.json::<Granted>().await.map_err(|e| e.to_string())
            }
            Ok(response) => Err(format!("token endpoint answered {}", response.status())),
            Err(err) => Err(err.to_string()),
        };
        match granted {
            Ok(granted) => {
                let lifetime = Duration::from_secs(granted.expires_in);
                let renew_at =
                    Instant::now() + lifetime.saturating_sub(RENEW_BEFORE).max(lifetime / 2);
                *cached = Some((granted.access_token.clone(), renew_at));
                Some(granted.access_token)
            }
            Err(error) => {
                tracing::warn!(url = %self.credentials.token_url, error, "cannot get the broker's service token");
                None
            }
        }
    }

    /// The cached token was refused: the next call fetches a new one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}
