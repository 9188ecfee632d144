//! The mail service's tests: one binary, against the real Postgres, Redis, RabbitMQ and an
//! SMTP sink per test.

mod auth_flow;
mod cli;
mod common;
mod crash;
mod delivery;
mod events;
mod messages;
mod operations;
mod readiness;
mod suppressions;
mod templates;
