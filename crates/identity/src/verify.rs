//! Token verification: signature (EdDSA only), key lookup (fixed key or the auth service's
//! JWKS, cached), and the registered claims (`iss`, `aud`, `exp`, `nbf`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kit::config::AuthSettings;

use crate::claims::Claims;
use crate::error::{AuthError, Invalid};
use crate::keys::{JwkSet, PublicKey};

/// How long one JWKS request may take.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failed JWKS fetch, the next attempt waits at least this long (or
/// `auth.jwks_min_refetch` when shorter), so a down auth service is asked about once a second.
const JWKS_RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Most tokens remembered as verified (see [`VerifiedTokens`]).
const VERIFIED_CAPACITY: usize = 4096;

/// Checks tokens. Cheap to clone (shared key cache and verified-token cache).
#[derive(Clone)]
pub struct Verifier {
    keys: Keys,
    validation: Arc<Validation>,
    leeway: i64,
    verified: Option<Arc<VerifiedTokens>>,
}

#[derive(Clone)]
enum Keys {
    /// `auth.public_key`: every token must verify with this key; `kid` is not consulted.
    Fixed(Arc<DecodingKey>),
    /// `auth.jwks_url` (or the local auth service): keys by `kid`.
    Jwks(Arc<JwksCache>),
    /// Set-up failed: every token is answered "keys unavailable" with this reason.
    Unusable(Arc<str>),
    /// Keys the caller holds and keeps current, by `kid`: the auth service verifying the
    /// tokens it signs itself (it cannot fetch its own JWKS before it listens).
    Provided(Arc<dyn KeySource>),
}

/// Keys held and kept current by the caller (see [`Verifier::with_key_source`]): the auth
/// service's own key ring.
pub trait KeySource: Send + Sync + 'static {
    /// The public key of `kid`, when tokens signed with it verify now.
    fn public_key(&self, kid: &str) -> Option<PublicKey>;

    /// Changes whenever a key is added, retired or removed. Tokens are remembered as verified
    /// under the generation read before their key was looked up, so a token verified under a
    /// key that has since gone is checked again (and refused) on its next use, while an
    /// unchanged key set costs no signature check. Read it before looking keys up; change it
    /// after the keys it describes are visible.
    fn generation(&self) -> u64;
}

impl Verifier {
    /// A verifier for the settings: the fixed key when `auth.public_key` is set, otherwise the
    /// JWKS at `auth.jwks_url` (default: the local auth service). Keys are fetched on first use.
    pub fn new(auth: &AuthSettings) -> anyhow::Result<Self> {
        let keys = match auth
            .public_key_bytes()
            .map_err(|err| anyhow::anyhow!("auth.public_key: {err}"))?
        {
            Some(bytes) => Keys::Fixed(Arc::new(decoding_key(&PublicKey::from_bytes(bytes)))),
            None => {
                let url = auth
                    .jwks_url
                    .clone()
                    .unwrap_or_else(|| AuthSettings::LOCAL_JWKS_URL.to_owned());
                Keys::Jwks(Arc::new(JwksCache::new(url, auth)?))
            }
        };
        Ok(Self::build(keys, auth))
    }

    /// A verifier trusting one fixed key (tests, benchmarks, tools).
    pub fn with_public_key(key: PublicKey, auth: &AuthSettings) -> Self {
        Self::build(Keys::Fixed(Arc::new(decoding_key(&key))), auth)
    }

    /// A verifier asking `source` for the public key of each token's `kid` (no key = unknown
    /// key). For the auth service, which holds its keys itself and rotates them; verified
    /// tokens are remembered per [`KeySource::generation`].
    pub fn with_key_source(source: Arc<dyn KeySource>, auth: &AuthSettings) -> Self {
        Self::build(Keys::Provided(source), auth)
    }

    /// A verifier that refuses every token as "keys unavailable" (503), for a service whose
    /// key set-up failed: better than running without authentication.
    pub fn unusable(reason: impl Into<String>) -> Self {
        Self::build(
            Keys::Unusable(reason.into().into()),
            &AuthSettings::default(),
        )
    }

    fn build(keys: Keys, auth: &AuthSettings) -> Self {
        Self {
            keys,
            validation: Arc::new(validation(auth)),
            leeway: i64::try_from(auth.leeway.as_secs()).unwrap_or(i64::MAX),
            verified: Some(Arc::new(VerifiedTokens::new(VERIFIED_CAPACITY))),
        }
    }

    /// Checks every token's signature every time (benchmarks of the cold path).
    pub fn without_cache(mut self) -> Self {
        self.verified = None;
        self
    }

    /// Verifies `token` and returns its claims. Does not consult revocation (see
    /// [`crate::Identity::authenticate`]).
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if let Keys::Jwks(cache) = &self.keys {
            cache.refresh_if_stale();
        }
        // Read before any key is looked up: a key set replaced meanwhile leaves this entry
        // stale, never a stale key under a fresh generation.
        let generation = self.key_generation();
        let verified = self.verified.as_ref();
        if let Some(verified) = verified
            && let Some(claims) = verified.get(token, generation)
        {
            self.check_times(&claims)?;
            return Ok(claims);
        }
        let claims = match &self.keys {
            // No kid needed: jsonwebtoken reads the header itself (and refuses any algorithm
            // but EdDSA); `decode` asks `check_header` only to word a failure precisely.
            Keys::Fixed(key) => self.decode(token, key)?,
            Keys::Jwks(cache) => {
                let kid = check_header(token)?.ok_or(AuthError::Invalid(Invalid::MissingKeyId))?;
                let key = match cache.lookup(&kid) {
                    Some(key) => key,
                    None => cache.fetch_for_unknown(&kid).await?,
                };
                self.decode(token, &key)?
            }
            Keys::Provided(source) => {
                let kid = check_header(token)?.ok_or(AuthError::Invalid(Invalid::MissingKeyId))?;
                let key = source
                    .public_key(&kid)
                    .ok_or(AuthError::Invalid(Invalid::UnknownKey))?;
                self.decode(token, &decoding_key(&key))?
            }
            Keys::Unusable(reason) => return Err(AuthError::KeysUnavailable(reason.to_string())),
        };
        metrics::counter!("identity_signature_checks_total").increment(1);
        if let Some(verified) = verified {
            verified.insert(token, &claims, generation);
        }
        Ok(claims)
    }

    /// Changes whenever the key set does, so tokens verified with a key that has since been
    /// dropped are checked again (and refused).
    fn key_generation(&self) -> u64 {
        match &self.keys {
            Keys::Jwks(cache) => cache.generation.load(Ordering::Acquire),
            Keys::Provided(source) => source.generation(),
            Keys::Fixed(_) | Keys::Unusable(_) => 0,
        }
    }

    /// `exp` and `nbf` again, for a token verified earlier.
    fn check_times(&self, claims: &Claims) -> Result<(), AuthError> {
        let now = chrono::Utc::now().timestamp();
        if claims.exp.saturating_add(self.leeway) < now {
            return Err(AuthError::Invalid(Invalid::Expired));
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf.saturating_sub(self.leeway) > now)
        {
            return Err(AuthError::Invalid(Invalid::NotYetValid));
        }
        Ok(())
    }

    fn decode(&self, token: &str, key: &DecodingKey) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| match check_header(token) {
                // A header problem (say `alg: none`) is the clearer reason.
                Err(header) => header,
                Ok(_) => AuthError::Invalid(invalid(err.kind())),
            })
    }

    /// How many times the JWKS was requested (0 with a fixed key): for tests and diagnostics.
    pub fn jwks_fetches(&self) -> u64 {
        match &self.keys {
            Keys::Fixed(_) | Keys::Unusable(_) | Keys::Provided(_) => 0,
            Keys::Jwks(cache) => cache.fetches.load(Ordering::Relaxed),
        }
    }
}

fn decoding_key(key: &PublicKey) -> DecodingKey {
    // For Ed25519, jsonwebtoken's "DER" decoding key is the raw 32-byte public key.
    DecodingKey::from_ed_der(key.as_bytes())
}

fn validation(auth: &AuthSettings) -> Validation {
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.leeway = auth.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_issuer(&[&auth.issuer]);
    validation.set_audience(&[&auth.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation
}

/// Reads the header: only `alg: EdDSA` passes. Returns the `kid`, if any.
///
/// jsonwebtoken's `decode` would refuse other algorithms too (the list of allowed algorithms
/// and the key's family must both match); checking here first gives the precise reason and
/// avoids a key lookup (and a JWKS fetch) for tokens that can never verify.
fn check_header(token: &str) -> Result<Option<String>, AuthError> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| AuthError::Invalid(unreadable_header(token)))?;
    if header.alg != Algorithm::EdDSA {
        return Err(AuthError::Invalid(Invalid::Algorithm));
    }
    Ok(header.kid)
}

/// Why a header did not parse: `alg: none` (or any name jsonwebtoken does not know) fails
/// like garbage does, but deserves the clearer answer.
fn unreadable_header(token: &str) -> Invalid {
    use base64::Engine;
    let names_an_algorithm = token
        .split('.')
        .next()
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|header| header["alg"].is_string());
    if names_an_algorithm {
        Invalid::Algorithm
    } else {
        Invalid::Malformed
    }
}

fn invalid(kind: &ErrorKind) -> Invalid {
    match kind {
        ErrorKind::InvalidSignature => Invalid::Signature,
        ErrorKind::ExpiredSignature => Invalid::Expired,
        ErrorKind::ImmatureSignature => Invalid::NotYetValid,
        ErrorKind::InvalidIssuer => Invalid::Issuer,
        ErrorKind::InvalidAudience => Invalid::Audience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEddsaKey => Invalid::Algorithm,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidSubject
        | ErrorKind::Json(_) => Invalid::Claims,
        _ => Invalid::Malformed,
    }
}

/// The auth service's keys by `kid`, fetched on first use, again when older than
/// `auth.jwks_refresh` (in the background, the old keys serving meanwhile), and again when a
/// token names an unknown `kid` (rotation) — at most once per `auth.jwks_min_refetch`.
struct JwksCache {
    url: String,
    client: reqwest::Client,
    refresh: Duration,
    min_refetch: Duration,
    keys: RwLock<KeySet>,
    /// Serialises fetches: concurrent requests with an unknown kid wait for one fetch.
    fetching: tokio::sync::Mutex<FetchState>,
    refreshing: AtomicBool,
    fetches: AtomicU64,
    /// Bumped each time the key set is replaced.
    generation: AtomicU64,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, DecodingKey>,
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

impl JwksCache {
    fn new(url: String, auth: &AuthSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .context("building the JWKS client")?;
        Ok(Self {
            url,
            client,
            refresh: auth.jwks_refresh,
            min_refetch: auth.jwks_min_refetch,
            keys: RwLock::new(KeySet::default()),
            fetching: tokio::sync::Mutex::new(FetchState::default()),
            refreshing: AtomicBool::new(false),
            fetches: AtomicU64::new(0),
            generation: AtomicU64::new(0),
        })
    }

    /// Starts a background fetch when the set is older than `auth.jwks_refresh`; requests
    /// keep using the old set meanwhile.
    fn refresh_if_stale(self: &Arc<Self>) {
        let stale = self.keys_age().is_some_and(|age| age >= self.refresh);
        if stale && !self.refreshing.swap(true, Ordering::AcqRel) {
            let cache = self.clone();
            tokio::spawn(async move {
                let mut state = cache.fetching.lock().await;
                if cache.keys_age().is_none_or(|age| age >= cache.refresh) {
                    cache.fetch(&mut state).await;
                }
                cache.refreshing.store(false, Ordering::Release);
            });
        }
    }

    fn keys_age(&self) -> Option<Duration> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        keys.fetched_at.map(|at| at.elapsed())
    }

    /// Fetches the set again for a `kid` it did not have, unless a fetch happened too
    /// recently (then the kid is unknown, or the keys unavailable if that fetch failed).
    async fn fetch_for_unknown(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let mut state = self.fetching.lock().await;
        // Another request may have fetched while this one waited for the lock.
        if let Some(key) = self.lookup(kid) {
            return Ok(key);
        }
        let pause = if state.last_error.is_some() {
            JWKS_RETRY_AFTER_FAILURE.min(self.min_refetch)
        } else {
            self.min_refetch
        };
        if state.last_attempt.is_none_or(|at| at.elapsed() >= pause) {
            self.fetch(&mut state).await;
        }
        if let Some(key) = self.lookup(kid) {
            return Ok(key);
        }
        match &state.last_error {
            Some(error) => Err(AuthError::KeysUnavailable(error.clone())),
            None => Err(AuthError::Invalid(Invalid::UnknownKey)),
        }
    }

    fn lookup(&self, kid: &str) -> Option<DecodingKey> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        keys.by_kid.get(kid).cloned()
    }

    /// One request to the JWKS URL; on success the cached set is replaced (keys the auth
    /// service dropped stop verifying), on failure the old set stays.
    async fn fetch(&self, state: &mut FetchState) {
        state.last_attempt = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.download().await {
            Ok(by_kid) => {
                tracing::debug!(url = %self.url, keys = by_kid.len(), "fetched the auth service's keys");
                let mut keys = self
                    .keys
                    .write()
                    .unwrap_or_else(|poison| poison.into_inner());
                *keys = KeySet {
                    by_kid,
                    fetched_at: Some(Instant::now()),
                };
                self.generation.fetch_add(1, Ordering::AcqRel);
                state.last_error = None;
            }
            Err(err) => {
                let error = format!("{err:#}");
                tracing::warn!(url = %self.url, error = %error, "cannot fetch the auth service's keys");
                state.last_error = Some(error);
            }
        }
    }

    async fn download(&self) -> anyhow::Result<HashMap<String, DecodingKey>> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await
            .with_context(|| format!("GET {}", self.url))?;
        let status = response.status();
        anyhow::ensure!(status.is_success(), "GET {} answered {status}", self.url);
        let set: JwkSet = response
            .json()
            .await
            .with_context(|| format!("{} is not a JWKS", self.url))?;
        let keys: HashMap<String, DecodingKey> = set
            .keys
            .iter()
            .filter_map(|jwk| jwk.ed25519())
            .map(|(kid, key)| (kid.to_owned(), decoding_key(&key)))
            .collect();
        anyhow::ensure!(
            !keys.is_empty(),
            "{} holds no Ed25519 signing key with a kid",
            self.url
        );
        Ok(keys)
    }
}

/// Tokens that verified, by their exact text, with their claims.
///
/// A client sends the same access token with every request for the token's lifetime, and the
/// Ed25519 signature check (~45 µs on the reference machine) is nearly all of a verification.
/// The same bytes verify the same way under the same keys, so a hit skips the signature and
/// claim parsing and repeats only the time checks (`exp`, `nbf`). Entries carry the key-set
/// generation they were verified under; any change of the key set invalidates them. Only
/// tokens that verified are stored, so garbage cannot fill it, and it is bounded.
struct VerifiedTokens {
    entries: RwLock<HashMap<Box<str>, (Claims, u64)>>,
    capacity: usize,
}

impl VerifiedTokens {
    fn new(capacity: usize) -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    fn get(&self, token: &str, generation: u64) -> Option<Claims> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        match entries.get(token) {
            Some((claims, at)) if *at == generation => Some(claims.clone()),
            _ => None,
        }
    }

    fn insert(&self, token: &str, claims: &Claims, generation: u64) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        if entries.len() >= self.capacity {
            // Make room: drop expired tokens and those of older key sets; if that is not
            // enough, start over (a full cache of live tokens is rare, and a miss only costs
            // one signature check).
            let now = chrono::Utc::now().timestamp();
            entries.retain(|_, (claims, at)| *at == generation && claims.exp >= now);
            if entries.len() >= self.capacity * 3 / 4 {
                entries.clear();
            }
        }
        entries.insert(token.into(), (claims.clone(), generation));
    }
}
