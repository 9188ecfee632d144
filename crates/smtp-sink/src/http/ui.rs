//! The web mailbox: one page of plain HTML, CSS and JavaScript compiled into the binary
//! (no CDN), working only through the public API.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::State;

const INDEX: &str = include_str!("../ui/index.html");

/// The page loads nothing from elsewhere; message HTML is framed from `/view/`.
const PAGE_POLICY: &str = "default-src 'self'; script-src 'unsafe-inline'; \
                           style-src 'unsafe-inline'; frame-src 'self'; img-src 'self' data:";

pub(super) fn router() -> Router<State> {
    Router::new().route("/", get(index))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
        ],
        INDEX,
    )
}
