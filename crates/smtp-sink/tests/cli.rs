//! The `smtp-sink` binary: its flags, its printed addresses, its exit codes.

use std::io::Lines;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Stdio};

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::{Client, simple};

/// A running binary, killed when dropped.
struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    smtp: SocketAddr,
    http: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(args: &[&str]) -> Running {
    let mut child = Command::new(env!("CARGO_BIN_EXE_smtp-sink"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start smtp-sink");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut next = || next_line(&mut lines);
    let first = next();
    let smtp = first
        .strip_prefix("smtp-sink listening on smtp://")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("SMTP address");
    let second = next();
    let http = second
        .strip_prefix("smtp-sink mailbox at ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
        .to_string();
    Running {
        child,
        stdout: lines,
        smtp,
        http,
    }
}

fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    lines
        .next()
        .expect("smtp-sink printed a line")
        .expect("read stdout")
}

#[tokio::test]
async fn binary_serves_smtp_and_http_and_keeps_max_messages() {
    let mut sink = run(&[
        "--listen",
        "127.0.0.1:0",
        "--http=127.0.0.1:0",
        "--max-messages",
        "2",
    ]);
    assert!(sink.http.starts_with("http://127.0.0.1:"), "{}", sink.http);
    let mut client = Client::connect_to(sink.smtp);
    client.expect("EHLO client", "250");
    for n in 1..=3 {
        let (_, end) = client.transaction(
            "a@example.com",
            &["b@example.com"],
            &simple("a@example.com", "b@example.com", &format!("n{n}"), "x"),
        );
        assert!(end.unwrap().starts_with("250 "));
    }
    client.expect("QUIT", "221");
    // One line per message on stdout.
    for n in 1..=3 {
        let line = next_line(&mut sink.stdout);
        assert!(
            line.starts_with(&format!("#{n} from=<a@example.com> to=<b@example.com>"))
                && line.ends_with(&format!("subject=\"n{n}\"")),
            "{line}"
        );
    }

    let response = reqwest::get(format!("{}/api/v1/messages", sink.http))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["total"], 2);
    assert_eq!(page["messages"][0]["Subject"], "n3");
    assert_eq!(page["messages"][1]["Subject"], "n2");
}

#[test]
fn bad_flags_exit_with_2_and_a_busy_port_with_1() {
    let output = Command::new(env!("CARGO_BIN_EXE_smtp-sink"))
        .args(["--max-messages", "none"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--max-messages expects a number"),
        "{stderr}"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_smtp-sink"))
        .args(["--listen", "127.0.0.1:0", "--http"])
        .arg(taken.local_addr().unwrap().to_string())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot listen for HTTP"), "{stderr}");
}
