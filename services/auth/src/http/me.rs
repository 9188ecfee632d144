//! `/me`: the signed-in user's own account.

use axum::extract::State;
use axum::http::StatusCode;
use kit::{ApiError, ApiResult, FieldErrors, Json};
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AppState, Client, SignedIn, User};
use crate::domain::{DisplayName, Email, Password};
use crate::events;
use crate::passwords::Verdict;
use crate::store::audit::{self, Entry};
use crate::store::one_time::{self, Purpose};
use crate::store::users;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me, update_me))
        .routes(routes!(change_password))
        .routes(routes!(change_email))
}

/// Your account.
#[utoipa::path(
    get, path = "/me", tag = "accounts",
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "Your account", body = User),
        (status = 403, description = "A service token (`forbidden`), or a disabled account (`account_disabled`)", body = kit::Problem),
    )
)]
async fn get_me(signed_in: SignedIn) -> Json<User> {
    Json(signed_in.user.into())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMe {
    /// Unchanged when absent or `null`.
    #[schema(schema_with = super::schemas::optional_display_name)]
    pub name: Option<String>,
}

/// Change your name.
#[utoipa::path(
    patch, path = "/me", tag = "accounts",
    request_body = UpdateMe,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 200, description = "Your account", body = User),
        (status = 403, description = "A service token (`forbidden`), or a disabled account (`account_disabled`)", body = kit::Problem),
    )
)]
async fn update_me(
    State(state): State<AppState>,
    signed_in: SignedIn,
    client: Client,
    Json(input): Json<UpdateMe>,
) -> ApiResult<Json<User>> {
    let mut errors = FieldErrors::default();
    let name = input.name.as_deref().map(DisplayName::parse).transpose();
    let name = errors.take("name", name).flatten();
    errors.into_result()?;
    let user = signed_in.user;
    let Some(name) = name.filter(|n| n.as_str() != user.name) else {
        return Ok(Json(user.into()));
    };
    let mut tx = state.db.begin().await?;
    let row = users::set_name(&mut *tx, user.id, &name).await?;
    audit::record(
        &mut *tx,
        &Entry::success("profile_updated", Some(user.uuid), Some(user.uuid))
            .from_ip(client.ip_text()),
    )
    .await?;
    events::updated(&mut tx, &row, user.uuid).await?;
    tx.commit().await?;
    state.accounts.forget(user.uuid);
    Ok(Json(row.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(schema_with = super::schemas::presented_password)]
    pub current_password: String,
    #[schema(schema_with = super::schemas::new_password)]
    pub new_password: String,
}

/// Change your password. Your other sessions are ended; this one stays. Wrong current
/// password: 422 with `errors.current_password`. Guesses count against the sign-in rate limit.
#[utoipa::path(
    post, path = "/me/password", tag = "accounts",
    request_body = ChangePassword,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 204, description = "Changed"),
        (status = 403, description = "A service token (`forbidden`), or a disabled account (`account_disabled`)", body = kit::Problem),
        (status = 422, description = "An invalid new password, or `errors.current_password` when the current one is wrong (`validation_failed`)", body = kit::Problem),
        (status = 429, body = kit::Problem),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    signed_in: SignedIn,
    client: Client,
    Json(input): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    let mut errors = FieldErrors::default();
    let new_password = errors.take("new_password", Password::parse(input.new_password));
    let current = Password::presented(input.current_password);
    if current.is_none() {
        errors.add("current_password", "is not your current password");
    }
    let (Some(new_password), Some(current)) = (new_password, current) else {
        return Err(errors.into());
    };
    let user = &signed_in.user;
    let sid = signed_in.session()?;
    let app = &state.settings.app;
    let email = crate::domain::Email::parse(&user.email).ok();
    state
        .limits
        .hit("token", &app.rate_limits.token, client.ip, email.as_ref())
        .await?;
    if state
        .hasher
        .verify(&current, user.password_hash.as_deref())
        .await?
        == Verdict::Mismatch
    {
        let entry = Entry::failure("password_changed", "wrong_password", Some(user.uuid))
            .from_ip(client.ip_text());
        audit::record(&state.db, &entry).await?;
        let mut errors = FieldErrors::default();
        errors.add("current_password", "is not your current password");
        return Err(errors.into());
    }
    let hash = state.hasher.hash(&new_password).await?;
    let mut tx = state.db.begin().await?;
    users::set_password_hash(&mut *tx, user.id, &hash).await?;
    one_time::void_all(&mut *tx, user.id, Purpose::ResetPassword).await?;
    let ended = state
        .sessions
        .end_all(&mut tx, user, Some(sid), "password_changed")
        .await?;
    audit::record(
        &mut *tx,
        &Entry::success("password_changed", Some(user.uuid), Some(user.uuid))
            .from_ip(client.ip_text())
            .with_detail(serde_json::json!({"sessions_ended": ended})),
    )
    .await?;
    tx.commit().await?;
    state.accounts.forget(user.uuid);
    tracing::info!(user = %user.uuid, sessions_ended = ended, "password changed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmail {
    #[schema(schema_with = super::schemas::email)]
    pub new_email: String,
    /// Your current password: whoever holds a token alone cannot move the account.
    #[schema(schema_with = super::schemas::presented_password)]
    pub password: String,
}

/// Change your email address: a link is mailed to the new address, and the change happens when
/// it is followed (`POST /email/change/confirm`); until then the account keeps its address. The
/// old address is told once the change is made. A new request voids the previous link. Wrong
/// password: 422 with `errors.password`; guesses count against the sign-in rate limit.
#[utoipa::path(
    post, path = "/me/email", tag = "accounts",
    request_body = ChangeEmail,
    security(("bearer" = []), ("oauth2" = [])),
    responses(
        (status = 202, description = "The link is on its way to the new address"),
        (status = 403, description = "A service token (`forbidden`), or a disabled account (`account_disabled`)", body = kit::Problem),
        (status = 409, description = "Another account has this address (`email_taken`)", body = kit::Problem),
        (status = 422, description = "An invalid or unchanged address (`errors.new_email`), or a wrong password (`errors.password`)", body = kit::Problem),
        (status = 429, body = kit::Problem),
    )
)]
async fn change_email(
    State(state): State<AppState>,
    signed_in: SignedIn,
    client: Client,
    Json(input): Json<ChangeEmail>,
) -> ApiResult<StatusCode> {
    let user = &signed_in.user;
    let mut errors = FieldErrors::default();
    let new_email = errors.take("new_email", Email::parse(&input.new_email));
    if new_email.as_ref().is_some_and(|e| e.as_str() == user.email) {
        errors.add("new_email", "is your current address");
    }
    let password = Password::presented(input.password);
    if password.is_none() {
        errors.add("password", "is not your current password");
    }
    errors.into_result()?;
    let (Some(new_email), Some(password)) = (new_email, password) else {
        return Err(FieldErrors::default().into());
    };
    let app = &state.settings.app;
    let current = Email::parse(&user.email).ok();
    state
        .limits
        .hit("token", &app.rate_limits.token, client.ip, current.as_ref())
        .await?;
    if state
        .hasher
        .verify(&password, user.password_hash.as_deref())
        .await?
        == Verdict::Mismatch
    {
        let entry = Entry::failure("email_change_requested", "wrong_password", Some(user.uuid))
            .from_ip(client.ip_text());
        audit::record(&state.db, &entry).await?;
        let mut errors = FieldErrors::default();
        errors.add("password", "is not your current password");
        return Err(errors.into());
    }
    if users::find_by_email(&state.db, &new_email).await?.is_some() {
        return Err(ApiError::conflict(
            "email_taken",
            "An account with this email already exists.",
        ));
    }
    let mut tx = state.db.begin().await?;
    crate::events::request_email_change(
        &mut tx,
        user,
        new_email.as_str(),
        app.verify_email_ttl,
        &app.change_email_url,
    )
    .await?;
    audit::record(
        &mut *tx,
        &Entry::success("email_change_requested", Some(user.uuid), Some(user.uuid))
            .from_ip(client.ip_text())
            .with_detail(serde_json::json!({"to": new_email.as_str()})),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::ACCEPTED)
}
