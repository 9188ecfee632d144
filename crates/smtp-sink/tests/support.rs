//! What every test module uses: a plain SMTP client over TCP and a JSON client for the
//! sink's HTTP API.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use smtp_sink::{Options, Sink};

/// A sink with default options (SMTP and HTTP on free ports).
pub fn start() -> Sink {
    Sink::start("127.0.0.1:0").expect("start sink")
}

pub fn start_with(options: Options) -> Sink {
    Sink::start_with("127.0.0.1:0", options).expect("start sink")
}

/// One SMTP connection, driven a command at a time.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(sink: &Sink) -> Client {
        Client::connect_to(sink.addr())
    }

    pub fn connect_to(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to sink");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut client = Client {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = client.read_reply();
        assert!(greeting.starts_with("220 "), "greeting: {greeting:?}");
        client
    }

    /// A full (possibly multi-line) reply joined by `\n`, or `None` if the server closed
    /// the connection before replying.
    pub fn try_read_reply(&mut self) -> Option<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let read = self.reader.read_line(&mut line).expect("read reply");
            if read == 0 {
                assert!(lines.is_empty(), "connection closed mid-reply: {lines:?}");
                return None;
            }
            assert!(
                line.ends_with("\r\n"),
                "reply line not CRLF-terminated: {line:?}"
            );
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return Some(lines.join("\n"));
            }
        }
    }

    pub fn read_reply(&mut self) -> String {
        self.try_read_reply()
            .expect("the server closed the connection instead of replying")
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Send one command line and return the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    pub fn expect(&mut self, line: &str, code: &str) -> String {
        let reply = self.cmd(line);
        assert!(
            reply.starts_with(code),
            "{line:?} answered {reply:?}, expected {code}"
        );
        reply
    }

    /// Send message content after a `354` (dot-stuffing it) and the final `.`.
    pub fn send_data(&mut self, content: &str) {
        let mut wire = String::new();
        for line in content.split_inclusive('\n') {
            if line.starts_with('.') {
                wire.push('.');
            }
            wire.push_str(line);
        }
        if !wire.ends_with('\n') {
            wire.push_str("\r\n");
        }
        wire.push_str(".\r\n");
        self.send_raw(wire.as_bytes());
    }

    /// `MAIL FROM`, then one `RCPT TO` per recipient (returning each reply), then `DATA`
    /// with `content` if any recipient was accepted. The last element is the reply to the
    /// end of `DATA`, `None` if the server hung up instead.
    pub fn transaction(
        &mut self,
        from: &str,
        recipients: &[&str],
        content: &str,
    ) -> (Vec<String>, Option<String>) {
        self.expect(&format!("MAIL FROM:<{from}>"), "250");
        let replies: Vec<String> = recipients
            .iter()
            .map(|to| self.cmd(&format!("RCPT TO:<{to}>")))
            .collect();
        if !replies.iter().any(|reply| reply.starts_with("250")) {
            self.expect("RSET", "250");
            return (replies, None);
        }
        self.expect("DATA", "354");
        self.send_data(content);
        (replies, self.try_read_reply())
    }
}

/// Send one message on a fresh connection; panics unless it is accepted.
pub fn send(sink: &Sink, from: &str, recipients: &[&str], content: &str) {
    let mut client = Client::connect(sink);
    client.expect("EHLO client.example", "250");
    let (replies, end) = client.transaction(from, recipients, content);
    assert!(
        replies.iter().all(|reply| reply.starts_with("250")),
        "RCPT replies: {replies:?}"
    );
    let end = end.expect("reply to the end of DATA");
    assert!(end.starts_with("250 "), "end of DATA answered {end:?}");
    client.expect("QUIT", "221");
}

/// A minimal message.
pub fn simple(from: &str, to: &str, subject: &str, body: &str) -> String {
    format!("From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{body}\r\n")
}

/// The sink's HTTP API.
pub struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    pub fn of(sink: &Sink) -> Api {
        Api {
            client: reqwest::Client::new(),
            base: sink.http_url().expect("the sink serves HTTP"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    /// GET a JSON body, asserting the status.
    pub async fn json(&self, path: &str, status: StatusCode) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), status, "GET {path}");
        response.json().await.expect("JSON body")
    }

    pub async fn text(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.text().await.expect("text body")
    }

    pub async fn delete(&self, path: &str, body: Option<&str>) -> reqwest::Response {
        let mut request = self.client.delete(self.url(path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        request.send().await.expect("DELETE")
    }

    pub async fn put(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .json(body)
            .send()
            .await
            .expect("PUT")
    }

    pub async fn put_raw(&self, path: &str, body: &str) -> reqwest::Response {
        self.client
            .put(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("PUT")
    }

    /// The `ID`s of a list or search page, in the order given.
    pub async fn ids(&self, path: &str) -> Vec<String> {
        ids(&self.json(path, StatusCode::OK).await)
    }
}

pub fn ids(page: &Value) -> Vec<String> {
    page["messages"]
        .as_array()
        .expect("messages array")
        .iter()
        .map(|message| message["ID"].as_str().expect("ID").to_string())
        .collect()
}

/// A problem+json response with `status`; its body.
pub async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status.as_u16());
    body
}
