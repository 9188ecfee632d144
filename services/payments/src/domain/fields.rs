//! Validated request fields. Values of these types are valid by construction: handlers and the
//! populator parse input into them at the edge, and nothing deeper re-checks. Each rule is also
//! stated as a JSON Schema pattern or bound (the OpenAPI document uses the same constants).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `reference.service`: a service name.
pub const REFERENCE_SERVICE_PATTERN: &str = "^[a-z][a-z0-9_-]{0,29}$";
/// `reference.id`: 1 to 200 visible ASCII characters.
pub const REFERENCE_ID_PATTERN: &str = "^[!-~]{1,200}$";
/// A provider's payment method id (`pm_card_visa`, `pm_1P...`).
pub const PAYMENT_METHOD_PATTERN: &str = "^pm_[A-Za-z0-9_]{1,100}$";
/// A metadata key.
pub const METADATA_KEY_PATTERN: &str = "^[A-Za-z0-9_.:-]{1,40}$";
pub const METADATA_MAX_KEYS: usize = 50;
pub const METADATA_MAX_VALUE_CHARS: usize = 500;
pub const DESCRIPTION_MAX_CHARS: usize = 1000;
pub const URL_MAX_CHARS: usize = 2048;

fn matches_visible_ascii(text: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_graphic())
}

/// What a payment pays for, `{service, id}`, unique per source (the caller that created it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reference {
    pub service: String,
    pub id: String,
}

impl Reference {
    /// Checks both parts; errors are keyed by the field under `reference`.
    pub fn parse(service: &str, id: &str) -> Result<Reference, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let service_ok = {
            let mut chars = service.chars();
            chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && service.len() <= 30
                && chars
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        };
        if !service_ok {
            errors.push((
                "reference.service",
                "must be a service name: 1 to 30 lower-case letters, digits, '_' or '-', starting with a letter".into(),
            ));
        }
        if !matches_visible_ascii(id, 1, 200) {
            errors.push((
                "reference.id",
                "must be 1 to 200 visible ASCII characters".into(),
            ));
        }
        if errors.is_empty() {
            Ok(Reference {
                service: service.to_owned(),
                id: id.to_owned(),
            })
        } else {
            Err(errors)
        }
    }
}

impl From<Reference> for contracts::payments::Reference {
    fn from(reference: Reference) -> Self {
        contracts::payments::Reference {
            service: reference.service,
            id: reference.id,
        }
    }
}

/// A provider's payment method id; whether the provider knows it is the provider's to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethodId(String);

impl PaymentMethodId {
    pub fn parse(text: &str) -> Result<PaymentMethodId, String> {
        let ok = text.strip_prefix("pm_").is_some_and(|rest| {
            (1..=100).contains(&rest.len())
                && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
        if ok {
            Ok(PaymentMethodId(text.to_owned()))
        } else {
            Err("must be a payment method id such as `pm_card_visa`".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Free-form string pairs kept with a payment or refund, bounded like Stripe's: at most 50
/// keys of up to 40 characters (`A-Z a-z 0-9 _ . : -`), values up to 500 characters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    pub fn parse(map: BTreeMap<String, String>) -> Result<Metadata, String> {
        if map.len() > METADATA_MAX_KEYS {
            return Err(format!("must have at most {METADATA_MAX_KEYS} keys"));
        }
        for (key, value) in &map {
            let key_ok = (1..=40).contains(&key.len())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
            if !key_ok {
                return Err(format!(
                    "key {key:?} must be 1 to 40 characters of A-Z, a-z, 0-9, '_', '.', ':' or '-'"
                ));
            }
            if value.chars().count() > METADATA_MAX_VALUE_CHARS {
                return Err(format!(
                    "value of {key:?} must be at most {METADATA_MAX_VALUE_CHARS} characters"
                ));
            }
            if value.contains('\0') {
                return Err(format!("value of {key:?} must not contain NUL"));
            }
        }
        Ok(Metadata(map))
    }

    pub fn as_map(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or_default()
    }
}

/// A payment's description: free text up to 1000 characters, no NUL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description(String);

impl Description {
    pub fn parse(text: &str) -> Result<Description, String> {
        if text.chars().count() > DESCRIPTION_MAX_CHARS {
            return Err(format!(
                "must be at most {DESCRIPTION_MAX_CHARS} characters"
            ));
        }
        if text.contains('\0') {
            return Err("must not contain NUL".into());
        }
        Ok(Description(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A partner's webhook endpoint: an absolute `http` or `https` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(String);

impl EndpointUrl {
    pub fn parse(text: &str) -> Result<EndpointUrl, String> {
        if text.len() > URL_MAX_CHARS {
            return Err(format!("must be at most {URL_MAX_CHARS} characters"));
        }
        let url = reqwest::Url::parse(text).map_err(|err| format!("is not a URL: {err}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("must be an http or https URL".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "must not carry credentials (sign requests with the endpoint's secret instead)"
                    .into(),
            );
        }
        Ok(EndpointUrl(url.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The event types an endpoint receives: a subset of what the service publishes (empty: all).
pub fn parse_event_types(types: &[String]) -> Result<Vec<String>, String> {
    let mut parsed: Vec<String> = Vec::with_capacity(types.len());
    for event_type in types {
        if !contracts::payments::EVENT_TYPES.contains(&event_type.as_str()) {
            return Err(format!(
                "{event_type:?} is not an event type; known: {}",
                contracts::payments::EVENT_TYPES.join(", ")
            ));
        }
        if !parsed.contains(event_type) {
            parsed.push(event_type.clone());
        }
    }
    parsed.sort();
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_a_service_and_an_id() {
        assert!(Reference::parse("events", "0193a000-0000-7000-8000-0000000000e1").is_ok());
        let errors = Reference::parse("Events", " ").unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| *f).collect();
        assert_eq!(fields, ["reference.service", "reference.id"]);
        assert!(Reference::parse("e", &"x".repeat(201)).is_err());
        assert!(Reference::parse("9lives", "x").is_err());
        assert!(Reference::parse("user-checkout_2", "x").is_ok());
    }

    #[test]
    fn metadata_is_bounded() {
        let ok = BTreeMap::from([("order".to_owned(), "A-17".to_owned())]);
        assert!(Metadata::parse(ok).is_ok());
        let many: BTreeMap<String, String> =
            (0..51).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        assert!(Metadata::parse(many).is_err());
        let long_value = BTreeMap::from([("k".to_owned(), "é".repeat(501))]);
        assert!(Metadata::parse(long_value).is_err());
        let bad_key = BTreeMap::from([("a b".to_owned(), "v".to_owned())]);
        assert!(Metadata::parse(bad_key).is_err());
    }

    #[test]
    fn payment_methods_and_urls() {
        assert!(PaymentMethodId::parse("pm_card_visa").is_ok());
        for bad in ["card_visa", "pm_", "pm_a b", "pm_é"] {
            assert!(PaymentMethodId::parse(bad).is_err(), "{bad}");
        }
        assert!(EndpointUrl::parse("https://partner.test/hooks").is_ok());
        for bad in ["ftp://x.test", "not a url", "https://user:pw@x.test/"] {
            assert!(EndpointUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_event_types(&[
                "payments.refund.failed".into(),
                "payments.payment.succeeded".into(),
                "payments.refund.failed".into()
            ])
            .unwrap(),
            ["payments.payment.succeeded", "payments.refund.failed"]
        );
        assert!(parse_event_types(&["payments.payment.created".into()]).is_err());
    }
}
