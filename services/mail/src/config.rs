//! The service's own settings: the `[app]` section of its config file, or
//! `MAIL__APP__<KEY>` in the environment.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Longest note body accepted, in characters.
    pub max_body_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_chars: 10_000,
        }
    }
}
