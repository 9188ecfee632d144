//! The service's HTTP surface: the websocket endpoint (`/ws`). The operational endpoints
//! (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`) come from kit.

mod ws;

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::Broker;

/// The routes; their state is the broker the service's `start` built.
pub fn router() -> OpenApiRouter<Arc<Broker>> {
    OpenApiRouter::new().merge(ws::router())
}
