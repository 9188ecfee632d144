//! Everything every Hatchery service repeats: configuration, the command line, telemetry, the
//! HTTP stack with problem+json errors, health and readiness, graceful shutdown, the database
//! pool with embedded migrations, and keyset pagination.
//!
//! A service is a type implementing [`Service`] in its `lib.rs`; its `main.rs` is
//! `fn main() -> ExitCode { kit::run::<my_service::MyService>() }`.

pub mod anonymize;
pub mod backup;
pub mod changelog;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod openapi;
pub mod pagination;
pub mod redis;
pub mod request_id;
pub mod service;
pub mod telemetry;

pub use anonymize::{Personal, Replace};
pub use config::{Secret, SecretUrl, Settings, Uses};
pub use db::SharedSchema;
pub use error::{ApiError, ConstraintExt, FieldErrors, PROBLEM_JSON, Problem};
pub use extract::{Json, Path, Query};
pub use pagination::{Page, PageParams, PageRequest};
pub use service::{App, Database, Resources, Service, Started, run, shutdown_signal};

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

// Re-exported so services name one version of each.
pub use {axum, clap, populator, sqlx, utoipa, utoipa_axum};
