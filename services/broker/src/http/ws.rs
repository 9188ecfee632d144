//! `GET /ws`: the websocket endpoint.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kit::ApiError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Broker;
use crate::connection;

pub fn router() -> OpenApiRouter<Arc<Broker>> {
    OpenApiRouter::new().routes(routes!(websocket))
}

/// Open a websocket speaking socketshark's protocol (JSON text frames: `auth`, `subscribe`,
/// `message`, `unsubscribe`, `ping`; see docs/broker.md).
#[utoipa::path(
    get, path = "/ws", tag = "websocket",
    params(
        ("Connection" = String, Header, pattern = r"^.*[Uu][Pp][Gg][Rr][Aa][Dd][Ee].*$",
            example = "Upgrade", description = "Names `upgrade` (any case)"),
        ("Upgrade" = String, Header, pattern = "^[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt]$",
            example = "websocket", description = "`websocket` (any case)"),
        ("Sec-WebSocket-Version" = String, Header, pattern = "^13$", example = "13",
            description = "`13` (RFC 6455)"),
        ("Sec-WebSocket-Key" = String, Header, example = "dGhlIHNhbXBsZSBub25jZQ==",
            description = "The client's nonce (RFC 6455): base64 of 16 random bytes"),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the connection is a websocket",
            headers(
                ("Upgrade" = String, description = "`websocket`"),
                ("Sec-WebSocket-Accept" = String, description = "The answer to `Sec-WebSocket-Key` (RFC 6455)"),
            )),
        (status = 400, description = "Not a websocket upgrade request (`websocket_required`)", body = kit::Problem),
        (status = 503, description = "This broker takes no more connections now (`too_many_connections`); retry, another instance may", body = kit::Problem),
    )
)]
async fn websocket(
    State(broker): State<Arc<Broker>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "websocket_required",
                format!("This endpoint only accepts websocket upgrades: {rejection}."),
            )
            .into_response();
        }
    };
    let Some(permit) = broker.admit() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "This broker cannot take more connections now; retry (another instance may).",
        )
        .into_response();
    };
    let request_id = kit::request_id::current().unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let limits = &broker.config.limits;
    let tasks = broker.tasks.clone();
    upgrade
        .read_buffer_size(limits.read_buffer_bytes)
        // Small writes go out at each flush; keeping this low keeps idle connections small.
        .write_buffer_size(8 * 1024)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_failed_upgrade(|err| tracing::debug!(error = %err, "websocket upgrade failed"))
        .on_upgrade(move |socket| tasks.track_future(connection::serve(socket, permit, request_id)))
}
