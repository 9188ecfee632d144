//! A fault-injecting TCP proxy: point one client at [`FaultProxy::addr`] instead of the real
//! server (RabbitMQ, Postgres, Redis) and take the server "down" for that client alone, without
//! touching the shared server.
//!
//! ```ignore
//! let proxy = FaultProxy::start("127.0.0.1:5672").await;
//! // client connects to proxy.addr()
//! proxy.refuse(true);  // new connections are reset
//! proxy.cut_all();     // existing connections are reset
//! proxy.refuse(false); // back up
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Shared {
    upstream: String,
    refusing: AtomicBool,
    accepted: AtomicU64,
    /// Bumped by `cut_all`: connections of an older generation close.
    generation: watch::Sender<u64>,
    /// While `true`, no bytes are forwarded (connections stay open, as with a stalled peer).
    paused: watch::Sender<bool>,
}

/// A TCP proxy on 127.0.0.1 forwarding to one upstream address; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free local port and forwards every connection to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: impl Into<String>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port for the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream: upstream.into(),
            refusing: AtomicBool::new(false),
            accepted: AtomicU64::new(0),
            generation: watch::channel(0).0,
            paused: watch::channel(false).0,
        });
        let accept_task = tokio::spawn(accept(listener, shared.clone()));
        FaultProxy {
            addr,
            shared,
            accept_task,
        }
    }

    /// Where clients connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `url` with its `host:port` replaced by the proxy's (e.g. an `amqp://` or
    /// `postgres://` URL of the upstream).
    pub fn url(&self, url: &str) -> String {
        url.replacen(&self.shared.upstream, &self.addr.to_string(), 1)
    }

    /// Resets every open connection (both sides see a connection reset).
    pub fn cut_all(&self) {
        self.shared.generation.send_modify(|g| *g += 1);
    }

    /// While `true`, new connections are accepted and reset at once, as if the server were
    /// down; existing ones are untouched (combine with [`Self::cut_all`]).
    pub fn refuse(&self, refuse: bool) {
        self.shared.refusing.store(refuse, Ordering::SeqCst);
    }

    /// While `true`, connections stay open but carry no bytes (a stalled network).
    pub fn pause(&self, pause: bool) {
        self.shared.paused.send_replace(pause);
    }

    /// Connections forwarded so far (refused ones not counted).
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut_all();
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if shared.refusing.load(Ordering::SeqCst) {
            reset(client);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(&shared.upstream).await else {
                reset(client);
                return;
            };
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            forward(client, server, &shared).await;
        });
    }
}

/// Closes with RST rather than FIN, so the peer sees an error, not a clean end.
fn reset(stream: TcpStream) {
    // SO_LINGER 0: close sends RST (and, unlike other linger values, never blocks).
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn forward(mut client: TcpStream, mut server: TcpStream, shared: &Shared) {
    let mut generation = shared.generation.subscribe();
    let born = *generation.borrow_and_update();
    let cut = async {
        loop {
            if generation.changed().await.is_err() || *generation.borrow() != born {
                return;
            }
        }
    };
    let was_cut = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let upstream = pipe(client_read, server_write, shared.paused.subscribe());
        let downstream = pipe(server_read, client_write, shared.paused.subscribe());
        tokio::select! {
            () = cut => true,
            _ = async { tokio::join!(upstream, downstream) } => false,
        }
    };
    if was_cut {
        reset(client);
        reset(server);
    }
}

/// Copies `from` to `to` until EOF or error, holding bytes while paused, then half-closes `to`.
async fn pipe(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut paused: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An echo server on a local port.
    async fn echo() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    async fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text).await?;
        let mut buffer = vec![0u8; text.len()];
        tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut buffer))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        Ok(buffer)
    }

    #[tokio::test]
    async fn forwards_cuts_refuses_and_pauses() {
        let upstream = echo().await;
        let proxy = FaultProxy::start(upstream.clone()).await;
        assert_eq!(
            proxy.url(&format!("redis://{upstream}/0")),
            format!("redis://{}/0", proxy.addr())
        );
        let mut client = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut client, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.connections(), 1);

        proxy.cut_all();
        assert!(
            round_trip(&mut client, b"again").await.is_err(),
            "a cut connection fails"
        );

        proxy.refuse(true);
        let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            round_trip(&mut refused, b"x").await.is_err(),
            "refused while down"
        );
        proxy.refuse(false);
        let mut back = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut back, b"up").await.unwrap(), b"up");

        proxy.pause(true);
        back.write_all(b"held").await.unwrap();
        let mut buffer = [0u8; 4];
        let stalled =
            tokio::time::timeout(Duration::from_millis(200), back.read_exact(&mut buffer)).await;
        assert!(stalled.is_err(), "nothing flows while paused");
        proxy.pause(false);
        tokio::time::timeout(Duration::from_secs(2), back.read_exact(&mut buffer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buffer, b"held");
    }
}
