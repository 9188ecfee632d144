//! Who is calling.
//!
//! Other services use `identity::CurrentUser`, which keeps a local copy of the user from the
//! token's claims. Auth *is* the source of those claims: here the signed-in user is the account
//! as it is now in auth's own table, never a token's copy ([`crate::accounts`]: cached, and the
//! copy dropped by the database on every change), so a role removed a second ago is already
//! gone, and a deleted or disabled account is refused even while its last token is still
//! unexpired. Tokens are verified (and revocation checked) by the same `identity::Identity`
//! every service uses.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use http::request::Parts;
use http::{HeaderValue, header};
use identity::Claims;
use kit::ApiError;
use uuid::Uuid;

use super::AppState;
use crate::sessions::Origin;
use crate::store::users::UserRow;

/// The caller's address and user agent (for rate limits, sessions and the audit log).
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl Client {
    pub fn ip_text(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }

    pub fn origin(&self) -> Origin {
        Origin {
            ip: self.ip_text(),
            user_agent: self.user_agent.clone(),
        }
    }
}

impl<S> FromRequestParts<S> for Client
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let from_header = state
            .settings
            .app
            .client_ip_header
            .as_deref()
            .and_then(|name| parts.headers.get(name))
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|text| text.chars().take(512).collect());
        Ok(Client {
            ip: from_header.or(peer),
            user_agent,
        })
    }
}

/// A signed-in user: a valid, unrevoked user token of a live, active account. Rejections: no
/// or bad token, revoked session, deleted account → 401 (`WWW-Authenticate: Bearer`); a
/// service token → 403; a disabled account → 403 `account_disabled`.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user as stored now (not as the token remembers it).
    pub user: UserRow,
    pub claims: Claims,
}

impl SignedIn {
    /// The session of the token (user tokens always have one).
    pub fn session(&self) -> Result<Uuid, ApiError> {
        self.claims
            .sid
            .ok_or_else(|| ApiError::unauthorized("This token belongs to no session."))
    }
}

impl<S> FromRequestParts<S> for SignedIn
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        let claims = state
            .identity
            .authenticate(identity::bearer_token(&parts.headers)?)
            .await?;
        identity::refuse_service_tokens(&claims)?;
        kit::telemetry::record_user(claims.sub);
        let user = state
            .accounts
            .find(claims.sub)
            .await?
            .ok_or_else(|| ApiError::unauthorized("This account does not exist."))?;
        identity::refuse_unusable_account(user.is_deleted(), user.is_active)?;
        Ok(SignedIn { user, claims })
    }
}

/// A signed-in user whose *current* roles include `admin`, else 403 `forbidden`.
#[derive(Debug, Clone)]
pub struct Admin(pub SignedIn);

impl Deref for Admin {
    type Target = SignedIn;

    fn deref(&self) -> &SignedIn {
        &self.0
    }
}

impl<S> FromRequestParts<S> for Admin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let signed_in = SignedIn::from_request_parts(parts, state).await?;
        if !signed_in.user.is_admin() {
            return Err(ApiError::forbidden("This needs the `admin` role."));
        }
        Ok(Admin(signed_in))
    }
}

/// `Cache-Control: no-store` for responses carrying secrets (tokens, tickets).
pub fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}
