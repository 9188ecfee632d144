//! The HTTP stack every service gets: request id, request span, access log, metrics, panic
//! catching, timeout, body limit, CORS, compression, problem fallbacks and the operational
//! endpoints (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::FutureExt;
use http::{HeaderValue, Method, StatusCode, header};
use sentry::SentryFutureExt;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use crate::config::HttpSettings;
use crate::error::ApiError;
use crate::health::{self, Dependency};
use crate::request_id;
use crate::telemetry;

/// What the operational endpoints need.
pub struct Ops {
    /// What `/readyz` checks.
    pub checks: Vec<Dependency>,
    pub openapi_json: String,
}

/// Wraps a service's API router in the platform stack and adds the operational endpoints.
pub fn stack(api: Router, ops: Ops, settings: &HttpSettings) -> Router {
    let checks = Arc::new(ops.checks);
    let openapi = Arc::new(ops.openapi_json);
    let router = api
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let checks = checks.clone();
                async move {
                    let readiness = health::probe(&checks).await;
                    let status = if readiness.is_ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, axum::Json(readiness))
                }
            }),
        )
        .route("/metrics", get(render_metrics))
        .merge(crate::openapi::docs())
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        )],
                        openapi.as_str().to_owned(),
                    )
                }
            }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "No resource at this path.",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This resource does not support this method.",
            )
        })
        .layer(DefaultBodyLimit::max(settings.body_limit))
        .layer(middleware::from_fn_with_state(
            settings.request_timeout,
            timeout,
        ))
        .layer(middleware::from_fn(request_context));
    let router = match cors(&settings.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(CompressionLayer::new())
}

async fn render_metrics() -> impl IntoResponse {
    let handle = telemetry::metrics_handle();
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        handle.render(),
    )
}

/// Request id, span, access log, metrics and panic catching for one request.
async fn request_context(req: Request, next: Next) -> Response {
    let id = request_id::accept_or_generate(
        req.headers()
            .get(&request_id::HEADER)
            .and_then(|value| value.to_str().ok()),
    );
    // Route templates, not raw paths, so labels and logs stay bounded.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        method = %method,
        route = %route,
        request_id = %id,
        user_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let handled = async move {
        match AssertUnwindSafe(next.run(req)).catch_unwind().await {
            Ok(response) => response,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string panic payload".to_owned());
                ApiError::internal(anyhow::anyhow!("handler panicked: {message}")).into_response()
            }
        }
    };
    let handled = request_id::scope(id.clone(), handled).instrument(span.clone());
    let mut response = if telemetry::error_tracking_enabled() {
        let hub = Arc::new(sentry::Hub::new_from_top(sentry::Hub::current()));
        hub.configure_scope(|scope| scope.set_tag("request_id", &id));
        handled.bind_hub(hub).await
    } else {
        handled.await
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(request_id::HEADER.clone(), value);
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("http_server_requests_total", &labels).increment(1);
    metrics::histogram!("http_server_request_duration_seconds", &labels)
        .record(elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = elapsed.as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    response
}

async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "The request took longer than {} s and was abandoned.",
                limit.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
                Method::OPTIONS,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                http::HeaderName::from_static("idempotency-key"),
                request_id::HEADER.clone(),
            ])
            .expose_headers([request_id::HEADER.clone(), header::RETRY_AFTER])
            .max_age(Duration::from_secs(3600)),
    )
}
