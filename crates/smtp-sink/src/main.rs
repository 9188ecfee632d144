//! `smtp-sink [--listen 127.0.0.1:1025] [--http 127.0.0.1:8025 | --no-http] [--dir DIR]
//! [--max-size BYTES] [--max-messages N]`
//!
//! Keeps every message, serves the mailbox over HTTP and prints one line per message.
//! Exit codes: 0 after `--help`, 2 for bad arguments, 1 when a port cannot be opened.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use smtp_sink::{Message, Options, Sink};

const USAGE: &str = "\
usage: smtp-sink [--listen ADDR] [--http ADDR | --no-http] [--dir DIR]
                 [--max-size BYTES] [--max-messages N]

A real SMTP server that keeps every message, with a Mailpit-compatible HTTP API
and a web mailbox.

options:
  --listen ADDR       SMTP address (default 127.0.0.1:1025)
  --http ADDR         HTTP address of the API and web mailbox (default 127.0.0.1:8025)
  --no-http           serve no HTTP
  --dir DIR           also write every message to DIR/<n>.eml
  --max-size BYTES    refuse larger messages with 552 (default 10485760)
  --max-messages N    keep the newest N messages in memory (default 500)
  -h, --help          show this help";

#[derive(Debug)]
struct Args {
    listen: String,
    http: Option<String>,
    dir: Option<PathBuf>,
    max_size: usize,
    max_messages: usize,
}

fn parse_number(flag: &str, raw: &str, what: &str) -> Result<usize, String> {
    raw.parse()
        .map_err(|_| format!("{flag} expects {what}, got {raw:?}"))
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: "127.0.0.1:1025".to_string(),
        http: Some("127.0.0.1:8025".to_string()),
        dir: None,
        max_size: smtp_sink::DEFAULT_MAX_MESSAGE_SIZE,
        max_messages: smtp_sink::DEFAULT_MAX_MESSAGES,
    };
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--listen" => parsed.listen = value("--listen")?,
            "--http" => parsed.http = Some(value("--http")?),
            "--no-http" => parsed.http = None,
            "--dir" => parsed.dir = Some(PathBuf::from(value("--dir")?)),
            "--max-size" => {
                parsed.max_size =
                    parse_number("--max-size", &value("--max-size")?, "a number of bytes")?;
            }
            "--max-messages" => {
                let max = parse_number(
                    "--max-messages",
                    &value("--max-messages")?,
                    "a number of messages",
                )?;
                if max == 0 {
                    return Err("--max-messages must be at least 1".to_string());
                }
                parsed.max_messages = max;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(parsed))
}

fn describe(message: &Message, dir: Option<&PathBuf>) -> String {
    let to: Vec<String> = message
        .recipients
        .iter()
        .map(|r| format!("<{r}>"))
        .collect();
    let mut line = format!(
        "#{} from=<{}> to={} size={}B subject={:?}",
        message.id,
        message.from,
        to.join(","),
        message.data.len(),
        message.subject().unwrap_or_default(),
    );
    if let Some(dir) = dir {
        line.push_str(&format!(
            " file={}",
            dir.join(format!("{}.eml", message.id)).display()
        ));
    }
    line
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("smtp-sink: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let dir = args.dir.clone();
    let options = Options {
        dir: args.dir,
        max_message_size: args.max_size,
        max_messages: args.max_messages,
        http: args.http,
        on_message: Some(Arc::new(move |message: &Message| {
            // Not println!: a closed stdout must not take the SMTP connection down with it.
            let _ = writeln!(io::stdout().lock(), "{}", describe(message, dir.as_ref()));
        })),
        ..Options::default()
    };
    match Sink::start_with(&args.listen, options) {
        Ok(sink) => {
            println!("smtp-sink listening on smtp://{}", sink.addr());
            if let Some(url) = sink.http_url() {
                println!("smtp-sink mailbox at {url} (API {url}/api/v1/messages)");
            }
            sink.run();
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("smtp-sink: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn defaults_and_flags() {
        let args = parse(&[]).unwrap().unwrap();
        assert_eq!(args.listen, "127.0.0.1:1025");
        assert_eq!(args.http.as_deref(), Some("127.0.0.1:8025"));
        assert_eq!(args.max_messages, smtp_sink::DEFAULT_MAX_MESSAGES);
        let args = parse(&[
            "--http=0.0.0.0:9025",
            "--max-messages",
            "3",
            "--dir",
            "/tmp/m",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(args.http.as_deref(), Some("0.0.0.0:9025"));
        assert_eq!(args.max_messages, 3);
        assert_eq!(args.dir, Some(PathBuf::from("/tmp/m")));
        assert!(parse(&["--no-http"]).unwrap().unwrap().http.is_none());
        assert!(parse(&["--help"]).unwrap().is_none());
    }

    #[test]
    fn bad_arguments_are_explained() {
        assert_eq!(
            parse(&["--max-messages", "0"]).unwrap_err(),
            "--max-messages must be at least 1"
        );
        assert!(
            parse(&["--max-size", "big"])
                .unwrap_err()
                .contains("number of bytes")
        );
        assert!(parse(&["--http"]).unwrap_err().contains("needs a value"));
        assert!(
            parse(&["--bogus"])
                .unwrap_err()
                .contains("unknown argument")
        );
    }
}
