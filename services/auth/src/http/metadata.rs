//! `/.well-known/oauth-authorization-server`: OAuth 2.0 Authorization Server Metadata
//! (RFC 8414), so a standard client configures itself from the issuer's address: where the token
//! endpoint and the key set are, which grants and client authentications it takes.
//!
//! Absolute URLs start with `app.public_url` (the address clients reach the service at); unset,
//! with `http://` and the request's `Host` (development, and tests on random ports).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

pub fn well_known_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(authorization_server_metadata))
}

/// The metadata document (the members this server has; RFC 8414 §2).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuthorizationServerMetadata {
    /// The `iss` of every token (`auth.issuer`).
    pub issuer: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    /// `password`, `refresh_token`, `client_credentials`.
    pub grant_types_supported: Vec<String>,
    /// `client_secret_basic`, `client_secret_post` (client credentials).
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// Empty: there is no authorization endpoint (no redirect-based flows).
    pub response_types_supported: Vec<String>,
    /// The API's documentation.
    pub service_documentation: String,
}

/// OAuth 2.0 Authorization Server Metadata (RFC 8414).
#[utoipa::path(
    get, path = "/.well-known/oauth-authorization-server", tag = "keys",
    responses((status = 200, description = "The metadata (`Cache-Control: public, max-age=300`)", body = AuthorizationServerMetadata))
)]
async fn authorization_server_metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let base = base_url(&state, &headers);
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect();
    let metadata = AuthorizationServerMetadata {
        issuer: state.settings.auth.issuer.clone(),
        token_endpoint: format!("{base}/api/auth/v1/token"),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        grant_types_supported: strings(&["password", "refresh_token", "client_credentials"]),
        token_endpoint_auth_methods_supported: strings(&[
            "client_secret_basic",
            "client_secret_post",
        ]),
        response_types_supported: Vec::new(),
        service_documentation: format!("{base}/docs"),
    };
    (
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        )],
        axum::Json(metadata),
    )
}

/// `app.public_url`, else `http://<Host>` when the header is a plain host[:port], else the
/// loopback address on the configured port.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    base_url_from(
        state.settings.app.public_url.as_deref(),
        headers.get(header::HOST),
        state.settings.http.port,
    )
}

fn base_url_from(public_url: Option<&str>, host: Option<&HeaderValue>, port: u16) -> String {
    if let Some(url) = public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let host = host.and_then(|value| value.to_str().ok()).filter(|host| {
        !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    });
    match host {
        Some(host) => format!("http://{host}"),
        None => format!("http://127.0.0.1:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_start_with_the_public_url_else_the_host_asked_for() {
        let host = HeaderValue::from_static("auth.internal:8001");
        assert_eq!(
            base_url_from(Some("https://auth.example.com/"), Some(&host), 8001),
            "https://auth.example.com"
        );
        assert_eq!(
            base_url_from(None, Some(&host), 8001),
            "http://auth.internal:8001"
        );
        let odd = HeaderValue::from_static("evil.test/path?x");
        assert_eq!(
            base_url_from(None, Some(&odd), 8001),
            "http://127.0.0.1:8001"
        );
        assert_eq!(base_url_from(None, None, 9000), "http://127.0.0.1:9000");
    }
}
