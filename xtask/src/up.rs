//! `cargo xtask up`: run every service locally with merged, prefixed logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::infra::{self, MAILBOX_PORT, SMTP_PORT, Smtp, mailbox_url};
use crate::services::{self, Service};
use crate::util::{self, loopback, reachable};
use crate::{http, procs};

/// Options of `cargo xtask up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub scenario: String,
    pub release: bool,
    pub ready_timeout: Duration,
}

/// How long a child gets between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Environment for running service `service` locally.
pub fn service_env(service: &Service, scenario: &str) -> Vec<(String, String)> {
    vec![
        (service.env("POPULATE__SCENARIO"), scenario.to_string()),
        (service.env("LOG__FORMAT"), "pretty".to_string()),
        (service.env("HTTP__PORT"), service.port.to_string()),
        (
            service.env("REDIS__URL"),
            "redis://127.0.0.1:6379".to_string(),
        ),
        (
            service.env("AMQP__URL"),
            "amqp://guest:guest@127.0.0.1:5672/%2f".to_string(),
        ),
    ]
}

/// A supervised child.
struct Proc {
    name: String,
    child: Child,
    /// Threads forwarding the child's stdout and stderr.
    output: Vec<JoinHandle<()>>,
    /// Services (not the SMTP sink) are probed for readiness.
    service: Option<Service>,
    ready_after: Option<Duration>,
}

enum Probe {
    Ready(usize, Duration),
    TimedOut(usize, String),
}

fn spawn(
    name: &str,
    mut command: Command,
    index: usize,
    width: usize,
    colour: bool,
) -> Result<(Child, Vec<JoinHandle<()>>)> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    procs::die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {name}: `{}`", util::describe(&command)))?;
    let prefix = procs::prefix(name, width, index, colour);
    let mut output = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        output.push(procs::forward_lines(stdout, prefix.clone())?);
    }
    if let Some(stderr) = child.stderr.take() {
        output.push(procs::forward_lines(stderr, prefix)?);
    }
    Ok((child, output))
}

fn probe_readiness(
    index: usize,
    service: Service,
    timeout: Duration,
    stop: Arc<AtomicBool>,
    events: mpsc::Sender<Probe>,
) {
    let started = Instant::now();
    let addr = loopback(service.port);
    let mut last = String::from("no answer yet");
    while started.elapsed() < timeout {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match http::get(addr, "/readyz", Duration::from_secs(2)) {
            Ok(response) if response.status == 200 => {
                let _ = events.send(Probe::Ready(index, started.elapsed()));
                return;
            }
            Ok(response) => last = format!("/readyz answered {}", response.status),
            Err(error) => last = format!("/readyz: {error}"),
        }
        thread::sleep(Duration::from_millis(150));
    }
    let _ = events.send(Probe::TimedOut(index, last));
}

fn print_ready_table(root: &Path, procs: &[Proc], scenario: &str, mail_dir: Option<&PathBuf>) {
    let mut rows = Vec::new();
    for proc in procs {
        if let Some(service) = &proc.service {
            rows.push(vec![
                service.name.clone(),
                service.url(),
                format!("{}/openapi.json", service.url()),
                proc.ready_after
                    .map(util::human_duration)
                    .unwrap_or_default(),
            ]);
        }
    }
    if let Some(dir) = mail_dir {
        rows.push(vec![
            "smtp".to_string(),
            format!("smtp://127.0.0.1:{SMTP_PORT}"),
            format!(
                "mailbox {} (mail saved in {})",
                mailbox_url(),
                dir.display()
            ),
            String::new(),
        ]);
    }
    let mut out = format!("\nAll services are ready (scenario `{scenario}`):\n\n");
    out.push_str(&util::table(
        &["SERVICE", "URL", "API DOCS", "READY IN"],
        &rows,
    ));
    let logins = root.join("populator").join(scenario).join("logins.txt");
    if let Ok(text) = std::fs::read_to_string(&logins) {
        out.push_str(&format!(
            "\nLogins ({}):\n{}",
            logins.strip_prefix(root).unwrap_or(&logins).display(),
            text
        ));
        if !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str("\nPress Ctrl-C to stop.\n");
    print!("{out}");
}

fn stop(procs: &mut [Proc]) {
    let mut children: Vec<&mut Child> = procs.iter_mut().map(|p| &mut p.child).collect();
    let results = procs::stop_all(&mut children, STOP_GRACE);
    for (proc, (_, killed)) in procs.iter().zip(results) {
        if killed {
            println!(
                "{} did not stop within {} s and was killed",
                proc.name,
                STOP_GRACE.as_secs()
            );
        }
    }
    // Let the last lines through (bounded: a grandchild may hold a pipe open).
    let deadline = Instant::now() + Duration::from_secs(1);
    for handle in procs.iter_mut().flat_map(|p| p.output.drain(..)) {
        while !handle.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
}

/// Run everything until Ctrl-C / SIGTERM (exit code 0) or until a child
/// exits or fails to become ready (exit code 1).
pub fn up(root: &Path, options: &UpOptions) -> Result<i32> {
    let scenario = &options.scenario;
    if scenario.is_empty()
        || !scenario
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("invalid scenario name {scenario:?}: use letters, digits, '-' and '_'");
    }
    let services = services::discover(root)?;
    if services.is_empty() {
        bail!("no services found: expected template/service/Cargo.toml or services/*/Cargo.toml");
    }
    if !root.join("populator").join(scenario).is_dir() {
        println!(
            "warning: populator/{scenario}/ does not exist; the services will find no seed data"
        );
    }

    infra::ensure(root, Smtp::Skip)?;
    let smtp_needed = !reachable(loopback(SMTP_PORT), Duration::from_millis(300));
    if !smtp_needed {
        let mailbox = if reachable(loopback(MAILBOX_PORT), Duration::from_millis(300)) {
            format!("; mailbox {}", mailbox_url())
        } else {
            String::new()
        };
        println!("smtp      127.0.0.1:{SMTP_PORT:<5}  ok (already running{mailbox})");
    }
    for service in &services {
        if reachable(loopback(service.port), Duration::from_millis(300)) {
            bail!(
                "port {} of {} is already in use — is another `cargo xtask up` running? \
                 (see `ss -ltnp 'sport = :{}'`)",
                service.port,
                service.name,
                service.port
            );
        }
    }

    let mut build = util::cargo();
    build.current_dir(root).arg("build");
    if options.release {
        build.arg("--release");
    }
    for service in &services {
        build.args(["-p", &service.name]);
    }
    if smtp_needed {
        build.args(["-p", "smtp-sink"]);
    }
    println!("==> {}", util::describe(&build));
    util::run(&mut build)?;

    let bin_dir = util::target_dir(root).join(if options.release { "release" } else { "debug" });
    let shutdown = procs::shutdown_flag()?;
    let colour = util::color_enabled();
    let width = services
        .iter()
        .map(|s| s.name.len())
        .chain(smtp_needed.then_some(4))
        .max()
        .unwrap_or(4);

    let mut procs: Vec<Proc> = Vec::new();
    let mut mail_dir = None;
    let result = (|| -> Result<i32> {
        if smtp_needed {
            let dir = util::target_dir(root).join("mail");
            let mut command = Command::new(bin_dir.join("smtp-sink"));
            command
                .current_dir(root)
                .arg("--listen")
                .arg(format!("127.0.0.1:{SMTP_PORT}"))
                .arg("--http")
                .arg(format!("127.0.0.1:{MAILBOX_PORT}"))
                .arg("--dir")
                .arg(&dir);
            let (child, output) = spawn("smtp", command, services.len(), width, colour)?;
            procs.push(Proc {
                name: "smtp".to_string(),
                child,
                output,
                service: None,
                ready_after: None,
            });
            let up = util::poll_until(Duration::from_secs(10), Duration::from_millis(25), || {
                reachable(loopback(SMTP_PORT), Duration::from_millis(200))
            });
            if !up {
                println!("smtp-sink did not open port {SMTP_PORT}");
                return Ok(1);
            }
            mail_dir = Some(dir);
        }

        println!(
            "==> starting {} service(s) with scenario `{scenario}`",
            services.len()
        );
        for (index, service) in services.iter().enumerate() {
            let mut command = Command::new(bin_dir.join(&service.name));
            command.current_dir(root).arg("serve");
            command.envs(service_env(service, scenario));
            let (child, output) = spawn(&service.name, command, index, width, colour)?;
            procs.push(Proc {
                name: service.name.clone(),
                child,
                output,
                service: Some(service.clone()),
                ready_after: None,
            });
        }

        let stop_probes = Arc::new(AtomicBool::new(false));
        let (events_tx, events) = mpsc::channel();
        for (index, proc) in procs.iter().enumerate() {
            if let Some(service) = &proc.service {
                let (service, stop, tx) =
                    (service.clone(), Arc::clone(&stop_probes), events_tx.clone());
                let timeout = options.ready_timeout;
                thread::Builder::new()
                    .name("xtask-probe".to_string())
                    .spawn(move || probe_readiness(index, service, timeout, stop, tx))
                    .context("cannot start a readiness probe")?;
            }
        }
        drop(events_tx);

        let mut announced = false;
        let code = loop {
            if shutdown.load(Ordering::SeqCst) {
                println!("\n==> stopping (Ctrl-C / SIGTERM)");
                break 0;
            }
            let mut exited = None;
            for proc in &mut procs {
                if let Ok(Some(status)) = proc.child.try_wait() {
                    exited = Some((proc.name.clone(), status));
                    break;
                }
            }
            if let Some((name, status)) = exited {
                if shutdown.load(Ordering::SeqCst) {
                    println!("\n==> stopping (Ctrl-C / SIGTERM)");
                    break 0;
                }
                println!(
                    "\n==> {name} exited early ({}); stopping the others",
                    util::describe_status(status)
                );
                break 1;
            }
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(Probe::Ready(index, after)) => procs[index].ready_after = Some(after),
                Ok(Probe::TimedOut(index, last)) => {
                    println!(
                        "\n==> {} is not ready after {} s ({last}); stopping everything",
                        procs[index].name,
                        options.ready_timeout.as_secs()
                    );
                    break 1;
                }
                Err(_) => {}
            }
            let all_ready = procs
                .iter()
                .all(|proc| proc.service.is_none() || proc.ready_after.is_some());
            if all_ready && !announced {
                announced = true;
                print_ready_table(root, &procs, scenario, mail_dir.as_ref());
            }
        };
        stop_probes.store(true, Ordering::SeqCst);
        Ok(code)
    })();

    stop(&mut procs);
    if !procs.is_empty() {
        println!("==> stopped");
    }
    result
}
