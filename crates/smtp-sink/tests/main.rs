//! The sink against real clients: SMTP conversations over TCP and HTTP requests to its API,
//! every test with its own sink on free ports.

mod api;
mod chaos;
mod cli;
mod conversation;
mod limits;
mod search;
mod support;
