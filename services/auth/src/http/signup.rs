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
    #[schema(schema_with = super::schemas::email)]
    pub email: String,
    #[schema(schema_with = super::schemas::new_password)]
    pub password: String,
    #[schema(schema_with = super::schemas::display_name)]
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
        (status = 201, description = "The account, to be verified by mail", body = SignedUp,
            links(
                ("GetUser" = (operation_id = "get_user", parameters(("id" = "$response.body#/user/id")))),
                ("UpdateUser" = (operation_id = "update_user", parameters(("id" = "$response.body#/user/id")))),
                ("DeleteUser" = (operation_id = "delete_user", parameters(("id" = "$response.body#/user/id")))),
                ("RestoreUser" = (operation_id = "restore_user", parameters(("id" = "$response.body#/user/id")))),
            )),
        (status = 409, description = "An account with this email exists (`email_taken`)", body = kit::Problem),
        (status = 422, description = "Invalid email, password or name (`validation_failed`)", body = kit::Problem),
        (status = 429, body = kit::Problem),
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
