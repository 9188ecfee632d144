//! Validated types and rules, no I/O: input is parsed into these at the edge, so what is
//! past the handlers is known to be well-formed.

mod secret;
mod user;

pub use secret::{OpaqueToken, TokenDigest};
pub use user::{DisplayName, Email, Password, Role, Roles, Scopes};
