//! `/email`: verifying the account's email address, and confirming a change of address.

use axum::extract::State;
use axum::http::StatusCode;
use kit::{ApiError, ApiResult, ConstraintExt, Json};

use super::invalid_token;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Client};
use crate::domain::{Email, TokenDigest};
use crate::events;
use crate::store::audit::{self, Entry};
use crate::store::one_time::{self, Purpose};
use crate::store::users;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify_email))
        .routes(routes!(resend_verification))
        .routes(routes!(confirm_email_change))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyEmail {
    /// The token from the verification link.
    #[schema(example = "3q2-7wAAAAB7xS0o4c5mRQ8fJ0aQd1bVwLNcZkq4zZk")]
    pub token: String,
}

/// Confirm an email address with the token from the verification mail (single use, valid
/// for 24 hours by default).
#[utoipa::path(
    post, path = "/email/verify", tag = "accounts",
    request_body = VerifyEmail,
    responses(
        (status = 204, description = "Verified"),
        (status = 422, description = "The token is unknown, used or expired (`invalid_token`)", body = kit::Problem),
    )
)]
async fn verify_email(
    State(state): State<AppState>,
    client: Client,
    Json(input): Json<VerifyEmail>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let consumed = one_time::consume(
        &mut *tx,
        Purpose::VerifyEmail,
        &TokenDigest::of(&input.token),
    )
    .await?
    .ok_or_else(invalid_token)?;
    let user = users::lock_by_id(&mut *tx, consumed.user_id)
        .await?
        .filter(|u| !u.is_deleted() && u.email == consumed.email)
        .ok_or_else(invalid_token)?;
    users::mark_email_verified(&mut *tx, user.id).await?;
    audit::record(
        &mut *tx,
        &Entry::success("email_verified", Some(user.uuid), Some(user.uuid))
            .from_ip(client.ip_text()),
    )
    .await?;
    tx.commit().await?;
    state.accounts.forget(user.uuid);
    tracing::info!(user = %user.uuid, "email verified");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resend {
    /// Any text: an address that is not valid, or has no unverified account, gets the same
    /// answer.
    #[schema(example = "ada@hatchery.test")]
    pub email: String,
}

/// Send a new verification mail. Always 202, whether or not an unverified account has this
/// email, so the answer tells nothing about which addresses have accounts; the work happens
/// after the answer.
#[utoipa::path(
    post, path = "/email/resend", tag = "accounts",
    request_body = Resend,
    responses(
        (status = 202, description = "Accepted (whether or not the address has an account)"),
        (status = 429, body = kit::Problem),
    )
)]
async fn resend_verification(
    State(state): State<AppState>,
    client: Client,
    Json(input): Json<Resend>,
) -> ApiResult<StatusCode> {
    let email = Email::parse(&input.email).ok();
    let app = &state.settings.app;
    state
        .limits
        .hit("resend", &app.rate_limits.resend, client.ip, email.as_ref())
        .await?;
    if let Some(email) = email {
        state.spawn_after_response("resend verification", move |state| async move {
            let mut tx = state.db.begin().await?;
            let Some(user) = users::find_by_email(&mut *tx, &email).await? else {
                return Ok(());
            };
            if user.is_deleted() || !user.is_active || user.email_verified() {
                return Ok(());
            }
            let app = &state.settings.app;
            events::request_verification(
                &mut tx,
                &user,
                app.verify_email_ttl,
                &app.verify_email_url,
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
pub struct ConfirmEmailChange {
    /// The token from the link mailed to the new address.
    #[schema(example = "3q2-7wAAAAB7xS0o4c5mRQ8fJ0aQd1bVwLNcZkq4zZk")]
    pub token: String,
}

/// Complete a change of email address with the token mailed to the new address (single use,
/// valid for 24 hours by default): the account takes the new address (verified: the mail
/// reached it), the old address is told, and links mailed to the old address stop working.
#[utoipa::path(
    post, path = "/email/change/confirm", tag = "accounts",
    request_body = ConfirmEmailChange,
    responses(
        (status = 204, description = "The address is changed"),
        (status = 409, description = "Another account took the address meanwhile (`email_taken`)", body = kit::Problem),
        (status = 422, description = "The token is unknown, used or expired (`invalid_token`)", body = kit::Problem),
    )
)]
async fn confirm_email_change(
    State(state): State<AppState>,
    client: Client,
    Json(input): Json<ConfirmEmailChange>,
) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let consumed = one_time::consume(
        &mut *tx,
        Purpose::ChangeEmail,
        &TokenDigest::of(&input.token),
    )
    .await?
    .ok_or_else(invalid_token)?;
    let user = users::lock_by_id(&mut *tx, consumed.user_id)
        .await?
        .filter(|u| !u.is_deleted() && u.is_active)
        .ok_or_else(invalid_token)?;
    let old_email = user.email.clone();
    let row = users::set_email(&mut *tx, user.id, &consumed.email)
        .await
        .on_constraint("users_email_key", || {
            ApiError::conflict("email_taken", "An account with this email already exists.")
        })?;
    // Links mailed to the old address no longer concern this account.
    for purpose in [Purpose::VerifyEmail, Purpose::ResetPassword] {
        one_time::void_all(&mut *tx, user.id, purpose).await?;
    }
    audit::record(
        &mut *tx,
        &Entry::success("email_changed", Some(user.uuid), Some(user.uuid))
            .from_ip(client.ip_text())
            .with_detail(serde_json::json!({"from": old_email, "to": row.email})),
    )
    .await?;
    events::updated(&mut tx, &row, user.uuid).await?;
    events::email_changed(&mut tx, &row, &old_email).await?;
    tx.commit().await?;
    state.accounts.forget(user.uuid);
    tracing::info!(user = %user.uuid, "email address changed");
    Ok(StatusCode::NO_CONTENT)
}
