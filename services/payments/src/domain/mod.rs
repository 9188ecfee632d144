//! Validated types and rules, no I/O: money and currencies, the status machine, request fields
//! and webhook signatures.

pub mod fields;
pub mod money;
pub mod signature;
pub mod status;

pub use fields::{Description, EndpointUrl, Metadata, PaymentMethodId, Reference};
pub use money::{AmountLimits, Currency, Money};
pub use status::{
    CancellationReason, CaptureMethod, Cause, PaymentStatus, ProviderName, RefundReason,
    RefundStatus,
};

/// `n` random bytes as lower-case hex (secrets, ids).
pub fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    // Without the system's random source no secret can be made; nothing sensible can go on.
    aws_lc_rs::rand::fill(&mut buffer).expect("the system random source");
    hex(&buffer)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}
