//! Queries (runtime-checked sqlx). Rows reference users and sessions by local keys; what
//! leaves the service carries UUIDs only.

pub mod audit;
pub mod clients;
pub mod keys;
pub mod one_time;
pub mod sessions;
pub mod users;
