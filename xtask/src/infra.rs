//! `cargo xtask infra`: make Postgres, Redis, RabbitMQ (and the SMTP sink)
//! reachable on 127.0.0.1.
//!
//! For each dependency that does not accept TCP connections, in order:
//! 1. installed locally but stopped → start it (`pg_ctlcluster`,
//!    `redis-server --daemonize yes`, `rabbitmq-server -detached`);
//! 2. a working Docker engine → `docker compose up -d <service>`;
//! 3. Debian/Ubuntu as root → `apt-get install` the packages, let the role
//!    `postgres` connect over loopback TCP without a password (pg_hba.conf
//!    `trust` lines, for local development only), then start them as in 1;
//! 4. otherwise print the command to run and fail.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs;
use crate::util::{self, loopback, reachable};

/// How long a TCP probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
/// Port of the development SMTP sink.
pub const SMTP_PORT: u16 = 1025;
/// Port of the SMTP sink's web mailbox and Mailpit-compatible API (Mailpit's port too).
pub const MAILBOX_PORT: u16 = 8025;

/// The development mailbox, where mail sent to the SMTP sink can be read.
pub fn mailbox_url() -> String {
    format!("http://127.0.0.1:{MAILBOX_PORT}")
}

/// A piece of infrastructure the services need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dep {
    pub name: &'static str,
    pub port: u16,
    /// Service name in docker-compose.yml.
    pub compose: &'static str,
    /// Debian package providing it.
    pub apt: &'static str,
    /// How long it may take to accept connections after being started.
    pub deadline: Duration,
}

pub const POSTGRES: Dep = Dep {
    name: "postgres",
    port: 5432,
    compose: "postgres",
    apt: "postgresql",
    deadline: Duration::from_secs(30),
};
pub const REDIS: Dep = Dep {
    name: "redis",
    port: 6379,
    compose: "redis",
    apt: "redis-server",
    deadline: Duration::from_secs(15),
};
pub const RABBITMQ: Dep = Dep {
    name: "rabbitmq",
    port: 5672,
    compose: "rabbitmq",
    apt: "rabbitmq-server",
    deadline: Duration::from_secs(60),
};

/// The dependencies every service needs.
pub const DEPS: [Dep; 3] = [POSTGRES, REDIS, RABBITMQ];

/// What to do about the SMTP sink on 127.0.0.1:1025.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Smtp {
    /// Not needed (tests start their own sinks; `up` manages its own child).
    Skip,
    /// Start our `smtp-sink` binary as a detached background process.
    Background,
}

fn line(name: &str, port: u16, state: &str) {
    println!("{name:<9} 127.0.0.1:{port:<5}  {state}");
}

fn log_dir(root: &Path) -> PathBuf {
    util::target_dir(root).join("xtask")
}

fn log_file(root: &Path, name: &str) -> Result<(PathBuf, File)> {
    let dir = log_dir(root);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.log"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok((path, file))
}

/// Run a start command with its output in a log file. Daemons fork, so we
/// never pipe their output (the pipe would stay open).
fn run_logged(root: &Path, dep: &Dep, command: &mut Command) -> Result<()> {
    let (path, file) = log_file(root, &format!("{}-start", dep.name))?;
    let err = file.try_clone()?;
    println!("  {}: running `{}`", dep.name, util::describe(command));
    let status = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .with_context(|| format!("cannot run `{}`", util::describe(command)))?;
    if !status.success() {
        bail!(
            "`{}` failed ({}); its output ({}):\n{}",
            util::describe(command),
            util::describe_status(status),
            path.display(),
            util::tail(&path, 15)
        );
    }
    Ok(())
}

/// Installed PostgreSQL clusters as `(version, config dir)`, newest first.
fn postgres_clusters() -> Vec<(String, PathBuf)> {
    let mut clusters: Vec<(String, PathBuf)> = fs::read_dir("/etc/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| {
                    let version = entry.file_name().to_str()?.to_string();
                    let main = entry.path().join("main");
                    main.join("postgresql.conf")
                        .is_file()
                        .then_some((version, main))
                })
                .collect()
        })
        .unwrap_or_default();
    clusters.sort_by_key(|(version, _)| {
        std::cmp::Reverse(version.parse::<f64>().map_or(0, |v| (v * 100.0) as i64))
    });
    clusters
}

/// Installed PostgreSQL server versions without a cluster (`/usr/lib/postgresql/<v>`).
fn postgres_server_versions() -> Vec<String> {
    let mut versions: Vec<String> = fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter(|entry| entry.path().join("bin/postgres").is_file())
                .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    versions.sort_by_key(|version| std::cmp::Reverse(version.parse::<u32>().unwrap_or(0)));
    versions
}

/// The commands that start `dep` from a local installation, if it is installed.
fn local_start(dep: &Dep) -> Option<Vec<Command>> {
    match dep.name {
        "postgres" => {
            let ctl = util::which("pg_ctlcluster")?;
            let version = match postgres_clusters().into_iter().next() {
                Some((version, _)) => Some((version, None)),
                None => {
                    let create = util::which("pg_createcluster")?;
                    let version = postgres_server_versions().into_iter().next()?;
                    let mut command = Command::new(create);
                    command.args([&version, "main"]);
                    Some((version, Some(command)))
                }
            }?;
            let (version, create) = version;
            let mut commands: Vec<Command> = create.into_iter().collect();
            let mut start = Command::new(ctl);
            start.args(["--skip-systemctl-redirect", &version, "main", "start"]);
            commands.push(start);
            Some(commands)
        }
        "redis" => {
            let mut command = Command::new(util::which("redis-server")?);
            command.args([
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ]);
            Some(vec![command])
        }
        "rabbitmq" => {
            let mut command = Command::new(util::which("rabbitmq-server")?);
            command.arg("-detached");
            Some(vec![command])
        }
        _ => None,
    }
}

fn wait_for(dep: &Dep) -> bool {
    util::poll_until(dep.deadline, Duration::from_millis(100), || {
        reachable(loopback(dep.port), PROBE_TIMEOUT)
    })
}

fn docker_works() -> bool {
    util::which("docker").is_some()
        && procs::run_with_timeout(
            Command::new("docker")
                .arg("info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            Duration::from_secs(20),
        )
        .is_some_and(|status| status.success())
}

/// Lines that let the role `postgres` connect over loopback TCP without a
/// password. Prepended to pg_hba.conf (first match wins) unless an
/// equivalent trust rule exists. Returns the new text, or `None` if nothing
/// needs to change.
pub fn pg_hba_with_loopback_trust(hba: &str) -> Option<String> {
    let trusts = |address: &str| {
        hba.lines().any(|line| {
            let fields: Vec<&str> = line
                .split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            matches!(
                fields.as_slice(),
                ["host", "all", "all" | "postgres", addr, "trust"] if *addr == address
            )
        })
    };
    if trusts("127.0.0.1/32") && trusts("::1/128") {
        return None;
    }
    Some(format!(
        "# Added by `cargo xtask infra` for local development: the role postgres may\n\
         # connect over loopback TCP without a password (as the services' default\n\
         # DATABASE__URL postgres://postgres@127.0.0.1:5432/<name> expects).\n\
         host    all             postgres        127.0.0.1/32            trust\n\
         host    all             postgres        ::1/128                 trust\n\n{hba}"
    ))
}

/// After installing PostgreSQL with apt: trust loopback TCP for `postgres`.
fn configure_postgres_trust(root: &Path) -> Result<()> {
    for (version, dir) in postgres_clusters() {
        let path = dir.join("pg_hba.conf");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if let Some(updated) = pg_hba_with_loopback_trust(&text) {
            fs::write(&path, updated)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!(
                "  postgres: {} now trusts role postgres on 127.0.0.1 and ::1 (local development only)",
                path.display()
            );
            if reachable(loopback(POSTGRES.port), PROBE_TIMEOUT)
                && let Some(ctl) = util::which("pg_ctlcluster")
            {
                run_logged(
                    root,
                    &POSTGRES,
                    Command::new(ctl).args([
                        "--skip-systemctl-redirect",
                        &version,
                        "main",
                        "reload",
                    ]),
                )?;
            }
        }
    }
    Ok(())
}

/// Start what is installed locally; returns the deps that came up.
fn start_locally(root: &Path, missing: &[Dep]) -> Vec<Dep> {
    let mut started = Vec::new();
    let mut launched = Vec::new();
    for dep in missing {
        let Some(commands) = local_start(dep) else {
            continue;
        };
        let mut ok = true;
        for mut command in commands {
            if let Err(error) = run_logged(root, dep, &mut command) {
                println!("  {}: {error:#}", dep.name);
                ok = false;
                break;
            }
        }
        if ok {
            launched.push(*dep);
        }
    }
    for dep in launched {
        if dep.name == "rabbitmq" {
            println!(
                "  rabbitmq: waiting for port {} (up to {} s)",
                dep.port,
                dep.deadline.as_secs()
            );
        }
        if wait_for(&dep) {
            started.push(dep);
        } else {
            println!(
                "  {}: started but port {} is still closed after {} s",
                dep.name,
                dep.port,
                dep.deadline.as_secs()
            );
        }
    }
    started
}

/// Make every dependency reachable, printing one line per dependency.
pub fn ensure(root: &Path, smtp: Smtp) -> Result<()> {
    let mut outcome: Vec<(Dep, Option<&'static str>)> = DEPS
        .iter()
        .map(|dep| {
            let up = reachable(loopback(dep.port), PROBE_TIMEOUT);
            (*dep, up.then_some("ok"))
        })
        .collect();
    let missing = |outcome: &[(Dep, Option<&'static str>)]| -> Vec<Dep> {
        outcome
            .iter()
            .filter(|(_, state)| state.is_none())
            .map(|(dep, _)| *dep)
            .collect()
    };
    let mark = |outcome: &mut Vec<(Dep, Option<&'static str>)>, up: &[Dep], how: &'static str| {
        for (dep, state) in outcome.iter_mut() {
            if state.is_none() && up.contains(dep) {
                *state = Some(how);
            }
        }
    };

    // 1. Installed but stopped.
    let todo = missing(&outcome);
    if !todo.is_empty() {
        let started = start_locally(root, &todo);
        mark(&mut outcome, &started, "started (local installation)");
    }

    // 2. Docker.
    let todo = missing(&outcome);
    if !todo.is_empty() && docker_works() && root.join("docker-compose.yml").is_file() {
        let mut command = Command::new("docker");
        command.current_dir(root).args(["compose", "up", "-d"]);
        command.args(todo.iter().map(|dep| dep.compose));
        println!("  running `{}`", util::describe(&command));
        match util::run(&mut command) {
            Ok(()) => {
                let up: Vec<Dep> = todo.iter().copied().filter(wait_for).collect();
                mark(&mut outcome, &up, "started (docker compose)");
            }
            Err(error) => println!("  {error:#}"),
        }
    }

    // 3. Debian/Ubuntu as root: install the packages.
    let todo = missing(&outcome);
    if !todo.is_empty() && Path::new("/etc/debian_version").exists() && util::is_root() {
        let packages: Vec<&str> = todo.iter().map(|dep| dep.apt).collect();
        println!("  installing {} with apt-get", packages.join(", "));
        let installed = util::run(
            Command::new("apt-get")
                .args(["-q", "update"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null()),
        )
        .and_then(|()| {
            util::run(
                Command::new("apt-get")
                    .args(["-q", "install", "-y", "--no-install-recommends"])
                    .args(&packages)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdin(Stdio::null()),
            )
        });
        match installed {
            Ok(()) => {
                if todo.contains(&POSTGRES)
                    && let Err(error) = configure_postgres_trust(root)
                {
                    println!("  postgres: {error:#}");
                }
                // The packages' scripts may have started some already.
                let already: Vec<Dep> = todo
                    .iter()
                    .copied()
                    .filter(|dep| reachable(loopback(dep.port), PROBE_TIMEOUT))
                    .collect();
                mark(&mut outcome, &already, "installed with apt-get");
                let todo = missing(&outcome);
                let started = start_locally(root, &todo);
                mark(&mut outcome, &started, "installed with apt-get and started");
            }
            Err(error) => println!("  {error:#}"),
        }
    }

    for (dep, state) in &outcome {
        line(dep.name, dep.port, state.unwrap_or("NOT REACHABLE"));
    }
    let todo = missing(&outcome);
    if !todo.is_empty() {
        bail!("{}", manual_instructions(&todo));
    }

    ensure_test_tablespace();
    if smtp == Smtp::Background {
        ensure_smtp_background(root)?;
    }
    Ok(())
}

/// The tablespace test databases are made in: testkit's `TEST_TABLESPACE` (its test fails in
/// CI when the two differ).
pub const TEST_TABLESPACE: &str = "hatchery_tests";
/// Where it lives: a RAM disk. A test database is a few hundred files made and deleted within
/// a second; on a disk's file system that churn cost the suite a third of its CPU (ext4 scans
/// the inodes it freed moments ago for each new file).
pub const TEST_TABLESPACE_DIR: &str = "/dev/shm/hatchery-tests";

/// Makes the test tablespace on a local Postgres, or repairs it (its directory is gone after
/// a reboot). Without it test databases stay in the default tablespace, only slower: a failure
/// here is reported, never fatal.
fn ensure_test_tablespace() {
    let state = match test_tablespace() {
        Ok(state) => state,
        Err(error) => format!("{error:#} (test databases stay in the default tablespace)"),
    };
    println!("{:<9} {TEST_TABLESPACE_DIR:<15}  {state}", "tests");
}

fn test_tablespace() -> Result<String> {
    let dir = Path::new(TEST_TABLESPACE_DIR);
    if !dir.parent().is_some_and(Path::is_dir) {
        bail!("no {}", dir.parent().unwrap_or(dir).display());
    }
    let facts = psql(&format!(
        "SELECT current_setting('data_directory'),
                'PG_' || current_setting('server_version_num')::int / 10000 || '_' || catalog_version_no,
                (SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = '{TEST_TABLESPACE}')
         FROM pg_control_system()"
    ))?;
    let [data_dir, version_dir, location] = facts.split('|').collect::<Vec<_>>()[..] else {
        bail!("unexpected answer from Postgres: {facts:?}");
    };
    if !location.is_empty() && location != TEST_TABLESPACE_DIR {
        return Ok(format!(
            "tablespace {TEST_TABLESPACE} is at {location}, left as it is"
        ));
    }
    // Postgres' own user must own the directory and the server version's folder in it.
    let owner = {
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(data_dir)
            .with_context(|| format!("cannot read the data directory {data_dir}"))?;
        (meta.uid(), meta.gid())
    };
    let mut repaired = false;
    for path in [dir.to_path_buf(), dir.join(version_dir)] {
        if location.is_empty() && path != dir {
            break; // CREATE TABLESPACE makes the version's folder itself.
        }
        if !path.is_dir() {
            fs::create_dir_all(&path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            std::os::unix::fs::chown(&path, Some(owner.0), Some(owner.1))
                .with_context(|| format!("cannot give {} to Postgres' user", path.display()))?;
            repaired = true;
        }
    }
    if location.is_empty() {
        psql(&format!(
            "CREATE TABLESPACE {TEST_TABLESPACE} LOCATION '{TEST_TABLESPACE_DIR}'"
        ))?;
        return Ok(format!("tablespace {TEST_TABLESPACE} created"));
    }
    let mut state = if repaired {
        format!("tablespace {TEST_TABLESPACE} repaired")
    } else {
        "ok".to_owned()
    };
    let forgotten = drop_forgotten_test_databases()?;
    if forgotten > 0 {
        state.push_str(&format!(
            ", {forgotten} test database(s) left by killed tests dropped"
        ));
    }
    Ok(state)
}

/// A test database outlives its test only when the test process was killed; in the test
/// tablespace it would hold RAM until a reboot. Those made over an hour ago (no test runs that
/// long) are dropped.
fn drop_forgotten_test_databases() -> Result<usize> {
    const AGE: Duration = Duration::from_secs(3600);
    let names = psql(&format!(
        "SELECT d.datname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
         WHERE t.spcname = '{TEST_TABLESPACE}' AND d.datname LIKE 'test\\_%'"
    ))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut dropped = 0;
    for name in names.lines() {
        let Some(made) = test_database_made_at(name) else {
            continue;
        };
        if now.saturating_sub(made) > AGE {
            psql(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))?;
            dropped += 1;
        }
    }
    Ok(dropped)
}

/// When testkit made the database `test_<UUIDv7, simple>`: the UUID's first 48 bits are its
/// Unix time in milliseconds. `None` for any other name.
fn test_database_made_at(name: &str) -> Option<Duration> {
    let hex = name.strip_prefix("test_")?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&hex[..12], 16)
        .ok()
        .map(Duration::from_millis)
}

/// One statement as the role `postgres` on the local server; its unaligned output.
fn psql(statement: &str) -> Result<String> {
    let mut command = Command::new("psql");
    command
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
        .args(["-v", "ON_ERROR_STOP=1", "-X", "-A", "-t", "-c", statement])
        .stdin(Stdio::null());
    let output = command
        .output()
        .with_context(|| format!("cannot run `{}`", util::describe(&command)))?;
    if !output.status.success() {
        bail!(
            "psql: {}",
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .next()
                .unwrap_or("failed")
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The exact commands a person must run to bring up `missing`.
fn manual_instructions(missing: &[Dep]) -> String {
    let names: Vec<&str> = missing.iter().map(|dep| dep.name).collect();
    let compose: Vec<&str> = missing.iter().map(|dep| dep.compose).collect();
    let packages: Vec<&str> = missing.iter().map(|dep| dep.apt).collect();
    let mut text = format!(
        "{} not reachable on 127.0.0.1 and could not be started automatically.\nRun one of these, then `cargo xtask infra` again:\n",
        names.join(", ")
    );
    text.push_str(&format!(
        "  docker compose up -d {}        # with a running Docker engine\n",
        compose.join(" ")
    ));
    if Path::new("/etc/debian_version").exists() {
        text.push_str(&format!(
            "  sudo apt-get update && sudo apt-get install -y {}   # Debian/Ubuntu\n",
            packages.join(" ")
        ));
    } else {
        text.push_str(&format!(
            "  install {} with your package manager and start {}\n",
            packages.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        ));
    }
    if missing.contains(&POSTGRES) {
        text.push_str(
            "Postgres must let the role `postgres` connect from 127.0.0.1 without a password \
             (pg_hba.conf: `host all postgres 127.0.0.1/32 trust`).\n",
        );
    }
    text
}

/// Start `target/debug/smtp-sink` detached, unless port 1025 already answers.
fn ensure_smtp_background(root: &Path) -> Result<()> {
    if reachable(loopback(SMTP_PORT), PROBE_TIMEOUT) {
        line("smtp", SMTP_PORT, "ok");
        return Ok(());
    }
    util::run(
        util::cargo()
            .current_dir(root)
            .args(["build", "--quiet", "-p", "smtp-sink"]),
    )?;
    let binary = util::target_dir(root).join("debug").join("smtp-sink");
    let mail_dir = util::target_dir(root).join("mail");
    let (log_path, log) = log_file(root, "smtp-sink")?;
    let mut command = Command::new(&binary);
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{SMTP_PORT}"))
        .arg("--http")
        .arg(format!("127.0.0.1:{MAILBOX_PORT}"))
        .arg("--dir")
        .arg(&mail_dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: Ctrl-C in this terminal must not stop it.
        command.process_group(0);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let started = Instant::now();
    let up = util::poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        reachable(loopback(SMTP_PORT), PROBE_TIMEOUT) || matches!(child.try_wait(), Ok(Some(_)))
    }) && reachable(loopback(SMTP_PORT), PROBE_TIMEOUT);
    if !up {
        let _ = child.kill();
        let _ = child.wait();
        bail!(
            "smtp-sink did not start within {:?}; its log ({}):\n{}",
            started.elapsed(),
            log_path.display(),
            util::tail(&log_path, 15)
        );
    }
    line(
        "smtp",
        SMTP_PORT,
        &format!(
            "started smtp-sink in the background (pid {}, mailbox {}, mail in {}, log {}; stop it with `kill {}`)",
            child.id(),
            mailbox_url(),
            mail_dir.display(),
            log_path.display(),
            child.id()
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_databases_tell_when_they_were_made() {
        // UUIDv7 01a23293-31fd-…: 0x01a2329331fd ms after the epoch.
        assert_eq!(
            test_database_made_at("test_01a2329331fd779e965f48ee5d000000"),
            Some(Duration::from_millis(0x01a2_3293_31fd))
        );
        for other in [
            "test_template_payments_0123456789abcdef",
            "test_01a2329331fd779e965f48ee5d00000",
            "test_01a2329331fd779e965f48ee5d00000g",
            "payments",
            "test_",
        ] {
            assert_eq!(test_database_made_at(other), None, "{other}");
        }
    }

    #[test]
    fn pg_hba_gets_trust_lines_once() {
        let debian_default = "local   all             postgres                                peer\n\
                              host    all             all             127.0.0.1/32            scram-sha-256\n\
                              host    all             all             ::1/128                 scram-sha-256\n";
        let updated = pg_hba_with_loopback_trust(debian_default).unwrap();
        assert!(updated.starts_with("# Added by `cargo xtask infra`"));
        assert!(
            updated.contains(
                "host    all             postgres        127.0.0.1/32            trust\n"
            )
        );
        assert!(updated.ends_with(debian_default));
        assert_eq!(pg_hba_with_loopback_trust(&updated), None);

        let already = "host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust # dev\n";
        assert_eq!(pg_hba_with_loopback_trust(already), None);
    }

    #[test]
    fn manual_instructions_name_the_commands() {
        let text = manual_instructions(&[POSTGRES, RABBITMQ]);
        assert!(
            text.contains("docker compose up -d postgres rabbitmq"),
            "{text}"
        );
        assert!(
            text.contains("postgresql") && text.contains("rabbitmq-server"),
            "{text}"
        );
    }
}
