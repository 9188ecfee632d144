//! `/unsubscribe?token=`: the link every notification carries (`List-Unsubscribe`). A `POST`
//! (what mailbox providers send for RFC 8058 one-click, and the page's button) suppresses that
//! category for that address; a `GET` (a person following the link) only shows a page with
//! the button, so link scanners unsubscribe no one.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use kit::{ApiError, ApiResult, Query};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::domain::{Category, SuppressionReason};
use crate::store::suppressions::{self, NewSuppression};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(unsubscribe_page, unsubscribe))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenParam {
    /// The token of the mail's unsubscribe link.
    #[param(
        min_length = 1,
        max_length = 2000,
        pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$"
    )]
    pub token: String,
}

fn invalid_link() -> ApiError {
    ApiError::unprocessable(
        "invalid_token",
        "This unsubscribe link is not valid (it may be incomplete).",
    )
}

fn html(body: String) -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn what(category: Category) -> &'static str {
    match category {
        Category::Notification => "notifications",
        Category::Transactional => "account mail",
    }
}

/// The page the link opens: says what unsubscribing does, with a button that does it.
#[utoipa::path(
    get, path = "/unsubscribe", tag = "unsubscribe",
    params(TokenParam),
    responses(
        (status = 200, description = "A page with the unsubscribe button", content_type = "text/html", body = String),
        (status = 422, description = "Not a link this service made (`invalid_token`)", body = kit::Problem),
    )
)]
async fn unsubscribe_page(
    State(state): State<AppState>,
    Query(params): Query<TokenParam>,
) -> ApiResult<Response> {
    let (email, category) = state
        .unsubscribe
        .verify(&params.token)
        .ok_or_else(invalid_link)?;
    Ok(html(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Unsubscribe</title>\
         <p>Stop sending {} to <strong>{}</strong>?</p>\
         <form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
        what(category),
        escape(&email)
    )))
}

/// Unsubscribe: the address gets no more mail of the link's category (RFC 8058 one-click; the
/// body, `List-Unsubscribe=One-Click`, is not needed). Repeating it changes nothing.
#[utoipa::path(
    post, path = "/unsubscribe", tag = "unsubscribe",
    params(TokenParam),
    responses(
        (status = 200, description = "Unsubscribed (a page saying so)", content_type = "text/html", body = String),
        (status = 422, description = "Not a link this service made (`invalid_token`)", body = kit::Problem),
    )
)]
async fn unsubscribe(
    State(state): State<AppState>,
    Query(params): Query<TokenParam>,
) -> ApiResult<Response> {
    let (email, category) = state
        .unsubscribe
        .verify(&params.token)
        .ok_or_else(invalid_link)?;
    let added = suppressions::insert_unless_active(
        &state.db,
        &NewSuppression {
            email: &email,
            category: Some(category),
            reason: SuppressionReason::Unsubscribe,
            note: "one-click unsubscribe",
            expires_at: None,
            created_by: None,
        },
    )
    .await?;
    if added {
        tracing::info!(category = %category, "address unsubscribed");
    }
    Ok(html(format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Unsubscribed</title>\
         <p>Done: <strong>{}</strong> gets no more {}.</p>",
        escape(&email),
        what(category)
    )))
}
