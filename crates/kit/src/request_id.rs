//! The request id: taken from `X-Request-Id` when sane, generated (UUIDv7) otherwise, echoed on
//! the response, recorded on every log line of the request and available to code that builds
//! errors, outgoing calls and events.

use http::HeaderName;

pub static HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: String;
}

/// An accepted id is at most 128 characters of `[A-Za-z0-9._@-]`.
pub fn is_acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// The incoming id if acceptable, else a fresh UUIDv7.
pub fn accept_or_generate(incoming: Option<&str>) -> String {
    match incoming {
        Some(id) if is_acceptable(id) => id.to_owned(),
        _ => uuid::Uuid::now_v7().to_string(),
    }
}

/// The id of the request being handled by this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `future` with `id` as the current request id.
pub async fn scope<F: Future>(id: String, future: F) -> F::Output {
    CURRENT.scope(id, future).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_sane_ids_and_replaces_others() {
        assert_eq!(accept_or_generate(Some("abc-123_x.y@z")), "abc-123_x.y@z");
        for bad in ["", "has space", "ümlaut", "new\nline", &"x".repeat(129)] {
            let id = accept_or_generate(Some(bad));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok());
        }
        assert!(is_acceptable(&"x".repeat(128)));
    }
}
