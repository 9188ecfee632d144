//! Signing keys: created at first start, rotated with `auth keys rotate`, held in memory as a
//! [`KeyRing`] that signs with the active key and verifies (and publishes in the JWKS) every
//! key whose tokens may still be valid.
//!
//! A rotation publishes the new key at once but signs with it only after
//! `app.key_publish_delay`: a verifier that sees the new `kid` has then had time to refetch
//! the JWKS (verifiers refetch at most once per `auth.jwks_min_refetch`, 10 s by default), so
//! no valid token is refused. The old key signs until then and stays published for the longest
//! token lifetime plus the verifiers' leeway after that, then disappears. Every instance
//! switches keys at the same moment (the switch time is stored with the key); instances reload
//! the key table every `app.key_reload` to learn of rotations made by another process.
//!
//! Private halves are stored sealed with the key-encryption key ([`crate::kek`]): new keys are
//! sealed when made, keys an older release stored in clear are sealed at start
//! ([`seal`]), and `auth keys reencrypt` seals every key under a new key-encryption key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use identity::{JwkSet, PublicKey, SigningKey};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::kek::Keks;
use crate::store::keys::{self as store, KeyRow};

/// The keys in use, as loaded.
pub struct KeySet {
    /// Keys that sign from a time on, latest first.
    signing: Vec<(DateTime<Utc>, SigningKey)>,
    pub public: HashMap<String, PublicKey>,
    /// Every published key.
    pub jwks: JwkSet,
    /// Each published key with its retirement time: when this differs between two loads, a
    /// key was added, retired or removed.
    shape: Vec<(String, Option<DateTime<Utc>>)>,
}

impl KeySet {
    fn empty() -> KeySet {
        KeySet {
            signing: Vec::new(),
            public: HashMap::new(),
            jwks: JwkSet::default(),
            shape: Vec::new(),
        }
    }

    /// The key to sign with now; `None` only before the first key exists (an unstarted
    /// service, e.g. `openapi`).
    pub fn active(&self) -> Option<&SigningKey> {
        let now = Utc::now();
        self.signing
            .iter()
            .find(|(from, _)| *from <= now)
            .or_else(|| self.signing.last())
            .map(|(_, key)| key)
    }
}

/// The current [`KeySet`], shared by the handlers and the verifier; cheap to clone.
///
/// Its generation changes whenever a reload finds a key added, retired or removed: the verifier
/// remembers verified tokens per generation ([`identity::KeySource`]), so tokens signed by a
/// key that is gone are refused on their next use, and an unchanged set costs no signature
/// check.
#[derive(Clone)]
pub struct KeyRing {
    current: Arc<RwLock<Arc<KeySet>>>,
    generation: Arc<AtomicU64>,
    /// How long a retired key stays published.
    keep_retired: Duration,
    /// Opens the stored private halves.
    keks: Keks,
}

impl identity::KeySource for KeyRing {
    fn public_key(&self, kid: &str) -> Option<PublicKey> {
        KeyRing::public_key(self, kid)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

impl KeyRing {
    /// An empty ring (nothing signs or verifies until [`Self::reload`]).
    pub fn empty(keep_retired: Duration, keks: Keks) -> KeyRing {
        KeyRing {
            current: Arc::new(RwLock::new(Arc::new(KeySet::empty()))),
            generation: Arc::new(AtomicU64::new(0)),
            keep_retired,
            keks,
        }
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// The public key of `kid`, if it is published.
    pub fn public_key(&self, kid: &str) -> Option<PublicKey> {
        self.current().public.get(kid).copied()
    }

    /// Loads the published keys (the private halves of those that sign now or later).
    pub async fn reload(&self, db: &PgPool) -> anyhow::Result<()> {
        let now = Utc::now();
        let since = now - chrono::Duration::from_std(self.keep_retired)?;
        let rows = store::published(db, since)
            .await
            .context("loading the signing keys")?;
        let mut set = KeySet::empty();
        for row in rows {
            let public: [u8; 32] =
                row.public_key.as_slice().try_into().with_context(|| {
                    format!("signing key {} has a malformed public key", row.kid)
                })?;
            let public = PublicKey::from_bytes(public);
            set.jwks.keys.push(public.to_jwk(&row.kid));
            if row.retired_at.is_none_or(|at| at > now) {
                let der = private_der(&row, &self.keks)?;
                let key = SigningKey::from_pkcs8_der(&row.kid, &der)
                    .with_context(|| format!("signing key {} does not load", row.kid))?;
                anyhow::ensure!(
                    key.public_key() == public,
                    "signing key {}: the stored public key is not the private key's",
                    row.kid
                );
                set.signing.push((row.activates_at, key));
            }
            set.shape.push((row.kid.clone(), row.retired_at));
            set.public.insert(row.kid, public);
        }
        let changed = {
            let mut current = self
                .current
                .write()
                .unwrap_or_else(|poison| poison.into_inner());
            let changed = current.shape != set.shape;
            *current = Arc::new(set);
            changed
        };
        // After the new set is in place: a verifier that reads the new generation finds the
        // new keys.
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Reloads every `every` until `shutdown`; a failed reload keeps the keys it had.
    pub async fn keep_fresh(self, db: PgPool, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(err) = self.reload(&db).await {
                tracing::warn!(error = %format!("{err:#}"), "cannot reload the signing keys; keeping the current ones");
            }
        }
    }
}

/// A key id: creation date plus randomness, so operators can tell keys apart at a glance.
fn new_kid() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{}-{}", Utc::now().format("%Y%m%d"), &id[id.len() - 8..])
}

/// The PKCS#8 private key of `row`: opened with the key-encryption key that sealed it, or as
/// stored by a release that did not seal keys yet.
fn private_der(row: &KeyRow, keks: &Keks) -> anyhow::Result<Vec<u8>> {
    match (&row.sealed_private_key, &row.kek_id, &row.private_key) {
        (Some(sealed), Some(kek_id), _) => keks.open(&row.kid, kek_id, sealed),
        (_, _, Some(clear)) => Ok(clear.clone()),
        _ => anyhow::bail!("signing key {} has no private key stored", row.kid),
    }
}

async fn insert_new(
    tx: &mut sqlx::PgConnection,
    activates_at: DateTime<Utc>,
    keks: &Keks,
) -> anyhow::Result<String> {
    let kid = new_kid();
    let key = SigningKey::generate(kid.clone())?;
    let kek = keks.current();
    let sealed = kek.seal(&kid, key.pkcs8_der())?;
    store::insert(
        &mut *tx,
        &kid,
        &sealed,
        kek.id(),
        key.public_key().as_bytes(),
        activates_at,
    )
    .await
    .context("storing a new signing key")?;
    Ok(kid)
}

/// What [`seal`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Keys stored in clear (by an older release), now sealed.
    pub from_clear: usize,
    /// Keys sealed with another configured key-encryption key, now under the current one.
    pub resealed: usize,
}

/// Seals every private key stored in clear with the current key-encryption key; with
/// `reencrypt`, also moves keys sealed with the previous key-encryption key to the current one.
/// One transaction: all of it or nothing. A key that no configured key-encryption key opens
/// fails it, naming the key.
pub async fn seal(db: &PgPool, keks: &Keks, reencrypt: bool) -> anyhow::Result<Sealed> {
    let mut tx = db.begin().await?;
    store::lock(&mut tx).await?;
    let kek = keks.current();
    let mut done = Sealed::default();
    for row in store::all(&mut *tx).await? {
        let under_current = row.kek_id.as_deref() == Some(kek.id());
        let needed = match (&row.sealed_private_key, under_current) {
            (None, _) => true,
            (Some(_), false) => reencrypt,
            (Some(_), true) => false,
        };
        if !needed {
            continue;
        }
        let der = private_der(&row, keks)?;
        SigningKey::from_pkcs8_der(&row.kid, &der)
            .with_context(|| format!("signing key {} does not load", row.kid))?;
        store::store_sealed(&mut *tx, &row.kid, &kek.seal(&row.kid, &der)?, kek.id()).await?;
        if row.sealed_private_key.is_none() {
            done.from_clear += 1;
        } else {
            done.resealed += 1;
        }
    }
    tx.commit().await?;
    Ok(done)
}

/// Creates the first signing key unless there is one; returns its kid when it created one.
pub async fn ensure_active(db: &PgPool, keks: &Keks) -> anyhow::Result<Option<String>> {
    if store::has_current(db).await? {
        return Ok(None);
    }
    let mut tx = db.begin().await?;
    store::lock(&mut tx).await?;
    if store::has_current(&mut *tx).await? {
        return Ok(None);
    }
    // No token exists yet: nothing to wait for.
    let kid = insert_new(&mut tx, Utc::now(), keks).await?;
    tx.commit().await?;
    tracing::info!(kid = %kid, "created the first signing key");
    Ok(Some(kid))
}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub new_kid: String,
    /// When the new key starts signing (and the old one stops).
    pub activates_at: DateTime<Utc>,
    pub retired_kid: Option<String>,
    /// Keys retired so long ago that nothing they signed is valid: deleted.
    pub deleted: u64,
}

/// Publishes a new key that signs from `publish_delay` on, retiring the current one at that
/// moment; deletes keys retired more than `keep_retired` ago.
pub async fn rotate(
    db: &PgPool,
    publish_delay: Duration,
    keep_retired: Duration,
    keks: &Keks,
) -> anyhow::Result<Rotation> {
    let activates_at = Utc::now() + chrono::Duration::from_std(publish_delay)?;
    let mut tx = db.begin().await?;
    store::lock(&mut tx).await?;
    let retired_kid = store::retire_current(&mut *tx, activates_at).await?;
    let new_kid = insert_new(&mut tx, activates_at, keks).await?;
    let before = Utc::now() - chrono::Duration::from_std(keep_retired)?;
    let deleted = store::delete_retired_before(&mut *tx, before).await?;
    tx.commit().await?;
    Ok(Rotation {
        new_kid,
        activates_at,
        retired_kid,
        deleted,
    })
}
