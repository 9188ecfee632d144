//! Opaque secrets handed to clients (refresh tokens, verification and reset tokens, tickets,
//! client secrets): 256 random bits, base64url; only their SHA-256 is ever stored, so a
//! leaked database does not hand out working tokens. A fast hash is enough here (unlike for
//! passwords): 256 random bits cannot be guessed, however fast each guess is.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A fresh random token, as given to a client. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct OpaqueToken(String);

impl OpaqueToken {
    /// 32 bytes from the operating system's CSPRNG (through aws-lc).
    pub fn generate() -> anyhow::Result<OpaqueToken> {
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        Ok(OpaqueToken(URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn digest(&self) -> TokenDigest {
        TokenDigest::of(&self.0)
    }
}

impl std::fmt::Debug for OpaqueToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpaqueToken(***)")
    }
}

/// SHA-256 of a presented token: what the database stores and looks up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    pub fn of(presented: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(presented.as_bytes()).into())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex, for Redis keys.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Equal to `stored`, compared in constant time (client secrets are checked against a
    /// known client's stored digest).
    pub fn matches(&self, stored: &[u8]) -> bool {
        aws_lc_rs::constant_time::verify_slices_are_equal(&self.0, stored).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hidden() {
        let a = OpaqueToken::generate().unwrap();
        let b = OpaqueToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert!(!format!("{a:?}").contains(a.expose()));
        assert!(a.digest().matches(&TokenDigest::of(a.expose()).0));
        assert!(!a.digest().matches(&b.digest().0));
        assert_eq!(a.digest().hex().len(), 64);
    }
}
