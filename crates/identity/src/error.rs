//! Why a request was not authenticated, and the problem documents clients get for it.

use http::{HeaderValue, StatusCode, header};
use kit::ApiError;

/// Why authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("no bearer token")]
    Missing,
    /// The token is not acceptable (the reason is told to the client).
    #[error("{0}")]
    Invalid(Invalid),
    /// The token's session, or every session of its subject, was ended.
    #[error("the session has been revoked")]
    Revoked,
    /// The auth service's keys could not be fetched, so the token cannot be checked.
    #[error("the token signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// Redis could not be asked in time and `auth.revocation_check` is `fail_closed`.
    #[error("session revocation cannot be checked: {0}")]
    RevocationUnavailable(String),
}

/// What is wrong with a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("The Authorization header is not `Bearer <token>`.")]
    NotBearer,
    #[error("The bearer token is not a well-formed JWT.")]
    Malformed,
    #[error("The bearer token is not signed with EdDSA, the only accepted algorithm.")]
    Algorithm,
    #[error("The bearer token has no key id (kid).")]
    MissingKeyId,
    #[error("The bearer token is signed with an unknown key.")]
    UnknownKey,
    #[error("The bearer token's signature does not verify.")]
    Signature,
    #[error("The bearer token has expired.")]
    Expired,
    #[error("The bearer token is not valid yet.")]
    NotYetValid,
    #[error("The bearer token was not issued by the expected issuer.")]
    Issuer,
    #[error("The bearer token is not meant for this audience.")]
    Audience,
    #[error("The bearer token's claims are missing or malformed.")]
    Claims,
}

impl From<AuthError> for ApiError {
    /// 401 with `WWW-Authenticate: Bearer` for missing, invalid and revoked tokens; 503
    /// `auth_unavailable` (with `Retry-After`) when the check itself cannot be done — the
    /// client's credentials may be fine, so it must not be told to log in again.
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::Missing => ApiError::unauthorized("This endpoint needs a bearer token."),
            AuthError::Invalid(why) => ApiError::unauthorized(why.to_string()),
            AuthError::Revoked => ApiError::unauthorized("This session has been signed out."),
            AuthError::KeysUnavailable(_) | AuthError::RevocationUnavailable(_) => {
                tracing::warn!(error = %err, "authentication unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    "Your credentials cannot be checked right now; retry shortly.",
                )
                .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
        }
    }
}
