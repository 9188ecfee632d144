//! `cargo xtask contract`: every service against its own OpenAPI document.
//!
//! For each service it fetches `/openapi.json`, validates it with `openapi-spec-validator`,
//! then runs schemathesis with every check (`--checks all`: server errors, undocumented
//! statuses, content types and headers, response schemas, requests valid by the schema that are
//! refused and invalid ones that are accepted, unsupported methods, authentication, stateful
//! sequences through the document's links) as the demo admin. Exit code 0 only when every
//! document is valid and schemathesis finds nothing.
//!
//! The tools are installed from PyPI, at the versions pinned in [`python::CONTRACT`], into a
//! virtualenv under `target/contract/`. Services already answering on their ports are used as they are (their
//! data and rate-limit counters then see the run); the others are built and started the way
//! `up` starts them, on databases of their own (`<name>_contract`), with auth's rate-limit
//! counters under a fresh Redis prefix, and stopped at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::infra::{self, Smtp};
use crate::services::{self, Service};
use crate::up::{self, Fleet, Logs};
use crate::util::{self, loopback, reachable};
use crate::{http, procs, python};

/// The schemathesis hooks (`hooks.py`) and each service's settings (`<service>.toml`, optional).
pub const CONTRACT_DIR: &str = "xtask/contract";

/// The demo admin (see the README and `populator/demo/`).
pub const DEMO_EMAIL: &str = "ada@hatchery.test";
pub const DEMO_PASSWORD: &str = "hatchery-ada";

/// Ends the session of the token it is called with, so it runs alone with a token of its own.
const LOGOUT_PATH: &str = "/api/auth/v1/logout";
const TOKEN_PATH: &str = "/api/auth/v1/token";

/// Options of `cargo xtask contract`.
#[derive(Debug, Clone)]
pub struct ContractOptions {
    /// Only these services (all when empty).
    pub only: Vec<String>,
    /// Generated requests per operation and phase (schemathesis `--max-examples`).
    pub max_examples: u32,
    /// Schemathesis' random seed: the same seed generates the same requests.
    pub seed: u64,
    /// How long a started service may take to become ready.
    pub ready_timeout: Duration,
}

impl Default for ContractOptions {
    fn default() -> Self {
        ContractOptions {
            only: Vec::new(),
            max_examples: DEFAULT_MAX_EXAMPLES,
            seed: DEFAULT_SEED,
            ready_timeout: Duration::from_secs(120),
        }
    }
}

/// Enough for every phase to reach each operation's edge cases in about half a minute per
/// service on a developer machine.
pub const DEFAULT_MAX_EXAMPLES: u32 = 25;
/// A fixed seed: every run (and CI) sends the same requests, so a failure reproduces.
pub const DEFAULT_SEED: u64 = 1;

/// One service's outcome.
struct Outcome {
    service: String,
    document: Verdict,
    schemathesis: Verdict,
    took: Duration,
}

enum Verdict {
    Passed(String),
    Failed(String),
    Skipped,
}

impl Verdict {
    fn failed(&self) -> bool {
        matches!(self, Verdict::Failed(_))
    }

    fn cell(&self) -> String {
        match self {
            Verdict::Passed(what) => format!("ok ({what})"),
            Verdict::Failed(what) => format!("FAILED ({what})"),
            Verdict::Skipped => "skipped".to_string(),
        }
    }
}

/// Runs the contract checks; returns the exit code.
pub fn contract(root: &Path, options: &ContractOptions) -> Result<i32> {
    let all = services::discover(root)?;
    let auth = all
        .iter()
        .find(|s| s.name == "auth")
        .cloned()
        .context("no auth service found: the contract run signs in there")?;
    let selected: Vec<Service> = if options.only.is_empty() {
        all.clone()
    } else {
        for name in &options.only {
            if !all.iter().any(|s| &s.name == name) {
                bail!("no service named {name:?} (see `cargo xtask services`)");
            }
        }
        all.iter()
            .filter(|s| options.only.contains(&s.name))
            .cloned()
            .collect()
    };
    let work = python::CONTRACT.work_dir(root);
    let venv = python::CONTRACT.ensure(root)?;

    // Auth issues the token; the broker validates tickets there: start it alongside.
    let mut needed = selected.clone();
    if !needed.iter().any(|s| s.name == auth.name) {
        needed.push(auth.clone());
    }
    let (running, to_start): (Vec<Service>, Vec<Service>) = needed
        .into_iter()
        .partition(|s| reachable(loopback(s.port), Duration::from_millis(300)));
    for service in &running {
        println!(
            "==> {} answers on {}: using it as it is (the run writes to its data)",
            service.name,
            service.url()
        );
    }
    let shutdown = procs::shutdown_flag()?;
    let width = to_start.iter().map(|s| s.name.len()).max().unwrap_or(4);
    let mut fleet = Fleet::new(
        up::bin_dir(root, false),
        Logs::Files(work.join("logs")),
        width,
    );
    let result = (|| -> Result<i32> {
        if !to_start.is_empty() {
            infra::ensure(root, Smtp::Skip)?;
            up::build(root, &to_start, false, false)?;
            let run_id = format!("contract{}:", std::process::id());
            for service in &to_start {
                fleet.start_service(root, service, "demo", &isolated_env(service, &run_id))?;
            }
            println!(
                "==> started {} (logs in {})",
                to_start
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                work.join("logs").display()
            );
            fleet.probe(options.ready_timeout)?;
            fleet.wait_ready(&shutdown)?;
        }
        let token = sign_in(loopback(auth.port))?;
        // Signed in up front: the run's own password guesses (`/me/password`) count against
        // the demo admin's sign-in rate limit.
        let throwaway = sign_in(loopback(auth.port))?;
        let mut outcomes = Vec::new();
        for service in &selected {
            if shutdown.load(std::sync::atomic::Ordering::SeqCst) {
                bail!("interrupted");
            }
            outcomes.push(check_service(root, &work, &venv, service, &token, options)?);
        }
        if selected.iter().any(|s| s.name == auth.name) {
            // Its own session: the first accepted request ends it.
            let started = Instant::now();
            let verdict = schemathesis(
                root,
                &venv,
                &auth,
                &throwaway,
                options,
                // Alone, it has no links to follow.
                &[
                    "--include-path",
                    LOGOUT_PATH,
                    "--phases",
                    "examples,coverage,fuzzing",
                ],
                &work.join("auth-logout.txt"),
            )?;
            outcomes.push(Outcome {
                service: "auth (logout)".to_string(),
                document: Verdict::Skipped,
                schemathesis: verdict,
                took: started.elapsed(),
            });
        }
        Ok(report(&outcomes))
    })();
    if !fleet.is_empty() {
        fleet.stop();
    }
    result
}

/// Settings that keep a started service's data and counters apart from `up`'s.
fn isolated_env(service: &Service, run_id: &str) -> Vec<(String, String)> {
    let mut env = vec![
        (
            service.env("DATABASE__URL"),
            format!(
                "postgres://postgres@127.0.0.1:5432/{}_contract",
                service.name
            ),
        ),
        (service.env("AMQP__PREFIX"), "hatchery-contract".to_string()),
        (service.env("LOG__FORMAT"), "json".to_string()),
    ];
    if service.name == "auth" {
        // Fresh rate-limit windows each run: the run itself sends many sign-ins.
        env.push((service.env("APP__REDIS_PREFIX"), format!("auth:{run_id}")));
    }
    env
}

/// Signs in as the demo admin; the access token.
fn sign_in(auth: SocketAddr) -> Result<String> {
    let response = http::post_form(
        auth,
        TOKEN_PATH,
        &[
            ("grant_type", "password"),
            ("username", DEMO_EMAIL),
            ("password", DEMO_PASSWORD),
        ],
        Duration::from_secs(30),
    )
    .with_context(|| format!("cannot reach auth at {auth}"))?;
    let body = String::from_utf8_lossy(&response.raw_body);
    if response.status != 200 {
        bail!(
            "signing in as {DEMO_EMAIL} answered {}: {}{}",
            response.status,
            body.trim(),
            if response.status == 429 {
                " (the running auth service's rate limit; wait, or stop it so the contract run starts its own)"
            } else {
                ""
            }
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(body.trim()).context("the token response is not JSON")?;
    json.get("access_token")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .context("the token response has no access_token")
}

fn check_service(
    root: &Path,
    work: &Path,
    venv: &Path,
    service: &Service,
    token: &str,
    options: &ContractOptions,
) -> Result<Outcome> {
    let started = Instant::now();
    println!("\n==> {}: {}/openapi.json", service.name, service.url());
    let response = http::get(
        loopback(service.port),
        "/openapi.json",
        Duration::from_secs(10),
    )
    .with_context(|| format!("cannot fetch {}/openapi.json", service.url()))?;
    if response.status != 200 {
        bail!(
            "{}/openapi.json answered {}",
            service.url(),
            response.status
        );
    }
    let document = work.join(format!("{}.openapi.json", service.name));
    std::fs::write(&document, &response.raw_body)
        .with_context(|| format!("cannot write {}", document.display()))?;
    let validator = util::status(
        Command::new(venv.join("bin/openapi-spec-validator"))
            .arg(&document)
            .current_dir(root),
    )?;
    let document_verdict = if validator.success() {
        Verdict::Passed("OpenAPI 3.1 valid".to_string())
    } else {
        Verdict::Failed(format!("openapi-spec-validator: {}", document.display()))
    };
    let extra: Vec<&str> = if service.name == "auth" {
        // Deleting an account is a soft delete that an admin can read and restore (docs/auth.md),
        // so a read after a DELETE answers 200 by design. `xtask/contract/auth.toml` turns
        // `use_after_free` off, but schemathesis 4.32's stateful phase still ran it once here
        // (a DELETE, a restore, then a GET): the command line turns it off for every phase.
        vec![
            "--exclude-path",
            LOGOUT_PATH,
            "--exclude-checks",
            "use_after_free",
        ]
    } else {
        Vec::new()
    };
    let schemathesis_verdict = schemathesis(
        root,
        venv,
        service,
        token,
        options,
        &extra,
        &work.join(format!("{}.txt", service.name)),
    )?;
    Ok(Outcome {
        service: service.name.clone(),
        document: document_verdict,
        schemathesis: schemathesis_verdict,
        took: started.elapsed(),
    })
}

/// Runs schemathesis against `service`, its output shown and kept in `log`.
fn schemathesis(
    root: &Path,
    venv: &Path,
    service: &Service,
    token: &str,
    options: &ContractOptions,
    extra: &[&str],
    log: &Path,
) -> Result<Verdict> {
    let mut command = Command::new(venv.join("bin/st"));
    // Schemathesis keeps a cache (`.schemathesis/`) in its working directory: not the checkout.
    command.current_dir(log.parent().unwrap_or(root)).env(
        "SCHEMATHESIS_HOOKS",
        root.join(CONTRACT_DIR).join("hooks.py"),
    );
    let config = root
        .join(CONTRACT_DIR)
        .join(format!("{}.toml", service.name));
    if config.is_file() {
        command.arg("--config-file").arg(config);
    }
    command
        .arg("run")
        .arg(format!("{}/openapi.json", service.url()))
        .args(["--checks", "all"])
        .args(["--max-examples", &options.max_examples.to_string()])
        .args(["--seed", &options.seed.to_string()])
        .args(["--workers", "1"])
        .args(["--request-timeout", "20"])
        .args(["--output-truncate", "false"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args(extra);
    let shown = util::describe(&command).replace(token, "<demo admin token>");
    println!("    {shown}");
    let output = command
        .output()
        .with_context(|| format!("cannot run {}", venv.join("bin/st").display()))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let text = text.replace(token, "<demo admin token>");
    std::fs::write(log, &text).with_context(|| format!("cannot write {}", log.display()))?;
    print!("{text}");
    let summary = text
        .lines()
        .rev()
        .find(|line| line.contains(" in ") && line.starts_with('='))
        .map(|line| line.trim_matches(|c| c == '=' || c == ' ').to_string())
        .unwrap_or_else(|| "no summary".to_string());
    Ok(if output.status.success() {
        Verdict::Passed(summary)
    } else {
        Verdict::Failed(format!("{summary}; see {}", log.display()))
    })
}

/// Prints the table; the exit code.
fn report(outcomes: &[Outcome]) -> i32 {
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.service.clone(),
                o.document.cell(),
                o.schemathesis.cell(),
                format!("{:.1} s", o.took.as_secs_f64()),
            ]
        })
        .collect();
    println!();
    print!(
        "{}",
        util::table(&["SERVICE", "DOCUMENT", "SCHEMATHESIS", "TIME"], &rows)
    );
    let failed = outcomes
        .iter()
        .filter(|o| o.document.failed() || o.schemathesis.failed())
        .count();
    println!(
        "contract: {} passed, {} failed",
        outcomes.len() - failed,
        failed
    );
    i32::from(failed > 0)
}
