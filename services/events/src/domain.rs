//! Validated event types and the rules of seats. Values of these types are valid by
//! construction: handlers and the populator parse input into them at the edge.

use std::fmt;

use chrono::{DateTime, Utc};

/// Text of 1 to `max` characters after trimming, without control characters.
pub fn line(input: &str, max: usize) -> Result<String, String> {
    let text = input.trim();
    if text.is_empty() {
        return Err("must not be empty".into());
    }
    if text.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(text.to_owned())
}

/// Free text up to `max` characters (may be empty).
pub fn free_text(input: &str, max: usize) -> Result<String, String> {
    if input.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if input.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    Ok(input.to_owned())
}

pub const TITLE_MAX: usize = 200;
pub const VENUE_MAX: usize = 300;
pub const TICKET_NAME_MAX: usize = 100;
pub const MAX_CAPACITY: i32 = 1_000_000;
pub const MAX_GUESTS: i32 = 20;
pub const MAX_TICKET_TYPES: usize = 20;

/// An IANA time zone name (`Europe/Madrid`), as the tz database knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl TimeZone {
    pub fn parse(input: &str) -> Result<Self, String> {
        input
            .parse::<chrono_tz::Tz>()
            .map(TimeZone)
            .map_err(|_| format!("{input:?} is not an IANA time zone (such as Europe/Madrid)"))
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// An online event's URL: absolute http(s).
pub fn online_url(input: &str) -> Result<String, String> {
    let url = url::Url::parse(input.trim()).map_err(|_| "must be an absolute URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    Ok(url.to_string())
}

/// An upper-case ISO 4217 code.
pub fn currency(input: &str) -> Result<String, String> {
    if input.len() == 3 && input.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(input.to_owned())
    } else {
        Err("must be an upper-case ISO 4217 code such as EUR".into())
    }
}

/// Where an event is in its life.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventStatus {
    Draft,
    Published,
    Cancelled,
    Completed,
}

impl EventStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Draft => "draft",
            EventStatus::Published => "published",
            EventStatus::Cancelled => "cancelled",
            EventStatus::Completed => "completed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "draft" => EventStatus::Draft,
            "published" => EventStatus::Published,
            "cancelled" => EventStatus::Cancelled,
            "completed" => EventStatus::Completed,
            _ => return None,
        })
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Listed publicly and in the public calendar.
    #[default]
    Public,
    /// Reachable by its link only.
    Unlisted,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Public => "public",
            Visibility::Unlisted => "unlisted",
        }
    }
}

/// Where a registration is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationStatus {
    /// Waiting for the organizer's approval; holds no seat.
    PendingApproval,
    /// A paid seat held until `expires_at`.
    PendingPayment,
    Confirmed,
    Waitlisted,
    Cancelled,
    /// The hold ran out before the payment.
    Expired,
    Rejected,
}

impl RegistrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationStatus::PendingApproval => "pending_approval",
            RegistrationStatus::PendingPayment => "pending_payment",
            RegistrationStatus::Confirmed => "confirmed",
            RegistrationStatus::Waitlisted => "waitlisted",
            RegistrationStatus::Cancelled => "cancelled",
            RegistrationStatus::Expired => "expired",
            RegistrationStatus::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending_approval" => RegistrationStatus::PendingApproval,
            "pending_payment" => RegistrationStatus::PendingPayment,
            "confirmed" => RegistrationStatus::Confirmed,
            "waitlisted" => RegistrationStatus::Waitlisted,
            "cancelled" => RegistrationStatus::Cancelled,
            "expired" => RegistrationStatus::Expired,
            "rejected" => RegistrationStatus::Rejected,
            _ => return None,
        })
    }

    /// Counts in the event's `taken` seats.
    pub fn holds_seats(self) -> bool {
        matches!(
            self,
            RegistrationStatus::Confirmed | RegistrationStatus::PendingPayment
        )
    }

    pub fn is_active(self) -> bool {
        matches!(
            self,
            RegistrationStatus::PendingApproval
                | RegistrationStatus::PendingPayment
                | RegistrationStatus::Confirmed
                | RegistrationStatus::Waitlisted
        )
    }
}

impl fmt::Display for RegistrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The seats a place takes at an event and one ticket type, as counted under the event's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub event_capacity: i32,
    pub event_taken: i32,
    pub ticket_capacity: i32,
    pub ticket_taken: i32,
}

impl Counts {
    /// Whether `seats` more fit; otherwise why not (the waitlist's logged reason).
    pub fn fits(&self, seats: i32) -> Result<(), String> {
        let event_left = self.event_capacity - self.event_taken;
        let ticket_left = self.ticket_capacity - self.ticket_taken;
        if seats > event_left {
            return Err(format!(
                "needs {seats} seats, the event has {event_left} left"
            ));
        }
        if seats > ticket_left {
            return Err(format!(
                "needs {seats} seats, the ticket type has {ticket_left} left"
            ));
        }
        Ok(())
    }
}

/// Whether registration is open at `now`.
pub fn registration_open(
    opens_at: Option<DateTime<Utc>>,
    closes_at: Option<DateTime<Utc>>,
    ends_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), &'static str> {
    if opens_at.is_some_and(|at| now < at) {
        return Err("Registration has not opened yet.");
    }
    if closes_at.is_some_and(|at| now >= at) || now >= ends_at {
        return Err("Registration is closed.");
    }
    Ok(())
}

/// A ticket secret: 32 random bytes, URL-safe base64 (43 characters), from aws-lc's RNG.
pub fn new_ticket_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system RNG works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The short code people read out: the first 8 characters of the secret, upper-case, grouped.
pub fn ticket_code(secret: &str) -> String {
    let head: String = secret
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_uppercase();
    format!(
        "{}-{}",
        &head[..4.min(head.len())],
        &head[4.min(head.len())..]
    )
}

/// The QR code of `text` as an SVG document.
pub fn qr_svg(text: &str) -> Result<String, String> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|err| err.to_string())?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(
            TimeZone::parse("Europe/Madrid").unwrap().name(),
            "Europe/Madrid"
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        assert!(TimeZone::parse("").is_err());
    }

    #[test]
    fn seats_fit_both_the_event_and_the_ticket_type() {
        let counts = Counts {
            event_capacity: 10,
            event_taken: 8,
            ticket_capacity: 5,
            ticket_taken: 4,
        };
        assert!(counts.fits(1).is_ok());
        assert!(
            counts
                .fits(2)
                .unwrap_err()
                .contains("ticket type has 1 left")
        );
        assert!(counts.fits(3).unwrap_err().contains("event has 2 left"));
    }

    #[test]
    fn tickets_are_unguessable_and_render_as_qr() {
        let a = new_ticket_secret();
        assert_eq!(a.len(), 43);
        assert_ne!(a, new_ticket_secret());
        assert_eq!(ticket_code(&a).len(), 9);
        assert!(qr_svg(&a).unwrap().starts_with("<?xml"));
    }
}
