//! The template service over HTTP (and its binary), against real Postgres, Redis and RabbitMQ.
//! One test binary, so the service links once.

mod common;

mod cli;
mod events;
mod idempotency;
mod notes;
mod operations;
mod readiness;
mod shared_tables;
