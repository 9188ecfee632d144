//! The `x-bus-*` headers: what the consumer writes on the copies it sends to a retry queue or
//! to the parking queue, and reading them back (the consumer: the attempts so far; `events
//! parked`: why a message is there).

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::AMQPValue;

use crate::topology::long_string;

/// Header: failed handler runs so far.
pub const ATTEMPTS_HEADER: &str = "x-bus-attempts";
/// Header of a parked message: why (`invalid_json`, `not_cloudevent`, `unknown_type`,
/// `unsupported_dataversion`, `invalid_data`, `handler_failed`).
pub const REASON_HEADER: &str = "x-bus-reason";
/// Header: the last error (parked and retried messages).
pub const ERROR_HEADER: &str = "x-bus-error";
/// Header of a parked message: when it was parked (RFC 3339).
pub const PARKED_AT_HEADER: &str = "x-bus-parked-at";
/// Header of a parked message: the routing key it arrived with.
pub const ROUTING_KEY_HEADER: &str = "x-bus-routing-key";

/// Longest error text kept in a header.
const MAX_ERROR_CHARS: usize = 2_000;

/// A header to add to a copy.
pub(crate) type Header = (&'static str, AMQPValue);

/// The headers of a copy sent to a retry queue after the `failed`-th failed run.
pub(crate) fn retry_headers(failed: u32, error: &str) -> Vec<Header> {
    vec![
        (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(failed))),
        (ERROR_HEADER, long_string(&truncate(error))),
    ]
}

/// The headers of a parked copy: why, the error, the failed runs, when, and the routing key
/// the message arrived with (a copy goes to the parking queue under the queue's name).
pub(crate) fn parking_headers(
    reason: &str,
    error: &str,
    attempts: u32,
    routing_key: &str,
    parked_at: DateTime<Utc>,
) -> Vec<Header> {
    vec![
        (REASON_HEADER, long_string(reason)),
        (ERROR_HEADER, long_string(&truncate(error))),
        (ATTEMPTS_HEADER, AMQPValue::LongLongInt(i64::from(attempts))),
        (PARKED_AT_HEADER, long_string(&parked_at.to_rfc3339())),
        (ROUTING_KEY_HEADER, long_string(routing_key)),
    ]
}

/// The failed runs recorded on a message (0 on a first delivery).
pub(crate) fn attempts(properties: &BasicProperties) -> u32 {
    header_u32(properties, ATTEMPTS_HEADER).unwrap_or(0)
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A numeric header, whatever integer type the sender used.
pub(crate) fn header_u32(properties: &BasicProperties, name: &str) -> Option<u32> {
    let value = properties.headers().as_ref()?.inner().get(name)?;
    let number: i64 = match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        _ => return None,
    };
    u32::try_from(number).ok()
}

/// A text header.
pub(crate) fn header_text(properties: &BasicProperties, name: &str) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::FieldTable;

    use super::*;

    fn with(headers: Vec<Header>) -> BasicProperties {
        let mut table = FieldTable::default();
        for (key, value) in headers {
            table.insert(key.into(), value);
        }
        BasicProperties::default().with_headers(table)
    }

    #[test]
    fn long_errors_are_cut() {
        let cut = truncate(&"x".repeat(5000));
        assert_eq!(cut.chars().count(), MAX_ERROR_CHARS + 1);
        assert_eq!(truncate("short"), "short");
        let multibyte = truncate(&"é".repeat(3000));
        assert_eq!(multibyte.chars().count(), MAX_ERROR_CHARS + 1);
    }

    #[test]
    fn parking_headers_read_back() {
        let at = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let properties = with(parking_headers(
            "invalid_data",
            &"e".repeat(3000),
            3,
            "shop.item.created",
            at,
        ));
        assert_eq!(
            header_text(&properties, REASON_HEADER).as_deref(),
            Some("invalid_data")
        );
        assert_eq!(attempts(&properties), 3);
        assert_eq!(
            header_text(&properties, ERROR_HEADER).map(|e| e.chars().count()),
            Some(MAX_ERROR_CHARS + 1),
            "the error is cut"
        );
        assert_eq!(
            header_text(&properties, PARKED_AT_HEADER).as_deref(),
            Some("2026-11-21T10:00:00+00:00")
        );
        assert_eq!(
            header_text(&properties, ROUTING_KEY_HEADER).as_deref(),
            Some("shop.item.created")
        );
        let retried = with(retry_headers(2, "boom"));
        assert_eq!(attempts(&retried), 2);
        assert_eq!(header_text(&retried, ERROR_HEADER).as_deref(), Some("boom"));
    }

    #[test]
    fn attempts_accept_any_integer_and_nothing_else() {
        assert_eq!(attempts(&BasicProperties::default()), 0);
        let short = with(vec![(ATTEMPTS_HEADER, AMQPValue::ShortShortUInt(4))]);
        assert_eq!(attempts(&short), 4);
        let long = with(vec![(ATTEMPTS_HEADER, AMQPValue::LongInt(7))]);
        assert_eq!(attempts(&long), 7);
        let negative = with(vec![(ATTEMPTS_HEADER, AMQPValue::LongLongInt(-1))]);
        assert_eq!(attempts(&negative), 0);
        let text = with(vec![(ATTEMPTS_HEADER, long_string("3"))]);
        assert_eq!(attempts(&text), 0);
    }
}
