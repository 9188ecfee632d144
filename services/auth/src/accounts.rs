//! The signed-in account, as it is now, for every authenticated request: auth is the source of
//! the platform's users, so it never trusts a token's copy of them.
//!
//! That read is the hottest query of the platform (`GET /me`, every admin call), so accounts
//! are kept in memory, and kept fresh by the database itself:
//!
//! - every change to a row of `users` — by any instance, command or hand-written SQL — sends
//!   the user's UUID on the channel [`CHANNEL`] (a trigger, so no write can forget it); Postgres
//!   delivers it when the change commits, and every instance drops its copy at once. The one
//!   column left out is the sign-in time (`last_login_at`): a login storm must not empty the
//!   cache, and that time shows at most `app.account_cache_ttl` late;
//! - a change made through this instance drops the copy before the answer is sent
//!   ([`Accounts::forget`]), so the next request, wherever its client sends it next, reads the
//!   new row;
//! - a copy serves at most `app.account_cache_ttl` (1 s) after it was read, which bounds what a
//!   lost notification could leave behind; when the listening connection is lost, everything
//!   is dropped;
//! - what ends access does not wait for any of this: removing a role, disabling or deleting an
//!   account end its sessions, which every request checks in Redis.
//!
//! A copy read while a change commits is never kept (an epoch changes with every drop, and a
//! read only fills the cache if none happened since it started). The requests that miss one
//! account together wait for one read instead of each reading, and a copy past half its life is
//! read again by one request while the others keep using it.
//!
//! Misses read on a few connections kept for it alone rather than one borrowed from the pool per
//! read: sqlx checks a pooled connection with a round trip when lending it and again, on a task
//! of its own, when it comes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::users::{self, UserRow};

/// The channel a change to `users` is announced on (payload: the user's UUID); see the
/// `users_changed` trigger.
pub const CHANNEL: &str = "auth_users_changed";

/// Accounts kept at most: beyond, expired copies are dropped, then all.
const CAPACITY: usize = 10_000;

/// Accounts by UUID: a short-lived copy when there is one, else the row. Cheap to share
/// behind the state's pointer.
pub struct Accounts {
    reader: Reader,
    copies: RwLock<HashMap<Uuid, Copy>>,
    /// One gate per account being read: the misses of one account take turns.
    reading: std::sync::Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    /// Changes with every drop (see the module documentation).
    epoch: AtomicU64,
    ttl: Duration,
}

struct Copy {
    row: UserRow,
    read_at: Instant,
}

impl Accounts {
    /// Reads on at most `connections` connections of `pool`; copies live `ttl` (zero: every
    /// request reads the row).
    pub fn new(pool: PgPool, connections: usize, ttl: Duration) -> Accounts {
        Accounts {
            reader: Reader::new(pool, connections),
            copies: RwLock::new(HashMap::new()),
            reading: std::sync::Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            ttl,
        }
    }

    /// The account with this UUID as it is now (deleted or not).
    pub async fn find(&self, uuid: Uuid) -> sqlx::Result<Option<UserRow>> {
        if self.ttl.is_zero() {
            return self.reader.find(uuid).await;
        }
        let _turn = match self.copy_of(uuid) {
            Some((row, age)) if age < self.ttl / 2 => return Ok(Some(row)),
            // Half its life gone: one request reads it again ahead of time while the others
            // keep using it, so a busy account never makes everyone wait on one read.
            Some((row, _)) => match Turn::try_take(self, uuid) {
                Some(turn) => turn,
                None => return Ok(Some(row)),
            },
            None => {
                let turn = Turn::take(self, uuid).await;
                // Read by the request that had the turn before this one.
                if let Some((row, _)) = self.copy_of(uuid) {
                    return Ok(Some(row));
                }
                turn
            }
        };
        let epoch = self.epoch.load(Ordering::Acquire);
        let read_at = Instant::now();
        let row = self.reader.find(uuid).await?;
        if let Some(row) = &row {
            let mut copies = self.copies();
            // Nothing was dropped since the read started: the row is not older than any change
            // announced so far.
            if self.epoch.load(Ordering::Acquire) == epoch {
                if copies.len() >= CAPACITY {
                    copies.retain(|_, copy| copy.read_at.elapsed() < self.ttl);
                    if copies.len() >= CAPACITY {
                        copies.clear();
                    }
                }
                copies.insert(
                    uuid,
                    Copy {
                        row: row.clone(),
                        read_at,
                    },
                );
            }
        }
        Ok(row)
    }

    /// A copy of `uuid` young enough to serve, and its age.
    fn copy_of(&self, uuid: Uuid) -> Option<(UserRow, Duration)> {
        let copies = self.copies.read().unwrap_or_else(|p| p.into_inner());
        let copy = copies.get(&uuid)?;
        let age = copy.read_at.elapsed();
        (age < self.ttl).then(|| (copy.row.clone(), age))
    }

    /// Drops the copy of `uuid` (its row changed). Call after the change commits.
    pub fn forget(&self, uuid: Uuid) {
        let mut copies = self.copies();
        copies.remove(&uuid);
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops every copy (changes may have been missed).
    pub fn forget_all(&self) {
        let mut copies = self.copies();
        copies.clear();
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    fn copies(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Uuid, Copy>> {
        self.copies.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request's turn to read one account; the gate is forgotten when nobody waits on it (also
/// when the request is abandoned).
struct Turn<'a> {
    accounts: &'a Accounts,
    uuid: Uuid,
    gate: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<'a> Turn<'a> {
    fn gate(accounts: &'a Accounts, uuid: Uuid) -> Turn<'a> {
        let gate = accounts
            .reading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(uuid)
            .or_default()
            .clone();
        Turn {
            accounts,
            uuid,
            gate,
            held: None,
        }
    }

    /// Waits for the turn.
    async fn take(accounts: &'a Accounts, uuid: Uuid) -> Turn<'a> {
        let mut turn = Turn::gate(accounts, uuid);
        turn.held = Some(turn.gate.clone().lock_owned().await);
        turn
    }

    /// The turn if nobody has it.
    fn try_take(accounts: &'a Accounts, uuid: Uuid) -> Option<Turn<'a>> {
        let mut turn = Turn::gate(accounts, uuid);
        turn.held = Some(turn.gate.clone().try_lock_owned().ok()?);
        Some(turn)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.held = None;
        let mut reading = self
            .accounts
            .reading
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // The map's reference and this one: nobody else waits (waiters clone under this lock;
        // an abandoned wait may leave its clone for a moment, and the gate for the next turn).
        if Arc::strong_count(&self.gate) == 2 {
            reading.remove(&self.uuid);
        }
    }
}

/// Listens on [`CHANNEL`] (connected before the first request, so no change is missed between
/// start and serving) and returns the task dropping the copies it names.
pub async fn listen(
    pool: &PgPool,
    accounts: Arc<Accounts>,
    shutdown: CancellationToken,
) -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(async move {
        loop {
            let received = tokio::select! {
                () = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notice)) => match notice.payload().parse::<Uuid>() {
                    Ok(uuid) => accounts.forget(uuid),
                    Err(_) => accounts.forget_all(),
                },
                // The connection was lost and made again (listening again): what changed
                // meanwhile is unknown.
                Ok(None) => accounts.forget_all(),
                Err(err) => {
                    accounts.forget_all();
                    tracing::warn!(error = %err, "cannot listen for account changes; retrying (cached accounts serve at most app.account_cache_ttl)");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    })
}

/// Reads accounts by UUID on its own connections (taken from the pool on first use, and again
/// after an error).
struct Reader {
    pool: PgPool,
    connections: Vec<tokio::sync::Mutex<Option<PoolConnection<Postgres>>>>,
    next: AtomicUsize,
}

impl Reader {
    fn new(pool: PgPool, connections: usize) -> Reader {
        Reader {
            pool,
            connections: (0..connections.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    async fn find(&self, uuid: Uuid) -> sqlx::Result<Option<UserRow>> {
        // A free connection if there is one (the first free from a rotating start), else wait
        // for the next in turn.
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let count = self.connections.len();
        let free = (0..count)
            .find_map(|offset| self.connections[(start + offset) % count].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.connections[start % count].lock().await,
        };
        let connection = match slot.as_mut() {
            Some(connection) => connection,
            None => slot.insert(self.pool.acquire().await?),
        };
        let found = users::find(&mut **connection, uuid).await;
        if found.is_err() {
            // Whatever went wrong, the next read starts from a fresh connection (this one goes
            // back to the pool, which checks it).
            *slot = None;
        }
        found
    }
}
