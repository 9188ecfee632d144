//! The payments service over HTTP (and its binary), against real Postgres, Redis, RabbitMQ and
//! localstripe. One test binary, so the service links once.

mod common;
mod localstripe;
mod operations;

mod bus;
mod cli;
mod hot;
mod idempotency;
mod partners;
mod payments;
mod realtime;
mod reconcile;
mod refunds;
mod stripe;
mod validation;
mod webhooks;
