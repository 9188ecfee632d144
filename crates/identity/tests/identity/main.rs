//! Token verification, the extractors, JWKS handling and the local users table, against a real
//! service (fresh database) and the shared Redis. One test binary, so it links once.

mod common;

mod auth;
mod jwks;
mod users;
