//! Password hashing: argon2id with configurable cost (OWASP's parameters by default), run on
//! tokio's blocking pool so a login (~tens of ms of CPU and 19 MiB of memory) never stalls
//! the requests sharing its runtime thread, and bounded by a semaphore so a burst of logins
//! queues instead of exhausting memory.

use std::sync::Arc;

use anyhow::Context;
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use crate::config::Argon2Settings;
use crate::domain::Password;

/// What checking a password found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right password; `rehash` when the stored hash uses other parameters than configured.
    Match {
        rehash: bool,
    },
    Mismatch,
}

/// Hashes and checks passwords. Cheap to clone.
#[derive(Clone)]
pub struct Hasher(Arc<Inner>);

struct Inner {
    params: Params,
    permits: Semaphore,
    /// A hash of a random password nobody knows: checked against when the account does not
    /// exist, so "unknown email" costs what "wrong password" costs.
    dummy: String,
}

impl Hasher {
    /// `concurrency` 0 = one hash per CPU.
    pub fn new(settings: Argon2Settings, concurrency: usize) -> anyhow::Result<Hasher> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|err| anyhow::anyhow!("app.argon2: {err}"))?;
        let concurrency = if concurrency == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            concurrency
        };
        let secret = crate::domain::OpaqueToken::generate()?;
        let dummy = hash_blocking(&params, secret.expose())?;
        Ok(Hasher(Arc::new(Inner {
            params,
            permits: Semaphore::new(concurrency),
            dummy,
        })))
    }

    /// The PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) of `password`.
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        let password = password.expose().to_owned();
        self.run(move |params| hash_blocking(params, &password))
            .await?
    }

    /// Checks `password` against `stored`; with no stored hash (unknown account, or one
    /// without a password), checks against the dummy hash and answers `Mismatch`, taking as
    /// long as a real check.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> anyhow::Result<Verdict> {
        let password = password.expose().to_owned();
        let (stored, real) = match stored {
            Some(hash) => (hash.to_owned(), true),
            None => (self.0.dummy.clone(), false),
        };
        let verdict = self
            .run(move |params| verify_blocking(params, &password, &stored))
            .await??;
        Ok(if real { verdict } else { Verdict::Mismatch })
    }

    /// Runs `work` on the blocking pool once a hashing permit is free.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Params) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let permit = self
            .0
            .permits
            .acquire()
            .await
            .context("the hashing semaphore is closed")?;
        let inner = self.0.clone();
        let result = tokio::task::spawn_blocking(move || work(&inner.params))
            .await
            .context("password hashing task failed")?;
        drop(permit);
        Ok(result)
    }
}

fn argon2id(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_blocking(params: &Params, password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; argon2::RECOMMENDED_SALT_LEN];
    aws_lc_rs::rand::fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let hash = argon2id(params)
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|err| anyhow::anyhow!("hashing a password: {err}"))?;
    Ok(hash.to_string())
}

fn verify_blocking(params: &Params, password: &str, stored: &str) -> anyhow::Result<Verdict> {
    let parsed = PasswordHash::new(stored)
        .map_err(|err| anyhow::anyhow!("a stored password hash does not parse: {err}"))?;
    // The stored hash names its own algorithm and cost; the verifier follows them.
    match argon2id(params).verify_password(password.as_bytes(), &parsed) {
        Ok(()) => {
            let current = Params::try_from(&parsed).ok();
            let rehash = parsed.algorithm.as_str() != argon2::ARGON2ID_IDENT.as_str()
                || current.is_none_or(|p| {
                    p.m_cost() != params.m_cost()
                        || p.t_cost() != params.t_cost()
                        || p.p_cost() != params.p_cost()
                });
            Ok(Verdict::Match { rehash })
        }
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(Verdict::Mismatch),
        Err(err) => Err(anyhow::anyhow!("checking a password: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Argon2Settings {
        Argon2Settings {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_report_old_parameters() {
        let hasher = Hasher::new(cheap(), 2).unwrap();
        let password = Password::parse("hatchery-ada".into()).unwrap();
        let hash = hasher.hash(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert_eq!(
            hasher.verify(&password, Some(&hash)).await.unwrap(),
            Verdict::Match { rehash: false }
        );
        let wrong = Password::parse("hatchery-bob".into()).unwrap();
        assert_eq!(
            hasher.verify(&wrong, Some(&hash)).await.unwrap(),
            Verdict::Mismatch
        );
        // No account: never a match, even for the right-looking password.
        assert_eq!(
            hasher.verify(&password, None).await.unwrap(),
            Verdict::Mismatch
        );

        let stronger = Hasher::new(
            Argon2Settings {
                memory_kib: 128,
                ..cheap()
            },
            1,
        )
        .unwrap();
        assert_eq!(
            stronger.verify(&password, Some(&hash)).await.unwrap(),
            Verdict::Match { rehash: true }
        );
    }

    #[test]
    fn the_default_cost_is_owasps() {
        let defaults = Argon2Settings::default();
        assert_eq!(
            (
                defaults.memory_kib,
                defaults.iterations,
                defaults.parallelism
            ),
            (19 * 1024, 2, 1)
        );
    }
}
