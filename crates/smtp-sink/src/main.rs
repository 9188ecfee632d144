//! `smtp-sink --listen 127.0.0.1:1025 [--dir DIR] [--max-size BYTES]`
//!
//! Accepts every message and prints one line per message received.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use smtp_sink::{Message, Options, Sink};

const USAGE: &str = "\
usage: smtp-sink [--listen ADDR] [--dir DIR] [--max-size BYTES]

A minimal SMTP server that accepts every message.

options:
  --listen ADDR      address to listen on (default 127.0.0.1:1025)
  --dir DIR          also write every message to DIR/<n>.eml
  --max-size BYTES   refuse larger messages with 552 (default 10485760)
  -h, --help         show this help";

struct Args {
    listen: String,
    dir: Option<PathBuf>,
    max_size: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        listen: "127.0.0.1:1025".to_string(),
        dir: None,
        max_size: smtp_sink::DEFAULT_MAX_MESSAGE_SIZE,
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
            "--dir" => parsed.dir = Some(PathBuf::from(value("--dir")?)),
            "--max-size" => {
                let raw = value("--max-size")?;
                parsed.max_size = raw
                    .parse()
                    .map_err(|_| format!("--max-size expects a number of bytes, got {raw:?}"))?;
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
        on_message: Some(Arc::new(move |message: &Message| {
            println!("{}", describe(message, dir.as_ref()));
        })),
        ..Options::default()
    };
    match Sink::start_with(&args.listen, options) {
        Ok(sink) => {
            println!("smtp-sink listening on smtp://{}", sink.addr());
            sink.run();
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("smtp-sink: cannot listen on {}: {error}", args.listen);
            ExitCode::FAILURE
        }
    }
}
