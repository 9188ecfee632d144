//! The domain's rules (`crate::domain`) as OpenAPI schemas, so a request the document calls
//! valid is one the handlers accept, and the other way round.

use kit::openapi::{CONTROL, WHITESPACE, trimmed_text};
use utoipa::openapi::{Object, ObjectBuilder, Type};

use crate::domain::{DisplayName, Email, Password};

/// [`Email`]: trimmed; a last `@` with something before it and a domain after it, no
/// whitespace or control characters inside, the domain neither starting nor ending with `.`;
/// at most 254 characters.
pub fn email() -> Object {
    let local = format!("[^{WHITESPACE}{CONTROL}]+");
    let domain_edge = format!("[^{WHITESPACE}{CONTROL}@.]");
    let domain_inner = format!("[^{WHITESPACE}{CONTROL}@]");
    // The address has no whitespace inside, so its length is that of the run of
    // non-whitespace after the leading whitespace (a lookahead: `maxLength` would count the
    // whitespace that is trimmed away).
    let max = Email::MAX_LEN;
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!(
            "^[{WHITESPACE}]*(?=[^{WHITESPACE}]{{1,{max}}}[{WHITESPACE}]*$){local}@{domain_edge}(?:{domain_inner}*{domain_edge})?[{WHITESPACE}]*$"
        )))
        .description(Some(
            "An email address (compared case-insensitively, surrounding whitespace ignored); at most 254 characters.",
        ))
        .examples(["ada@hatchery.test"])
        .build()
}

/// A new [`Password`]: 8 to 1024 characters.
pub fn new_password() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(Password::MIN_CHARS))
        .max_length(Some(Password::MAX_CHARS))
        .description(Some("8 to 1024 characters."))
        .build()
}

/// A password presented for checking: at most 1024 characters.
pub fn presented_password() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(Password::MAX_CHARS))
        .build()
}

/// [`DisplayName`].
pub fn display_name() -> Object {
    trimmed_text(DisplayName::MAX_CHARS, false)
}

/// [`DisplayName`], or `null`/absent for "unchanged".
pub fn optional_display_name() -> Object {
    trimmed_text(DisplayName::MAX_CHARS, true)
}
