//! Messages per second the sink accepts from SMTP clients that wait for every reply (as
//! common client libraries do): one connection reused for every message, then eight
//! connections in parallel.
//!
//! ```text
//! cargo run -p smtp-sink --release --example throughput [-- --messages N] [--addr HOST:PORT]
//! ```
//!
//! Without `--addr` it starts a sink in-process with default options (HTTP on, 500
//! messages kept, each message parsed on arrival).

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use smtp_sink::Sink;

const CONNECTIONS: usize = 8;

/// A ~1 KB multipart/alternative mail, like a transactional mail from a service.
fn message(n: usize) -> String {
    let paragraph = "Thank you for your order. We will let you know when it ships. ".repeat(6);
    format!(
        "From: Shop <shop@example.com>\r\nTo: customer{n}@example.com\r\n\
         Subject: Your order {n}\r\nMessage-ID: <order-{n}@example.com>\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{paragraph}\r\n\
         --b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>{paragraph}</p>\r\n--b--\r\n.\r\n"
    )
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> std::io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut client = Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: BufWriter::new(stream),
        };
        client.expect("220")?;
        client.send("EHLO bench.example\r\n", "250")?;
        Ok(client)
    }

    /// Read one (possibly multi-line) reply and check its code.
    fn expect(&mut self, code: &str) -> std::io::Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            if !line.starts_with(code) {
                return Err(std::io::Error::other(format!(
                    "expected {code}, got {line:?}"
                )));
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }

    fn send(&mut self, text: &str, code: &str) -> std::io::Result<()> {
        self.writer.write_all(text.as_bytes())?;
        self.writer.flush()?;
        self.expect(code)
    }

    fn deliver(&mut self, n: usize) -> std::io::Result<()> {
        self.send("MAIL FROM:<shop@example.com>\r\n", "250")?;
        self.send(&format!("RCPT TO:<customer{n}@example.com>\r\n"), "250")?;
        self.send("DATA\r\n", "354")?;
        self.send(&message(n), "250")
    }
}

/// Send `total` messages over `connections` connections; messages per second.
fn run(addr: SocketAddr, connections: usize, total: usize) -> std::io::Result<f64> {
    let per_connection = total / connections;
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|c| {
            thread::spawn(move || -> std::io::Result<()> {
                let mut client = Client::connect(addr)?;
                for n in 0..per_connection {
                    client.deliver(c * per_connection + n)?;
                }
                client.send("QUIT\r\n", "221")
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| std::io::Error::other("a client thread panicked"))??;
    }
    Ok((per_connection * connections) as f64 / started.elapsed().as_secs_f64())
}

fn main() -> ExitCode {
    let mut messages = 20_000;
    let mut addr: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--messages", Some(value)) => match value.parse() {
                Ok(value) => messages = value,
                Err(_) => {
                    eprintln!("--messages expects a number, got {value:?}");
                    return ExitCode::from(2);
                }
            },
            ("--addr", Some(value)) => addr = Some(value),
            _ => {
                eprintln!("usage: throughput [--messages N] [--addr HOST:PORT]");
                return ExitCode::from(2);
            }
        }
    }
    let sink;
    let target: SocketAddr = match addr {
        Some(addr) => match addr.parse() {
            Ok(addr) => addr,
            Err(_) => {
                eprintln!("--addr expects HOST:PORT, got {addr:?}");
                return ExitCode::from(2);
            }
        },
        None => match Sink::start("127.0.0.1:0") {
            Ok(started) => {
                sink = started;
                sink.addr()
            }
            Err(error) => {
                eprintln!("cannot start a sink: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    println!(
        "{messages} messages of ~{} bytes to {target}",
        message(0).len()
    );
    let one = match run(target, 1, messages) {
        Ok(rate) => rate,
        Err(error) => {
            eprintln!("1 connection: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("1 connection (reused):  {one:>8.0} msg/s");
    let many = match run(target, CONNECTIONS, messages) {
        Ok(rate) => rate,
        Err(error) => {
            eprintln!("{CONNECTIONS} connections: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{CONNECTIONS} connections:          {many:>8.0} msg/s  ({:.2}x one connection)",
        many / one
    );
    ExitCode::SUCCESS
}
