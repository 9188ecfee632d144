//! The events service over HTTP (and its binary), against real Postgres, Redis, RabbitMQ and,
//! for the platform test, real auth, payments (test provider), mail (with an SMTP sink) and
//! broker services. One test binary, so everything links once.

mod common;

mod calendars;
mod capacity;
mod cli;
mod operations;
mod organizing;
mod platform;
