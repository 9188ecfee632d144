//! `POST /logout`: end the caller's session, or (`?scope=global`) every session of theirs.
//! From then on the ended sessions' access tokens are refused by every service (revocation in
//! Redis) and their refresh tokens by this one.

use axum::extract::State;
use axum::http::StatusCode;
use kit::{ApiResult, Query};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Client, SignedIn};
use crate::store::audit::{self, Entry};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(logout))
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogoutScope {
    /// This session only.
    #[default]
    Session,
    /// Every session of the user.
    Global,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogoutParams {
    /// `session` (default) or `global`.
    #[param(value_type = Option<LogoutScope>, inline, example = "global")]
    #[serde(default)]
    pub scope: LogoutScope,
}

/// Sign out.
#[utoipa::path(
    post, path = "/logout", tag = "sessions",
    params(LogoutParams),
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Signed out"),
    )
)]
async fn logout(
    State(state): State<AppState>,
    signed_in: SignedIn,
    client: Client,
    Query(params): Query<LogoutParams>,
) -> ApiResult<StatusCode> {
    let sid = signed_in.session()?;
    let user = &signed_in.user;
    let mut tx = state.db.begin().await?;
    let (action, ended) = match params.scope {
        LogoutScope::Session => {
            state.sessions.end_session(&mut tx, sid, "logout").await?;
            ("logout", 1)
        }
        LogoutScope::Global => {
            let ended = state
                .sessions
                .end_all(&mut tx, user, None, "logout_global")
                .await?;
            ("logout_global", ended)
        }
    };
    audit::record(
        &mut *tx,
        &Entry::success(action, Some(user.uuid), Some(user.uuid))
            .from_ip(client.ip_text())
            .with_detail(serde_json::json!({"session": sid, "sessions_ended": ended})),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user = %user.uuid, session = %sid, scope = ?params.scope, "signed out");
    Ok(StatusCode::NO_CONTENT)
}
