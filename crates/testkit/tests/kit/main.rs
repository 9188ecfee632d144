//! kit's HTTP stack, telemetry, shutdown and database helpers, through a probe service run by
//! testkit against a real Postgres. One test binary (nextest runs each test in its own process,
//! so the tests that install a global log subscriber or signal their own process stay apart).

mod common;

mod database;
mod error_tracking;
mod graceful_shutdown;
mod http_stack;
mod logs;
