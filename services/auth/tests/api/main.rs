//! The auth service over HTTP (and its binary), against real Postgres, Redis and RabbitMQ.
//! One test binary, so the service links once.

mod common;
mod operations;

mod accounts;
mod admin;
mod cli;
mod demo;
mod events;
mod keys;
mod limits;
mod oauth_client;
mod recovery;
mod service_client;
mod sessions;
mod shared_tables;
mod tickets;
mod tokens;
