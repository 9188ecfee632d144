//! A service binary as operators run it: one-shot commands (`check`, `openapi`, bad settings)
//! and a served process that tests talk to and then stop with SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

/// `binary` (a test's `env!("CARGO_BIN_EXE_<name>")`) run from the repository root with JSON
/// logs and none of the shared fallbacks (`REDIS_URL`, ...) leaking in from the environment. In
/// development a service reaches the local Redis and RabbitMQ by default; its exchange and
/// queues are named under the `test-cli` prefix, apart from a platform running locally.
pub fn command(binary: &str, service: &str) -> Command {
    let prefix = service.to_uppercase();
    let mut command = Command::new(binary);
    command
        .current_dir(crate::workspace_root())
        .env_remove("RUST_LOG")
        .env_remove("REDIS_URL")
        .env_remove("AMQP_URL")
        .env_remove("SENTRY_DSN")
        .env(format!("{prefix}__LOG__FORMAT"), "json")
        .env(format!("{prefix}__AMQP__PREFIX"), "test-cli")
        .env(format!("{prefix}__AMQP__QUEUE_EXPIRES"), "120s")
        .stdin(Stdio::null());
    command
}

/// For each `(variable, value, key)`: the binary run by `command()` with `variable=value` and
/// `args` exits with code 2 and a message naming `key` as invalid configuration.
pub fn assert_config_errors(
    mut command: impl FnMut() -> Command,
    args: &[&str],
    cases: &[(&str, &str, &str)],
) {
    for (variable, value, key) in cases {
        let (output, _, stderr) = run(command().args(args).env(variable, value));
        assert_eq!(
            output.status.code(),
            Some(2),
            "{variable}={value} should exit 2: {stderr}"
        );
        assert!(
            stderr.contains("invalid configuration") && stderr.contains(key),
            "{variable}={value} should name {key}: {stderr}"
        );
    }
}

/// How long a one-shot command may run before the test gives up on it (a command that was
/// expected to stop but serves instead must fail the test, not hang it).
const ONE_SHOT_LIMIT: Duration = Duration::from_secs(60);

/// Runs `command` to completion (killed and failing the test after a minute): its output,
/// stdout and stderr as text.
pub fn run(command: &mut Command) -> (Output, String, String) {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the service binary");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if finished.recv_timeout(ONE_SHOT_LIMIT).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let output = child.wait_with_output().expect("run the service binary");
    let _ = done.send(());
    assert!(
        output.status.code().is_some(),
        "the command did not finish within {ONE_SHOT_LIMIT:?} (killed): {command:?}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// A serving process; killed when dropped, so a failed assertion leaves nothing running.
pub struct Running {
    child: Child,
    /// `http://127.0.0.1:<port>`, from the service's `listening` log line.
    pub address: String,
    /// Every line the process wrote to stderr (its JSON logs), as it writes them.
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    /// Spawns `command` (which should set `<SERVICE>__HTTP__PORT=0`) and waits until it logs
    /// the address it listens on.
    pub fn spawn(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the service binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut kept) = kept.lock() {
                    kept.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let mut running = Running {
            child,
            address: String::new(),
            lines,
        };
        running.address = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the service logs that it listens");
            let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if entry["message"] == "listening" {
                break entry["address"].as_str().expect("an address").to_owned();
            }
        };
        running
    }

    /// The log lines written so far that are at `level` (`"ERROR"`, `"WARN"`...).
    pub fn logged_at(&self, level: &str) -> Vec<String> {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        lines
            .into_iter()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .is_ok_and(|entry| entry["level"].as_str() == Some(level))
            })
            .collect()
    }

    /// Waits (polling `/readyz`, up to 20 s) until the service reports every dependency up,
    /// and checks that each of `dependencies` is among them; returns the readiness body.
    pub async fn ready(&self, dependencies: &[&str]) -> serde_json::Value {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.address);
        let readiness = crate::eventually("every dependency up", Duration::from_secs(20), || {
            let request = client.get(&url).send();
            async move {
                let body: serde_json::Value = request.await.ok()?.json().await.ok()?;
                (body["status"] == "ok").then_some(body)
            }
        })
        .await;
        for dependency in dependencies {
            assert_eq!(
                readiness["checks"][dependency]["status"], "up",
                "{dependency} in {readiness}"
            );
        }
        readiness
    }

    /// Sends SIGTERM and checks the service exits with 0 having logged no ERROR, as a clean
    /// shutdown does.
    pub async fn stops_cleanly(&mut self) {
        self.terminate();
        let status = self.exit_status().await;
        assert_eq!(status.code(), Some(0), "exit status on SIGTERM");
        let errors = self.logged_at("ERROR");
        assert!(
            errors.is_empty(),
            "a clean shutdown logs no error: {errors:#?}"
        );
    }

    /// Sends SIGTERM, as an orchestrator stopping the service does.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "SIGTERM to {pid}");
    }

    /// Waits (polling, up to 10 s) for the process to exit.
    pub async fn exit_status(&mut self) -> ExitStatus {
        crate::eventually("the service to exit", Duration::from_secs(10), || {
            let status = self.child.try_wait().expect("poll the child");
            async move { status }
        })
        .await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` with `check` and asserts it exits 1 naming `dependency` as DOWN (point one of
/// the service's servers at a port where nothing listens first). Returns stdout.
pub fn assert_check_reports_down(command: &mut Command, dependency: &str) -> String {
    let (output, stdout, stderr) = run(command.arg("check"));
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with(dependency) && line.contains("DOWN")),
        "{dependency} should be reported DOWN:\n{stdout}"
    );
    stdout
}

/// A seed-data folder of a test's own (`<dir>/<scenario>/<service>/`), removed when dropped:
/// point `<SERVICE>__POPULATE__DIR` at [`Self::dir`].
pub struct Scenario {
    pub dir: std::path::PathBuf,
    service_dir: std::path::PathBuf,
}

impl Scenario {
    pub fn new(scenario: &str, service: &str) -> Scenario {
        let dir = std::env::temp_dir().join(format!("hatchery-scenario-{}", uuid::Uuid::now_v7()));
        let service_dir = dir.join(scenario).join(service);
        std::fs::create_dir_all(&service_dir).expect("create the scenario folder");
        Scenario { dir, service_dir }
    }

    /// Writes (or replaces) one YAML file of the scenario.
    pub fn write(&self, file: &str, yaml: &str) -> &Self {
        std::fs::write(self.service_dir.join(file), yaml).expect("write the scenario file");
        self
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
