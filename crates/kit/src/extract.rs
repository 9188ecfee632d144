//! Extractors whose rejections are our problem documents, never axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldErrors};

/// A JSON body. Not JSON at all → 400 `malformed_json`; wrong content type → 415
/// `unsupported_media_type`; too large → 413 `payload_too_large`; valid JSON of the wrong shape
/// → 422 `validation_failed` with the offending field named in `errors`.
///
/// As a response, serialises `T` with `200 OK`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Expected a request body with `Content-Type: application/json`.",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The request body is larger than this endpoint accepts.",
                )
            } else {
                ApiError::bad_request("unreadable_body", rejection.body_text())
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

/// Parses a JSON document into `T`, with the problem a client should see on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |err: serde_json::Error| {
        ApiError::bad_request(
            "malformed_json",
            format!("The request body is not valid JSON: {err}."),
        )
    };
    // Syntax first, over the whole body (trailing garbage included), then shape: a body that
    // is not JSON is a 400 whatever else is wrong with it.
    let document: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    serde_path_to_error::deserialize(document).map_err(|err| {
        let path = err.path().to_string();
        let (field, message) = describe_data_error(&path, &err.into_inner().to_string());
        let mut errors = FieldErrors::default();
        errors.add(field, message);
        errors.into()
    })
}

/// Names the field and says what is wrong with it, in words a client developer can act on.
fn describe_data_error(path: &str, message: &str) -> (String, String) {
    // serde_json appends " at line L column C"; the field path says more than that.
    let message = message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at]);
    let join = |field: &str| {
        if path == "." || path.is_empty() {
            field.to_owned()
        } else {
            format!("{path}.{field}")
        }
    };
    if let Some(field) = backticked(message, "missing field `") {
        return (join(field), "is required".to_owned());
    }
    if let Some(field) = backticked(message, "unknown field `") {
        // The path already ends at the unknown key (the parent object is not named twice).
        let named = if path.ends_with(field) {
            path.to_owned()
        } else {
            join(field)
        };
        return (named, "is not a known field".to_owned());
    }
    let field = if path == "." || path.is_empty() {
        "body".to_owned()
    } else {
        path.to_owned()
    };
    (field, message.to_owned())
}

fn backticked<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split('`').next()
}

fn has_json_content_type(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Query parameters; a malformed query is a 400 `invalid_query` problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection: QueryRejection| {
                ApiError::bad_request("invalid_query", rejection.body_text())
            })
    }
}

/// Path parameters; a value that does not parse (e.g. a malformed UUID) cannot name an
/// existing resource, so it is a 404 `not_found` problem.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Path(value))
            .map_err(|rejection: PathRejection| match rejection {
                PathRejection::FailedToDeserializePathParams(_) => ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "No resource at this path.",
                ),
                other => {
                    ApiError::internal(anyhow::anyhow!("path extraction: {}", other.body_text()))
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Input {
        title: String,
        tags: Vec<String>,
    }

    fn problem(body: &str) -> crate::Problem {
        parse_json::<Input>(body.as_bytes())
            .unwrap_err()
            .to_problem()
    }

    #[test]
    fn syntax_errors_are_400() {
        for body in ["{", "not json", "{\"title\": \"x\", }", "{} trailing"] {
            let p = problem(body);
            assert_eq!(
                (p.status, p.code.as_str()),
                (400, "malformed_json"),
                "{body}"
            );
        }
    }

    #[test]
    fn shape_errors_name_the_field() {
        let p = problem(r#"{"title": 5, "tags": []}"#);
        assert_eq!((p.status, p.code.as_str()), (422, "validation_failed"));
        let errors = p.errors.unwrap();
        assert!(
            errors["title"][0].contains("expected a string"),
            "{errors:?}"
        );

        let errors = problem(r#"{"tags": []}"#).errors.unwrap();
        assert_eq!(errors["title"], vec!["is required"]);

        let errors = problem(r#"{"title": "a", "tags": [], "colour": 1}"#)
            .errors
            .unwrap();
        assert_eq!(
            errors.get("colour"),
            Some(&vec!["is not a known field".to_owned()]),
            "{errors:?}"
        );

        let errors = problem(r#"{"title": "a", "tags": ["ok", 3]}"#)
            .errors
            .unwrap();
        assert!(errors.contains_key("tags[1]"), "{errors:?}");

        let errors = problem("\"just a string\"").errors.unwrap();
        assert!(errors.contains_key("body"), "{errors:?}");
    }
}
