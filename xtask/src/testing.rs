//! `cargo xtask test`: infra, Python tools, the migrations' lint, fmt, clippy, nextest,
//! contract — stop at the first failure.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::contract::{self, ContractOptions};
use crate::infra::{self, Smtp};
use crate::{python, util};

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

    // The Python tools the tests and the contract run use (auth's third-party OAuth client,
    // the payments tests' fake Stripe).
    println!("==> tools");
    let started = Instant::now();
    let tools = python::ensure_all(root);
    steps.push(Step {
        name: "tools",
        took: started.elapsed(),
        ok: tools.is_ok(),
    });
    if let Err(error) = tools {
        eprintln!("error: {error:#}");
        print!("{}", summary(&steps));
        return Ok(1);
    }

    // Migrations that could lock a busy table during a deploy (squawk).
    println!("==> migrations");
    let started = Instant::now();
    let lint = crate::migrations::lint(root);
    steps.push(Step {
        name: "migrations",
        took: started.elapsed(),
        ok: lint.is_ok(),
    });
    if let Err(error) = lint {
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

    let mut tally: Option<Tally> = None;
    for (name, mut command) in commands {
        command.current_dir(root).stdin(Stdio::null());
        println!("==> {name}: {}", util::describe(&command));
        let started = Instant::now();
        let status = if name == "nextest" {
            run_counting(&mut command).map(|(status, counts)| {
                tally = counts;
                status
            })
        } else {
            util::status(&mut command)
        };
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
            print_tally(tally.as_ref());
            return Ok(code);
        }
    }

    // Every service against its own OpenAPI document (see `cargo xtask contract`).
    println!("==> contract");
    let started = Instant::now();
    let code = contract::contract(root, &ContractOptions::default()).unwrap_or_else(|error| {
        eprintln!("error: {error:#}");
        1
    });
    steps.push(Step {
        name: "contract",
        took: started.elapsed(),
        ok: code == 0,
    });
    print!("{}", summary(&steps));
    if code != 0 {
        eprintln!("`contract` failed with exit code {code}");
    }
    print_tally(tally.as_ref());
    Ok(code)
}

/// Test counts from nextest's `Summary [...] N tests run: P passed, F failed, S skipped` line.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    passed: u64,
    failed: u64,
    skipped: u64,
}

fn parse_tally(line: &str) -> Option<Tally> {
    let (_, counts) = line.split_once("tests run:")?;
    let mut tally = Tally::default();
    for part in counts.split(',') {
        let mut words = part.split_whitespace();
        let (Some(number), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(number) = number.parse::<u64>() else {
            continue;
        };
        match what {
            "passed" => tally.passed += number,
            "skipped" => tally.skipped += number,
            // failed, timed out, ...: anything that is not a pass or a skip counts against.
            _ => tally.failed += number,
        }
    }
    Some(tally)
}

/// The closing line, after the timing table: what CI reads as the result of the run.
fn print_tally(tally: Option<&Tally>) {
    if let Some(t) = tally {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            t.passed, t.failed, t.skipped
        );
    }
}

/// Runs nextest with its output passed through, noting its summary line.
fn run_counting(command: &mut Command) -> Result<(std::process::ExitStatus, Option<Tally>)> {
    use std::io::{BufRead, BufReader, Write};
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let forward = |stream: Box<dyn std::io::Read + Send>, to_stderr: bool| {
        std::thread::spawn(move || {
            let mut found = None;
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if to_stderr {
                    let _ = writeln!(std::io::stderr(), "{line}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{line}");
                }
                if line.trim_start().starts_with("Summary") {
                    found = parse_tally(&line).or(found);
                }
            }
            found
        })
    };
    let out = child.stdout.take().map(|s| forward(Box::new(s), false));
    let err = child.stderr.take().map(|s| forward(Box::new(s), true));
    let status = child.wait()?;
    let from_out = out.and_then(|t| t.join().ok()).flatten();
    let from_err = err.and_then(|t| t.join().ok()).flatten();
    Ok((status, from_err.or(from_out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nextest_summaries() {
        let ok =
            parse_tally("     Summary [  10.386s] 44 tests run: 44 passed, 0 skipped").unwrap();
        assert_eq!(
            ok,
            Tally {
                passed: 44,
                failed: 0,
                skipped: 0
            }
        );
        let bad = parse_tally(
            "     Summary [ 1.0s] 10 tests run: 7 passed, 2 failed, 1 timed out, 3 skipped",
        )
        .unwrap();
        assert_eq!(
            bad,
            Tally {
                passed: 7,
                failed: 3,
                skipped: 3
            }
        );
        assert_eq!(parse_tally("Starting 3 tests"), None);
    }
}
