//! Ed25519 keys: the public key a service verifies with, the JWK/JWKS shapes the auth service
//! publishes, and the signing key the auth service (and testkit) sign tokens with.

use std::fmt;

use anyhow::Context;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// An Ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads the forms `auth.public_key` accepts: base64 of the raw key or of its DER
    /// `SubjectPublicKeyInfo`, a PEM `PUBLIC KEY` block, or a JWK object.
    pub fn parse(text: &str) -> Result<Self, String> {
        kit::config::parse_ed25519_public_key(text).map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Standard base64 of the 32 bytes: the shortest value for `auth.public_key`.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The key as a JWK with its key id, as it appears in the auth service's JWKS.
    pub fn to_jwk(&self, kid: &str) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(self.0)),
            kid: Some(kid.to_owned()),
            alg: Some("EdDSA".into()),
            key_use: Some("sig".into()),
        }
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// One key of a JWKS (RFC 7517 / RFC 8037). Fields other keys types need are absent here, and
/// every field but `kty` is optional on input, so a set that also holds foreign keys still
/// reads; verifiers use only `OKP`/`Ed25519` keys that have a `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// The public key, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

impl Jwk {
    /// The key id and public key, when this is an Ed25519 signing key with an id.
    pub fn ed25519(&self) -> Option<(&str, PublicKey)> {
        if self.kty != "OKP" || self.crv.as_deref() != Some("Ed25519") {
            return None;
        }
        if self.alg.as_deref().is_some_and(|alg| alg != "EdDSA")
            || self.key_use.as_deref().is_some_and(|u| u != "sig")
        {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(self.x.as_deref()?).ok()?;
        let bytes: [u8; 32] = bytes.try_into().ok()?;
        Some((self.kid.as_deref()?, PublicKey(bytes)))
    }
}

/// `{"keys": [...]}`: what the auth service serves at `/.well-known/jwks.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

/// An Ed25519 private key with its key id: signs tokens (`alg: EdDSA`, `kid` in the header).
///
/// The auth service keeps these (PKCS#8 DER, see [`Self::pkcs8_der`]); testkit generates one
/// per test process.
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    encoding: EncodingKey,
    public: PublicKey,
}

impl SigningKey {
    /// A new random key.
    pub fn generate(kid: impl Into<String>) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::generate()
            .map_err(|_| anyhow::anyhow!("generating an Ed25519 key failed"))?;
        let pkcs8 = pair
            .to_pkcs8()
            .map_err(|_| anyhow::anyhow!("encoding the Ed25519 key failed"))?;
        Self::from_pkcs8_der(kid, pkcs8.as_ref())
    }

    /// A key stored as PKCS#8 DER (v1 or v2).
    pub fn from_pkcs8_der(kid: impl Into<String>, der: &[u8]) -> anyhow::Result<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der)
            .map_err(|err| anyhow::anyhow!("not an Ed25519 PKCS#8 key: {err}"))?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .context("an Ed25519 public key has 32 bytes")?;
        Ok(Self {
            kid: kid.into(),
            pkcs8: der.to_vec(),
            encoding: EncodingKey::from_ed_der(der),
            public: PublicKey(public),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private key as PKCS#8 DER, for storing it. Secret.
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The public half as a JWK, for the JWKS.
    pub fn jwk(&self) -> Jwk {
        self.public.to_jwk(&self.kid)
    }

    /// Signs `claims` (normally [`crate::Claims`]) into a compact JWT with `alg: EdDSA`,
    /// `typ: JWT` and this key's `kid`.
    pub fn sign<T: Serialize>(&self, claims: &T) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).context("signing a token")
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_round_trip_and_foreign_keys_are_skipped() {
        let key = SigningKey::generate("k1").unwrap();
        let set = JwkSet {
            keys: vec![
                key.jwk(),
                Jwk {
                    kty: "RSA".into(),
                    crv: None,
                    x: None,
                    kid: Some("rsa".into()),
                    alg: Some("RS256".into()),
                    key_use: Some("sig".into()),
                },
            ],
        };
        let text = serde_json::to_string(&set).unwrap();
        assert!(text.contains(r#""use":"sig""#), "{text}");
        let back: JwkSet = serde_json::from_str(&text).unwrap();
        let usable: Vec<_> = back.keys.iter().filter_map(Jwk::ed25519).collect();
        assert_eq!(usable, [("k1", key.public_key())]);
        let reparsed = SigningKey::from_pkcs8_der("k1", key.pkcs8_der()).unwrap();
        assert_eq!(reparsed.public_key(), key.public_key());
        assert_eq!(
            PublicKey::parse(&key.public_key().to_base64()),
            Ok(key.public_key())
        );
        assert!(!format!("{key:?}").contains(&format!("{:?}", key.pkcs8_der())));
    }
}
