//! Who may send and read mail: another service with the `mail:send` scope, or an admin.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use identity::{Authenticated, Claims, CurrentUser, Identity};
use kit::ApiError;
use uuid::Uuid;

use crate::store::Access;

/// The scope a service token needs to send mail and read what it sent.
pub const SEND_SCOPE: &str = "mail:send";

/// A caller allowed to send: a service token granted [`SEND_SCOPE`], or an admin's token.
/// Anyone else: no or bad token 401; a service without the scope 403 `insufficient_scope`; a
/// user who is not an admin 403 `forbidden`.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The service client's or the admin's id.
    pub id: Uuid,
    pub is_service: bool,
    pub claims: Arc<Claims>,
}

impl Caller {
    /// What the caller may read: an admin every message, a service the ones it sent.
    pub fn access(&self) -> Access {
        if self.is_service {
            Access::Sender(self.id)
        } else {
            Access::Any
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    Identity: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        if claims.is_service() {
            if !claims.has_scope(SEND_SCOPE) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "insufficient_scope",
                    format!("This needs the `{SEND_SCOPE}` scope."),
                ));
            }
            return Ok(Caller {
                id: claims.sub,
                is_service: true,
                claims,
            });
        }
        let user = CurrentUser::from_request_parts(parts, state).await?;
        user.require_role(identity::ADMIN_ROLE)?;
        Ok(Caller {
            id: user.uuid,
            is_service: false,
            claims: user.claims,
        })
    }
}
