//! One error type for every handler, answered as RFC 9457 `application/problem+json`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::request_id;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The wire form of an error, as clients see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:hatchery:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:hatchery:problem:validation_failed")]
    pub kind: String,
    /// The status's reason phrase, e.g. `Unprocessable Entity`.
    pub title: String,
    /// The HTTP status code, repeated.
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong, for the developer reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub detail: Option<String>,
    /// Stable snake_case machine code, e.g. `validation_failed`.
    #[schema(pattern = "^[a-z][a-z0-9_]*$")]
    pub code: String,
    /// The request's id (also in the `X-Request-Id` header): quote it when reporting a problem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub request_id: Option<String>,
    /// Messages per invalid field (422 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub errors: Option<BTreeMap<String, Vec<String>>>,
}

/// Messages per field, gathered while parsing input into domain types.
///
/// ```
/// # use kit::FieldErrors;
/// let mut errors = FieldErrors::default();
/// let title: Option<u8> = errors.take("title", "300".parse::<u8>());
/// assert!(title.is_none());
/// assert!(errors.into_result().is_err());
/// ```
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

impl FieldErrors {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.entry(field.into()).or_default().push(message.into());
    }

    /// Keeps the value, or records the error message under `field`.
    pub fn take<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.add(field, err.to_string());
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was recorded, else the 422 problem.
    pub fn into_result(self) -> Result<(), ApiError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.into())
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(errors: FieldErrors) -> Self {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "The request has invalid fields.",
        )
        .with_errors(errors)
    }
}

/// An error a handler returns. Client errors carry a code and a detail for the caller;
/// internal errors keep their cause for the log (with the request id) and show nothing of it.
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    detail: Option<String>,
    errors: Option<BTreeMap<String, Vec<String>>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    source: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code: code.into(),
            detail: Some(detail.into()),
            errors: None,
            headers: Vec::new(),
            source: None,
        }
    }

    pub fn bad_request(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404 for `what` (e.g. "note"), worded the same whether it never existed or was deleted.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("No such {what}."),
        )
    }

    pub fn conflict(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn unprocessable(code: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    /// A 500: the cause is logged with the request id; the client sees a generic detail.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            source: Some(cause.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong on our side. Quote the request id if you report it.",
            )
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_errors(mut self, errors: FieldErrors) -> Self {
        self.errors = Some(errors.0);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// The problem document, with the current request's id.
    pub fn to_problem(&self) -> Problem {
        Problem {
            kind: format!("urn:hatchery:problem:{}", self.code),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
            request_id: request_id::current(),
            errors: self.errors.clone(),
        }
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("status", &self.status)
            .field("code", &self.code)
            .field("detail", &self.detail)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.code)?;
        if let Some(source) = &self.source {
            write!(f, ": {source:#}")?;
        } else if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.source {
                Some(source) => {
                    tracing::error!(error = ?source, code = %self.code, "request failed")
                }
                None => tracing::error!(code = %self.code, detail = ?self.detail, "request failed"),
            }
        } else {
            tracing::debug!(status = self.status.as_u16(), code = %self.code, "request rejected");
        }
        let body = serde_json::to_vec(&self.to_problem()).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        ApiError::internal(err)
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(err: anyhow::Error) -> Self {
        ApiError::internal(err)
    }
}

/// Turns a violation of one named unique/foreign-key/check constraint into a chosen client error.
///
/// ```ignore
/// store::insert(&db, &note).await.on_constraint("notes_owner_title_key", || {
///     ApiError::conflict("title_taken", "You already have a note with this title.")
/// })?;
/// ```
pub trait ConstraintExt<T> {
    fn on_constraint(self, name: &str, error: impl FnOnce() -> ApiError) -> Result<T, ApiError>;
}

impl<T> ConstraintExt<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, error: impl FnOnce() -> ApiError) -> Result<T, ApiError> {
        self.map_err(|err| match violated_constraint(&err) {
            Some(violated) if violated == name => error(),
            _ => ApiError::internal(err),
        })
    }
}

/// The name of the constraint a database error violated, if any.
pub fn violated_constraint(err: &sqlx::Error) -> Option<&str> {
    match err {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
