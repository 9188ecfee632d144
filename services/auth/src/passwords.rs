//! Password hashing: argon2id with configurable cost (OWASP's parameters by default) on a fixed
//! pool of worker threads, never on the async runtime's threads.
//!
//! - **Bounded memory.** There are `app.hashing_concurrency` workers (default: one per CPU),
//!   and each owns one argon2 memory area (`app.argon2.memory_kib`) that it reuses for every
//!   hash, so a login storm costs at most workers × memory however many logins wait; waiting
//!   logins queue for a worker and hold only their password.
//! - **Returned.** The area is mapped straight from the kernel and unmapped once its worker has
//!   been idle for [`IDLE_RELEASE`]; the most recently used worker is handed the next hash, so
//!   under a light load one area stays mapped and the others go back.
//! - **Requests first.** Workers run at the lowest CPU priority (`app.hashing_nice`, 19), so
//!   under contention the runtime's threads, which answer every other request, are scheduled
//!   first — a login storm slows logins, not `GET /me` — while hashing still progresses.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Context;
use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Semaphore, oneshot};

use crate::config::Argon2Settings;
use crate::domain::Password;

/// A worker idle this long gives its memory back to the system.
pub const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// Bytes of the raw hash (argon2's default output length).
const OUTPUT_LEN: usize = 32;

/// What checking a password found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Right password; `rehash` when the stored hash uses other parameters than configured.
    Match {
        rehash: bool,
    },
    Mismatch,
}

/// How the pool runs: its size and its workers' CPU priority.
#[derive(Debug, Clone, Copy)]
pub struct Pool {
    /// Workers (0 = one per CPU).
    pub workers: usize,
    /// Nice value of the workers' threads, 0 (like every other thread) to 19 (lowest).
    pub nice: i32,
}

/// Hashes and checks passwords on the worker pool. Cheap to clone.
#[derive(Clone)]
pub struct Hasher(Arc<Inner>);

struct Inner {
    /// One per idle worker; taken while it works (see [`Hasher::run`]).
    permits: Semaphore,
    /// Idle workers' job queues, the most recently used last.
    idle: Mutex<Vec<mpsc::Sender<Job>>>,
    /// A hash of a random password nobody knows: checked against when the account does not
    /// exist, so "unknown email" costs what "wrong password" costs.
    dummy: String,
}

enum Work {
    Hash(String),
    Verify { password: String, stored: String },
}

enum Done {
    Hashed(String),
    Checked(Verdict),
}

struct Job {
    work: Work,
    respond: oneshot::Sender<anyhow::Result<Done>>,
}

impl Hasher {
    /// Starts the workers.
    pub fn new(settings: Argon2Settings, pool: Pool) -> anyhow::Result<Hasher> {
        let params = Params::new(
            settings.memory_kib,
            settings.iterations,
            settings.parallelism,
            None,
        )
        .map_err(|err| anyhow::anyhow!("app.argon2: {err}"))?;
        let workers = if pool.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            pool.workers
        };
        let secret = crate::domain::OpaqueToken::generate()?;
        let dummy = {
            let mut memory = BlockMemory::new(params.block_count())?;
            hash_with(&params, &mut memory, secret.expose())?
        };
        let mut idle = Vec::with_capacity(workers);
        for index in 0..workers {
            let (jobs, queue) = mpsc::channel();
            let worker_params = params.clone();
            let nice = pool.nice;
            std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&queue, &worker_params, nice))
                .context("starting a password-hashing worker")?;
            idle.push(jobs);
        }
        Ok(Hasher(Arc::new(Inner {
            permits: Semaphore::new(workers),
            idle: Mutex::new(idle),
            dummy,
        })))
    }

    /// The PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) of `password`.
    pub async fn hash(&self, password: &Password) -> anyhow::Result<String> {
        match self.run(Work::Hash(password.expose().to_owned())).await? {
            Done::Hashed(hash) => Ok(hash),
            Done::Checked(_) => anyhow::bail!("a hashing worker answered a check to a hash"),
        }
    }

    /// Checks `password` against `stored`; with no stored hash (unknown account, or one
    /// without a password), checks against the dummy hash and answers `Mismatch`, taking as
    /// long as a real check.
    pub async fn verify(
        &self,
        password: &Password,
        stored: Option<&str>,
    ) -> anyhow::Result<Verdict> {
        let (stored, real) = match stored {
            Some(hash) => (hash.to_owned(), true),
            None => (self.0.dummy.clone(), false),
        };
        let work = Work::Verify {
            password: password.expose().to_owned(),
            stored,
        };
        match self.run(work).await? {
            Done::Checked(verdict) if real => Ok(verdict),
            Done::Checked(_) => Ok(Verdict::Mismatch),
            Done::Hashed(_) => anyhow::bail!("a hashing worker answered a hash to a check"),
        }
    }

    /// Hands `work` to an idle worker (waiting for one) and awaits its answer.
    async fn run(&self, work: Work) -> anyhow::Result<Done> {
        let _permit = self
            .0
            .permits
            .acquire()
            .await
            .context("the hashing pool is closed")?;
        let worker = Borrowed::take(&self.0.idle).context("no idle hashing worker")?;
        let (respond, answer) = oneshot::channel();
        worker
            .jobs()
            .send(Job { work, respond })
            .map_err(|_| anyhow::anyhow!("a hashing worker has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("a hashing worker stopped during a hash"))?
    }
}

/// A worker's queue, taken from the idle list and put back when dropped — also when the request
/// waiting for it is abandoned (the worker finishes that hash, then takes the next).
struct Borrowed<'a> {
    jobs: Option<mpsc::Sender<Job>>,
    idle: &'a Mutex<Vec<mpsc::Sender<Job>>>,
}

impl<'a> Borrowed<'a> {
    fn take(idle: &'a Mutex<Vec<mpsc::Sender<Job>>>) -> Option<Borrowed<'a>> {
        let jobs = idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        Some(Borrowed {
            jobs: Some(jobs),
            idle,
        })
    }

    fn jobs(&self) -> &mpsc::Sender<Job> {
        // Set from construction until drop.
        self.jobs.as_ref().expect("a borrowed worker queue")
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        if let Some(jobs) = self.jobs.take() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(jobs);
        }
    }
}

/// One worker: hashes until the pool is dropped, mapping its memory on first use and unmapping
/// it after [`IDLE_RELEASE`] without work.
fn work(queue: &mpsc::Receiver<Job>, params: &Params, nice: i32) {
    lower_priority(nice);
    let mut memory: Option<BlockMemory> = None;
    loop {
        let job = if memory.is_some() {
            match queue.recv_timeout(IDLE_RELEASE) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    memory = None;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            match queue.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let done = match &mut memory {
            Some(memory) => Ok(memory),
            None => BlockMemory::new(params.block_count()).map(|m| memory.insert(m)),
        }
        .and_then(|memory| match job.work {
            Work::Hash(password) => hash_with(params, memory, &password).map(Done::Hashed),
            Work::Verify { password, stored } => {
                verify_with(params, memory, &password, &stored).map(Done::Checked)
            }
        });
        let _ = job.respond.send(done);
    }
}

/// Sets the calling thread's nice value (Linux: per thread).
fn lower_priority(nice: i32) {
    if nice <= 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; no memory is shared.
        let result = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice)
        };
        if result != 0 {
            tracing::warn!(
                nice,
                error = %std::io::Error::last_os_error(),
                "cannot lower the priority of a password-hashing worker"
            );
        }
    }
}

fn argon2id(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, memory: &mut BlockMemory, password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; argon2::RECOMMENDED_SALT_LEN];
    aws_lc_rs::rand::fill(&mut salt)
        .map_err(|_| anyhow::anyhow!("the system random number generator failed"))?;
    let mut out = [0u8; OUTPUT_LEN];
    argon2id(params)
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory.blocks())
        .map_err(|err| anyhow::anyhow!("hashing a password: {err}"))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(params)
            .map_err(|err| anyhow::anyhow!("encoding argon2 parameters: {err}"))?,
        salt: Some(Salt::new(&salt).map_err(|err| anyhow::anyhow!("a salt: {err}"))?),
        hash: Some(Output::new(&out).map_err(|err| anyhow::anyhow!("a hash: {err}"))?),
    };
    Ok(phc.to_string())
}

fn verify_with(
    configured: &Params,
    memory: &mut BlockMemory,
    password: &str,
    stored: &str,
) -> anyhow::Result<Verdict> {
    let parsed = PasswordHash::new(stored)
        .map_err(|err| anyhow::anyhow!("a stored password hash does not parse: {err}"))?;
    // The stored hash names its own algorithm and cost; the check follows them.
    let algorithm = Algorithm::try_from(parsed.algorithm.as_str())
        .map_err(|err| anyhow::anyhow!("a stored password hash: {err}"))?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|err| anyhow::anyhow!("a stored password hash: {err}"))?
        .unwrap_or_default();
    let params = Params::try_from(&parsed)
        .map_err(|err| anyhow::anyhow!("a stored password hash's parameters: {err}"))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        anyhow::bail!("a stored password hash has no salt or no hash");
    };
    let hasher = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    let computed = if params.block_count() <= memory.len() {
        hasher.hash_password_into_with_memory(
            password.as_bytes(),
            salt.as_ref(),
            &mut out,
            memory.blocks(),
        )
    } else {
        // Stored with more memory than configured (the cost was lowered since): rare, and
        // re-hashed with the configured cost after this login.
        hasher.hash_password_into(password.as_bytes(), salt.as_ref(), &mut out)
    };
    computed.map_err(|err| anyhow::anyhow!("checking a password: {err}"))?;
    let computed = Output::new(&out).map_err(|err| anyhow::anyhow!("a hash: {err}"))?;
    // `Output`'s comparison takes the same time wherever the bytes differ.
    if computed != *expected {
        return Ok(Verdict::Mismatch);
    }
    let rehash = algorithm != Algorithm::Argon2id
        || version != Version::V0x13
        || params.m_cost() != configured.m_cost()
        || params.t_cost() != configured.t_cost()
        || params.p_cost() != configured.p_cost();
    Ok(Verdict::Match { rehash })
}

/// Memory for one argon2 hash at a time, mapped from the kernel (zeroed, page-aligned) and
/// unmapped when dropped, so it is returned to the system rather than kept by the allocator.
struct BlockMemory {
    start: std::ptr::NonNull<Block>,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves the
// ownership.
unsafe impl Send for BlockMemory {}

impl BlockMemory {
    fn new(len: usize) -> anyhow::Result<BlockMemory> {
        let bytes = len
            .checked_mul(std::mem::size_of::<Block>())
            .filter(|&bytes| bytes > 0)
            .context("argon2 memory size")?;
        // SAFETY: a new private anonymous mapping (no address hint, no file); the result is
        // checked before use.
        let start = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if start == libc::MAP_FAILED {
            anyhow::bail!(
                "cannot map {} KiB for password hashing: {}",
                bytes / 1024,
                std::io::Error::last_os_error()
            );
        }
        let start = std::ptr::NonNull::new(start.cast::<Block>()).context("mmap returned null")?;
        Ok(BlockMemory { start, len })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn blocks(&mut self) -> &mut [Block] {
        // SAFETY: the mapping holds `len` blocks, is page-aligned (more than a block's 64-byte
        // alignment), zero-filled (a valid block is any bit pattern of 128 u64), and lives until
        // `self` is dropped; `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl Drop for BlockMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`, which nothing borrows any more.
        unsafe {
            libc::munmap(
                self.start.as_ptr().cast(),
                self.len * std::mem::size_of::<Block>(),
            );
        }
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

    fn pool(workers: usize) -> Pool {
        Pool { workers, nice: 0 }
    }

    #[tokio::test]
    async fn hashes_verify_and_report_old_parameters() {
        let hasher = Hasher::new(cheap(), pool(2)).unwrap();
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

        // A pool with more memory checks a hash made with less (a prefix of its memory), and
        // one with less memory checks a hash made with more; both ask for a re-hash.
        let stronger = Hasher::new(
            Argon2Settings {
                memory_kib: 128,
                ..cheap()
            },
            pool(1),
        )
        .unwrap();
        assert_eq!(
            stronger.verify(&password, Some(&hash)).await.unwrap(),
            Verdict::Match { rehash: true }
        );
        let strong_hash = stronger.hash(&password).await.unwrap();
        assert_eq!(
            hasher.verify(&password, Some(&strong_hash)).await.unwrap(),
            Verdict::Match { rehash: true }
        );
        // Hashes the argon2 crate's own hasher made (stored before this pool existed) verify.
        let theirs = {
            use argon2::PasswordHasher;
            let params = Params::new(64, 1, 1, None).unwrap();
            argon2id(&params)
                .hash_password_with_salt(b"hatchery-ada", b"0123456789abcdef")
                .unwrap()
                .to_string()
        };
        assert_eq!(
            hasher.verify(&password, Some(&theirs)).await.unwrap(),
            Verdict::Match { rehash: false }
        );
    }

    #[tokio::test]
    async fn more_hashes_than_workers_queue_and_all_complete() {
        let hasher = Hasher::new(cheap(), pool(2)).unwrap();
        let password = Password::parse("hatchery-cleo".into()).unwrap();
        let hashes = futures_util::future::join_all((0..8).map(|_| hasher.hash(&password))).await;
        let hashes: Vec<String> = hashes.into_iter().map(Result::unwrap).collect();
        for hash in &hashes {
            assert_eq!(
                hasher.verify(&password, Some(hash)).await.unwrap(),
                Verdict::Match { rehash: false }
            );
        }
        // Each hash has its own salt.
        let distinct: std::collections::HashSet<&String> = hashes.iter().collect();
        assert_eq!(distinct.len(), 8);
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
