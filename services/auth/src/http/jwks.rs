//! The public keys tokens are verified with (JWKS, RFC 7517/8037): the active key and every
//! retired key whose tokens may still be valid, each with its `kid`.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// A JSON Web Key Set (RFC 7517), as served.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct KeySet {
    keys: Vec<Key>,
}

/// One public key: Ed25519 (RFC 8037).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Key {
    /// `OKP`.
    kty: String,
    /// `Ed25519`.
    crv: String,
    /// The key id tokens name in their header.
    kid: String,
    /// The public key, base64url without padding.
    x: String,
    /// `EdDSA`.
    alg: String,
    /// `sig`.
    #[schema(rename = "use")]
    key_use: String,
}

/// `/api/auth/v1/jwks`.
pub fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(jwks))
}

/// `/.well-known/jwks.json`, where verifiers look by default.
pub fn well_known_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(well_known_jwks))
}

/// The signing keys' public halves.
#[utoipa::path(
    get, path = "/jwks", tag = "keys",
    responses((status = 200, description = "The key set (`Cache-Control: public, max-age=60`)", body = KeySet))
)]
async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    key_set(&state)
}

/// The signing keys' public halves (the conventional location).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "keys",
    responses((status = 200, description = "The same key set as `/api/auth/v1/jwks`", body = KeySet))
)]
async fn well_known_jwks(State(state): State<AppState>) -> impl IntoResponse {
    key_set(&state)
}

fn key_set(state: &AppState) -> impl IntoResponse + use<> {
    let keys = state.keys.current();
    (
        // Short, so a new key (rotation) reaches caches quickly; verifiers refetch on an
        // unknown kid anyway.
        [(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=60"),
        )],
        axum::Json(keys.jwks.clone()),
    )
}
