//! The service's HTTP API: one module per resource, each with its own `router()`.

mod notes;

use std::sync::Arc;

use axum::extract::FromRef;
use identity::Identity;
use kit::Settings;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;

/// What handlers share, built once by the service's `start`.
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

/// Every route under `/api/mail/v1`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().nest("/api/mail/v1", notes::router())
}
