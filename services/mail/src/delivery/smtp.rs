//! SMTP connections to the relay, kept open and reused. lettre speaks the protocol
//! (`AsyncSmtpConnection`: EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA); the connections are opened
//! here so they can be what lettre's own pool does not make them: `TCP_NODELAY` (lettre writes
//! the end-of-data `.` apart from the body, and with Nagle's algorithm on, that write waits for
//! the relay's delayed ACK: 40 ms per message).
//!
//! `app.smtp.url`: `smtp://[user:password@]host[:port][/hello-name]` plain (port 25),
//! `?tls=required` STARTTLS or fail, `?tls=opportunistic` STARTTLS when offered (port 587), or
//! `smtps://…` TLS from the start (port 465). Credentials are sent with AUTH PLAIN or LOGIN.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Plain,
    /// STARTTLS; `required`: refuse a relay that does not offer it.
    StartTls {
        required: bool,
    },
    /// TLS from the first byte (`smtps`).
    Tls,
}

/// Where and how to connect, read from `app.smtp.url`.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub hello_name: Option<String>,
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, String> {
        let url = url::Url::parse(text).map_err(|err| format!("not a URL: {err}"))?;
        let tls = url
            .query_pairs()
            .find(|(key, _)| key == "tls")
            .map(|(_, value)| value.into_owned());
        let (security, default_port) = match (url.scheme(), tls.as_deref()) {
            ("smtp", None) => (Security::Plain, 25),
            ("smtp", Some("required")) => (Security::StartTls { required: true }, 587),
            ("smtp", Some("opportunistic")) => (Security::StartTls { required: false }, 587),
            ("smtps", None) => (Security::Tls, 465),
            (scheme, tls) => {
                return Err(format!(
                    "use smtp://, smtp://…?tls=required, smtp://…?tls=opportunistic or smtps:// (not {scheme}:// with tls={tls:?})"
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|host| !host.is_empty())
            .ok_or("the URL names no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| "the credentials are not UTF-8 once decoded".to_owned())
        };
        let credentials = match url.password() {
            Some(password) => Some(Credentials::new(decode(url.username())?, decode(password)?)),
            None if !url.username().is_empty() => {
                return Err("a user name without a password".into());
            }
            None => None,
        };
        let hello_name = Some(url.path().trim_matches('/').to_owned()).filter(|p| !p.is_empty());
        Ok(Target {
            port: url.port().unwrap_or(default_port),
            host,
            security,
            hello_name,
            credentials,
        })
    }
}

/// Why a send did not get an answer from the relay.
#[derive(Debug)]
pub enum SendError {
    /// The relay answered with a refusal, or the conversation broke off.
    Smtp(lettre::transport::smtp::Error),
    /// No connection (refused, unreachable, TLS handshake failed).
    Connect(String),
    /// No answer within `app.smtp.timeout`.
    Timeout,
}

/// Connections to the relay: opened as needed, reused while they work, closed after
/// `idle_timeout` unused. How many are in use at once is the caller's to bound.
pub struct SmtpClient {
    target: Target,
    hello: ClientId,
    timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl SmtpClient {
    pub fn new(
        target: Target,
        hello_name: &str,
        timeout: Duration,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> anyhow::Result<SmtpClient> {
        let tls = match target.security {
            Security::Tls => {
                use rustls_platform_verifier::ConfigVerifierExt;
                let config = rustls::ClientConfig::with_platform_verifier()
                    .map_err(|err| anyhow::anyhow!("TLS for app.smtp.url: {err}"))?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
            _ => None,
        };
        let hello = ClientId::Domain(
            target
                .hello_name
                .clone()
                .unwrap_or_else(|| hello_name.to_owned()),
        );
        Ok(SmtpClient {
            target,
            hello,
            timeout,
            idle_timeout,
            max_idle,
            idle: Mutex::new(Vec::new()),
            tls,
        })
    }

    /// Sends one message (its envelope from its headers) over a reused or new connection.
    pub async fn send(&self, message: &lettre::Message) -> Result<Response, SendError> {
        let mut connection = self.connection().await?;
        let body = message.formatted();
        match tokio::time::timeout(self.timeout, connection.send(message.envelope(), &body)).await {
            Ok(Ok(response)) => {
                self.put_back(connection);
                Ok(response)
            }
            // lettre has quit the connection after a refusal; it is dropped here.
            Ok(Err(err)) => Err(SendError::Smtp(err)),
            Err(_) => Err(SendError::Timeout),
        }
    }

    /// Whether the relay answers (`NOOP` on a reused or new connection).
    pub async fn check(&self) -> Result<(), String> {
        let mut connection = self.connection().await.map_err(|err| match err {
            SendError::Connect(why) => why,
            SendError::Timeout => "no answer in time".to_owned(),
            SendError::Smtp(err) => err.to_string(),
        })?;
        match tokio::time::timeout(self.timeout, connection.test_connected()).await {
            Ok(true) => {
                self.put_back(connection);
                Ok(())
            }
            Ok(false) => Err("the relay did not answer NOOP".into()),
            Err(_) => Err("no answer to NOOP in time".into()),
        }
    }

    async fn connection(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let reused = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.pop()
            };
            match reused {
                Some((connection, since))
                    if since.elapsed() < self.idle_timeout && !connection.has_broken() =>
                {
                    return Ok(connection);
                }
                // Too old or broken: dropped (closing the socket), try the next one.
                Some(_) => continue,
                None => break,
            }
        }
        match tokio::time::timeout(self.timeout, self.connect()).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Timeout),
        }
    }

    fn put_back(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push((connection, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let target = &self.target;
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|err| {
                SendError::Connect(format!(
                    "cannot connect to {}:{}: {err}",
                    target.host, target.port
                ))
            })?;
        tcp.set_nodelay(true)
            .map_err(|err| SendError::Connect(format!("TCP_NODELAY: {err}")))?;
        let peer = tcp
            .peer_addr()
            .map_err(|err| SendError::Connect(err.to_string()))?;
        let stream: Box<dyn AsyncTokioStream> = match &self.tls {
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                    .map_err(|err| SendError::Connect(format!("{}: {err}", target.host)))?;
                let tls = connector.connect(name, tcp).await.map_err(|err| {
                    SendError::Connect(format!("TLS with {}: {err}", target.host))
                })?;
                Box::new(TlsStream { inner: tls, peer })
            }
            None => Box::new(tcp),
        };
        let mut connection = AsyncSmtpConnection::connect_with_transport(stream, &self.hello)
            .await
            .map_err(SendError::Smtp)?;
        if let Security::StartTls { required } = target.security {
            if connection.can_starttls() {
                let parameters =
                    TlsParameters::new(target.host.clone()).map_err(SendError::Smtp)?;
                connection
                    .starttls(parameters, &self.hello)
                    .await
                    .map_err(SendError::Smtp)?;
            } else if required {
                connection.abort().await;
                return Err(SendError::Connect(format!(
                    "{} does not offer STARTTLS (tls=required)",
                    target.host
                )));
            }
        }
        if let Some(credentials) = &target.credentials {
            connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
                .map_err(SendError::Smtp)?;
        }
        Ok(connection)
    }
}

/// A TLS stream as lettre takes one (it asks for the peer's address).
#[derive(Debug)]
struct TlsStream {
    inner: tokio_rustls::client::TlsStream<TcpStream>,
    peer: SocketAddr,
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_security_port_and_credentials() {
        let plain = Target::parse("smtp://127.0.0.1:1025").unwrap();
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.security),
            ("127.0.0.1", 1025, Security::Plain)
        );
        let starttls =
            Target::parse("smtp://mailer:p%40ss@relay.example.com?tls=required").unwrap();
        assert_eq!(starttls.port, 587);
        assert_eq!(starttls.security, Security::StartTls { required: true });
        assert!(starttls.credentials.is_some());
        assert!(!format!("{starttls:?}").contains("p@ss"));
        let tls = Target::parse("smtps://relay.example.com/mx.hatchery.test").unwrap();
        assert_eq!((tls.port, tls.security), (465, Security::Tls));
        assert_eq!(tls.hello_name.as_deref(), Some("mx.hatchery.test"));
        for bad in [
            "http://relay",
            "smtp://relay?tls=sometimes",
            "smtps://relay?tls=required",
            "smtp://user@relay",
            "smtp://",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
