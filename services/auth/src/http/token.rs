//! `POST /token`: the OAuth 2.0 token endpoint (RFC 6749), JSON or form-encoded.
//!
//! - `grant_type=password` with `email` (or `username`) and `password`: a user signs in.
//! - `grant_type=refresh_token` with `refresh_token`: a new access token, and the next refresh
//!   token (rotation; see [`crate::sessions::refresh`]).
//! - `grant_type=client_credentials` with `client_id` and `client_secret` (in the body or as
//!   HTTP Basic): a service token, without refresh token.
//!
//! Errors use RFC 6749's shape, `{"error", "error_description"}`: `invalid_request`,
//! `invalid_grant`, `invalid_client` (401), `invalid_scope`, `unsupported_grant_type`, and
//! `rate_limited` (429 with `Retry-After`). A wrong password and an unknown email get the
//! same answer, after the same work (an unknown email is checked against a dummy hash).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AppState, Client};
use crate::domain::{Email, Password, Scopes, TokenDigest};
use crate::passwords::Verdict;
use crate::sessions::{Issued, Refresh};
use crate::store::audit::{self, Entry};
use crate::store::{clients, users};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(token))
}

/// The start of auth's document: the `oauth2` security scheme, so a client (or `/docs`) can
/// sign in with this endpoint's password and client-credentials grants. Operations that need
/// a token accept it as `bearer` (from anywhere) or `oauth2` (signed in through `/docs`).
pub fn document() -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{
        ClientCredentials, Flow, OAuth2, Password, Scopes, SecurityScheme,
    };
    let mut document = utoipa::openapi::OpenApi::default();
    let components = document.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "oauth2".to_owned(),
        utoipa::openapi::RefOr::T(SecurityScheme::OAuth2(OAuth2::with_description(
            [
                Flow::Password(Password::new(TOKEN_URL, Scopes::new())),
                Flow::ClientCredentials(ClientCredentials::new(TOKEN_URL, Scopes::new())),
            ],
            "Sign in with `POST /api/auth/v1/token`: users with their email and password, services with their client id and secret.",
        ))),
    );
    document
}

const TOKEN_URL: &str = "/api/auth/v1/token";

/// The token request, in either encoding. Every field is optional here so a missing one is
/// answered `invalid_request` naming it, as RFC 6749 wants, not a generic parse error.
#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `password`, `refresh_token` or `client_credentials`.
    #[schema(example = "password", nullable = false)]
    pub grant_type: Option<String>,
    /// The user's email (password grant); `username` is accepted too (RFC 6749's name).
    #[serde(alias = "username")]
    #[schema(example = "ada@hatchery.test", nullable = false)]
    pub email: Option<String>,
    #[schema(nullable = false)]
    pub password: Option<String>,
    #[schema(nullable = false)]
    pub refresh_token: Option<String>,
    #[schema(nullable = false)]
    pub client_id: Option<String>,
    #[schema(nullable = false)]
    pub client_secret: Option<String>,
    /// Space-separated scopes (client credentials); default: every scope of the client.
    #[schema(nullable = false)]
    pub scope: Option<String>,
}

/// A successful answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Absent for client credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// An RFC 6749 error.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    pub error: String,
    pub error_description: String,
}

/// A refusal, answered with RFC 6749's body.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl Refusal {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error,
            description: description.into(),
            headers: Vec::new(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn invalid_client(basic: bool) -> Refusal {
        let mut refusal = Refusal::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Client authentication failed.",
        );
        let challenge = if basic {
            "Basic realm=\"hatchery\""
        } else {
            "Bearer"
        };
        refusal.headers.push((
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        ));
        refusal
    }

    fn rate_limited(limited: crate::ratelimit::Limited) -> Refusal {
        let mut refusal = Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "Too many attempts; try again in {} seconds.",
                limited.retry_after
            ),
        );
        refusal
            .headers
            .push((header::RETRY_AFTER, limited.retry_after.into()));
        refusal
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = OAuthError {
            error: self.error.to_owned(),
            error_description: self.description,
        };
        let mut response =
            (self.status, super::extract::no_store(), axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// What a grant handler ends with: a refusal for the client, or an internal error (500
/// problem, cause logged).
enum Failure {
    Refused(Refusal),
    Internal(anyhow::Error),
}

impl From<Refusal> for Failure {
    fn from(refusal: Refusal) -> Self {
        Failure::Refused(refusal)
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure::Internal(err.into())
    }
}

type GrantResult = Result<Issued, Failure>;

/// Exchange credentials for tokens.
#[utoipa::path(
    post, path = "/token", tag = "sessions",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded",
        description = "Form-encoded (RFC 6749) or the same fields as JSON"),
    responses(
        (status = 200, description = "Tokens (`Cache-Control: no-store`)", body = TokenResponse),
        (status = 400, description = "`invalid_request` (also for a body that is not form-encoded or JSON, or too large), `invalid_grant`, `invalid_scope`, `unsupported_grant_type`", body = OAuthError),
        (status = 401, description = "`invalid_client`", body = OAuthError,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"hatchery\"` (HTTP Basic was used) or `Bearer`"))),
        (status = 429, description = "`rate_limited`", body = OAuthError,
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
async fn token(State(state): State<AppState>, client: Client, request: Request) -> Response {
    let basic = basic_credentials(request.headers());
    let input = match read_request(request, &state).await {
        Ok(input) => input,
        Err(refusal) => return refusal.into_response(),
    };
    let outcome = match input.grant_type.as_deref() {
        Some("password") => password_grant(&state, &client, input).await,
        Some("refresh_token") => refresh_grant(&state, input).await,
        Some("client_credentials") => client_credentials_grant(&state, &client, input, basic).await,
        Some("") | None => Err(Refusal::invalid_request("grant_type is required.").into()),
        Some(_) => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Supported grant types: password, refresh_token, client_credentials.",
        )
        .into()),
    };
    match outcome {
        Ok(issued) => {
            let body = TokenResponse {
                access_token: issued.access_token,
                token_type: "Bearer".into(),
                expires_in: issued.expires_in,
                refresh_token: issued.refresh_token.map(|t| t.into_string()),
                scope: issued.scope,
            };
            (StatusCode::OK, super::extract::no_store(), axum::Json(body)).into_response()
        }
        Err(Failure::Refused(refusal)) => refusal.into_response(),
        Err(Failure::Internal(err)) => kit::ApiError::internal(err).into_response(),
    }
}

/// Reads the body as form-encoded or JSON, by its content type.
async fn read_request(request: Request, state: &AppState) -> Result<TokenRequest, Refusal> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match content_type.as_str() {
        "application/x-www-form-urlencoded" => {
            axum::Form::<TokenRequest>::from_request(request, state)
                .await
                .map(|axum::Form(input)| input)
                .map_err(|rejection| {
                    Refusal::invalid_request(format!(
                        "The form body does not parse: {}",
                        rejection.body_text()
                    ))
                })
        }
        "application/json" => {
            let bytes = Bytes::from_request(request, state)
                .await
                .map_err(|rejection| Refusal::invalid_request(rejection.body_text()))?;
            serde_json::from_slice(&bytes).map_err(|err| {
                Refusal::invalid_request(format!(
                    "The body must be a JSON object of string fields: {err}."
                ))
            })
        }
        _ => Err(Refusal::invalid_request(
            "Send the parameters form-encoded (application/x-www-form-urlencoded) or as JSON.",
        )),
    }
}

fn required(value: Option<String>, name: &str) -> Result<String, Refusal> {
    value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Refusal::invalid_request(format!("{name} is required.")))
}

/// The answer to every failed password login, whatever the reason (no account enumeration).
const BAD_CREDENTIALS: &str = "The email or password is incorrect.";

async fn password_grant(state: &AppState, client: &Client, input: TokenRequest) -> GrantResult {
    let email_text = required(input.email, "email")?;
    let password_text = required(input.password, "password")?;
    let app = &state.settings.app;
    let email = Email::parse(&email_text).ok();
    if let Err(limited) = state
        .limits
        .hit("token", &app.rate_limits.token, client.ip, email.as_ref())
        .await
    {
        record_login_failure(state, client, "rate_limited", None, email.as_ref()).await;
        return Err(Refusal::rate_limited(limited).into());
    }
    let user = match &email {
        Some(email) => users::find_by_email(&state.db, email).await?,
        None => None,
    };
    let verdict = match Password::presented(password_text) {
        // Every path hashes once: unknown and deleted accounts cost what a wrong password costs.
        Some(password) => {
            let stored = user.as_ref().and_then(|u| u.password_hash.as_deref());
            (
                state.hasher.verify(&password, stored).await?,
                Some(password),
            )
        }
        None => (Verdict::Mismatch, None),
    };
    let (user, rehash, password) = match (user, verdict) {
        (None, _) => {
            record_login_failure(state, client, "unknown_email", None, email.as_ref()).await;
            return Err(Refusal::invalid_grant(BAD_CREDENTIALS).into());
        }
        (Some(user), _) if user.is_deleted() => {
            record_login_failure(state, client, "account_deleted", Some(user.uuid), None).await;
            return Err(Refusal::invalid_grant(BAD_CREDENTIALS).into());
        }
        (Some(user), (Verdict::Mismatch, _)) => {
            record_login_failure(state, client, "wrong_password", Some(user.uuid), None).await;
            return Err(Refusal::invalid_grant(BAD_CREDENTIALS).into());
        }
        (Some(user), (Verdict::Match { rehash }, password)) => (user, rehash, password),
    };
    // The password was right: the remaining refusals may say why.
    if !user.is_active {
        record_login_failure(state, client, "account_disabled", Some(user.uuid), None).await;
        return Err(Refusal::invalid_grant("This account is disabled.").into());
    }
    if app.require_verified_email && !user.email_verified() {
        record_login_failure(state, client, "email_not_verified", Some(user.uuid), None).await;
        return Err(Refusal::invalid_grant(
            "The email address has not been verified yet; follow the link in the verification mail (POST /email/resend sends a new one).",
        )
        .into());
    }
    let new_hash = match (rehash, &password) {
        (true, Some(password)) => Some(state.hasher.hash(password).await?),
        _ => None,
    };
    let mut tx = state.db.begin().await?;
    let issued = state
        .sessions
        .start(&mut tx, &user, &client.origin())
        .await?;
    users::touch_login(&mut *tx, user.id).await?;
    if let Some(hash) = &new_hash {
        users::set_password_hash(&mut *tx, user.id, hash).await?;
    }
    audit::record(
        &mut *tx,
        &Entry::success("login", Some(user.uuid), Some(user.uuid)).from_ip(client.ip_text()),
    )
    .await?;
    tx.commit().await?;
    if new_hash.is_some() {
        state.accounts.forget(user.uuid);
    }
    tracing::info!(user = %user.uuid, "signed in");
    Ok(issued)
}

/// Records a failed login; a failure to record is logged, not answered (the client's answer
/// does not depend on the audit log).
async fn record_login_failure(
    state: &AppState,
    client: &Client,
    reason: &'static str,
    user: Option<Uuid>,
    email: Option<&Email>,
) {
    let detail = match email {
        Some(email) => serde_json::json!({"email": email.as_str()}),
        None => serde_json::json!({}),
    };
    let entry = Entry::failure("login", reason, user)
        .from_ip(client.ip_text())
        .with_detail(detail);
    if let Err(err) = audit::record(&state.db, &entry).await {
        tracing::warn!(error = %err, "cannot record a failed login in the audit log");
    }
    tracing::info!(reason, user = ?user, "sign-in refused");
}

async fn refresh_grant(state: &AppState, input: TokenRequest) -> GrantResult {
    let presented = required(input.refresh_token, "refresh_token")?;
    match state.sessions.refresh(&state.db, &presented).await? {
        Refresh::Issued { issued, user } => {
            tracing::info!(user = %user, "token refreshed");
            Ok(issued)
        }
        Refresh::Refused(why) => Err(Refusal::invalid_grant(why).into()),
        Refresh::Reused { session, user } => {
            tracing::warn!(user = %user, session = %session, "a rotated refresh token was presented again; session ended");
            Err(Refusal::invalid_grant(
                "This refresh token was already used; the session has been ended for safety. Sign in again.",
            )
            .into())
        }
    }
}

/// `Authorization: Basic base64(client_id:client_secret)` (RFC 6749 §2.3.1), if present.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

async fn client_credentials_grant(
    state: &AppState,
    client: &Client,
    input: TokenRequest,
    basic: Option<(String, String)>,
) -> GrantResult {
    let used_basic = basic.is_some();
    let (id, secret) = match basic {
        Some(credentials) => credentials,
        None => match (input.client_id, input.client_secret) {
            (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => (id, secret),
            _ => return Err(Refusal::invalid_client(false).into()),
        },
    };
    let digest = TokenDigest::of(&secret);
    let found = match Uuid::parse_str(&id) {
        Ok(uuid) => clients::find(&state.db, uuid).await?,
        Err(_) => None,
    };
    let Some(found) = found.filter(|c| digest.matches(&c.secret_hash) && c.disabled_at.is_none())
    else {
        let entry = Entry::failure("client_token", "invalid_client", None)
            .from_ip(client.ip_text())
            .with_detail(serde_json::json!({"client_id": id.chars().take(64).collect::<String>()}));
        if let Err(err) = audit::record(&state.db, &entry).await {
            tracing::warn!(error = %err, "cannot record a failed client authentication");
        }
        return Err(Refusal::invalid_client(used_basic).into());
    };
    let granted = Scopes::parse(&found.scopes)
        .map_err(|why| anyhow::anyhow!("client {} has invalid stored scopes: {why}", found.uuid))?;
    let scopes = match input.scope.as_deref().map(str::trim) {
        None | Some("") => granted,
        Some(asked) => {
            let asked = Scopes::parse_space_separated(asked)
                .map_err(|why| Refusal::new(StatusCode::BAD_REQUEST, "invalid_scope", why))?;
            if !asked.is_subset(&granted) {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "The client may not request some of these scopes.",
                )
                .into());
            }
            asked
        }
    };
    let access_token = state.sessions.service_token(&found, &scopes)?;
    let entry = Entry::success("client_token", Some(found.uuid), None)
        .from_ip(client.ip_text())
        .with_detail(serde_json::json!({"client": found.name, "scope": scopes.joined()}));
    audit::record(&state.db, &entry).await?;
    Ok(Issued {
        access_token,
        expires_in: state.settings.app.service_token_ttl.as_secs(),
        refresh_token: None,
        scope: Some(scopes.joined()),
    })
}
