//! Developer commands for the Hatchery workspace, run as `cargo xtask ...`.
//!
//! The binary (`main.rs`) only parses arguments; everything else lives here
//! so tests can call it with an explicit repository root.

pub mod bench;
pub mod checks;
pub mod compose;
pub mod contract;
pub mod generator;
pub mod http;
pub mod images;
pub mod infra;
pub mod k8s;
pub mod manifest;
pub mod migrations;
pub mod operations;
pub mod procs;
pub mod python;
pub mod release;
pub mod rewrite;
pub mod services;
pub mod testing;
pub mod up;
pub mod util;

pub use generator::{NewService, new_service};
