//! Child processes: signals, graceful stop, and prefixed output.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A flag raised by SIGINT (Ctrl-C) or SIGTERM. Installing it replaces the
/// default "terminate" action, so callers must poll it.
pub fn shutdown_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flag))
            .context("cannot install the Ctrl-C/SIGTERM handler")?;
    }
    Ok(flag)
}

/// Send `signal` to a child that has not been reaped yet.
pub fn send_signal(child: &Child, signal: i32) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill() has no memory-safety preconditions; the pid belongs
        // to our own unreaped child, so it cannot have been reused.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Make the child receive SIGTERM if xtask itself dies (Linux only), so no
/// orphaned service keeps its port after `kill -9` of the supervisor.
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure only calls prctl(), which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// Stop children gracefully: SIGTERM to all, then wait up to `grace` for
/// each, then SIGKILL whatever is left. Returns each child's exit status
/// (`None` if it could not be collected) and whether it had to be killed.
pub fn stop_all(children: &mut [&mut Child], grace: Duration) -> Vec<(Option<ExitStatus>, bool)> {
    let mut results: Vec<(Option<ExitStatus>, bool)> = Vec::with_capacity(children.len());
    for child in children.iter_mut() {
        match child.try_wait() {
            Ok(Some(status)) => results.push((Some(status), false)),
            _ => {
                send_signal(child, libc::SIGTERM);
                results.push((None, false));
            }
        }
    }
    for (child, result) in children.iter_mut().zip(results.iter_mut()) {
        if result.0.is_some() {
            continue;
        }
        let deadline = Instant::now() + grace;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    result.0 = Some(status);
                    break;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    result.0 = child.wait().ok();
                    result.1 = true;
                    break;
                }
                Err(_) => break,
            }
        }
    }
    results
}

/// ANSI colours used for service prefixes, in order.
const COLOURS: [&str; 10] = ["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// `"template |"` padded to `width`, coloured by `index` if `colour` is on.
pub fn prefix(name: &str, width: usize, index: usize, colour: bool) -> String {
    if colour {
        let code = COLOURS[index % COLOURS.len()];
        format!("\x1b[{code}m{name:>width$} |\x1b[0m ")
    } else {
        format!("{name:>width$} | ")
    }
}

/// Copy `reader` to our stdout line by line, each line behind `prefix`.
pub fn forward_lines(reader: impl Read + Send + 'static, prefix: String) -> Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("xtask-output".to_string())
        .spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buffer = Vec::new();
            loop {
                buffer.clear();
                match reader.read_until(b'\n', &mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buffer);
                        let line = line.trim_end_matches(['\n', '\r']);
                        let mut stdout = std::io::stdout().lock();
                        let _ = writeln!(stdout, "{prefix}{line}");
                    }
                }
            }
        })
        .context("cannot start an output thread")
}

/// Wait up to `timeout` for a child to exit on its own.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

/// Run a command with a time limit; `None` if it could not run or timed out
/// (in which case it is killed).
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> Option<ExitStatus> {
    let mut child = command.spawn().ok()?;
    match wait_timeout(&mut child, timeout) {
        Some(status) => Some(status),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    #[test]
    fn prefixes_pad_and_colour() {
        assert_eq!(prefix("ab", 5, 0, false), "   ab | ");
        assert_eq!(prefix("ab", 2, 1, true), "\x1b[33mab |\x1b[0m ");
    }

    #[test]
    fn stops_children_with_sigterm_then_sigkill() {
        let mut polite = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // A child that ignores SIGTERM must be killed after the grace period.
        let mut stubborn = Command::new("sh")
            .args([
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.05; done",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the trap is installed.
        let mut ready = String::new();
        BufReader::new(stubborn.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready, "ready\n");
        let started = Instant::now();
        let results = stop_all(
            &mut [&mut polite, &mut stubborn],
            Duration::from_millis(500),
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!results[0].1, "sleep should stop on SIGTERM");
        assert!(results[1].1, "the TERM-ignoring child should be killed");
        assert!(results.iter().all(|(status, _)| status.is_some()));
    }
}
