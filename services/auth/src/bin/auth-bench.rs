//! `auth-bench`: the same load on servers implementing auth's three contract endpoints
//! (`POST /api/auth/v1/signup`, `POST /api/auth/v1/token`, `GET /api/auth/v1/me`), alternating
//! between them round after round, with the ratios. `cargo xtask bench auth --against ...`
//! starts the servers and runs this; it can also be pointed at servers already running.
//!
//! ```text
//! auth-bench --target auth=http://127.0.0.1:8001 [--target django=http://127.0.0.1:18001]
//!            [--pid NAME=PID]... [--baseline NAME] [--memory-allowance NAME=MB]...
//!            [--rounds 3] [--seconds 10] [--warmup 3] [--connections 64] [--logins 8]
//!            [--threads 2] [--email bench@example.com] [--password bench-password-1]
//! ```
//!
//! Each round runs, on each target in turn (the order alternates between rounds, so neither
//! server always runs first on a machine whose load drifts):
//! 1. `GET /me` with a bearer token over `--connections` keep-alive connections: `--warmup`
//!    seconds not counted, then `--seconds` measured;
//! 2. a login storm: password logins (`POST /token`) over `--logins` connections for
//!    `--seconds`, then the server's resident memory (the process and its children: a
//!    gunicorn master and its workers);
//! 3. `GET /me` at a fixed rate — a quarter of what the target answered in 1 — over the same
//!    connections, alone and then during a login storm: the latency a storm adds to other
//!    requests. A fixed rate (wrk2's model: latency counted from when each request was due, so
//!    a stall is not hidden by the requests it delayed) measures stalls; at saturation
//!    (closed loop) any CPU the hashing takes would show as queueing instead.
//!
//! The load generator is wrk's model in this process: closed loop (each connection sends its
//! next request when the previous answer is complete), latency from the request's first byte
//! written to the answer's last byte read (reconnecting, for a server that closes after each
//! answer, is not counted), only `200` answers count (and, for logins, only bodies carrying an
//! `access_token`); anything else is an error. Output: one line per measurement, a table per
//! round, and the spread of the ratios over the rounds (`# ...` comments and `metric value`
//! lines).
//!
//! A target needs the benchmark user: `auth-bench` signs it up (`201`, or `409` when it exists)
//! and signs in; the target must not require a verified email or rate-limit the storm.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API: &str = "/api/auth/v1";
/// wrk's `--timeout` in the peer's script: a request unanswered this long is an error.
const ME_TIMEOUT: Duration = Duration::from_secs(10);
const LOGIN_TIMEOUT: Duration = Duration::from_secs(30);

struct Options {
    targets: Vec<Target>,
    baseline: Option<String>,
    rounds: usize,
    seconds: u64,
    warmup: u64,
    connections: usize,
    logins: usize,
    threads: usize,
    email: String,
    password: String,
}

struct Target {
    name: String,
    /// `host:port`, for the `Host` header.
    authority: String,
    address: SocketAddr,
    /// The URL's path, put in front of `/api/...`.
    prefix: String,
    pid: Option<u32>,
    /// How far the resident memory after the storm may exceed the idle memory, in MB.
    allowance_mb: Option<f64>,
}

const USAGE: &str = "auth-bench --target NAME=URL [--target NAME=URL]... [--pid NAME=PID]... \
[--baseline NAME] [--memory-allowance NAME=MB]... [--rounds 3] [--seconds 10] [--warmup 3] \
[--connections 64] [--logins 8] [--threads 2] [--email E] [--password P]";

fn options() -> anyhow::Result<Options> {
    let mut options = Options {
        targets: Vec::new(),
        baseline: None,
        rounds: 3,
        seconds: 10,
        warmup: 3,
        connections: 64,
        logins: 8,
        threads: 2,
        email: "bench@example.com".into(),
        password: "bench-password-1".into(),
    };
    let mut pids = Vec::new();
    let mut allowances = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        let number = |name: &str, text: String| -> anyhow::Result<u64> {
            text.parse()
                .with_context(|| format!("{name} needs a number, not {text:?}"))
        };
        match arg.as_str() {
            "--target" => {
                let text = value("--target")?;
                let (name, url) = text.split_once('=').context("--target takes NAME=URL")?;
                options.targets.push(Target::parse(name, url)?);
            }
            "--pid" => pids.push(value("--pid")?),
            "--memory-allowance" => allowances.push(value("--memory-allowance")?),
            "--baseline" => options.baseline = Some(value("--baseline")?),
            "--rounds" => options.rounds = number("--rounds", value("--rounds")?)?.max(1) as usize,
            "--seconds" => options.seconds = number("--seconds", value("--seconds")?)?.max(1),
            "--warmup" => options.warmup = number("--warmup", value("--warmup")?)?,
            "--connections" => {
                options.connections =
                    number("--connections", value("--connections")?)?.max(1) as usize;
            }
            "--logins" => options.logins = number("--logins", value("--logins")?)?.max(1) as usize,
            "--threads" => {
                options.threads = number("--threads", value("--threads")?)?.max(1) as usize
            }
            "--email" => options.email = value("--email")?,
            "--password" => options.password = value("--password")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\nusage: {USAGE}"),
        }
    }
    if options.targets.is_empty() {
        bail!("no --target given\nusage: {USAGE}");
    }
    for pid in pids {
        let (name, pid) = pid.split_once('=').context("--pid takes NAME=PID")?;
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("--pid {name}: not a pid"))?;
        options.target_mut(name)?.pid = Some(pid);
    }
    for allowance in allowances {
        let (name, mb) = allowance
            .split_once('=')
            .context("--memory-allowance takes NAME=MB")?;
        let mb: f64 = mb
            .parse()
            .with_context(|| format!("--memory-allowance {name}: not a number"))?;
        options.target_mut(name)?.allowance_mb = Some(mb);
    }
    if let Some(baseline) = &options.baseline {
        options.target_mut(&baseline.clone())?;
    }
    Ok(options)
}

impl Options {
    fn target_mut(&mut self, name: &str) -> anyhow::Result<&mut Target> {
        self.targets
            .iter_mut()
            .find(|t| t.name == name)
            .with_context(|| format!("no --target named {name:?}"))
    }
}

impl Target {
    fn parse(name: &str, url: &str) -> anyhow::Result<Target> {
        use std::net::ToSocketAddrs;
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("{name}: only http:// URLs are supported, not {url:?}"))?;
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let with_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let address = with_port
            .to_socket_addrs()
            .with_context(|| format!("{name}: cannot resolve {authority}"))?
            .next()
            .with_context(|| format!("{name}: {authority} has no address"))?;
        Ok(Target {
            name: name.to_owned(),
            authority: authority.to_owned(),
            address,
            prefix: path.to_owned(),
            pid: None,
            allowance_mb: None,
        })
    }

    fn get(&self, path: &str, token: &str) -> Vec<u8> {
        format!(
            "GET {}{API}{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\r\n",
            self.prefix, self.authority
        )
        .into_bytes()
    }

    fn post_json(&self, path: &str, body: &serde_json::Value) -> Vec<u8> {
        let body = body.to_string();
        format!(
            "POST {}{API}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.prefix,
            self.authority,
            body.len()
        )
        .into_bytes()
    }
}

fn main() -> anyhow::Result<()> {
    let options = options()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build()?
        .block_on(run(options))
}

/// What one target answered to one load.
#[derive(Debug, Clone, Default)]
struct Measured {
    ok: usize,
    errors: Errors,
    seconds: f64,
    /// Latencies of the successful requests, in microseconds, sorted.
    latencies: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Errors {
    connect: usize,
    write: usize,
    read: usize,
    timeout: usize,
    status: usize,
}

impl Errors {
    fn total(&self) -> usize {
        self.connect + self.write + self.read + self.timeout + self.status
    }

    fn add(&mut self, other: &Errors) {
        self.connect += other.connect;
        self.write += other.write;
        self.read += other.read;
        self.timeout += other.timeout;
        self.status += other.status;
    }

    fn describe(&self) -> String {
        if self.total() == 0 {
            return "0".into();
        }
        format!(
            "{} (connect {}, write {}, read {}, timeout {}, status {})",
            self.total(),
            self.connect,
            self.write,
            self.read,
            self.timeout,
            self.status
        )
    }
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.latencies[index.min(self.latencies.len() - 1)]) / 1000.0
    }

    fn p99_ms(&self) -> f64 {
        self.percentile_ms(0.99)
    }

    fn merge(parts: Vec<(Vec<u32>, Errors)>, seconds: f64) -> Measured {
        let mut measured = Measured {
            seconds,
            ..Measured::default()
        };
        for (mut latencies, errors) in parts {
            measured.latencies.append(&mut latencies);
            measured.errors.add(&errors);
        }
        measured.latencies.sort_unstable();
        measured.ok = measured.latencies.len();
        measured
    }
}

/// A request and what a good answer looks like.
struct Load {
    request: Vec<u8>,
    /// A good answer's body contains this.
    must_contain: Option<&'static [u8]>,
    timeout: Duration,
}

/// Sends `load` at `rate` requests/s in all over `connections` connections for `seconds`, each
/// connection on its own schedule; latency counts from when a request was due.
async fn run_paced(
    address: SocketAddr,
    load: Arc<Load>,
    connections: usize,
    rate: f64,
    seconds: Duration,
) -> Measured {
    let interval = Duration::from_secs_f64(connections as f64 / rate.max(1.0));
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let end = start + seconds;
    let tasks: Vec<_> = (0..connections)
        .map(|index| {
            let load = load.clone();
            // Spread the connections' schedules over one interval.
            let first = start + interval.mul_f64(index as f64 / connections as f64);
            tokio::spawn(
                async move { paced_connection(address, &load, first, interval, end).await },
            )
        })
        .collect();
    let mut parts = Vec::with_capacity(connections);
    for task in tasks {
        if let Ok(part) = task.await {
            parts.push(part);
        }
    }
    Measured::merge(parts, seconds.as_secs_f64())
}

/// One paced connection: a request every `interval` from `first` until `end`.
async fn paced_connection(
    address: SocketAddr,
    load: &Load,
    first: tokio::time::Instant,
    interval: Duration,
    end: tokio::time::Instant,
) -> (Vec<u32>, Errors) {
    let mut latencies = Vec::new();
    let mut errors = Errors::default();
    let mut stream: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(16 * 1024);
    let mut due = first;
    while due < end {
        tokio::time::sleep_until(due).await;
        let outcome = exchange(address, load, &mut stream, &mut buffer).await;
        let elapsed = due.elapsed();
        match outcome {
            Ok(()) => latencies.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)),
            Err(kind) => kind.count(&mut errors),
        }
        due += interval;
    }
    (latencies, errors)
}

/// Why an exchange failed.
enum Failed {
    Connect,
    Write,
    Read,
    Timeout,
    Status,
}

impl Failed {
    fn count(self, errors: &mut Errors) {
        match self {
            Failed::Connect => errors.connect += 1,
            Failed::Write => errors.write += 1,
            Failed::Read => errors.read += 1,
            Failed::Timeout => errors.timeout += 1,
            Failed::Status => errors.status += 1,
        }
    }
}

/// One request and its answer on `stream` (connected first if needed; kept when the server
/// keeps the connection open).
async fn exchange(
    address: SocketAddr,
    load: &Load,
    stream: &mut Option<TcpStream>,
    buffer: &mut Vec<u8>,
) -> Result<(), Failed> {
    let mut connection = match stream.take() {
        Some(connection) => connection,
        None => {
            let connection = TcpStream::connect(address)
                .await
                .map_err(|_| Failed::Connect)?;
            let _ = connection.set_nodelay(true);
            connection
        }
    };
    connection
        .write_all(&load.request)
        .await
        .map_err(|_| Failed::Write)?;
    buffer.clear();
    let answer = tokio::time::timeout(load.timeout, read_answer(&mut connection, buffer))
        .await
        .map_err(|_| Failed::Timeout)?
        .map_err(|_| Failed::Read)?;
    if answer.keep_alive {
        *stream = Some(connection);
    }
    let good = answer.status == 200
        && load
            .must_contain
            .is_none_or(|needle| contains(&buffer[answer.body], needle));
    if good { Ok(()) } else { Err(Failed::Status) }
}

/// Runs `connections` closed loops of `load` against `address`: `warmup` not counted, then
/// `seconds` measured (requests started in that window).
async fn run_load(
    address: SocketAddr,
    load: Arc<Load>,
    connections: usize,
    warmup: Duration,
    seconds: Duration,
) -> Measured {
    let measure_from = Instant::now() + warmup;
    let end = measure_from + seconds;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let load = load.clone();
            tokio::spawn(async move { connection(address, &load, measure_from, end).await })
        })
        .collect();
    let mut parts = Vec::with_capacity(connections);
    for task in tasks {
        if let Ok(part) = task.await {
            parts.push(part);
        }
    }
    Measured::merge(parts, seconds.as_secs_f64())
}

/// One connection's loop: (latencies in µs of good answers in the window, errors in it).
async fn connection(
    address: SocketAddr,
    load: &Load,
    measure_from: Instant,
    end: Instant,
) -> (Vec<u32>, Errors) {
    let mut latencies = Vec::new();
    let mut errors = Errors::default();
    let mut stream: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(16 * 1024);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let counted = now >= measure_from;
        let mut connection = match stream.take() {
            Some(connection) => connection,
            None => match TcpStream::connect(address).await {
                Ok(connection) => {
                    let _ = connection.set_nodelay(true);
                    connection
                }
                Err(_) => {
                    if counted {
                        errors.connect += 1;
                    }
                    // A refused connection fails at once: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        if connection.write_all(&load.request).await.is_err() {
            if counted {
                errors.write += 1;
            }
            continue;
        }
        buffer.clear();
        let answer =
            tokio::time::timeout(load.timeout, read_answer(&mut connection, &mut buffer)).await;
        let elapsed = started.elapsed();
        let counted = started >= measure_from && started < end;
        match answer {
            Err(_) => {
                if counted {
                    errors.timeout += 1;
                }
            }
            Ok(Err(_)) => {
                if counted {
                    errors.read += 1;
                }
            }
            Ok(Ok(answer)) => {
                let good = answer.status == 200
                    && load
                        .must_contain
                        .is_none_or(|needle| contains(&buffer[answer.body.clone()], needle));
                if counted {
                    if good {
                        latencies.push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                    } else {
                        errors.status += 1;
                    }
                }
                if answer.keep_alive {
                    stream = Some(connection);
                }
            }
        }
    }
    (latencies, errors)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// A complete HTTP/1.1 answer read into a buffer.
struct Answer {
    status: u16,
    keep_alive: bool,
    body: std::ops::Range<usize>,
}

/// Reads one answer: status line, headers, and a body delimited by `Content-Length`, chunked
/// encoding, or the end of the connection.
async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<Answer> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let head_end = loop {
        if let Some(at) = find(buffer, b"\r\n\r\n", 0) {
            break at + 4;
        }
        if stream.read_buf(buffer).await? == 0 {
            return Err(invalid("closed before the headers ended"));
        }
    };
    let head =
        std::str::from_utf8(&buffer[..head_end]).map_err(|_| invalid("headers not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status code"))?;
    let mut keep_alive = version == "HTTP/1.1";
    let mut length: Option<usize> = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().map_err(|_| invalid("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            keep_alive = !value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        let mut at = head_end;
        loop {
            let line_end = loop {
                if let Some(end) = find(buffer, b"\r\n", at) {
                    break end;
                }
                if stream.read_buf(buffer).await? == 0 {
                    return Err(invalid("closed inside a chunked body"));
                }
            };
            let size_text = std::str::from_utf8(&buffer[at..line_end])
                .map_err(|_| invalid("bad chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| invalid("bad chunk size"))?;
            // Data, then CRLF (the last chunk: no data, then the final CRLF).
            let needed = line_end + 2 + size + 2;
            while buffer.len() < needed {
                if stream.read_buf(buffer).await? == 0 {
                    return Err(invalid("closed inside a chunk"));
                }
            }
            at = needed;
            if size == 0 {
                return Ok(Answer {
                    status,
                    keep_alive,
                    body: head_end..at,
                });
            }
        }
    }
    match length {
        Some(length) => {
            let needed = head_end + length;
            while buffer.len() < needed {
                if stream.read_buf(buffer).await? == 0 {
                    return Err(invalid("closed inside the body"));
                }
            }
            Ok(Answer {
                status,
                keep_alive,
                body: head_end..needed,
            })
        }
        None => {
            // Delimited by the end of the connection.
            while stream.read_buf(buffer).await? != 0 {}
            Ok(Answer {
                status,
                keep_alive: false,
                body: head_end..buffer.len(),
            })
        }
    }
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|window| window == needle)
        .map(|at| at + from)
}

/// One request on a new connection: (status, body).
async fn once(target: &Target, request: &[u8]) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(target.address)
        .await
        .with_context(|| format!("{}: cannot connect to {}", target.name, target.address))?;
    stream.write_all(request).await?;
    let mut buffer = Vec::new();
    let answer = tokio::time::timeout(LOGIN_TIMEOUT, read_answer(&mut stream, &mut buffer))
        .await
        .with_context(|| format!("{}: no answer within {LOGIN_TIMEOUT:?}", target.name))??;
    Ok((
        answer.status,
        String::from_utf8_lossy(&buffer[answer.body]).into_owned(),
    ))
}

/// Signs the benchmark user up (201, or 409 when it exists) and in; checks `/me`. The token.
async fn prepare(target: &Target, options: &Options) -> anyhow::Result<String> {
    let signup = serde_json::json!({
        "email": options.email, "password": options.password, "name": "Bench User"
    });
    let (status, body) = once(target, &target.post_json("/signup", &signup)).await?;
    if status != 201 && status != 409 {
        bail!("{}: signup answered {status}: {body}", target.name);
    }
    let (status, body) = once(target, &target.post_json("/token", &login_body(options))).await?;
    if status != 200 {
        bail!(
            "{}: signing in as {} answered {status}: {body} (the benchmark needs the password grant without email verification and without rate limits)",
            target.name,
            options.email
        );
    }
    let tokens: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("{}: the token answer is not JSON: {body}", target.name))?;
    let token = tokens["access_token"]
        .as_str()
        .with_context(|| format!("{}: no access_token in {body}", target.name))?
        .to_owned();
    let (status, body) = once(target, &target.get("/me", &token)).await?;
    if status != 200 {
        bail!("{}: GET /me answered {status}: {body}", target.name);
    }
    Ok(token)
}

fn login_body(options: &Options) -> serde_json::Value {
    serde_json::json!({
        "grant_type": "password", "email": options.email, "password": options.password
    })
}

/// Resident memory of `pid` and its descendants, in MB (10^6 bytes).
fn tree_rss_mb(pid: u32) -> Option<f64> {
    fn kib(pid: u32) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|value| value.parse().ok())
    }
    fn children(pid: u32) -> Vec<u32> {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
            .flat_map(|text| {
                text.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<u32>>()
            })
            .collect()
    }
    let mut total = kib(pid)?;
    let mut pending = children(pid);
    while let Some(child) = pending.pop() {
        total += kib(child).unwrap_or(0);
        pending.extend(children(child));
    }
    Some(total as f64 * 1024.0 / 1_000_000.0)
}

/// One target's results in one round.
#[derive(Debug, Clone, Default)]
struct RoundResult {
    me: Measured,
    logins: Measured,
    /// `GET /me` at a fixed rate, alone and during a login storm.
    me_paced: Measured,
    me_paced_during_storm: Measured,
    logins_during_paced: Measured,
    rss_after_storm_mb: Option<f64>,
}

async fn run(options: Options) -> anyhow::Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "# auth-bench: {cpus} CPU(s); {} round(s); GET /me {} connections ({} s warm-up, {} s measured); logins {} connections {} s; load generator: {} thread(s), closed loop like wrk",
        options.rounds,
        options.connections,
        options.warmup,
        options.seconds,
        options.logins,
        options.seconds,
        options.threads
    );
    let mut tokens = Vec::new();
    let mut idle = Vec::new();
    for target in &options.targets {
        // Before the first request: what the server holds with no work done.
        let rss = target.pid.and_then(tree_rss_mb);
        tokens.push(prepare(target, &options).await?);
        println!(
            "# {}: {} ready{}",
            target.name,
            target.address,
            rss.map(|mb| format!(", idle RSS {mb:.1} MB"))
                .unwrap_or_default()
        );
        idle.push(rss);
    }
    let seconds = Duration::from_secs(options.seconds);
    let warmup = Duration::from_secs(options.warmup);
    let mut results: Vec<Vec<RoundResult>> = Vec::new();
    for round in 1..=options.rounds {
        let mut order: Vec<usize> = (0..options.targets.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        let mut this_round = vec![RoundResult::default(); options.targets.len()];
        for &index in &order {
            let target = &options.targets[index];
            let me = Arc::new(Load {
                request: target.get("/me", &tokens[index]),
                must_contain: None,
                timeout: ME_TIMEOUT,
            });
            let login = Arc::new(Load {
                request: target.post_json("/token", &login_body(&options)),
                must_contain: Some(b"\"access_token\""),
                timeout: LOGIN_TIMEOUT,
            });
            let result = &mut this_round[index];
            result.me = run_load(
                target.address,
                me.clone(),
                options.connections,
                warmup,
                seconds,
            )
            .await;
            println!(
                "round {round}  {:<8} GET /me               {:>9.1} req/s   p50 {:>8.2} ms   p99 {:>8.2} ms   errors {}",
                target.name,
                result.me.per_second(),
                result.me.percentile_ms(0.5),
                result.me.p99_ms(),
                result.me.errors.describe()
            );
            result.logins = run_load(
                target.address,
                login.clone(),
                options.logins,
                Duration::ZERO,
                seconds,
            )
            .await;
            result.rss_after_storm_mb = target.pid.and_then(tree_rss_mb);
            println!(
                "round {round}  {:<8} logins                {:>9.1} /s      p50 {:>8.2} ms   p99 {:>8.2} ms   errors {}{}",
                target.name,
                result.logins.per_second(),
                result.logins.percentile_ms(0.5),
                result.logins.p99_ms(),
                result.logins.errors.describe(),
                result
                    .rss_after_storm_mb
                    .map(|mb| format!("   RSS after the storm {mb:.1} MB"))
                    .unwrap_or_default()
            );
            let rate = (result.me.per_second() / 4.0).max(1.0);
            result.me_paced = run_paced(
                target.address,
                me.clone(),
                options.connections,
                rate,
                seconds,
            )
            .await;
            let (paced, logins_during) = tokio::join!(
                run_paced(target.address, me, options.connections, rate, seconds),
                run_load(
                    target.address,
                    login,
                    options.logins,
                    Duration::ZERO,
                    seconds
                ),
            );
            result.me_paced_during_storm = paced;
            result.logins_during_paced = logins_during;
            for (label, measured) in [
                ("alone", &result.me_paced),
                ("in a storm", &result.me_paced_during_storm),
            ] {
                println!(
                    "round {round}  {:<8} GET /me at {rate:.0}/s, {label:<10}  p50 {:>8.2} ms   p99 {:>8.2} ms   errors {}",
                    target.name,
                    measured.percentile_ms(0.5),
                    measured.p99_ms(),
                    measured.errors.describe()
                );
            }
            println!(
                "round {round}  {:<8} logins during the paced GET /me {:.1}/s",
                target.name,
                result.logins_during_paced.per_second()
            );
        }
        results.push(this_round);
        if let Some(table) = round_table(
            &options,
            round,
            results.last().map_or(&[][..], Vec::as_slice),
            &idle,
        ) {
            print!("{table}");
        }
    }
    print!("{}", summary(&options, &results, &idle));
    Ok(())
}

fn fmt_mb(mb: Option<f64>) -> String {
    mb.map_or_else(|| "-".into(), |mb| format!("{mb:.1} MB"))
}

/// One round side by side: every target's figures, and each against the baseline.
fn round_table(
    options: &Options,
    round: usize,
    results: &[RoundResult],
    idle: &[Option<f64>],
) -> Option<String> {
    let mut out = String::new();
    let _ = writeln!(out, "\nround {round}:");
    let _ = writeln!(
        out,
        "  {:<10} {:>12} {:>12} {:>26} {:>10} {:>12} {:>12} {:>12}",
        "target",
        "/me req/s",
        "/me p99 ms",
        "paced p99: alone → storm",
        "logins/s",
        "idle RSS",
        "RSS storm",
        "RSS bound"
    );
    for (index, target) in options.targets.iter().enumerate() {
        let r = &results[index];
        let bound = idle[index]
            .zip(target.allowance_mb)
            .map(|(idle, extra)| idle + extra);
        let _ = writeln!(
            out,
            "  {:<10} {:>12.1} {:>12.2} {:>26} {:>10.1} {:>12} {:>12} {:>12}",
            target.name,
            r.me.per_second(),
            r.me.p99_ms(),
            format!(
                "{:.2} → {:.2} ms",
                r.me_paced.p99_ms(),
                r.me_paced_during_storm.p99_ms()
            ),
            r.logins.per_second(),
            fmt_mb(idle[index]),
            fmt_mb(r.rss_after_storm_mb),
            fmt_mb(bound)
        );
    }
    let baseline = options.baseline.as_deref()?;
    let base = options.targets.iter().position(|t| t.name == baseline)?;
    for (index, target) in options.targets.iter().enumerate() {
        if index == base {
            continue;
        }
        let ratios = Ratios::of(&results[index], &results[base]);
        let _ = writeln!(
            out,
            "  {} vs {baseline}: /me req/s ×{:.1}, /me p99 1/{:.1}, logins/s ×{:.1}; {}'s paced /me p99 in a login storm ×{:.2} of without",
            target.name,
            ratios.throughput,
            ratios.p99,
            ratios.logins,
            target.name,
            ratios.storm_p99_growth
        );
    }
    Some(out)
}

/// A target against the baseline, in one round.
struct Ratios {
    /// req/s ÷ baseline's req/s.
    throughput: f64,
    /// baseline's p99 ÷ p99 (10 = a tenth of the baseline's).
    p99: f64,
    logins: f64,
    /// The target's own /me p99 during the storm ÷ without.
    storm_p99_growth: f64,
}

impl Ratios {
    fn of(target: &RoundResult, baseline: &RoundResult) -> Ratios {
        Ratios {
            throughput: target.me.per_second() / baseline.me.per_second(),
            p99: baseline.me.p99_ms() / target.me.p99_ms(),
            logins: target.logins.per_second() / baseline.logins.per_second(),
            storm_p99_growth: target.me_paced_during_storm.p99_ms() / target.me_paced.p99_ms(),
        }
    }
}

/// min / median / max and the spread ((max − min) ÷ median).
fn spread(values: &[f64]) -> String {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return "-".into();
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    let (min, max) = (sorted[0], sorted[n - 1]);
    format!(
        "min {min:.2} / median {median:.2} / max {max:.2} (spread {:.0}%)",
        (max - min) / median * 100.0
    )
}

fn summary(options: &Options, results: &[Vec<RoundResult>], idle: &[Option<f64>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\n# over {} round(s):", results.len());
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    for (index, target) in options.targets.iter().enumerate() {
        let series = |f: &dyn Fn(&RoundResult) -> f64| -> Vec<f64> {
            results.iter().map(|round| f(&round[index])).collect()
        };
        let me = series(&|r| r.me.per_second());
        let p99 = series(&|r| r.me.p99_ms());
        let paced_p99 = series(&|r| r.me_paced.p99_ms());
        let storm_p99 = series(&|r| r.me_paced_during_storm.p99_ms());
        let logins = series(&|r| r.logins.per_second());
        let rss = series(&|r| r.rss_after_storm_mb.unwrap_or(f64::NAN));
        let _ = writeln!(out, "# {}: GET /me req/s {}", target.name, spread(&me));
        let _ = writeln!(out, "# {}: GET /me p99 ms {}", target.name, spread(&p99));
        let _ = writeln!(
            out,
            "# {}: GET /me p99 ms at a quarter of its req/s, alone {}",
            target.name,
            spread(&paced_p99)
        );
        let _ = writeln!(
            out,
            "# {}: GET /me p99 ms at a quarter of its req/s, in a login storm {}",
            target.name,
            spread(&storm_p99)
        );
        let _ = writeln!(out, "# {}: logins/s {}", target.name, spread(&logins));
        let _ = writeln!(
            out,
            "# {}: RSS idle {}, after a {} s login storm {}",
            target.name,
            fmt_mb(idle[index]),
            options.seconds,
            spread(&rss)
        );
        let worst = |v: &[f64], max: bool| {
            v.iter().copied().filter(|x| x.is_finite()).fold(
                if max {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                },
                |a, b| if max { a.max(b) } else { a.min(b) },
            )
        };
        metrics.insert(
            format!("{}_me_per_second_min", target.name),
            worst(&me, false),
        );
        metrics.insert(format!("{}_me_p99_ms_max", target.name), worst(&p99, true));
        metrics.insert(
            format!("{}_logins_per_second_min", target.name),
            worst(&logins, false),
        );
        if let (Some(idle), Some(allowance)) = (idle[index], target.allowance_mb) {
            let bound = idle + allowance;
            let max = worst(&rss, true);
            let _ = writeln!(
                out,
                "# {}: RSS after the storm at most {max:.1} MB; bound idle + allowance = {idle:.1} + {allowance:.1} = {bound:.1} MB: {}",
                target.name,
                if max <= bound { "within" } else { "EXCEEDED" }
            );
            metrics.insert(format!("{}_rss_after_storm_mb_max", target.name), max);
            metrics.insert(format!("{}_rss_bound_mb", target.name), bound);
        }
    }
    if let Some(baseline) = options.baseline.as_deref()
        && let Some(base) = options.targets.iter().position(|t| t.name == baseline)
    {
        for (index, target) in options.targets.iter().enumerate() {
            if index == base {
                continue;
            }
            let ratios: Vec<Ratios> = results
                .iter()
                .map(|round| Ratios::of(&round[index], &round[base]))
                .collect();
            let pick = |f: fn(&Ratios) -> f64| ratios.iter().map(f).collect::<Vec<f64>>();
            let name = &target.name;
            let _ = writeln!(out, "# {name} ÷ {baseline}, per round:");
            for (round, r) in ratios.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "#   round {}: /me req/s ×{:.2}, /me p99 1/{:.2}, logins/s ×{:.2}, {name}'s paced /me p99 during a storm ×{:.2} of without",
                    round + 1,
                    r.throughput,
                    r.p99,
                    r.logins,
                    r.storm_p99_growth
                );
            }
            let _ = writeln!(
                out,
                "# {name} ÷ {baseline}: /me req/s × {}",
                spread(&pick(|r| r.throughput))
            );
            let _ = writeln!(
                out,
                "# {baseline} p99 ÷ {name} p99: {}",
                spread(&pick(|r| r.p99))
            );
            let _ = writeln!(
                out,
                "# {name}: paced /me p99 during a storm ÷ without: {}",
                spread(&pick(|r| r.storm_p99_growth))
            );
            let min = |v: Vec<f64>| v.into_iter().fold(f64::INFINITY, f64::min);
            let max = |v: Vec<f64>| v.into_iter().fold(f64::NEG_INFINITY, f64::max);
            metrics.insert(
                format!("{name}_vs_{baseline}_me_per_second_ratio_min"),
                min(pick(|r| r.throughput)),
            );
            metrics.insert(
                format!("{name}_vs_{baseline}_me_p99_ratio_min"),
                min(pick(|r| r.p99)),
            );
            metrics.insert(
                format!("{name}_me_p99_storm_growth_max"),
                max(pick(|r| r.storm_p99_growth)),
            );
        }
    }
    for (name, value) in metrics {
        let _ = writeln!(out, "{name} {value:.2}");
    }
    out
}
