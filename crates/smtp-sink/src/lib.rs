//! A real SMTP server that keeps every message, for development and tests: what Mailpit
//! is in docker-compose, built into the workspace.
//!
//! - **SMTP** (`EHLO`, `MAIL`, `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`, any `AUTH PLAIN` /
//!   `AUTH LOGIN`): every message is accepted and stored before its `250` reply is sent.
//! - **HTTP**: Mailpit's v1 JSON API (`/api/v1/messages`, `/api/v1/message/{ID}`,
//!   `.../raw`, `.../headers`, `.../part/{PartID}`, `/api/v1/search`, `/view/{ID}.html`,
//!   `/view/{ID}.txt`), scripted per-recipient failures (`/api/v1/chaos/recipients`, see
//!   [`chaos`]) and a web mailbox at `/`. The crate's README documents every shape.
//! - **Storage**: in memory, newest [`Options::max_messages`] kept; optionally also written
//!   to `<dir>/<id>.eml`.
//!
//! `cargo xtask up` runs the `smtp-sink` binary on 127.0.0.1:1025 (SMTP) and
//! 127.0.0.1:8025 (HTTP). Tests start their own sink in-process on port 0:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let sink = smtp_sink::Sink::start("127.0.0.1:0").unwrap();
//! let smtp_url = format!("smtp://{}", sink.addr());
//! let mailbox = sink.http_url().expect("HTTP is on by default");
//! // ... point the code under test at `smtp_url`, make it send a mail, then read it back
//! // in process or from `{mailbox}/api/v1/messages` ...
//! let messages = sink.wait_for(1, Duration::from_secs(5));
//! assert_eq!(messages[0].subject().as_deref(), Some("Welcome"));
//! ```
//!
//! The sink runs on threads of its own (one per SMTP connection, one for HTTP with its own
//! single-threaded tokio runtime), so it behaves the same under any test harness or async
//! runtime, including a blocked one.

pub mod chaos;
mod http;
mod mime;
mod search;
mod smtp;
mod store;
mod time;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub use chaos::{ChaosError, ChaosResponse, ChaosRule, Stage};
pub use store::{Message, read_dir_messages};

/// Default cap on the size of one message (after dot-unstuffing): 10 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 10 * 1024 * 1024;
/// Default number of messages kept in memory (Mailpit's default too).
pub const DEFAULT_MAX_MESSAGES: usize = 500;
/// Longest accepted command line, including its line ending.
pub const MAX_COMMAND_LINE: usize = 1000;
/// Most recipients accepted for one message.
pub const MAX_RECIPIENTS: usize = 1000;
/// A connection that sends nothing for this long is closed with `421`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Callback invoked for every accepted message.
pub type OnMessage = Arc<dyn Fn(&Message) + Send + Sync>;

/// How a [`Sink`] behaves.
#[derive(Clone)]
pub struct Options {
    /// Also write every message to `<dir>/<id>.eml` (the directory is created).
    pub dir: Option<PathBuf>,
    /// Messages larger than this are refused with `552`.
    pub max_message_size: usize,
    /// Keep at most this many messages in memory; the oldest is dropped first.
    pub max_messages: usize,
    /// Where to serve the HTTP API and web mailbox (`127.0.0.1:0` by default: any free
    /// port, see [`Sink::http_addr`]); `None` serves no HTTP.
    pub http: Option<String>,
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
            max_messages: DEFAULT_MAX_MESSAGES,
            http: Some("127.0.0.1:0".to_string()),
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
            .field("max_messages", &self.max_messages)
            .field("http", &self.http)
            .field("hostname", &self.hostname)
            .field("on_message", &self.on_message.is_some())
            .finish()
    }
}

/// What the SMTP connections and the HTTP API share.
pub(crate) struct Shared {
    pub(crate) mailbox: store::Mailbox,
    pub(crate) chaos: chaos::Chaos,
    pub(crate) stopping: AtomicBool,
    pub(crate) options: Options,
}

/// A running sink. Dropping it stops accepting SMTP connections and stops the HTTP server.
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    http: Option<http::Server>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("addr", &self.addr)
            .field("http_addr", &self.http_addr())
            .finish()
    }
}

impl Sink {
    /// Listen for SMTP on `addr` (e.g. `127.0.0.1:1025`, or `127.0.0.1:0` for any free
    /// port) and for HTTP on any free port of 127.0.0.1.
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

    /// Listen for SMTP on `addr` with explicit [`Options`]. Both listeners are bound
    /// before this returns, so a port in use is reported here.
    pub fn start_with(addr: &str, options: Options) -> io::Result<Sink> {
        let mailbox = store::Mailbox::open(options.max_messages, options.dir.clone())?;
        let http_listener = match &options.http {
            Some(http_addr) => Some(TcpListener::bind(http_addr).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot listen for HTTP on {http_addr}: {error}"),
                )
            })?),
            None => None,
        };
        let listener = TcpListener::bind(addr).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("cannot listen for SMTP on {addr}: {error}"),
            )
        })?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mailbox,
            chaos: chaos::Chaos::default(),
            stopping: AtomicBool::new(false),
            options,
        });
        let http = match http_listener {
            Some(listener) => Some(http::Server::start(listener, Arc::clone(&shared))?),
            None => None,
        };
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("smtp-sink-accept".to_string())
                .spawn(move || smtp::accept_loop(&listener, &shared))?
        };
        Ok(Sink {
            addr,
            shared,
            acceptor: Some(acceptor),
            http,
        })
    }

    /// The SMTP address actually listened on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP address actually listened on, unless HTTP is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(http::Server::addr)
    }

    /// `http://<http_addr>`: the web mailbox, and the base of the API.
    pub fn http_url(&self) -> Option<String> {
        self.http_addr()
            .map(|addr| format!("http://{}", connectable(addr)))
    }

    /// All messages kept, oldest first.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.mailbox.messages()
    }

    /// Wait until at least `count` messages are kept or `timeout` has passed, then
    /// return all messages kept (possibly fewer than `count` if the deadline passed).
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Message> {
        self.shared.mailbox.wait_for(count, timeout)
    }

    /// Forget all messages received so far (ids keep increasing).
    pub fn clear(&self) {
        self.shared.mailbox.clear();
    }

    /// Script the next deliveries to `email` (see [`chaos`]); replaces an earlier rule.
    pub fn set_recipient_chaos(
        &self,
        email: &str,
        responses: Vec<ChaosResponse>,
    ) -> Result<ChaosRule, ChaosError> {
        self.shared.chaos.set(email, responses)
    }

    /// The rules in force, by address.
    pub fn chaos_rules(&self) -> Vec<ChaosRule> {
        self.shared.chaos.list()
    }

    /// Remove every chaos rule.
    pub fn clear_chaos(&self) {
        self.shared.chaos.clear();
    }

    /// Block the calling thread for as long as the sink runs (forever, unless
    /// accepting fails).
    pub fn run(mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// `addr` with an unspecified IP (`0.0.0.0`, `::`) replaced by loopback.
fn connectable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(http) = self.http.take() {
            http.stop();
        }
        if let Some(acceptor) = self.acceptor.take() {
            // Wake the blocking accept() with a connection of our own.
            if TcpStream::connect_timeout(&connectable(self.addr), Duration::from_secs(1)).is_ok() {
                let _ = acceptor.join();
            }
        }
    }
}
