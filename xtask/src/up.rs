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

/// The broker's settings for the platform's realtime topics: `events.*` public (seats left
/// change live for anyone looking), `notifications.user_<uuid>` for that user only. The same
/// everywhere the platform runs: `up`, docker-compose and the Kubernetes manifests.
pub fn platform_topics(service: &Service) -> Vec<(String, String)> {
    let pairs: &[(&str, &str)] = match service.name.as_str() {
        "broker" => &[
            ("APP__SERVICES__EVENTS__REQUIRE_AUTHENTICATION", "false"),
            ("APP__SERVICES__EVENTS__AUTHORIZATION", "public"),
            ("APP__SERVICES__NOTIFICATIONS__AUTHORIZATION", "owner"),
        ],
        _ => &[],
    };
    env_pairs(service, pairs)
}

/// The platform's wiring between services, for local runs: the broker's realtime topics and,
/// with the demo scenario's clients, the events service's own client at auth (for its calls to
/// payments).
pub fn platform_env(service: &Service, scenario: &str) -> Vec<(String, String)> {
    let mut env = platform_topics(service);
    if (service.name.as_str(), scenario) == ("events", "demo") {
        env.extend(env_pairs(
            service,
            &[
                (
                    "APP__CLIENT__TOKEN_URL",
                    "http://127.0.0.1:8001/api/auth/v1/token",
                ),
                (
                    "APP__CLIENT__CLIENT_ID",
                    "0193a000-0000-7000-8000-00000000c004",
                ),
                ("APP__CLIENT__CLIENT_SECRET", "hatchery-events-secret"),
            ],
        ));
    }
    env
}

fn env_pairs(service: &Service, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(key, value)| (service.env(key), (*value).to_owned()))
        .collect()
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

/// Where the children's output goes.
#[derive(Debug, Clone)]
pub enum Logs {
    /// Our stdout, each line behind the child's coloured name.
    Terminal,
    /// `<dir>/<name>.log`, one file per child.
    Files(PathBuf),
}

/// What [`Fleet::poll`] saw.
pub enum Event {
    /// Nothing new.
    Pending,
    /// Every service answered `/readyz` with 200 (reported once).
    AllReady,
    /// A child exited on its own.
    Exited(String, std::process::ExitStatus),
    /// A service did not become ready in time; the last answer it gave.
    NotReady(String, String),
}

/// Children started by `up` (and by commands that need the platform running, like
/// `contract`): supervised, probed for readiness, stopped together.
pub struct Fleet {
    procs: Vec<Proc>,
    bin_dir: PathBuf,
    logs: Logs,
    width: usize,
    colour: bool,
    probes: Option<(Arc<AtomicBool>, mpsc::Receiver<Probe>)>,
    announced: bool,
}

impl Fleet {
    /// A fleet of binaries from `bin_dir`; `width` aligns the log prefixes.
    pub fn new(bin_dir: PathBuf, logs: Logs, width: usize) -> Fleet {
        Fleet {
            procs: Vec::new(),
            bin_dir,
            logs,
            width,
            colour: util::color_enabled(),
            probes: None,
            announced: false,
        }
    }

    fn spawn(&mut self, name: &str, mut command: Command, service: Option<Service>) -> Result<()> {
        command.stdin(Stdio::null());
        match &self.logs {
            Logs::Terminal => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            Logs::Files(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let path = dir.join(format!("{name}.log"));
                let file = std::fs::File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                command.stdout(file.try_clone()?).stderr(file);
            }
        }
        procs::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {name}: `{}`", util::describe(&command)))?;
        let prefix = procs::prefix(name, self.width, self.procs.len(), self.colour);
        let mut output = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            output.push(procs::forward_lines(stdout, prefix.clone())?);
        }
        if let Some(stderr) = child.stderr.take() {
            output.push(procs::forward_lines(stderr, prefix)?);
        }
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            output,
            service,
            ready_after: None,
        });
        Ok(())
    }

    /// Starts the SMTP sink on its port, saving mail in `mail_dir`; false if it did not open
    /// the port within 10 s.
    pub fn start_smtp(&mut self, root: &Path, mail_dir: &Path) -> Result<bool> {
        let mut command = Command::new(self.bin_dir.join("smtp-sink"));
        command
            .current_dir(root)
            .arg("--listen")
            .arg(format!("127.0.0.1:{SMTP_PORT}"))
            .arg("--http")
            .arg(format!("127.0.0.1:{MAILBOX_PORT}"))
            .arg("--dir")
            .arg(mail_dir);
        self.spawn("smtp", command, None)?;
        Ok(util::poll_until(
            Duration::from_secs(10),
            Duration::from_millis(25),
            || reachable(loopback(SMTP_PORT), Duration::from_millis(200)),
        ))
    }

    /// Starts `service serve` with [`service_env`] for `scenario`, then `extra_env`.
    pub fn start_service(
        &mut self,
        root: &Path,
        service: &Service,
        scenario: &str,
        extra_env: &[(String, String)],
    ) -> Result<()> {
        let mut command = Command::new(self.bin_dir.join(&service.name));
        command.current_dir(root).arg("serve");
        command.envs(service_env(service, scenario));
        command.envs(extra_env.iter().map(|(k, v)| (k, v)));
        self.spawn(&service.name, command, Some(service.clone()))
    }

    /// Starts probing every service's `/readyz`, each for at most `timeout`.
    pub fn probe(&mut self, timeout: Duration) -> Result<()> {
        let stop_probes = Arc::new(AtomicBool::new(false));
        let (events_tx, events) = mpsc::channel();
        for (index, proc) in self.procs.iter().enumerate() {
            if let Some(service) = &proc.service {
                let (service, stop, tx) =
                    (service.clone(), Arc::clone(&stop_probes), events_tx.clone());
                thread::Builder::new()
                    .name("xtask-probe".to_string())
                    .spawn(move || probe_readiness(index, service, timeout, stop, tx))
                    .context("cannot start a readiness probe")?;
            }
        }
        self.probes = Some((stop_probes, events));
        Ok(())
    }

    /// Waits up to 100 ms for something to happen.
    pub fn poll(&mut self) -> Event {
        for proc in &mut self.procs {
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Event::Exited(proc.name.clone(), status);
            }
        }
        if let Some((_, events)) = &self.probes {
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(Probe::Ready(index, after)) => self.procs[index].ready_after = Some(after),
                Ok(Probe::TimedOut(index, last)) => {
                    return Event::NotReady(self.procs[index].name.clone(), last);
                }
                Err(_) => {}
            }
        } else {
            thread::sleep(Duration::from_millis(100));
        }
        let all_ready = self
            .procs
            .iter()
            .all(|proc| proc.service.is_none() || proc.ready_after.is_some());
        if all_ready && !self.announced {
            self.announced = true;
            return Event::AllReady;
        }
        Event::Pending
    }

    /// Polls until every service is ready; an error names the one that exited or was not
    /// ready in time (and where its log is, when logs go to files).
    pub fn wait_ready(&mut self, shutdown: &AtomicBool) -> Result<()> {
        loop {
            if shutdown.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            match self.poll() {
                Event::Pending => {}
                Event::AllReady => return Ok(()),
                Event::Exited(name, status) => bail!(
                    "{name} exited early ({}){}",
                    util::describe_status(status),
                    self.log_hint(&name)
                ),
                Event::NotReady(name, last) => {
                    bail!("{name} is not ready ({last}){}", self.log_hint(&name))
                }
            }
        }
    }

    fn log_hint(&self, name: &str) -> String {
        match &self.logs {
            Logs::Terminal => String::new(),
            Logs::Files(dir) => {
                let path = dir.join(format!("{name}.log"));
                format!(
                    "; last lines of {}:\n{}",
                    path.display(),
                    util::tail(&path, 20)
                )
            }
        }
    }

    /// How long each ready service took, by name.
    fn ready_times(&self) -> Vec<(Service, Option<Duration>)> {
        self.procs
            .iter()
            .filter_map(|proc| proc.service.clone().map(|s| (s, proc.ready_after)))
            .collect()
    }

    /// Stops every child (SIGTERM, then SIGKILL after [`STOP_GRACE`]).
    pub fn stop(&mut self) {
        if let Some((stop_probes, _)) = &self.probes {
            stop_probes.store(true, Ordering::SeqCst);
        }
        stop(&mut self.procs);
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }
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

fn print_ready_table(root: &Path, fleet: &Fleet, scenario: &str, mail_dir: Option<&PathBuf>) {
    let mut rows = Vec::new();
    for (service, ready_after) in fleet.ready_times() {
        rows.push(vec![
            service.name.clone(),
            service.url(),
            format!("{}/docs", service.url()),
            format!("{}/openapi.json", service.url()),
            ready_after.map(util::human_duration).unwrap_or_default(),
        ]);
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
            String::new(),
        ]);
    }
    let mut out = format!("\nAll services are ready (scenario `{scenario}`):\n\n");
    out.push_str(&util::table(
        &["SERVICE", "URL", "API DOCS", "OPENAPI", "READY IN"],
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

/// Checks a scenario name (it becomes a path and an environment value).
pub fn check_scenario(scenario: &str) -> Result<()> {
    if scenario.is_empty()
        || !scenario
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("invalid scenario name {scenario:?}: use letters, digits, '-' and '_'");
    }
    Ok(())
}

/// `cargo build` of the services' (and, with `smtp`, the SMTP sink's) binaries.
pub fn build(root: &Path, services: &[Service], release: bool, smtp: bool) -> Result<()> {
    let mut build = util::cargo();
    build.current_dir(root).arg("build");
    if release {
        build.arg("--release");
    }
    for service in services {
        build.args(["-p", &service.name]);
    }
    if smtp {
        build.args(["-p", "smtp-sink"]);
    }
    println!("==> {}", util::describe(&build));
    util::run(&mut build)
}

/// Where `build` puts the binaries.
pub fn bin_dir(root: &Path, release: bool) -> PathBuf {
    util::target_dir(root).join(if release { "release" } else { "debug" })
}

/// Run everything until Ctrl-C / SIGTERM (exit code 0) or until a child
/// exits or fails to become ready (exit code 1).
pub fn up(root: &Path, options: &UpOptions) -> Result<i32> {
    let scenario = &options.scenario;
    check_scenario(scenario)?;
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

    build(root, &services, options.release, smtp_needed)?;

    let shutdown = procs::shutdown_flag()?;
    let width = services
        .iter()
        .map(|s| s.name.len())
        .chain(smtp_needed.then_some(4))
        .max()
        .unwrap_or(4);
    let mut fleet = Fleet::new(bin_dir(root, options.release), Logs::Terminal, width);
    let mut mail_dir = None;
    let result = (|| -> Result<i32> {
        if smtp_needed {
            let dir = util::target_dir(root).join("mail");
            if !fleet.start_smtp(root, &dir)? {
                println!("smtp-sink did not open port {SMTP_PORT}");
                return Ok(1);
            }
            mail_dir = Some(dir);
        }

        println!(
            "==> starting {} service(s) with scenario `{scenario}`",
            services.len()
        );
        for service in &services {
            fleet.start_service(root, service, scenario, &platform_env(service, scenario))?;
        }
        fleet.probe(options.ready_timeout)?;

        let code = loop {
            if shutdown.load(Ordering::SeqCst) {
                println!("\n==> stopping (Ctrl-C / SIGTERM)");
                break 0;
            }
            match fleet.poll() {
                Event::Pending => {}
                Event::AllReady => print_ready_table(root, &fleet, scenario, mail_dir.as_ref()),
                Event::Exited(name, status) => {
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
                Event::NotReady(name, last) => {
                    println!(
                        "\n==> {name} is not ready after {} s ({last}); stopping everything",
                        options.ready_timeout.as_secs()
                    );
                    break 1;
                }
            }
        };
        Ok(code)
    })();

    let started = !fleet.is_empty();
    fleet.stop();
    if started {
        println!("==> stopped");
    }
    result
}
