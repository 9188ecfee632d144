//! `cargo xtask bench <service>`, `cargo xtask bench suite`, and `cargo xtask bench auth
//! [--against URL|DIR]`.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::infra::{self, Smtp};
use crate::services::{self, Service};
use crate::util::{self, loopback};
use crate::{http, procs};

/// Target: a service is ready in under a second.
pub const READY_TARGET: Duration = Duration::from_secs(1);
/// Target: idle resident memory at most 20 MB.
pub const RSS_TARGET_MB: f64 = 20.0;
/// Target: the whole test suite (warm) in under two minutes.
pub const SUITE_TARGET: Duration = Duration::from_secs(120);

/// One row of the result table.
struct Row {
    metric: String,
    value: String,
    target: String,
    met: bool,
}

fn print_rows(rows: &[Row]) -> bool {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            vec![
                row.metric.clone(),
                row.value.clone(),
                row.target.clone(),
                if row.met { "ok" } else { "MISSED" }.to_string(),
            ]
        })
        .collect();
    print!(
        "\n{}",
        util::table(&["METRIC", "VALUE", "TARGET", "RESULT"], &table)
    );
    rows.iter().all(|row| row.met)
}

/// A reference implementation to run the same load on (`bench broker --against socketshark`).
#[derive(Default)]
pub struct Peer<'a> {
    pub against: Option<&'a str>,
    /// Its folder; default `$SOCKETSHARK_PEER_DIR`, else `../shared/peers/socketshark` beside
    /// the repository.
    pub dir: Option<&'a Path>,
}

/// Where the socketshark peer's folder is looked up when `--peer-dir` is not given.
pub const PEER_DIR_ENV: &str = "SOCKETSHARK_PEER_DIR";

/// Run a benchmark; returns the exit code (1 only if `check` and a target was missed).
pub fn bench(root: &Path, target: &str, runs: usize, check: bool, peer: &Peer) -> Result<i32> {
    if let Some(against) = peer.against {
        if target != "broker" || against != "socketshark" {
            bail!(
                "--against: only `cargo xtask bench broker --against socketshark` exists (got `{target}` against `{against}`)"
            );
        }
        let dir = match peer.dir {
            Some(dir) => dir.to_owned(),
            None => std::env::var_os(PEER_DIR_ENV)
                .map_or_else(|| root.join("../shared/peers/socketshark"), PathBuf::from),
        };
        if !dir.join("run.sh").is_file() || !dir.join("setup.sh").is_file() {
            bail!(
                "no socketshark peer at {} (setup.sh and run.sh expected): pass --peer-dir DIR or set {PEER_DIR_ENV}",
                dir.display()
            );
        }
        let dir = dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.display()))?;
        let mut args = vec![
            "--against".to_owned(),
            "socketshark".to_owned(),
            "--peer-dir".to_owned(),
            dir.display().to_string(),
        ];
        if check {
            args.push("--check".to_owned());
        }
        return component(root, "broker", "broker-load", &args);
    }
    if let Some((package, bin)) = component_bench(target) {
        return component(root, package, bin, &[]);
    }
    let rows = if target == "suite" {
        suite(root)?
    } else {
        service(root, target, runs)?
    };
    let met = print_rows(&rows);
    Ok(if check && !met { 1 } else { 0 })
}

/// Benchmarks that live next to their crate as a release binary printing its own table:
/// `bench <target>` → (package, bin).
const COMPONENT_BENCHES: &[(&str, &str, &str)] = &[
    ("bus", "bus", "bus-bench"),
    ("identity", "identity", "identity-bench"),
    ("broker", "broker", "broker-load"),
    ("mail", "mail", "mail-bench"),
    ("payments", "payments", "payments-bench"),
    ("events", "events", "events-bench"),
];

fn component_bench(target: &str) -> Option<(&'static str, &'static str)> {
    COMPONENT_BENCHES
        .iter()
        .find(|(name, _, _)| *name == target)
        .map(|(_, package, bin)| (*package, *bin))
}

/// Builds and runs a component benchmark in release mode (infrastructure first); it prints
/// its numbers next to their targets.
fn component(root: &Path, package: &str, bin: &str, args: &[String]) -> Result<i32> {
    infra::ensure(root, Smtp::Skip)?;
    let mut command = util::cargo();
    command
        .current_dir(root)
        .args([
            "run",
            "--release",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--",
        ])
        .args(args)
        .stdin(Stdio::null());
    println!("==> {}", util::describe(&command));
    let status = util::status(&mut command)?;
    Ok(util::exit_code_of(status))
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(listener.local_addr()?.port())
}

struct Runner {
    binary: PathBuf,
    root: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    port: u16,
}

impl Runner {
    fn command(&self, args: &[&str]) -> Result<Command> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .current_dir(&self.root)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        procs::die_with_parent(&mut command);
        Ok(command)
    }

    fn failure(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{what}; the service's log ({}):\n{}",
            self.log.display(),
            util::tail(&self.log, 25)
        )
    }

    /// Spawn `serve` and wait for `/readyz` 200; returns the child and the time it took.
    fn start(&self) -> Result<(Child, Duration)> {
        let started = Instant::now();
        let mut child = self
            .command(&["serve"])?
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        let deadline = started + Duration::from_secs(60);
        loop {
            if let Ok(response) = http::get(loopback(self.port), "/readyz", Duration::from_secs(2))
                && response.status == 200
            {
                return Ok((child, started.elapsed()));
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(self.failure(&format!(
                    "the service exited before it was ready ({})",
                    util::describe_status(status)
                )));
            }
            if Instant::now() >= deadline {
                procs::stop_all(&mut [&mut child], Duration::from_secs(5));
                return Err(self.failure("the service was not ready within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn stop(child: &mut Child) {
    procs::stop_all(&mut [child], Duration::from_secs(10));
}

/// Resident set size of `pid` in MB (10^6 bytes), from /proc.
pub fn rss_mb(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))?;
    Ok(kib * 1024.0 / 1_000_000.0)
}

fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

fn service(root: &Path, name: &str, runs: usize) -> Result<Vec<Row>> {
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let services = services::discover(root)?;
    let Some(service) = services.iter().find(|s| s.name == name).cloned() else {
        let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        bail!(
            "unknown bench target {name:?}: use `suite` or a service ({})",
            known.join(", ")
        );
    };
    infra::ensure(root, Smtp::Skip)?;
    println!("==> cargo build --release -p {name}");
    util::run(
        util::cargo()
            .current_dir(root)
            .args(["build", "--release", "-p", name]),
    )?;
    let runner = runner(root, &service)?;
    println!("    service log: {}", runner.log.display());

    println!("==> {name} populate --scenario demo");
    let status = runner
        .command(&["populate", "--scenario", "demo"])?
        .status()
        .context("cannot run populate")?;
    if !status.success() {
        return Err(runner.failure(&format!(
            "`{name} populate --scenario demo` failed ({})",
            util::describe_status(status)
        )));
    }

    println!("==> start-to-ready × {runs}");
    let mut times = Vec::with_capacity(runs);
    for run in 1..=runs {
        let (mut child, took) = runner.start()?;
        stop(&mut child);
        println!("    run {run}: {}", util::human_duration(took));
        times.push(took);
    }
    times.sort();
    let (min, med, max) = (times[0], median(&times), times[times.len() - 1]);

    println!("==> idle RSS after 100 requests");
    let (mut child, _) = runner.start()?;
    let notes = format!("/api/{name}/v1/notes");
    let mut statuses: std::collections::BTreeMap<String, usize> = Default::default();
    for index in 0..100 {
        let path = if index % 2 == 0 {
            "/healthz"
        } else {
            notes.as_str()
        };
        let key = match http::get(loopback(runner.port), path, Duration::from_secs(5)) {
            Ok(response) => format!("{path} {}", response.status),
            Err(error) => format!("{path} error: {error}"),
        };
        *statuses.entry(key).or_default() += 1;
    }
    std::thread::sleep(Duration::from_secs(1)); // let the service settle before measuring
    let rss = rss_mb(child.id());
    stop(&mut child);
    let rss = rss?;
    let answered: Vec<String> = statuses.iter().map(|(k, n)| format!("{n}× {k}")).collect();
    println!("    answers: {}", answered.join(", "));

    Ok(vec![
        Row {
            metric: format!("{name}: start-to-ready ({runs} runs)"),
            value: format!(
                "min {} / median {} / max {} ms",
                min.as_millis(),
                med.as_millis(),
                max.as_millis()
            ),
            target: format!("< {} ms", READY_TARGET.as_millis()),
            met: max < READY_TARGET,
        },
        Row {
            metric: format!("{name}: idle RSS"),
            value: format!("{rss:.1} MB"),
            target: format!("≤ {RSS_TARGET_MB} MB"),
            met: rss <= RSS_TARGET_MB,
        },
    ])
}

fn runner(root: &Path, service: &Service) -> Result<Runner> {
    let port = free_port()?;
    let mut env = crate::up::service_env(service, "demo");
    for (key, value) in &mut env {
        if *key == service.env("HTTP__PORT") {
            *value = port.to_string();
        }
        if *key == service.env("LOG__FORMAT") {
            *value = "json".to_string();
        }
    }
    let log_dir = util::target_dir(root).join("xtask");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let log = log_dir.join(format!("bench-{}.log", service.name));
    let _ = std::fs::remove_file(&log);
    Ok(Runner {
        binary: util::target_dir(root).join("release").join(&service.name),
        root: root.to_path_buf(),
        env,
        log,
        port,
    })
}

fn suite(root: &Path) -> Result<Vec<Row>> {
    infra::ensure(root, Smtp::Skip)?;
    let run = |label: &str| -> Result<Duration> {
        let mut command = util::cargo();
        command
            .current_dir(root)
            .args(["nextest", "run", "--workspace"])
            .stdin(Stdio::null());
        println!("==> {label}: {}", util::describe(&command));
        let started = Instant::now();
        util::run(&mut command)?;
        Ok(started.elapsed())
    };
    let warm = run("warm-up run")?;
    println!("    warm-up took {}", util::human_duration(warm));
    let timed = run("timed run")?;
    Ok(vec![Row {
        metric: "test suite (warm)".to_string(),
        value: format!("{:.1} s", timed.as_secs_f64()),
        target: format!("< {} s", SUITE_TARGET.as_secs()),
        met: timed < SUITE_TARGET,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(median(&ms(&[1, 2, 3])), Duration::from_millis(2));
        assert_eq!(
            median(&ms(&[1, 2, 3, 5])),
            Duration::from_millis(2500) / 1000
        );
    }

    #[test]
    fn reads_own_rss() {
        let rss = rss_mb(std::process::id()).unwrap();
        assert!(rss > 0.1 && rss < 10_000.0, "{rss}");
    }
}

/// Options of `cargo xtask bench auth`.
#[derive(Debug, Clone)]
pub struct AuthBench {
    /// Another implementation of auth's contract: a running one's `http://` URL, the
    /// directory of the Django peer to start, or empty for the peer found next to the
    /// repository. `None`: auth alone.
    pub against: Option<String>,
    pub rounds: usize,
    pub seconds: u64,
}

/// Overrides where the Django peer is found (its directory, holding `setup.sh` and `run.sh`).
pub const AUTH_PEER_ENV: &str = "HATCHERY_AUTH_PEER";
/// The peer, relative to the repository or to one of its parents.
const PEER_RELATIVE: &str = "shared/peers/django-auth";
/// The peer's own database for the benchmark (its `setup.sh` drops and recreates it).
const PEER_DATABASE: &str = "peer_django_auth_bench";
/// Auth's database for the benchmark (created on first use; the benchmark user persists).
const AUTH_DATABASE: &str = "auth_bench";
/// argon2's memory per hash at auth's default (OWASP) cost, in KiB.
const ARGON2_MEMORY_KIB: f64 = 19_456.0;

/// `cargo xtask bench auth`: builds auth and `auth-bench` (release), starts auth on a database
/// of its own with the access log and rate limits off, starts the peer (or takes a running
/// one's URL), and runs `auth-bench` on both, which alternates the same load between them and
/// prints the ratios. Everything started is stopped at the end, Ctrl-C included.
pub fn auth(root: &Path, options: &AuthBench) -> Result<i32> {
    if options.rounds == 0 || options.seconds == 0 {
        bail!("--rounds and --seconds must be at least 1");
    }
    let shutdown = procs::shutdown_flag()?;
    infra::ensure(root, Smtp::Skip)?;
    let mut build = util::cargo();
    build.current_dir(root).args([
        "build",
        "--release",
        "-p",
        "auth",
        "--bin",
        "auth",
        "--bin",
        "auth-bench",
    ]);
    println!("==> {}", util::describe(&build));
    util::run(&mut build)?;
    let service = services::discover(root)?
        .into_iter()
        .find(|s| s.name == "auth")
        .context("no auth service in this repository")?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runner = auth_runner(root, &service, workers)?;
    println!(
        "==> auth (release) on port {}; log: {}",
        runner.port,
        runner.log.display()
    );
    let (mut auth, _) = runner.start()?;
    let mut arguments = vec![
        "--target".to_string(),
        format!("auth=http://127.0.0.1:{}", runner.port),
        "--pid".to_string(),
        format!("auth={}", auth.id()),
        "--memory-allowance".to_string(),
        // The bound: idle + hashing workers × argon2 memory + 16 MiB.
        format!(
            "auth={:.1}",
            (workers as f64 * ARGON2_MEMORY_KIB * 1024.0 + 16.0 * 1024.0 * 1024.0) / 1e6
        ),
        "--rounds".to_string(),
        options.rounds.to_string(),
        "--seconds".to_string(),
        options.seconds.to_string(),
    ];
    let peer = match options.against.as_deref() {
        None => None,
        Some(url) if url.starts_with("http://") => {
            arguments.extend([
                "--target".to_string(),
                format!("peer={}", url.trim_end_matches('/')),
                "--baseline".to_string(),
                "peer".to_string(),
            ]);
            None
        }
        Some(dir) => {
            let source = peer_dir(root, dir)?;
            match DjangoPeer::start(root, &source) {
                Ok(peer) => {
                    arguments.extend([
                        "--target".to_string(),
                        format!("django=http://127.0.0.1:{}", peer.port),
                        "--pid".to_string(),
                        format!("django={}", peer.pid),
                        "--baseline".to_string(),
                        "django".to_string(),
                    ]);
                    Some(peer)
                }
                Err(error) => {
                    stop(&mut auth);
                    return Err(error);
                }
            }
        }
    };
    let mut command = Command::new(util::target_dir(root).join("release/auth-bench"));
    command
        .current_dir(root)
        .args(&arguments)
        .stdin(Stdio::null());
    procs::die_with_parent(&mut command);
    println!("==> {}", util::describe(&command));
    let status = command.status();
    if shutdown.load(std::sync::atomic::Ordering::SeqCst) {
        println!("==> interrupted: stopping what was started");
    }
    stop(&mut auth);
    drop(peer);
    let status = status.context("cannot run auth-bench")?;
    Ok(util::exit_code_of(status))
}

/// Auth as the benchmark runs it: release build, its own database, JSON logs at `warn` (no
/// access log: kit logs every request at `info`), rate limits off (every login comes from one
/// address for one email), no email verification needed, its own Redis prefixes.
fn auth_runner(root: &Path, service: &Service, workers: usize) -> Result<Runner> {
    let port = free_port()?;
    let run_id = format!("auth-bench-{}:", std::process::id());
    let env: Vec<(String, String)> = [
        ("HTTP__PORT", port.to_string()),
        (
            "DATABASE__URL",
            format!("postgres://postgres@127.0.0.1:5432/{AUTH_DATABASE}"),
        ),
        ("LOG__FORMAT", "json".to_string()),
        ("LOG__LEVEL", "warn".to_string()),
        ("REDIS__URL", "redis://127.0.0.1:6379".to_string()),
        (
            "AMQP__URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
        ),
        ("AMQP__PREFIX", "hatchery-bench".to_string()),
        ("APP__REDIS_PREFIX", run_id.clone()),
        ("AUTH__REVOCATION_PREFIX", run_id),
        ("APP__RATE_LIMITS__ENABLED", "false".to_string()),
        ("APP__REQUIRE_VERIFIED_EMAIL", "false".to_string()),
        ("APP__HASHING_CONCURRENCY", workers.to_string()),
    ]
    .into_iter()
    .map(|(key, value)| (service.env(key), value))
    .collect();
    let log_dir = util::target_dir(root).join("xtask");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    let log = log_dir.join("bench-auth.log");
    let _ = std::fs::remove_file(&log);
    Ok(Runner {
        binary: util::target_dir(root).join("release").join(&service.name),
        root: root.to_path_buf(),
        env,
        log,
        port,
    })
}

/// The peer's directory: the one given, else `$HATCHERY_AUTH_PEER`, else
/// `shared/peers/django-auth` beside the repository or beside one of its parents (a worktree
/// finds the same peer as the main checkout).
fn peer_dir(root: &Path, given: &str) -> Result<PathBuf> {
    let dir = if !given.is_empty() {
        PathBuf::from(given)
    } else if let Some(dir) = std::env::var_os(AUTH_PEER_ENV).filter(|d| !d.is_empty()) {
        PathBuf::from(dir)
    } else {
        root.ancestors()
            .skip(1)
            .map(|parent| parent.join(PEER_RELATIVE))
            .find(|dir| dir.join("run.sh").is_file())
            .with_context(|| {
                format!(
                    "no {PEER_RELATIVE} beside {} or its parents: give its directory (--against DIR or {AUTH_PEER_ENV}) or a running one's URL",
                    root.display()
                )
            })?
    };
    for script in ["setup.sh", "run.sh", "stop.sh"] {
        if !dir.join(script).is_file() {
            bail!("{} has no {script}: not the Django peer", dir.display());
        }
    }
    Ok(dir)
}

/// The Django peer, run from a copy under `target/bench/` (its virtualenv, keys and pid files
/// stay there, not in the shared directory): set up on a database of its own, started with its
/// `run.sh`, stopped with its `stop.sh` when dropped.
struct DjangoPeer {
    dir: PathBuf,
    port: u16,
    pid: u32,
}

impl DjangoPeer {
    fn start(root: &Path, source: &Path) -> Result<DjangoPeer> {
        let dir = util::target_dir(root).join("bench/django-auth");
        copy_tree(source, &dir).with_context(|| {
            format!(
                "cannot copy the peer from {} to {}",
                source.display(),
                dir.display()
            )
        })?;
        let log = util::target_dir(root).join("xtask/bench-django-setup.log");
        println!(
            "==> Django peer from {}: setup.sh (virtualenv, database {PEER_DATABASE}); log: {}",
            source.display(),
            log.display()
        );
        let output = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let status = Command::new("bash")
            .arg(dir.join("setup.sh"))
            .current_dir(&dir)
            .env("PEER_DB_NAME", PEER_DATABASE)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .status()
            .context("cannot run the peer's setup.sh")?;
        if !status.success() {
            bail!(
                "the peer's setup.sh failed ({}):\n{}",
                util::describe_status(status),
                util::tail(&log, 25)
            );
        }
        let port = free_port()?;
        let output = Command::new("bash")
            .arg(dir.join("run.sh"))
            .arg(port.to_string())
            .current_dir(&dir)
            .env("PEER_DB_NAME", PEER_DATABASE)
            .stdin(Stdio::null())
            .output()
            .context("cannot run the peer's run.sh")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let pid_file = dir.join(format!("var/run/gunicorn-{port}.pid"));
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|pid| pid.trim().parse().ok());
        let peer = DjangoPeer {
            dir,
            port,
            pid: pid.unwrap_or(0),
        };
        if !output.status.success() || pid.is_none() {
            bail!("the peer did not start on port {port}:\n{text}");
        }
        println!("    {}", text.lines().next().unwrap_or("started"));
        Ok(peer)
    }
}

impl Drop for DjangoPeer {
    fn drop(&mut self) {
        let stopped = Command::new("bash")
            .arg(self.dir.join("stop.sh"))
            .arg(self.port.to_string())
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !stopped.is_ok_and(|s| s.success()) {
            eprintln!(
                "warning: the Django peer on port {} (pid {}) may still run: `{}/stop.sh {}`",
                self.port,
                self.pid,
                self.dir.display(),
                self.port
            );
        }
    }
}

/// Copies `from` into `to` (files replaced, made writable), leaving out what the peer makes
/// when it runs (virtualenv, keys, pid files, results, bytecode).
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    const SKIP: [&str; 5] = [".venv", "var", "results", "__pycache__", ".git"];
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if SKIP.iter().any(|skip| name == *skip) {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            let _ = std::fs::remove_file(&target);
            std::fs::copy(entry.path(), &target)?;
            let mut permissions = std::fs::metadata(&target)?.permissions();
            use std::os::unix::fs::PermissionsExt;
            permissions.set_mode(permissions.mode() | 0o200);
            std::fs::set_permissions(&target, permissions)?;
        }
    }
    Ok(())
}
