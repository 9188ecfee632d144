//! The SMTP side: one thread per connection speaking `EHLO`/`HELO`, `MAIL FROM`,
//! `RCPT TO`, `DATA`, `RSET`, `NOOP`, `QUIT` and any `AUTH PLAIN`/`AUTH LOGIN`
//! credentials. Command lines are capped at [`MAX_COMMAND_LINE`] bytes, messages at
//! `Options::max_message_size` (refused with `552`), recipients at [`MAX_RECIPIENTS`].
//!
//! A message is stored before its `250` reply is sent, so a client that has read the reply
//! finds the message through the API. Chaos rules ([`crate::chaos`]) are consulted at each
//! `RCPT TO` and applied at that command or at the end of `DATA`.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use crate::chaos::{ChaosResponse, Stage};
use crate::{IDLE_TIMEOUT, MAX_COMMAND_LINE, MAX_RECIPIENTS, Shared};

pub(crate) fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
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
    /// The first `data`-stage chaos response taken by a recipient of this transaction.
    at_end_of_data: Option<ChaosResponse>,
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
                        Some((path, _)) => match conn.shared.chaos.next(&path) {
                            None | Some(ChaosResponse::Accept) => {
                                tx.recipients.push(path);
                                conn.reply("250 2.1.5 Ok")?;
                            }
                            Some(ChaosResponse::Reply {
                                stage: Stage::Rcpt,
                                code,
                                text,
                            }) => conn.reply(&format!("{code} {text}"))?,
                            Some(ChaosResponse::Disconnect { stage: Stage::Rcpt }) => {
                                return Ok(());
                            }
                            Some(at_end_of_data) => {
                                tx.recipients.push(path);
                                tx.at_end_of_data.get_or_insert(at_end_of_data);
                                conn.reply("250 2.1.5 Ok")?;
                            }
                        },
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
                    match (data, tx.at_end_of_data) {
                        (Data::Complete(_), Some(ChaosResponse::Disconnect { .. })) => {
                            return Ok(());
                        }
                        (Data::Complete(_), Some(ChaosResponse::Reply { code, text, .. })) => {
                            conn.reply(&format!("{code} {text}"))?;
                        }
                        (Data::Complete(data), None | Some(ChaosResponse::Accept)) => {
                            let from = tx.from.unwrap_or_default();
                            let message = conn.shared.mailbox.store(from, tx.recipients, data);
                            if let Some(callback) = &conn.shared.options.on_message {
                                callback(&message);
                            }
                            conn.reply(&format!("250 2.0.0 Ok: queued as {}", message.id))?;
                        }
                        (Data::TooLarge, _) => {
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
}
