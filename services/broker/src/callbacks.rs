//! HTTP calls to services (ticket validation, authorizers, subscription callbacks) with
//! socketshark's request/response shape: a JSON object POSTed, a JSON object with `status`
//! answered. One pooled client for the whole process; every attempt has a timeout, failures are
//! retried, a 429 waits for its rate-limit header, and when every attempt failed the answer is
//! `{"status":"error","error":"Service unavailable."}`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::config;
use crate::protocol::ERR_SERVICE_UNAVAILABLE;
use identity::ServiceClient;

/// Longest wait a 429's rate-limit header may ask for.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(3600);

pub struct Callbacks {
    client: reqwest::Client,
    options: config::Callbacks,
}

impl Callbacks {
    pub fn new(options: config::Callbacks) -> anyhow::Result<Callbacks> {
        let client = reqwest::Client::builder()
            .connect_timeout(options.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("hatchery-broker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Callbacks { client, options })
    }

    /// POSTs `body` to `url` and returns the service's answer (a JSON object), or the
    /// `Service unavailable.` error once every attempt failed.
    pub async fn post(&self, url: &str, body: &Value, request_id: &str) -> Map<String, Value> {
        self.post_as(url, body, request_id, None).await
    }

    /// [`Self::post`] presenting the broker's service token (a refused token is replaced and
    /// the call made again once).
    pub async fn post_as(
        &self,
        url: &str,
        body: &Value,
        request_id: &str,
        token: Option<&ServiceClient>,
    ) -> Map<String, Value> {
        let tries = self.options.tries.max(1);
        let mut wait = self.options.wait;
        let mut renewed = false;
        let mut attempt = 0;
        while attempt < tries {
            if attempt > 0 {
                tokio::time::sleep(wait).await;
            }
            attempt += 1;
            wait = self.options.wait;
            let mut request = self
                .client
                .post(url)
                .timeout(self.options.timeout)
                .header("x-request-id", request_id)
                .json(body);
            if let Some(token) = token {
                match token.token().await {
                    Ok(bearer) => request = request.bearer_auth(bearer),
                    Err(err) => {
                        tracing::warn!(attempt, error = %err, "cannot get the broker's service token");
                        continue;
                    }
                }
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) => {
                    tracing::warn!(url = %scrub(url), attempt, error = %err, "callback failed");
                    continue;
                }
            };
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                && let Some(token) = token
                && !renewed
            {
                // Expired or rotated away: one more try with a fresh token, at once.
                token.invalidate().await;
                renewed = true;
                attempt -= 1;
                wait = Duration::ZERO;
                continue;
            }
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                wait = self.rate_limit_wait(&response);
                tracing::warn!(url = %scrub(url), attempt, wait_ms = wait.as_millis() as u64, "callback rate limited");
                continue;
            }
            if !status.is_success() {
                tracing::warn!(url = %scrub(url), attempt, status = status.as_u16(), "callback answered an error status");
                continue;
            }
            match response.json::<Value>().await {
                Ok(Value::Object(answer)) => return answer,
                Ok(_) => {
                    tracing::warn!(url = %scrub(url), attempt, "callback answer is not a JSON object");
                }
                Err(err) => {
                    tracing::warn!(url = %scrub(url), attempt, error = %err, "callback answer is not JSON");
                }
            }
        }
        let mut unavailable = Map::new();
        unavailable.insert("status".into(), "error".into());
        unavailable.insert("error".into(), ERR_SERVICE_UNAVAILABLE.into());
        unavailable
    }

    fn rate_limit_wait(&self, response: &reqwest::Response) -> Duration {
        for name in &self.options.rate_limit_reset_headers {
            let Some(value) = response.headers().get(name.as_str()) else {
                continue;
            };
            let seconds = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0);
            return match seconds {
                Some(seconds) => Duration::from_secs_f64(seconds).min(MAX_RATE_LIMIT_WAIT),
                None => self.options.wait,
            };
        }
        self.options.wait
    }
}

/// The URL without credentials, for logs.
fn scrub(url: &str) -> String {
    kit::config::redact_url(url)
}

/// Whether an answer is a success (`"status": "ok"`).
pub fn is_ok(answer: &Map<String, Value>) -> bool {
    answer.get("status").and_then(Value::as_str) == Some("ok")
}
