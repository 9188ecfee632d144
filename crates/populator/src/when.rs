//! Points in time in seed data: absolute, or relative to the moment of loading.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Tagged;

use crate::Spanned;

/// The largest relative offset accepted in YAML: 100 years of 365 days.
const MAX_OFFSET_SECS: u64 = 100 * 365 * 86_400;

const EXPECTED_TIME: &str = "an RFC 3339 timestamp like `2026-01-02T10:00:00Z`, \
                             or `!ago <duration>`, `!in <duration>`, `!now`";
const EXPECTED_DURATION: &str = "a duration like `35d` or `2h 30m` (units: s, m, h, d, w)";

/// A point in time written in a seed file.
///
/// | YAML                      | value                                 |
/// |---------------------------|---------------------------------------|
/// | `2026-01-02T10:00:00Z`    | `When::At(..)` (any RFC 3339 offset)  |
/// | `!ago 35d`, `!ago 2h 30m` | `When::Ago(..)`                       |
/// | `!in 3d`                  | `When::In(..)`                        |
/// | `!now` (also `!now ~`)    | `When::Now`                           |
///
/// A duration is one or more `<number><unit>` parts, optionally separated by spaces, with the
/// units `s`, `m`, `h`, `d` (24 h) and `w` (7 d), at most 100 years in total. Anything else is a
/// deserialization error that names the accepted forms; read through [`Scenario::read`] it
/// carries the file and line.
///
/// The tags are only seen when deserializing with serde-saphyr directly (not through
/// `#[serde(flatten)]` or untagged/internally tagged enums, where serde buffers values and
/// drops tags).
///
/// **Optional times:** serde-saphyr reads a tag with an empty value (`!now`) as null when the
/// target is an `Option`, so a plain `Option<When>` field would turn `!now` into `None`.
/// Declare optional fields with [`optional`] (or [`optional_spanned`]) instead:
///
/// ```
/// # use populator::{When, Spanned};
/// #[derive(serde::Deserialize)]
/// struct Note {
///     created_at: When,
///     #[serde(default, deserialize_with = "populator::when::optional")]
///     deleted_at: Option<When>,
///     #[serde(default, deserialize_with = "populator::when::optional_spanned")]
///     archived_at: Option<Spanned<When>>,
/// }
/// ```
///
/// [`Scenario::read`]: crate::Scenario::read
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// An absolute instant.
    At(DateTime<Utc>),
    /// This long before the moment of loading.
    Ago(Duration),
    /// This long after the moment of loading.
    In(Duration),
    /// The moment of loading.
    Now,
}

impl When {
    /// The instant this stands for when the scenario is loaded at `now`.
    ///
    /// Offsets beyond chrono's range (only possible for hand-built values) saturate.
    #[must_use]
    pub fn resolve(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match *self {
            Self::At(at) => at,
            Self::Now => now,
            Self::Ago(offset) => TimeDelta::from_std(offset)
                .ok()
                .and_then(|offset| now.checked_sub_signed(offset))
                .unwrap_or(DateTime::<Utc>::MIN_UTC),
            Self::In(offset) => TimeDelta::from_std(offset)
                .ok()
                .and_then(|offset| now.checked_add_signed(offset))
                .unwrap_or(DateTime::<Utc>::MAX_UTC),
        }
    }

    /// Interprets a scalar and its YAML tag. `Ok(None)` is an untagged null.
    fn from_yaml(value: Option<String>, tag: Option<&str>) -> Result<Option<Self>, String> {
        match tag {
            // No tag, the non-specific `!`, or `!!str`: an absolute timestamp.
            None | Some("!" | "tag:yaml.org,2002:str") => {
                value.map(|text| absolute(&text)).transpose()
            }
            Some("!now") => match value.as_deref().map(str::trim) {
                None | Some("") => Ok(Some(Self::Now)),
                Some(text) => Err(format!("`!now` takes no value, found `{text}`")),
            },
            Some(tag @ ("!ago" | "!in")) => {
                let Some(text) = value.filter(|text| !text.trim().is_empty()) else {
                    return Err(format!("`{tag}` needs {EXPECTED_DURATION}"));
                };
                let offset = parse_duration(&text).map_err(|why| {
                    format!("invalid duration `{text}` after `{tag}`: {why}; expected {EXPECTED_DURATION}")
                })?;
                Ok(Some(if tag == "!ago" {
                    Self::Ago(offset)
                } else {
                    Self::In(offset)
                }))
            }
            Some(tag) => Err(format!(
                "unknown tag `{tag}` for a time; expected {EXPECTED_TIME}"
            )),
        }
    }
}

fn absolute(text: &str) -> Result<When, String> {
    match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(at) => Ok(When::At(at.with_timezone(&Utc))),
        Err(_) if parse_duration(text).is_ok() => Err(format!(
            "invalid time `{text}`: write `!ago {text}` or `!in {text}` for a relative time; \
             expected {EXPECTED_TIME}"
        )),
        Err(err) => Err(format!(
            "invalid time `{text}` ({err}); expected {EXPECTED_TIME}"
        )),
    }
}

fn null_time() -> String {
    format!("missing time (found null); expected {EXPECTED_TIME}")
}

/// Parses `35d`, `2h 30m`, `1w2d`, … into a duration.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let (number, after) = rest.split_at(digits);
        let after = after.trim_start();
        let letters = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(letters);
        let seconds_per_unit: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "" => return Err(format!("missing unit after `{number}`")),
            other => return Err(format!("unknown unit `{other}`")),
        };
        total = number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(seconds_per_unit))
            .and_then(|part| total.checked_add(part))
            .filter(|&total| total <= MAX_OFFSET_SECS)
            .ok_or_else(|| "longer than 100 years".to_owned())?;
        rest = after.trim_start();
    }
    Ok(Duration::from_secs(total))
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Tagged(value, tag) = Tagged::<Option<String>>::deserialize(deserializer)?;
        match Self::from_yaml(value, tag.as_deref()) {
            Ok(Some(when)) => Ok(when),
            Ok(None) => Err(D::Error::custom(null_time())),
            Err(why) => Err(D::Error::custom(why)),
        }
    }
}

/// `deserialize_with` helper for an `Option<When>` field: null (`~`, empty) is `None`, `!now`
/// is `Some(When::Now)`. Combine with `#[serde(default)]` so the field may be left out.
///
/// # Errors
/// Whatever [`When`]'s own deserialization reports.
pub fn optional<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<When>, D::Error> {
    let Tagged(value, tag) = Tagged::<Option<String>>::deserialize(deserializer)?;
    When::from_yaml(value, tag.as_deref()).map_err(D::Error::custom)
}

/// `deserialize_with` helper for an `Option<Spanned<When>>` field; see [`optional`].
///
/// # Errors
/// Whatever [`When`]'s own deserialization reports.
pub fn optional_spanned<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Spanned<When>>, D::Error> {
    let spanned = Spanned::<Tagged<Option<String>>>::deserialize(deserializer)?;
    let line = spanned.line();
    let Tagged(value, tag) = spanned.into_inner();
    When::from_yaml(value, tag.as_deref())
        .map(|when| when.map(|when| Spanned::new(when, line)))
        .map_err(D::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let d = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(d("35d"), Ok(35 * 86_400));
        assert_eq!(d("2h 30m"), Ok(2 * 3_600 + 30 * 60));
        assert_eq!(d(" 1w2d 5s "), Ok(9 * 86_400 + 5));
        assert_eq!(d("0s"), Ok(0));
        assert_eq!(d("90"), Err("missing unit after `90`".to_owned()));
        assert_eq!(d("3y"), Err("unknown unit `y`".to_owned()));
        assert_eq!(d("-3d"), Err("expected a number at `-3d`".to_owned()));
        assert_eq!(d("3 d 4 h"), Ok(3 * 86_400 + 4 * 3_600));
        assert_eq!(d("3d,4h"), Err("expected a number at `,4h`".to_owned()));
        assert_eq!(d(""), Err("empty duration".to_owned()));
        assert_eq!(
            d("99999999999999999999999d"),
            Err("longer than 100 years".to_owned())
        );
        assert_eq!(d("36501d"), Err("longer than 100 years".to_owned()));
    }

    #[test]
    fn resolve_saturates() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            When::Ago(Duration::MAX).resolve(now),
            DateTime::<Utc>::MIN_UTC
        );
        assert_eq!(
            When::In(Duration::MAX).resolve(now),
            DateTime::<Utc>::MAX_UTC
        );
    }
}
