//! Redis, set up one way in every service: the URL checked once (errors name `redis.url`,
//! password redacted), the same connect and response timeouts, a connection that reconnects by
//! itself, and a readiness check that asks over that same connection.

use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::SecretUrl;
use crate::health::Check;

/// Longest wait for a connection to be established.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for the answer to one command.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A client for `url` (for pub/sub connections, which own their socket).
pub fn client(url: &SecretUrl) -> anyhow::Result<redis::Client> {
    redis::Client::open(url.expose())
        .map_err(|err| anyhow::anyhow!("redis.url {}: {err}", url.redacted()))
}

/// A shared, multiplexed connection to `url` with the platform's timeouts. It connects on first
/// use and reconnects after a failure, so a service starts (and keeps serving what does not
/// need Redis) while Redis is down.
pub fn connect(url: &SecretUrl) -> anyhow::Result<ConnectionManager> {
    connect_bounded(url, RESPONSE_TIMEOUT)
}

/// [`connect`] where every connect and command is bounded by `timeout` (a lookup on the
/// request path that must not hold a request up for long).
pub fn connect_bounded(url: &SecretUrl, timeout: Duration) -> anyhow::Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.min(CONNECT_TIMEOUT)))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client(url)?, config)
        .map_err(|err| anyhow::anyhow!("redis.url {}: {err}", url.redacted()))
}

/// Readiness of Redis: a `PING` over the connection the service uses.
pub struct RedisCheck(pub ConnectionManager);

impl Check for RedisCheck {
    fn name(&self) -> &str {
        "redis"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut connection = self.0.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }
}
