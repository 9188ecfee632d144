//! The key-encryption key (KEK): the private halves of the signing keys are stored sealed with
//! it, so the database alone — a dump, a replica, a backup — holds no usable private key and
//! cannot mint tokens.
//!
//! Sealing is AES-256-GCM with a random 96-bit nonce (stored in front of the ciphertext) and the
//! key's `kid` as associated data, so a sealed key moved to another row does not open. Each
//! sealed key records the id of the KEK that sealed it (a fingerprint, not the key), so a
//! service configured with another KEK says which one it needs instead of failing obscurely.
//!
//! `app.key_encryption_key` is base64 of 32 random bytes (`auth keys generate-kek` prints one);
//! it is required in production, and in development a built-in key stands in when it is unset.
//! Rotation: configure the new KEK with the old one as `app.previous_key_encryption_key` (both
//! open keys), run `auth keys reencrypt` (every key sealed under the new one), then remove the
//! previous one.

use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use kit::config::{Environment, Secret};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Bytes of a KEK.
pub const KEK_LEN: usize = 32;

/// One key-encryption key.
pub struct Kek {
    key: LessSafeKey,
    id: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id)
    }
}

impl Kek {
    /// Reads base64 (standard or URL-safe, padding optional) of 32 bytes.
    pub fn parse(text: &str) -> Result<Kek, String> {
        let text = text.trim().trim_end_matches('=');
        let bytes = STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| "must be base64 of 32 random bytes".to_owned())?;
        let bytes: [u8; KEK_LEN] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "must be base64 of {KEK_LEN} random bytes, not {} bytes",
                bytes.len()
            )
        })?;
        Kek::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8; KEK_LEN]) -> Result<Kek, String> {
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| "cannot be used as an AES-256 key".to_owned())?;
        let mut digest = Sha256::new();
        digest.update(b"hatchery auth key-encryption key id\0");
        digest.update(bytes);
        let digest = digest.finalize();
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Kek {
            key: LessSafeKey::new(key),
            id,
        })
    }

    /// The built-in development KEK (derived from a fixed text: known to everyone, so never
    /// accepted in production).
    pub fn development() -> Kek {
        let digest = Sha256::digest(b"hatchery auth development key-encryption key");
        let mut bytes = [0u8; KEK_LEN];
        bytes.copy_from_slice(&digest);
        Kek::from_bytes(&bytes).expect("32 bytes make an AES-256 key")
    }

    /// A new random KEK, as the base64 text `app.key_encryption_key` takes.
    pub fn generate() -> anyhow::Result<String> {
        let mut bytes = [0u8; KEK_LEN];
        aws_lc_rs::rand::fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        Ok(STANDARD.encode(bytes))
    }

    /// The KEK's id: a fingerprint that names it without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `nonce || ciphertext || tag` of `plaintext`, bound to `kid`.
    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| anyhow::anyhow!("sealing signing key {kid} failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of what [`Self::seal`] made for `kid`; `None` when this is not the KEK that
    /// sealed it, or the bytes were altered.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buffer)
            .ok()?;
        Some(plaintext.to_vec())
    }
}

/// The configured KEKs: the current one seals and opens; the previous one, during a rotation,
/// only opens. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Keks {
    current: Arc<Kek>,
    previous: Option<Arc<Kek>>,
}

impl Keks {
    pub fn new(current: Kek, previous: Option<Kek>) -> Keks {
        Keks {
            current: Arc::new(current),
            previous: previous.map(Arc::new),
        }
    }

    /// From `app.key_encryption_key` and `app.previous_key_encryption_key`; the message of an
    /// error names the key. Unset in development: the built-in development KEK.
    pub fn from_settings(settings: &kit::Settings<Config>) -> anyhow::Result<Keks> {
        let parse = |key: &str, value: &Secret| {
            Kek::parse(value.expose())
                .map_err(|why| anyhow::anyhow!("invalid configuration: app.{key}: {why}"))
        };
        let app = &settings.app;
        let current = match &app.key_encryption_key {
            Some(value) => parse("key_encryption_key", value)?,
            None if settings.environment == Environment::Production => anyhow::bail!(
                "invalid configuration: app.key_encryption_key (env AUTH__APP__KEY_ENCRYPTION_KEY): required in production (base64 of 32 random bytes; `auth keys generate-kek` prints one)"
            ),
            None => {
                tracing::info!(
                    "app.key_encryption_key is not set: signing keys are sealed with the built-in development key"
                );
                Kek::development()
            }
        };
        let previous = app
            .previous_key_encryption_key
            .as_ref()
            .map(|value| parse("previous_key_encryption_key", value))
            .transpose()?;
        Ok(Keks::new(current, previous))
    }

    /// The KEK new keys are sealed with.
    pub fn current(&self) -> &Kek {
        &self.current
    }

    /// The private key `kid`, sealed with the KEK `kek_id`, opened with whichever configured
    /// KEK that is; the error says which KEK is needed and which are configured.
    pub fn open(&self, kid: &str, kek_id: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
        let kek = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|kek| kek.id() == kek_id);
        let Some(kek) = kek else {
            anyhow::bail!(
                "signing key {kid} is sealed with the key-encryption key {kek_id}, but app.key_encryption_key is {}{}: configure the key-encryption key it was sealed with (or that one as app.previous_key_encryption_key during a rotation)",
                self.current.id(),
                match &self.previous {
                    Some(previous) => {
                        format!(" and app.previous_key_encryption_key is {}", previous.id())
                    }
                    None => String::new(),
                }
            );
        };
        kek.open(kid, sealed).ok_or_else(|| {
            anyhow::anyhow!(
                "signing key {kid} does not open with the key-encryption key {kek_id}: the stored key was altered"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_their_kek_and_kid() {
        let text = Kek::generate().unwrap();
        let kek = Kek::parse(&text).unwrap();
        let sealed = kek.seal("k1", b"private key bytes").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(kek.open("k1", &sealed).unwrap(), b"private key bytes");
        assert!(kek.open("k2", &sealed).is_none(), "bound to its kid");
        assert!(Kek::development().open("k1", &sealed).is_none());
        let mut altered = sealed.clone();
        altered[NONCE_LEN] ^= 1;
        assert!(kek.open("k1", &altered).is_none());

        let keks = Keks::new(Kek::development(), Some(Kek::parse(&text).unwrap()));
        assert_eq!(
            keks.open("k1", kek.id(), &sealed).unwrap(),
            b"private key bytes"
        );
        let unknown = Keks::new(Kek::development(), None)
            .open("k1", kek.id(), &sealed)
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains(kek.id()) && unknown.contains("app.key_encryption_key"),
            "{unknown}"
        );
    }

    #[test]
    fn only_32_bytes_of_base64_make_a_kek() {
        assert!(Kek::parse("c2hvcnQ=").unwrap_err().contains("not 5 bytes"));
        assert!(Kek::parse("not base64!").is_err());
        let text = Kek::generate().unwrap();
        let url_safe = text.replace('+', "-").replace('/', "_");
        assert_eq!(
            Kek::parse(&text).unwrap().id(),
            Kek::parse(&url_safe).unwrap().id()
        );
        assert_ne!(Kek::parse(&text).unwrap().id(), Kek::development().id());
    }
}
