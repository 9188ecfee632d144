//! `cargo xtask test`: infra, fmt, clippy, nextest — stop at the first failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::infra::{self, Smtp};
use crate::util;

struct Step {
    name: &'static str,
    took: Duration,
    ok: bool,
}

fn summary(steps: &[Step]) -> String {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|step| {
            vec![
                step.name.to_string(),
                if step.ok { "ok" } else { "FAILED" }.to_string(),
                format!("{:.1} s", step.took.as_secs_f64()),
            ]
        })
        .collect();
    let total: Duration = steps.iter().map(|step| step.took).sum();
    format!(
        "\n{}total {:.1} s\n",
        util::table(&["STEP", "RESULT", "TIME"], &rows),
        total.as_secs_f64()
    )
}

fn nextest_installed() -> bool {
    util::cargo()
        .args(["nextest", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Run the checks; returns the process exit code (that of the first failing step).
pub fn test(root: &Path, nextest_args: &[String]) -> Result<i32> {
    let mut steps: Vec<Step> = Vec::new();

    println!("==> infra");
    let started = Instant::now();
    let infra = infra::ensure(root, Smtp::Skip);
    steps.push(Step {
        name: "infra",
        took: started.elapsed(),
        ok: infra.is_ok(),
    });
    if let Err(error) = infra {
        eprintln!("error: {error:#}");
        print!("{}", summary(&steps));
        return Ok(1);
    }

    let mut commands: Vec<(&'static str, Command)> = Vec::new();
    let mut fmt = util::cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    commands.push(("fmt", fmt));
    let mut clippy = util::cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    commands.push(("clippy", clippy));
    if !nextest_installed() {
        let mut install = util::cargo();
        install.args(["install", "--locked", "cargo-nextest"]);
        commands.push(("install nextest", install));
    }
    let mut nextest = util::cargo();
    nextest
        .args(["nextest", "run", "--workspace"])
        .args(nextest_args);
    commands.push(("nextest", nextest));

    for (name, mut command) in commands {
        command.current_dir(root).stdin(Stdio::null());
        println!("==> {name}: {}", util::describe(&command));
        let started = Instant::now();
        let status = util::status(&mut command);
        let took = started.elapsed();
        let code = match status {
            Ok(status) => util::exit_code_of(status),
            Err(error) => {
                eprintln!("error: {error:#}");
                127
            }
        };
        steps.push(Step {
            name,
            took,
            ok: code == 0,
        });
        if code != 0 {
            print!("{}", summary(&steps));
            eprintln!("`{name}` failed with exit code {code}");
            return Ok(code);
        }
    }
    print!("{}", summary(&steps));
    Ok(0)
}
