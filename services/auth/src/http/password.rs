//! `/password`: forgotten passwords.

use axum::extract::State;
use axum::http::StatusCode;
use kit::{ApiResult, FieldErrors, Json};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::invalid_token;
use super::{AppState, Client};
use crate::domain::{Email, Password, TokenDigest};
use crate::events;
use crate::store::audit::{self, Entry};
use crate::store::one_time::{self, Purpose};
use crate::store::users;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(forgot_password))
        .routes(routes!(reset_password))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Forgot {
    /// Any text: an address that is not valid, or has no account, gets the same answer.
    #[schema(example = "ada@hatchery.test")]
    pub email: String,
}

/// Ask for a password-reset mail. Always 202 with an empty body, in the same time whether or
/// not the address has an account (the token and the mail request are made after the
/// answer), so nobody can learn which addresses have accounts.
#[utoipa::path(
    post, path = "/password/forgot", tag = "accounts",
    request_body = Forgot,
    responses(
        (status = 202, description = "Accepted (whether or not the address has an account)"),
        (status = 429, body = kit::Problem),
    )
)]
async fn forgot_password(
    State(state): State<AppState>,
    client: Client,
    Json(input): Json<Forgot>,
) -> ApiResult<StatusCode> {
    let email = Email::parse(&input.email).ok();
    let app = &state.settings.app;
    state
        .limits
        .hit("forgot", &app.rate_limits.forgot, client.ip, email.as_ref())
        .await?;
    if let Some(email) = email {
        let ip = client.ip_text();
        state.spawn_after_response("password reset request", move |state| async move {
            let mut tx = state.db.begin().await?;
            let Some(user) = users::find_by_email(&mut *tx, &email).await? else {
                return Ok(());
            };
            if user.is_deleted() || !user.is_active {
                return Ok(());
            }
            let app = &state.settings.app;
            events::request_password_reset(
                &mut tx,
                &user,
                app.reset_password_ttl,
                &app.reset_password_url,
            )
            .await?;
            audit::record(
                &mut *tx,
                &Entry::success("password_reset_requested", None, Some(user.uuid)).from_ip(ip),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        });
    }
    Ok(StatusCode::ACCEPTED)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reset {
    /// The token from the reset link.
    pub token: String,
    #[schema(schema_with = super::schemas::new_password)]
    pub new_password: String,
}

/// Set a new password with the token from the reset mail (single use, valid for an hour by
/// default). Every session of the account is ended; the address counts as verified (the mail
/// reached it).
#[utoipa::path(
    post, path = "/password/reset", tag = "accounts",
    request_body = Reset,
    responses(
        (status = 204, description = "Password set"),
        (status = 422, description = "The token is unknown, used or expired (`invalid_token`), or the new password is invalid (`validation_failed`)", body = kit::Problem),
    )
)]
async fn reset_password(
    State(state): State<AppState>,
    client: Client,
    Json(input): Json<Reset>,
) -> ApiResult<StatusCode> {
    let mut errors = FieldErrors::default();
    let password = errors.take("new_password", Password::parse(input.new_password));
    let Some(password) = password else {
        return Err(errors.into());
    };
    let digest = TokenDigest::of(&input.token);
    // A bad token is refused before the (costly) hashing; the hash is made before the token
    // is consumed, so the transaction holds no lock while hashing.
    if !one_time::is_usable(&state.db, Purpose::ResetPassword, &digest).await? {
        return Err(invalid_token());
    }
    let hash = state.hasher.hash(&password).await?;
    let mut tx = state.db.begin().await?;
    let consumed = one_time::consume(&mut *tx, Purpose::ResetPassword, &digest)
        .await?
        .ok_or_else(invalid_token)?;
    let user = users::lock_by_id(&mut *tx, consumed.user_id)
        .await?
        .filter(|u| !u.is_deleted() && u.is_active && u.email == consumed.email)
        .ok_or_else(invalid_token)?;
    users::set_password_hash(&mut *tx, user.id, &hash).await?;
    users::mark_email_verified(&mut *tx, user.id).await?;
    one_time::void_all(&mut *tx, user.id, Purpose::ResetPassword).await?;
    let ended = state
        .sessions
        .end_all(&mut tx, &user, None, "password_reset")
        .await?;
    audit::record(
        &mut *tx,
        &Entry::success("password_reset", Some(user.uuid), Some(user.uuid))
            .from_ip(client.ip_text())
            .with_detail(serde_json::json!({"sessions_ended": ended})),
    )
    .await?;
    tx.commit().await?;
    state.accounts.forget(user.uuid);
    tracing::info!(user = %user.uuid, "password reset");
    Ok(StatusCode::NO_CONTENT)
}
