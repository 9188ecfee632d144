//! The bus against real RabbitMQ and Postgres: outbox and relay, consumers with inbox, retries
//! and parking, and an orderly shutdown. One test binary (nextest runs each test in a process of
//! its own, so the shutdown test's log capture stays apart).

mod common;

mod consumer;
mod outbox;
mod shutdown;
