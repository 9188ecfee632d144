//! `cargo xtask bench <service>` and `cargo xtask bench suite`.

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

/// Run a benchmark; returns the exit code (1 only if `check` and a target was missed).
pub fn bench(root: &Path, target: &str, runs: usize, check: bool) -> Result<i32> {
    if let Some((package, bin)) = component_bench(target) {
        return component(root, package, bin);
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
const COMPONENT_BENCHES: [(&str, &str, &str); 5] = [
    ("bus", "bus", "bus-bench"),
    ("identity", "identity", "identity-bench"),
    ("auth", "auth", "auth-bench"),
    ("broker", "broker", "broker-load"),
    ("mail", "mail", "mail-bench"),
];

fn component_bench(target: &str) -> Option<(&'static str, &'static str)> {
    COMPONENT_BENCHES
        .iter()
        .find(|(name, _, _)| *name == target)
        .map(|(_, package, bin)| (*package, *bin))
}

/// Builds and runs a component benchmark in release mode (infrastructure first); it prints
/// its numbers next to their targets.
fn component(root: &Path, package: &str, bin: &str) -> Result<i32> {
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
