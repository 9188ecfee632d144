//! A real, minimal SMTP server that accepts every message.
//!
//! Used in development (`cargo xtask up` starts the `smtp-sink` binary on
//! 127.0.0.1:1025) and in tests, which start their own sink on port 0:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let sink = smtp_sink::Sink::start("127.0.0.1:0").unwrap();
//! let smtp_url = format!("smtp://{}", sink.addr());
//! // ... point the code under test at `smtp_url` and make it send a mail ...
//! let messages = sink.wait_for(1, Duration::from_secs(5));
//! assert_eq!(messages.len(), 1);
//! assert_eq!(messages[0].subject().as_deref(), Some("Welcome"));
//! ```
//!
//! The server speaks `EHLO`/`HELO`, `MAIL FROM`, `RCPT TO`, `DATA`, `RSET`,
//! `NOOP`, `QUIT` and accepts any `AUTH PLAIN`/`AUTH LOGIN` credentials. Every
//! connection is served by its own thread. Command lines are capped at
//! [`MAX_COMMAND_LINE`] bytes and messages at [`Options::max_message_size`]
//! (10 MiB by default; larger messages are refused with `552`).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Default cap on the size of one message (after dot-unstuffing): 10 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Longest accepted command line, including its line ending.
pub const MAX_COMMAND_LINE: usize = 1000;
/// Most recipients accepted for one message.
pub const MAX_RECIPIENTS: usize = 1000;
/// A connection that sends nothing for this long is closed with `421`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// One message accepted by the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sequence number, starting at 1, in the order messages were accepted.
    pub id: usize,
    /// The reverse path given in `MAIL FROM` (empty for the null sender `<>`).
    pub from: String,
    /// The forward paths given in `RCPT TO`, in order.
    pub recipients: Vec<String>,
    /// The message content as received, with dot-stuffing removed and the
    /// terminating `.` line excluded. Line endings are kept as sent.
    pub data: Vec<u8>,
}

impl Message {
    /// The content as text (invalid UTF-8 is replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The value of the first header called `name` (case-insensitive), with
    /// folded continuation lines joined by a single space.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                if let Some(value) = current.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if current.is_some() {
                break;
            }
            if let Some((key, value)) = line.split_once(':')
                && key.trim().eq_ignore_ascii_case(name)
            {
                current = Some(value.trim().to_string());
            }
        }
        current
    }

    /// The `Subject` header.
    pub fn subject(&self) -> Option<String> {
        self.header("Subject")
    }

    /// Everything after the blank line that ends the header section.
    pub fn body(&self) -> String {
        let text = self.text();
        for separator in ["\r\n\r\n", "\n\n"] {
            if let Some(index) = text.find(separator) {
                return text[index + separator.len()..].to_string();
            }
        }
        String::new()
    }
}

/// Callback invoked for every accepted message.
pub type OnMessage = Arc<dyn Fn(&Message) + Send + Sync>;

/// How a [`Sink`] behaves.
#[derive(Clone)]
pub struct Options {
    /// Also write every message to `<dir>/<id>.eml` (the directory is created).
    pub dir: Option<PathBuf>,
    /// Messages larger than this are refused with `552`.
    pub max_message_size: usize,
    /// Name used in the greeting.
    pub hostname: String,
    /// Called (on the connection's thread) for every accepted message.
    pub on_message: Option<OnMessage>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: None,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            hostname: "smtp-sink.localhost".to_string(),
            on_message: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("dir", &self.dir)
            .field("max_message_size", &self.max_message_size)
            .field("hostname", &self.hostname)
            .field("on_message", &self.on_message.is_some())
            .finish()
    }
}

struct Shared {
    messages: Mutex<Vec<Message>>,
    arrived: Condvar,
    next_id: Mutex<usize>,
    stopping: AtomicBool,
    options: Options,
}

impl Shared {
    fn messages(&self) -> MutexGuard<'_, Vec<Message>> {
        self.messages.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn store(&self, from: String, recipients: Vec<String>, data: Vec<u8>) -> Message {
        let message = {
            // Hold the id lock while writing so ids, files and the list agree.
            let mut next_id = self.next_id.lock().unwrap_or_else(PoisonError::into_inner);
            *next_id += 1;
            let message = Message {
                id: *next_id,
                from,
                recipients,
                data,
            };
            if let Some(dir) = &self.options.dir {
                let path = dir.join(format!("{}.eml", message.id));
                if let Err(error) = fs::write(&path, &message.data) {
                    eprintln!("smtp-sink: could not write {}: {error}", path.display());
                }
            }
            self.messages().push(message.clone());
            message
        };
        self.arrived.notify_all();
        if let Some(callback) = &self.options.on_message {
            callback(&message);
        }
        message
    }
}

/// A running SMTP sink. Dropping it stops accepting new connections.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("addr", &self.addr).finish()
    }
}

impl Sink {
    /// Listen on `addr` (e.g. `127.0.0.1:1025`, or `127.0.0.1:0` for any free port).
    pub fn start(addr: &str) -> io::Result<Sink> {
        Sink::start_with(addr, Options::default())
    }

    /// Like [`Sink::start`], also writing every message to `<dir>/<id>.eml`.
    pub fn start_with_dir(addr: &str, dir: impl Into<PathBuf>) -> io::Result<Sink> {
        Sink::start_with(
            addr,
            Options {
                dir: Some(dir.into()),
                ..Options::default()
            },
        )
    }

    /// Listen on `addr` with explicit [`Options`].
    pub fn start_with(addr: &str, options: Options) -> io::Result<Sink> {
        if let Some(dir) = &options.dir {
            fs::create_dir_all(dir).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot create directory {}: {error}", dir.display()),
                )
            })?;
        }
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            messages: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            next_id: Mutex::new(0),
            stopping: AtomicBool::new(false),
            options,
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("smtp-sink-accept".to_string())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Sink {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The address actually listened on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// All messages accepted so far.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.messages().clone()
    }

    /// Wait until at least `count` messages have arrived or `timeout` has
    /// passed, then return all messages accepted so far (possibly fewer than
    /// `count` if the deadline passed).
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut messages = self.shared.messages();
        while messages.len() < count {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            messages = self
                .shared
                .arrived
                .wait_timeout(messages, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        messages.clone()
    }

    /// Forget all messages received so far (ids keep increasing).
    pub fn clear(&self) {
        self.shared.messages().clear();
    }

    /// Block the calling thread for as long as the sink runs (forever, unless
    /// accepting fails).
    pub fn run(mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the blocking accept() with a connection of our own.
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                });
            }
            if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
                let _ = acceptor.join();
            }
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => {
                let shared = Arc::clone(shared);
                let spawned = thread::Builder::new()
                    .name("smtp-sink-conn".to_string())
                    .spawn(move || {
                        let _ = serve(stream, &shared);
                    });
                if let Err(error) = spawned {
                    eprintln!("smtp-sink: cannot spawn connection thread: {error}");
                }
            }
            Err(error) => {
                eprintln!("smtp-sink: accept failed: {error}");
                // Avoid spinning on persistent errors such as EMFILE.
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

enum Line {
    Complete,
    TooLong,
    Eof,
}

/// Read one line (up to and including `\n`) into `buf`, keeping at most
/// `limit` bytes. A longer line is consumed entirely and reported as
/// [`Line::TooLong`]. A partial line at end of stream counts as end of stream.
fn read_line<R: BufRead>(reader: &mut R, buf: &mut Vec<u8>, limit: usize) -> io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Ok(Line::Eof);
        }
        let (taken, done) = match available.iter().position(|&byte| byte == b'\n') {
            Some(index) => (index + 1, true),
            None => (available.len(), false),
        };
        if !too_long {
            if buf.len() + taken > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&available[..taken]);
            }
        }
        reader.consume(taken);
        if done {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

fn strip_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[derive(Default)]
struct Transaction {
    from: Option<String>,
    recipients: Vec<String>,
}

struct Connection<'a> {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    shared: &'a Shared,
    line: Vec<u8>,
}

impl Connection<'_> {
    fn reply(&mut self, text: &str) -> io::Result<()> {
        self.writer.write_all(text.as_bytes())?;
        self.writer.write_all(b"\r\n")?;
        self.writer.flush()
    }

    /// Read a command-sized line; `None` at end of stream.
    fn read_command(&mut self) -> io::Result<Option<Line>> {
        match read_line(&mut self.reader, &mut self.line, MAX_COMMAND_LINE)? {
            Line::Eof => Ok(None),
            other => Ok(Some(other)),
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn serve(stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut conn = Connection {
        reader: BufReader::new(stream.try_clone()?),
        writer: BufWriter::new(stream),
        shared,
        line: Vec::new(),
    };
    match session(&mut conn) {
        Err(error) if is_timeout(&error) => {
            let _ = conn.reply("421 4.4.2 Idle timeout, closing connection");
            Ok(())
        }
        other => other,
    }
}

fn session(conn: &mut Connection<'_>) -> io::Result<()> {
    let hostname = conn.shared.options.hostname.clone();
    let max_size = conn.shared.options.max_message_size;
    conn.reply(&format!("220 {hostname} ESMTP smtp-sink ready"))?;
    let mut greeted = false;
    let mut tx = Transaction::default();
    loop {
        match conn.read_command()? {
            None => return Ok(()),
            Some(Line::TooLong) => {
                conn.reply("500 5.5.2 Line too long")?;
                continue;
            }
            Some(_) => {}
        }
        let command = String::from_utf8_lossy(strip_line_ending(&conn.line)).into_owned();
        let (verb, argument) = match command.trim().split_once(' ') {
            Some((verb, argument)) => (verb.to_ascii_uppercase(), argument.trim().to_string()),
            None => (command.trim().to_ascii_uppercase(), String::new()),
        };
        match verb.as_str() {
            "EHLO" | "HELO" => {
                if argument.is_empty() {
                    conn.reply(&format!("501 5.5.4 Syntax: {verb} hostname"))?;
                    continue;
                }
                greeted = true;
                tx = Transaction::default();
                if verb == "HELO" {
                    conn.reply(&format!("250 {hostname}"))?;
                } else {
                    let mut reply = String::new();
                    let _ = write!(
                        reply,
                        "250-{hostname} greets {argument}\r\n\
                         250-SIZE {max_size}\r\n\
                         250-8BITMIME\r\n\
                         250-SMTPUTF8\r\n\
                         250-PIPELINING\r\n\
                         250-AUTH PLAIN LOGIN\r\n\
                         250 ENHANCEDSTATUSCODES"
                    );
                    conn.reply(&reply)?;
                }
            }
            "MAIL" => {
                if !greeted {
                    conn.reply("503 5.5.1 Send EHLO/HELO first")?;
                } else if tx.from.is_some() {
                    conn.reply("503 5.5.1 Sender already specified")?;
                } else {
                    match parse_path(&argument, "FROM:") {
                        Some((path, params)) => {
                            if declared_size(params).is_some_and(|size| size > max_size) {
                                conn.reply(
                                    "552 5.3.4 Message size exceeds fixed maximum message size",
                                )?;
                            } else {
                                tx.from = Some(path);
                                conn.reply("250 2.1.0 Ok")?;
                            }
                        }
                        None => conn.reply("501 5.5.4 Syntax: MAIL FROM:<address>")?,
                    }
                }
            }
            "RCPT" => {
                if tx.from.is_none() {
                    conn.reply("503 5.5.1 Need MAIL command first")?;
                } else {
                    match parse_path(&argument, "TO:") {
                        Some((path, _)) if path.is_empty() => {
                            conn.reply("501 5.1.3 Empty recipient address")?;
                        }
                        Some(_) if tx.recipients.len() >= MAX_RECIPIENTS => {
                            conn.reply("452 4.5.3 Too many recipients")?;
                        }
                        Some((path, _)) => {
                            tx.recipients.push(path);
                            conn.reply("250 2.1.5 Ok")?;
                        }
                        None => conn.reply("501 5.5.4 Syntax: RCPT TO:<address>")?,
                    }
                }
            }
            "DATA" => {
                if !argument.is_empty() {
                    conn.reply("501 5.5.4 Syntax: DATA (no arguments)")?;
                } else if tx.recipients.is_empty() {
                    conn.reply("503 5.5.1 Need RCPT command first")?;
                } else {
                    conn.reply("354 End data with <CR><LF>.<CR><LF>")?;
                    let Some(data) = read_data(conn, max_size)? else {
                        return Ok(()); // connection closed mid-message
                    };
                    let tx = std::mem::take(&mut tx);
                    match data {
                        Data::Complete(data) => {
                            let from = tx.from.unwrap_or_default();
                            let message = conn.shared.store(from, tx.recipients, data);
                            conn.reply(&format!("250 2.0.0 Ok: queued as {}", message.id))?;
                        }
                        Data::TooLarge => {
                            conn.reply(
                                "552 5.3.4 Message size exceeds fixed maximum message size",
                            )?;
                        }
                    }
                }
            }
            "RSET" => {
                tx = Transaction::default();
                conn.reply("250 2.0.0 Ok")?;
            }
            "NOOP" => conn.reply("250 2.0.0 Ok")?,
            "QUIT" => {
                conn.reply("221 2.0.0 Bye")?;
                return Ok(());
            }
            "AUTH" => authenticate(conn, &argument, tx.from.is_some())?,
            "VRFY" | "EXPN" | "HELP" | "TURN" | "ETRN" | "BDAT" | "STARTTLS" | "SEND" | "SOML"
            | "SAML" => conn.reply("502 5.5.1 Command not implemented")?,
            "" => conn.reply("500 5.5.2 Empty command")?,
            _ => conn.reply("500 5.5.2 Command unrecognized")?,
        }
    }
}

/// Accepts any credentials for `AUTH PLAIN` and `AUTH LOGIN`.
fn authenticate(conn: &mut Connection<'_>, argument: &str, in_transaction: bool) -> io::Result<()> {
    if in_transaction {
        return conn.reply("503 5.5.1 AUTH not allowed during a mail transaction");
    }
    let mut parts = argument.split_whitespace();
    let mechanism = parts.next().unwrap_or_default().to_ascii_uppercase();
    let initial = parts.next();
    let prompts: &[&str] = match (mechanism.as_str(), initial) {
        ("PLAIN", Some(_)) => &[],
        ("PLAIN", None) => &["334 "],
        ("LOGIN", Some(_)) => &["334 UGFzc3dvcmQ6"],
        ("LOGIN", None) => &["334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6"],
        ("", _) => return conn.reply("501 5.5.4 Syntax: AUTH mechanism"),
        _ => return conn.reply("504 5.5.4 Unrecognized authentication type"),
    };
    for prompt in prompts {
        conn.reply(prompt)?;
        match conn.read_command()? {
            None => return Ok(()),
            Some(Line::TooLong) => return conn.reply("500 5.5.2 Line too long"),
            Some(_) => {}
        }
        if strip_line_ending(&conn.line) == b"*" {
            return conn.reply("501 5.7.0 Authentication cancelled");
        }
    }
    conn.reply("235 2.7.0 Authentication successful")
}

enum Data {
    Complete(Vec<u8>),
    TooLarge,
}

/// Read message content up to the terminating `.` line, undoing
/// dot-stuffing. `None` if the client disconnected first.
fn read_data(conn: &mut Connection<'_>, max_size: usize) -> io::Result<Option<Data>> {
    let mut data = Vec::new();
    let mut too_large = false;
    // A single line longer than the whole size budget makes the message too large.
    let line_limit = max_size.saturating_add(3);
    loop {
        match read_line(&mut conn.reader, &mut conn.line, line_limit)? {
            Line::Eof => return Ok(None),
            Line::TooLong => {
                too_large = true;
                data = Vec::new();
                continue;
            }
            Line::Complete => {}
        }
        let line = conn.line.as_slice();
        if line == b".\r\n" || line == b".\n" {
            break;
        }
        let content = line.strip_prefix(b".").unwrap_or(line);
        if !too_large {
            if data.len() + content.len() > max_size {
                too_large = true;
                data = Vec::new();
            } else {
                data.extend_from_slice(content);
            }
        }
    }
    Ok(Some(if too_large {
        Data::TooLarge
    } else {
        Data::Complete(data)
    }))
}

/// Parse `FROM:<path> params` / `TO:<path> params` (prefix case-insensitive).
/// Returns the address without angle brackets and the remaining parameters.
fn parse_path<'a>(argument: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let head = argument.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = argument[prefix.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        let address = inner[..end].trim();
        // Drop a source route (`@a,@b:user@host`), which RFC 5321 says to ignore.
        let address = match address.strip_prefix('@') {
            Some(route) => route
                .split_once(':')
                .map_or(address, |(_, mailbox)| mailbox),
            None => address,
        };
        Some((address.to_string(), inner[end + 1..].trim()))
    } else {
        // Be lenient with clients that omit the angle brackets.
        let (address, params) = rest.split_once(' ').unwrap_or((rest, ""));
        if address.is_empty() {
            return None;
        }
        Some((address.to_string(), params.trim()))
    }
}

/// The `SIZE=` parameter of `MAIL FROM`, if present and numeric.
fn declared_size(params: &str) -> Option<usize> {
    params.split_whitespace().find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if key.eq_ignore_ascii_case("SIZE") {
            value.parse().ok()
        } else {
            None
        }
    })
}

/// Read all `*.eml` files from `dir`, sorted by their numeric name.
pub fn read_dir_messages(dir: &Path) -> io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "eml") {
            let data = fs::read(&path)?;
            files.push((path, data));
        }
    }
    files.sort_by_key(|(path, _)| {
        path.file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path("FROM:<a@b.c> SIZE=12", "FROM:"),
            Some(("a@b.c".to_string(), "SIZE=12"))
        );
        assert_eq!(
            parse_path("from: <a@b.c>", "FROM:"),
            Some(("a@b.c".to_string(), ""))
        );
        assert_eq!(parse_path("FROM:<>", "FROM:"), Some((String::new(), "")));
        assert_eq!(
            parse_path("TO:<@relay.example:x@y.z>", "TO:"),
            Some(("x@y.z".to_string(), ""))
        );
        assert_eq!(
            parse_path("TO:x@y.z", "TO:"),
            Some(("x@y.z".to_string(), ""))
        );
        assert_eq!(parse_path("TO:<x@y.z", "TO:"), None);
        assert_eq!(parse_path("FROM:<a@b>", "TO:"), None);
        assert_eq!(parse_path("", "TO:"), None);
        assert_eq!(parse_path("TO:", "TO:"), None);
    }

    #[test]
    fn reads_size_parameter() {
        assert_eq!(declared_size("BODY=8BITMIME SIZE=42"), Some(42));
        assert_eq!(declared_size("size=7"), Some(7));
        assert_eq!(declared_size("SIZE=x"), None);
        assert_eq!(declared_size(""), None);
    }

    #[test]
    fn limits_line_length() {
        let mut reader = io::Cursor::new(b"short\r\nthis line is too long\r\nok\n".to_vec());
        let mut buf = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut buf, 10).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"short\r\n");
        assert!(matches!(
            read_line(&mut reader, &mut buf, 10).unwrap(),
            Line::TooLong
        ));
        assert!(matches!(
            read_line(&mut reader, &mut buf, 10).unwrap(),
            Line::Complete
        ));
        assert_eq!(buf, b"ok\n");
        assert!(matches!(
            read_line(&mut reader, &mut buf, 10).unwrap(),
            Line::Eof
        ));
    }

    #[test]
    fn message_headers_and_body() {
        let message = Message {
            id: 1,
            from: "a@b".into(),
            recipients: vec!["c@d".into()],
            data: b"From: a@b\r\nSubject: Hello\r\n  world\r\nX-Other: 1\r\n\r\nBody line\r\n"
                .to_vec(),
        };
        assert_eq!(message.subject().as_deref(), Some("Hello world"));
        assert_eq!(message.header("x-other").as_deref(), Some("1"));
        assert_eq!(message.header("missing"), None);
        assert_eq!(message.body(), "Body line\r\n");
    }
}
