//! localstripe, a stateful fake Stripe server (PyPI), for the payments service's `stripe`
//! provider tests: installed pinned into `target/localstripe/venv`. The tests start their own
//! instance on 127.0.0.1 from there (`services/payments/tests/api/localstripe.rs`); `cargo
//! xtask infra` and `cargo xtask test` install it.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{util, venv};

/// Pinned: the tests know its behaviour (and its gaps) at this version.
pub const REQUIREMENTS: &[&str] = &["localstripe==1.15.10"];

/// `target/localstripe`.
pub fn dir(root: &Path) -> PathBuf {
    util::target_dir(root).join("localstripe")
}

/// The virtualenv with localstripe, installed if needed.
pub fn ensure(root: &Path) -> Result<PathBuf> {
    venv::ensure(&dir(root), REQUIREMENTS, "bin/localstripe", "localstripe")
}
