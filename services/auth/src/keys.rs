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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use identity::{JwkSet, PublicKey, SigningKey};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::store::keys as store;

/// The keys in use, as loaded.
pub struct KeySet {
    /// Keys that sign from a time on, latest first.
    signing: Vec<(DateTime<Utc>, SigningKey)>,
    pub public: HashMap<String, PublicKey>,
    /// Every published key.
    pub jwks: JwkSet,
}

impl KeySet {
    fn empty() -> KeySet {
        KeySet {
            signing: Vec::new(),
            public: HashMap::new(),
            jwks: JwkSet::default(),
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
#[derive(Clone)]
pub struct KeyRing {
    current: Arc<RwLock<Arc<KeySet>>>,
    /// How long a retired key stays published.
    keep_retired: Duration,
}

impl KeyRing {
    /// An empty ring (nothing signs or verifies until [`Self::reload`]).
    pub fn empty(keep_retired: Duration) -> KeyRing {
        KeyRing {
            current: Arc::new(RwLock::new(Arc::new(KeySet::empty()))),
            keep_retired,
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
                let key = SigningKey::from_pkcs8_der(&row.kid, &row.private_key)
                    .with_context(|| format!("signing key {} does not load", row.kid))?;
                anyhow::ensure!(
                    key.public_key() == public,
                    "signing key {}: the stored public key is not the private key's",
                    row.kid
                );
                set.signing.push((row.activates_at, key));
            }
            set.public.insert(row.kid, public);
        }
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(set);
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

async fn insert_new(
    tx: &mut sqlx::PgConnection,
    activates_at: DateTime<Utc>,
) -> anyhow::Result<String> {
    let kid = new_kid();
    let key = SigningKey::generate(kid.clone())?;
    store::insert(
        &mut *tx,
        &kid,
        key.pkcs8_der(),
        key.public_key().as_bytes(),
        activates_at,
    )
    .await
    .context("storing a new signing key")?;
    Ok(kid)
}

/// Creates the first signing key unless there is one; returns its kid when it created one.
pub async fn ensure_active(db: &PgPool) -> anyhow::Result<Option<String>> {
    if store::has_current(db).await? {
        return Ok(None);
    }
    let mut tx = db.begin().await?;
    store::lock(&mut tx).await?;
    if store::has_current(&mut *tx).await? {
        return Ok(None);
    }
    // No token exists yet: nothing to wait for.
    let kid = insert_new(&mut tx, Utc::now()).await?;
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
) -> anyhow::Result<Rotation> {
    let activates_at = Utc::now() + chrono::Duration::from_std(publish_delay)?;
    let mut tx = db.begin().await?;
    store::lock(&mut tx).await?;
    let retired_kid = store::retire_current(&mut *tx, activates_at).await?;
    let new_kid = insert_new(&mut tx, activates_at).await?;
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
