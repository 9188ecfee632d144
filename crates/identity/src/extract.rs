//! axum extractors: [`CurrentUser`], [`MaybeUser`], [`RequireRole`], [`ServiceCaller`], and
//! [`Authenticated`] (the verified claims alone).
//!
//! Each needs an [`Identity`] reachable from the router state (`Identity: FromRef<State>`).
//! A token is verified at most once per request, however many extractors a handler uses.

use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts, OptionalFromRequestParts};
use http::request::Parts;
use http::{HeaderMap, StatusCode, header};
use kit::ApiError;
use uuid::Uuid;

use crate::Identity;
use crate::claims::{ADMIN_ROLE, Claims};
use crate::error::{AuthError, Invalid};

/// Verified, not-revoked claims, kept in the request extensions once checked.
#[derive(Clone)]
struct Verified(Arc<Claims>);

/// The request's verified claims; `None` without an `Authorization` header. A header that is
/// there but wrong is an error, never "anonymous".
async fn verified_claims<S>(parts: &mut Parts, state: &S) -> Result<Option<Arc<Claims>>, ApiError>
where
    Identity: FromRef<S>,
{
    if let Some(Verified(claims)) = parts.extensions.get::<Verified>() {
        return Ok(Some(claims.clone()));
    }
    if !parts.headers.contains_key(header::AUTHORIZATION) {
        return Ok(None);
    }
    let token = bearer_token(&parts.headers)?;
    let identity = Identity::from_ref(state);
    let claims = Arc::new(identity.authenticate(token).await?);
    kit::telemetry::record_user(claims.sub);
    parts.extensions.insert(Verified(claims.clone()));
    Ok(Some(claims))
}

/// The token of an `Authorization: Bearer <token>` header: [`AuthError::Missing`] without the
/// header, [`Invalid::NotBearer`] with another scheme or an empty token.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let not_bearer = AuthError::Invalid(Invalid::NotBearer);
    let text = value.to_str().map_err(|_| not_bearer.clone())?;
    let (scheme, token) = text.split_once(' ').ok_or(not_bearer.clone())?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(not_bearer);
    }
    Ok(token)
}

/// A valid, unrevoked token of any kind (user or service): its claims, nothing loaded. What a
/// service that is itself the source of user data (auth) builds its own extractors on.
/// Rejections as [`CurrentUser`]'s for the token itself.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Arc<Claims>);

impl<S> FromRequestParts<S> for Authenticated
where
    Identity: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        verified_claims(parts, state)
            .await?
            .map(Authenticated)
            .ok_or_else(|| AuthError::Missing.into())
    }
}

/// The signed-in user: a valid, unrevoked user token whose user is not deleted or disabled
/// here. Rejections: no or bad token → 401 (`WWW-Authenticate: Bearer`); a service token →
/// 403; a disabled account → 403 `account_disabled`; keys or revocation store unreachable →
/// 503 `auth_unavailable`.
///
/// The user's local row is created on first sight (and kept current) from the token, so `id`
/// is ready for foreign keys.
#[derive(Debug, Clone)]
pub struct CurrentUser {
    /// The local key (`users.id`): what this service's rows reference.
    pub id: i64,
    /// The platform-wide user id (`sub`).
    pub uuid: Uuid,
    pub claims: Arc<Claims>,
}

impl CurrentUser {
    pub fn roles(&self) -> &[String] {
        &self.claims.roles
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.claims.has_role(role)
    }

    pub fn is_admin(&self) -> bool {
        self.has_role(ADMIN_ROLE)
    }

    /// 403 `forbidden` unless the user has `role`.
    pub fn require_role(&self, role: &str) -> Result<(), ApiError> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "This needs the `{role}` role."
            )))
        }
    }

    pub fn email(&self) -> &str {
        self.claims.email.as_deref().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.claims.name.as_deref().unwrap_or("")
    }
}

impl<S> FromRequestParts<S> for CurrentUser
where
    Identity: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(user.clone());
        }
        let claims = verified_claims(parts, state)
            .await?
            .ok_or(AuthError::Missing)?;
        let user = current_user(&Identity::from_ref(state), claims).await?;
        parts.extensions.insert(user.clone());
        Ok(user)
    }
}

impl<S> OptionalFromRequestParts<S> for CurrentUser
where
    Identity: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    /// `Option<CurrentUser>`: `None` without an `Authorization` header; a bad token is still
    /// refused.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        <Self as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

async fn current_user(identity: &Identity, claims: Arc<Claims>) -> Result<CurrentUser, ApiError> {
    refuse_service_tokens(&claims)?;
    let local = identity.sync_user(&claims).await?;
    refuse_unusable_account(local.is_deleted(), local.is_active)?;
    Ok(CurrentUser {
        id: local.id,
        uuid: claims.sub,
        claims,
    })
}

/// 403 for a service token where a user must be signed in.
pub fn refuse_service_tokens(claims: &Claims) -> Result<(), ApiError> {
    if claims.is_service() {
        return Err(ApiError::forbidden(
            "This endpoint is for users; service tokens are not accepted.",
        ));
    }
    Ok(())
}

/// The user of a valid token may still not act: 401 for a deleted account, 403
/// `account_disabled` for a disabled one.
pub fn refuse_unusable_account(is_deleted: bool, is_active: bool) -> Result<(), ApiError> {
    if is_deleted {
        return Err(ApiError::unauthorized("This account has been deleted."));
    }
    if !is_active {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "This account is disabled.",
        ));
    }
    Ok(())
}

/// The signed-in user if there is an `Authorization` header, `None` if there is none. A header
/// with a bad token is refused like [`CurrentUser`] refuses it (a client that sent credentials
/// wants to know they failed). Same as `Option<CurrentUser>`.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<CurrentUser>);

impl<S> FromRequestParts<S> for MaybeUser
where
    Identity: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        <CurrentUser as OptionalFromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(MaybeUser)
    }
}

/// A role a handler can demand with [`RequireRole`].
pub trait Role: 'static {
    const NAME: &'static str;
}

/// The `admin` role.
pub struct Admin;

impl Role for Admin {
    const NAME: &'static str = ADMIN_ROLE;
}

/// A [`CurrentUser`] with role `R`, else 403 `forbidden`: `RequireRole<Admin>`. Derefs to the
/// user.
pub struct RequireRole<R: Role> {
    pub user: CurrentUser,
    role: PhantomData<fn() -> R>,
}

impl<R: Role> Deref for RequireRole<R> {
    type Target = CurrentUser;

    fn deref(&self) -> &CurrentUser {
        &self.user
    }
}

impl<R: Role> std::fmt::Debug for RequireRole<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequireRole")
            .field("role", &R::NAME)
            .field("user", &self.user)
            .finish()
    }
}

impl<S, R> FromRequestParts<S> for RequireRole<R>
where
    Identity: FromRef<S>,
    S: Send + Sync,
    R: Role,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let user = <CurrentUser as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        user.require_role(R::NAME)?;
        Ok(Self {
            user,
            role: PhantomData,
        })
    }
}

/// Another service calling with a service token (`roles` contains `service`). A user token
/// gets 403; no or bad token 401.
#[derive(Debug, Clone)]
pub struct ServiceCaller {
    /// The calling client's UUID (`sub`).
    pub client_id: Uuid,
    pub claims: Arc<Claims>,
}

impl ServiceCaller {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.claims.has_scope(scope)
    }

    /// 403 `insufficient_scope` unless the token was granted `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), ApiError> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("This needs the `{scope}` scope."),
            ))
        }
    }
}

impl<S> FromRequestParts<S> for ServiceCaller
where
    Identity: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let claims = verified_claims(parts, state)
            .await?
            .ok_or(AuthError::Missing)?;
        if !claims.is_service() {
            return Err(ApiError::forbidden(
                "This endpoint is for services; user tokens are not accepted.",
            ));
        }
        Ok(Self {
            client_id: claims.sub,
            claims,
        })
    }
}
