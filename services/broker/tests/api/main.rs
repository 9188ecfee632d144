//! The broker over real websockets (and its binary), fed through the shared Redis, with the
//! real auth service where tickets and tokens come in. One test binary, so it links once.

mod common;

mod authorization;
mod cli;
mod delivery;
mod jwt;
mod limits;
mod protocol;
mod redis_outage;
mod with_auth;
