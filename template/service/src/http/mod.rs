//! The service's HTTP API: one module per resource, each with its own `router()`.

mod notes;

use std::sync::Arc;

use axum::extract::FromRef;
use identity::Identity;
use kit::{Parts, Settings};
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub settings: Arc<Settings<Config>>,
    /// Token verification, revocation and the local users: what `identity::CurrentUser`
    /// and the other identity extractors need.
    pub identity: Identity,
}

impl FromRef<AppState> for Identity {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

/// Every route under `/api/template/v1`, with the state applied.
pub fn router(parts: &Parts<Config>) -> OpenApiRouter {
    let state = AppState {
        db: parts.db.clone(),
        settings: parts.settings.clone(),
        identity: Identity::from_parts(parts),
    };
    OpenApiRouter::new()
        .nest("/api/template/v1", notes::router())
        .with_state(state)
}
