//! The service's HTTP API under `/api/mail/v1`: one module per resource, each with its own
//! `router()`.

mod access;
mod messages;
mod suppressions;
mod templates;
mod unsubscribe;

use std::sync::Arc;

use axum::extract::FromRef;
use identity::Identity;
use kit::Settings;
use sqlx::PgPool;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::renderer::Renderer;
use crate::unsubscribe::UnsubscribeKey;

pub use access::{Caller, SEND_SCOPE};

/// What handlers share, built once by the service's `start`.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub settings: Arc<Settings<Config>>,
    /// Token verification, revocation and the local users: what the identity extractors need.
    pub identity: Identity,
    pub renderer: Renderer,
    pub unsubscribe: Arc<UnsubscribeKey>,
    pub message_id_domain: Arc<str>,
}

impl FromRef<AppState> for Identity {
    fn from_ref(state: &AppState) -> Self {
        state.identity.clone()
    }
}

/// Every route under `/api/mail/v1`.
pub fn router() -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .merge(messages::router())
        .merge(templates::router())
        .merge(suppressions::router())
        .merge(unsubscribe::router());
    OpenApiRouter::new().nest("/api/mail/v1", api)
}
