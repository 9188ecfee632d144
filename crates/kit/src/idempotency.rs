//! `Idempotency-Key` on creating POSTs: the same key with the same request within 24 h gets the
//! stored response again; the same key with a different request is a 422
//! `idempotency_key_reused`; the same key while the first request is still running is a 409
//! `idempotency_key_in_use`.
//!
//! The stored response is written in the same transaction as the business rows, so a request
//! that fails (or a process that dies) leaves nothing behind and the client's retry runs anew.
//! Concurrent requests with one key are told apart with a transaction-scoped advisory lock.
//!
//! The `idempotency` table is kit's ([`SCHEMA`]): a service that takes `Idempotency-Key` lists it
//! in its `kit::Database::shared`, and kit prunes it hourly.
//!
//! ```ignore
//! async fn create(State(s): State<AppState>, request: Idempotent<CreateNote>) -> ApiResult<Response> {
//!     let (mut tx, input, key) = match request.claim(&s.db, "notes.create").await? {
//!         Claim::Replay(stored) => return Ok(stored),
//!         Claim::Fresh { tx, body, key } => (tx, body, key),
//!     };
//!     // ... business writes on `tx` ...
//!     idempotency::complete(tx, key.as_ref(), (StatusCode::CREATED, Json(note)).into_response()).await
//! }
//! ```

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};

use crate::db::SharedSchema;
use crate::error::ApiError;
use crate::extract;

/// The `idempotency` table, defined once for every service.
pub static SCHEMA: SharedSchema = SharedSchema {
    owner: "kit",
    migrator: &MIGRATOR,
    replaces: &["idempotency"],
    // Stored responses repeat what was created (names, addresses); they are replayable for
    // 24 h only, so a copy needs none.
    personal: &[crate::anonymize::Personal::clear("idempotency")],
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

pub static HEADER: HeaderName = HeaderName::from_static("idempotency-key");

/// How long a stored response is replayed.
pub const RETENTION_HOURS: i32 = 24;

/// Response headers worth replaying (others, like dates and request ids, are per response).
const REPLAYED_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::LOCATION];

/// A client's key together with a fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: String,
    fingerprint: Vec<u8>,
}

impl IdempotencyKey {
    /// A key that came some other way than [`Idempotent`] (a tool, a test), with the
    /// fingerprint of its request.
    pub fn new(key: impl Into<String>, fingerprint: Vec<u8>) -> IdempotencyKey {
        IdempotencyKey {
            key: key.into(),
            fingerprint,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The key as stored for `scope`: what [`Idempotent::claim`] looks up and [`complete`]
    /// stores under.
    pub fn scoped(&self, scope: &str) -> String {
        format!("{scope}\u{1f}{}", self.key)
    }

    /// The answer to a request whose key already has `stored`: the first response again, or
    /// 422 `idempotency_key_reused` when the key came with another request.
    pub fn answer(&self, stored: Stored) -> Result<Response, ApiError> {
        if stored.fingerprint != self.fingerprint {
            return Err(ApiError::unprocessable(
                "idempotency_key_reused",
                "This Idempotency-Key was used with a different request.",
            ));
        }
        Ok(replay(stored.status, &stored.headers, stored.body))
    }
}

/// A stored response, as a service's own statement may read it
/// (`SELECT fingerprint, status, headers, body FROM idempotency WHERE key = ... AND
/// created_at > now() - make_interval(hours => RETENTION_HOURS)`), to answer a retry without a
/// transaction of its own.
#[derive(Debug, Clone)]
pub struct Stored {
    pub fingerprint: Vec<u8>,
    pub status: i16,
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

/// A response ready to be stored by a service's own statement (one that writes its business
/// rows and the `idempotency` row together, with [`UPSERT`]'s conflict clause), and sent once
/// that has committed.
pub struct Storable {
    /// The scoped key.
    pub key: String,
    pub fingerprint: Vec<u8>,
    pub status: i16,
    /// The replayed headers.
    pub headers: serde_json::Value,
    pub body: Bytes,
    parts: http::response::Parts,
}

/// The conflict clause of an `INSERT INTO idempotency (key, fingerprint, status, headers, body,
/// created_at)`: a key stored meanwhile (a concurrent retry that finished first) takes this
/// response, which says the same.
pub const UPSERT: &str = "ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, \
     status = EXCLUDED.status, headers = EXCLUDED.headers, body = EXCLUDED.body, \
     created_at = EXCLUDED.created_at";

impl Storable {
    /// Buffers `response` to store it under `key` scoped to `scope`.
    pub async fn new(
        key: &IdempotencyKey,
        scope: &str,
        response: Response,
    ) -> Result<Storable, ApiError> {
        Storable::buffer(key.scoped(scope), key.fingerprint.clone(), response).await
    }

    async fn buffer(
        key: String,
        fingerprint: Vec<u8>,
        response: Response,
    ) -> Result<Storable, ApiError> {
        let (parts, body) = response.into_parts();
        let body: Bytes = body
            .collect()
            .await
            .map_err(|err| ApiError::internal(anyhow::anyhow!("buffering the response: {err}")))?
            .to_bytes();
        Ok(Storable {
            key,
            fingerprint,
            status: parts.status.as_u16() as i16,
            headers: replayed_headers(&parts.headers),
            body,
            parts,
        })
    }

    /// The response to send, once the row is stored.
    pub fn into_response(self) -> Response {
        Response::from_parts(self.parts, Body::from(self.body))
    }
}

/// A JSON body plus the optional `Idempotency-Key` header it came with.
pub struct Idempotent<T> {
    pub body: T,
    pub key: Option<IdempotencyKey>,
}

impl<T, S> FromRequest<S> for Idempotent<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let key = match req.headers().get(&HEADER) {
            None => None,
            Some(value) => Some(parse_key(value)?),
        };
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let extract::Json(raw) =
            extract::Json::<serde_json::Value>::from_request(req, state).await?;
        let bytes = serde_json::to_vec(&raw).unwrap_or_default();
        let body: T = extract::parse_json(&bytes)?;
        let key = key.map(|key| {
            let mut hash = Sha256::new();
            hash.update(method.as_str().as_bytes());
            hash.update([0]);
            hash.update(path.as_bytes());
            hash.update([0]);
            hash.update(&bytes);
            IdempotencyKey {
                key,
                fingerprint: hash.finalize().to_vec(),
            }
        });
        Ok(Idempotent { body, key })
    }
}

fn parse_key(value: &HeaderValue) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_idempotency_key",
            "An Idempotency-Key is 1 to 255 visible ASCII characters.",
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid());
    }
    Ok(key.to_owned())
}

/// What to do with a request.
pub enum Claim<T> {
    /// Run it: write on `tx`, then hand the response to [`complete`].
    Fresh {
        tx: Transaction<'static, Postgres>,
        body: T,
        key: Option<IdempotencyKey>,
    },
    /// It ran before with this key and body: answer this.
    Replay(Response),
}

impl<T> Idempotent<T> {
    /// Opens the transaction for the request and decides whether it runs or replays. `scope`
    /// separates keys of different operations (and, with authentication, of different callers).
    pub async fn claim(self, db: &PgPool, scope: &str) -> Result<Claim<T>, ApiError> {
        let mut tx = db.begin().await?;
        let Some(mut key) = self.key else {
            return Ok(Claim::Fresh {
                tx,
                body: self.body,
                key: None,
            });
        };
        key.key = key.scoped(scope);
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(&key.key)
                .fetch_one(&mut *tx)
                .await?;
        if !locked {
            return Err(ApiError::conflict(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still being processed; retry later.",
            ));
        }
        let stored: Option<(Vec<u8>, i16, serde_json::Value, Vec<u8>)> = sqlx::query_as(
            "SELECT fingerprint, status, headers, body FROM idempotency
             WHERE key = $1 AND created_at > now() - make_interval(hours => $2)",
        )
        .bind(&key.key)
        .bind(RETENTION_HOURS)
        .fetch_optional(&mut *tx)
        .await?;
        match stored {
            None => Ok(Claim::Fresh {
                tx,
                body: self.body,
                key: Some(key),
            }),
            Some((fingerprint, status, headers, body)) => key
                .answer(Stored {
                    fingerprint,
                    status,
                    headers,
                    body,
                })
                .map(Claim::Replay),
        }
    }
}

fn replay(status: i16, headers: &serde_json::Value, body: Vec<u8>) -> Response {
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    if let Some(map) = headers.as_object() {
        for (name, value) in map {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
    }
    response.headers_mut().insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    response
}

/// Stores the response under the key (if any) and commits together with the business rows.
pub async fn complete(
    mut tx: Transaction<'static, Postgres>,
    key: Option<&IdempotencyKey>,
    response: Response,
) -> Result<Response, ApiError> {
    let Some(key) = key else {
        tx.commit().await?;
        return Ok(response);
    };
    let stored = Storable::buffer(key.key.clone(), key.fingerprint.clone(), response).await?;
    static STORE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "INSERT INTO idempotency (key, fingerprint, status, headers, body, created_at)
             VALUES ($1, $2, $3, $4, $5, now()) {UPSERT}"
        )
    });
    sqlx::query(sqlx::AssertSqlSafe(STORE.as_str()))
        .bind(&stored.key)
        .bind(&stored.fingerprint)
        .bind(stored.status)
        .bind(&stored.headers)
        .bind(stored.body.as_ref())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(stored.into_response())
}

fn replayed_headers(headers: &HeaderMap) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    for name in &REPLAYED_HEADERS {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            map.insert(name.as_str().to_owned(), value.into());
        }
    }
    map.into()
}

/// Deletes stored responses past retention; returns how many.
pub async fn prune(db: &PgPool) -> sqlx::Result<u64> {
    let result = sqlx::query(
        "DELETE FROM idempotency WHERE created_at < now() - make_interval(hours => $1)",
    )
    .bind(RETENTION_HOURS)
    .execute(db)
    .await?;
    Ok(result.rows_affected())
}

/// Hourly, deletes stored responses past retention, until `shutdown`.
pub async fn prune_periodically(pool: PgPool, shutdown: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        match prune(&pool).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned idempotent responses"),
            Err(err) => tracing::warn!(error = %err, "pruning idempotent responses failed"),
        }
    }
}
