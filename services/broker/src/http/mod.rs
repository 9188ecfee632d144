//! The service's HTTP surface: the websocket endpoint (`/ws`). The operational endpoints
//! (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`) come from kit.

mod ws;

use std::sync::Arc;

use kit::Parts;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use utoipa_axum::router::OpenApiRouter;

use crate::Broker;
use crate::config::Config;

/// The routes, with the broker that `start` built (or, for `openapi`, which runs no `start`,
/// an idle one that is never connected).
pub fn router(parts: &Parts<Config>) -> OpenApiRouter {
    let started = parts
        .extensions
        .lock()
        .ok()
        .and_then(|extensions| extensions.get::<Arc<Broker>>().cloned());
    let broker = match started {
        Some(broker) => broker,
        None => match Broker::new(
            &parts.settings,
            CancellationToken::new(),
            TaskTracker::new(),
        ) {
            Ok((broker, _)) => broker,
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "invalid broker configuration");
                return OpenApiRouter::new();
            }
        },
    };
    OpenApiRouter::new().merge(ws::router()).with_state(broker)
}
