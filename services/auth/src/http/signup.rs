//! `POST /signup`: create an account. The email must then be verified (a verification mail is
//! requested through `auth.email.verification_requested`) before the password grant accepts
//! it, when `app.require_verified_email` is on.
//!
//! No `Idempotency-Key` here: kit stores a fingerprint (a fast hash) of the request body,
//! which would be a fast hash of the password. A retried signup gets 409 `email_taken`, which
//! tells the client what it needs.

use axum::extract::State;
use axum::http::StatusCode;
use kit::{ApiError, ApiResult, ConstraintExt, FieldErrors, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, Client, User};
use crate::domain::{DisplayName, Email, Password};
use crate::events;
use crate::store::audit::{self, Entry};
use crate::store::users::{self, NewUser};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(signup))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Signup {
    pub email: String,
    /// 8 to 1024 characters.
    pub password: String,
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SignedUp {
    pub user: User,
}

/// Create an account.
#[utoipa::path(
    post, path = "/signup", tag = "accounts",
    request_body = Signup,
    responses(
        (status = 201, body = SignedUp),
        (status = 400, description = "Malformed JSON", body = kit::Problem),
        (status = 409, description = "`email_taken`", body = kit::Problem),
        (status = 422, description = "Invalid email, password or name", body = kit::Problem),
        (status = 429, description = "`rate_limited`", body = kit::Problem),
    )
)]
async fn signup(
    State(state): State<AppState>,
    client: Client,
    Json(input): Json<Signup>,
) -> ApiResult<(StatusCode, Json<SignedUp>)> {
    let mut errors = FieldErrors::default();
    let email = errors.take("email", Email::parse(&input.email));
    let password = errors.take("password", Password::parse(input.password));
    let name = errors.take("name", DisplayName::parse(&input.name));
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(errors.into());
    };
    let app = &state.settings.app;
    state
        .limits
        .hit("signup", &app.rate_limits.signup, client.ip, Some(&email))
        .await?;
    let password_hash = state.hasher.hash(&password).await?;
    let mut tx = state.db.begin().await?;
    let user = users::insert(
        &mut *tx,
        &NewUser {
            uuid: Uuid::now_v7(),
            email: &email,
            name: &name,
            roles: &[],
            password_hash: &password_hash,
            email_verified_at: None,
        },
    )
    .await
    .on_constraint("users_email_key", || {
        ApiError::conflict("email_taken", "An account with this email already exists.")
    })?;
    audit::record(
        &mut *tx,
        &Entry::success("signup", Some(user.uuid), Some(user.uuid)).from_ip(client.ip_text()),
    )
    .await?;
    events::registered(&mut tx, &user).await?;
    events::request_verification(&mut tx, &user, app.verify_email_ttl, &app.verify_email_url)
        .await?;
    tx.commit().await?;
    tracing::info!(user = %user.uuid, "account created");
    Ok((StatusCode::CREATED, Json(SignedUp { user: user.into() })))
}
