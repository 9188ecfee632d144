//! iCalendar (RFC 5545) feeds: one `VEVENT` per event with a stable `UID`, the event's
//! `SEQUENCE` (grows with every change attendees should see), `STATUS:CANCELLED` once
//! cancelled, and times as UTC instants (exact whatever the reader's zone; the event's own IANA
//! zone is named in `X-HATCHERY-TZID` and the description). Lines end in CRLF and are folded at
//! 75 octets, as the RFC asks.

use chrono::{DateTime, Utc};

use crate::store::events::EventRow;

/// One event of a feed.
pub struct Entry<'a> {
    pub event: &'a EventRow,
    pub url: String,
    /// For a personal feed: the registration's state (`waitlisted`, ...), shown in the summary.
    pub note: Option<&'a str>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn stamp(at: DateTime<Utc>) -> String {
    at.format("%Y%m%dT%H%M%SZ").to_string()
}

/// Appends `line` folded at 75 octets (never inside a UTF-8 character), ending in CRLF.
fn push_line(out: &mut String, line: &str) {
    let mut width = 0;
    for c in line.chars() {
        let len = c.len_utf8();
        if width + len > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str("\r\n");
}

/// A whole calendar named `name`.
pub fn render(name: &str, entries: &[Entry<'_>], now: DateTime<Utc>) -> String {
    let mut out = String::new();
    for line in [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Hatchery//events//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
    ] {
        push_line(&mut out, line);
    }
    push_line(&mut out, &format!("X-WR-CALNAME:{}", escape(name)));
    for entry in entries {
        let event = entry.event;
        push_line(&mut out, "BEGIN:VEVENT");
        push_line(&mut out, &format!("UID:{}@events.hatchery", event.uuid));
        push_line(&mut out, &format!("DTSTAMP:{}", stamp(now)));
        push_line(&mut out, &format!("DTSTART:{}", stamp(event.starts_at)));
        push_line(&mut out, &format!("DTEND:{}", stamp(event.ends_at)));
        push_line(&mut out, &format!("SEQUENCE:{}", event.sequence));
        push_line(
            &mut out,
            &format!("LAST-MODIFIED:{}", stamp(event.updated_at)),
        );
        let summary = match entry.note {
            Some(note) => format!("{} ({note})", event.title),
            None => event.title.clone(),
        };
        push_line(&mut out, &format!("SUMMARY:{}", escape(&summary)));
        let description = format!("{}\n\nTime zone: {}", event.description, event.time_zone);
        push_line(
            &mut out,
            &format!("DESCRIPTION:{}", escape(description.trim())),
        );
        if let Some(place) = event.venue.as_deref().or(event.online_url.as_deref()) {
            push_line(&mut out, &format!("LOCATION:{}", escape(place)));
        }
        push_line(&mut out, &format!("URL:{}", entry.url));
        push_line(
            &mut out,
            &format!("X-HATCHERY-TZID:{}", escape(&event.time_zone)),
        );
        let status = if event.status == "cancelled" {
            "CANCELLED"
        } else {
            "CONFIRMED"
        };
        push_line(&mut out, &format!("STATUS:{status}"));
        push_line(&mut out, "END:VEVENT");
    }
    push_line(&mut out, "END:VCALENDAR");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_long_lines_folded() {
        assert_eq!(escape("a;b,c\\d\ne"), "a\\;b\\,c\\\\d\\ne");
        let mut out = String::new();
        push_line(&mut out, &"é".repeat(60));
        for line in out.split("\r\n") {
            assert!(line.len() <= 75, "{line:?}");
        }
        assert_eq!(out.replace("\r\n ", "").trim_end(), "é".repeat(60));
    }
}
