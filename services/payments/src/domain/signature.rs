//! Webhook signatures, Stripe's scheme: the header `t=<unix seconds>,v1=<hex>` where `v1` is
//! HMAC-SHA256, keyed with the endpoint's secret, over `<t>.<raw body>`. Providers sign what
//! they send us (`Stripe-Signature`); we sign what we send partners (`Hatchery-Signature`) the
//! same way, so a partner verifies with any Stripe library's code.
//!
//! Verification compares in constant time, accepts any of several `v1` values (a secret being
//! rolled) and refuses a timestamp further than the tolerance from now, so a captured webhook
//! cannot be replayed later.

use aws_lc_rs::hmac;

/// The header providers sign with.
pub const PROVIDER_HEADER: &str = "stripe-signature";
/// The header on webhooks we send to partners.
pub const PARTNER_HEADER: &str = "hatchery-signature";

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no signature header")]
    Missing,
    #[error("the signature header is not `t=<timestamp>,v1=<signature>`")]
    Malformed,
    #[error("no signature matches the body")]
    Mismatch,
    #[error("the signature's timestamp is {0} s away from now, beyond the tolerance")]
    OutsideTolerance(i64),
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    context.sign()
}

/// The header value for `body` sent at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body);
    format!("t={timestamp},v1={}", super::hex(tag.as_ref()))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Checks `header` against `body`; the signed timestamp when valid.
pub fn verify(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        let (name, value) = item
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match name {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            "v1" => signatures.push(decode_hex(value).ok_or(SignatureError::Malformed)?),
            // Other schemes (Stripe's `v0` test signatures) are not ours to check.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut signed = Vec::with_capacity(body.len() + 12);
    signed.extend_from_slice(timestamp.to_string().as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    // `hmac::verify` compares in constant time.
    let matched = signatures
        .iter()
        .any(|signature| hmac::verify(&key, &signed, signature).is_ok());
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let skew = now.saturating_sub(timestamp);
    if skew.abs() > tolerance_secs {
        return Err(SignatureError::OutsideTolerance(skew));
    }
    Ok(timestamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";

    #[test]
    fn a_signed_body_verifies_and_anything_else_does_not() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(SECRET, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        let now = 1_700_000_100;
        assert_eq!(
            verify(SECRET, Some(&header), body, now, 300),
            Ok(1_700_000_000)
        );

        let tampered = br#"{"id":"evt_2"}"#;
        assert_eq!(
            verify(SECRET, Some(&header), tampered, now, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"whsec_other", Some(&header), body, now, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(SECRET, Some(&header), body, 1_700_000_000 + 600, 300),
            Err(SignatureError::OutsideTolerance(600))
        );
        assert_eq!(
            verify(SECRET, None, body, now, 300),
            Err(SignatureError::Missing)
        );
        for malformed in ["", "t=x,v1=00", "v1=00", "t=1", "t=1,v1=zz", "garbage"] {
            assert_eq!(
                verify(SECRET, Some(malformed), body, now, 300),
                Err(SignatureError::Malformed),
                "{malformed}"
            );
        }
    }

    #[test]
    fn any_matching_v1_is_enough() {
        let body = b"{}";
        let good = sign(SECRET, 10, body);
        let v1 = good.split("v1=").nth(1).unwrap();
        let rolled = format!("t=10,v1={},v1={v1},v0=ignored", "ab".repeat(32));
        assert_eq!(verify(SECRET, Some(&rolled), body, 10, 300), Ok(10));
    }
}
