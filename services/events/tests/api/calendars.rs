//! Reading the calendar feeds with a real iCalendar parser: Python's `icalendar`, pinned and
//! installed by the project's own `cargo xtask tools` into `target/icalendar/venv` (`cargo
//! xtask test` does it first; this runs it when the virtualenv is missing).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The target directory this test binary was built in (`<target>/debug/deps/<binary>`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return testkit::workspace_root().join(dir);
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| testkit::workspace_root().join("target"))
}

fn python() -> PathBuf {
    let python = target_dir().join("icalendar/venv/bin/python");
    if !python.is_file() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        eprintln!("installing the iCalendar parser: cargo xtask tools");
        let status = Command::new(cargo)
            .args(["xtask", "tools"])
            .current_dir(testkit::workspace_root())
            .status()
            .expect("run cargo xtask tools");
        assert!(status.success(), "cargo xtask tools failed ({status})");
    }
    assert!(python.is_file(), "{} is missing", python.display());
    python
}

/// What `icalendar` reads from a feed: per event its UID, SEQUENCE, STATUS and start (UTC).
const READ: &str = r#"
import json, sys
from icalendar import Calendar
cal = Calendar.from_ical(sys.stdin.read())
events = []
for event in cal.walk("VEVENT"):
    start = event.decoded("DTSTART")
    events.append({
        "uid": str(event["UID"]),
        "sequence": int(event["SEQUENCE"]),
        "status": str(event["STATUS"]),
        "start": start.isoformat(),
        "summary": str(event["SUMMARY"]),
    })
print(json.dumps({"version": str(cal["VERSION"]), "events": events}))
"#;

/// Parses `feed` with `icalendar`; asserts event `id` is there with `status` and `sequence`.
pub fn parsed_by_icalendar(feed: &str, id: &str, status: &str, sequence: i64) -> Value {
    let mut child = Command::new(python())
        .args(["-c", READ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(feed.as_bytes())
        .expect("write the feed");
    let output = child.wait_with_output().expect("python ends");
    assert!(
        output.status.success(),
        "icalendar refused the feed: {}\n{feed}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).expect("JSON from python");
    assert_eq!(parsed["version"], "2.0");
    let event = parsed["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["uid"] == format!("{id}@events.hatchery"))
        .unwrap_or_else(|| panic!("event {id} in {parsed}"))
        .clone();
    assert_eq!(event["status"], status, "{event}");
    assert_eq!(event["sequence"], sequence, "{event}");
    event
}
