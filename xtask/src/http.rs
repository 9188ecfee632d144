//! A tiny HTTP/1.1 GET over `std::net::TcpStream`, enough for health probes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Status and raw (not de-chunked) body of a response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub raw_body: Vec<u8>,
}

/// `GET path` with `Connection: close`; every step bounded by `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    request(addr, "GET", path, None, timeout)
}

/// `POST path` with a form-encoded body (`application/x-www-form-urlencoded`).
pub fn post_form(
    addr: SocketAddr,
    path: &str,
    fields: &[(&str, &str)],
    timeout: Duration,
) -> io::Result<Response> {
    let body: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
        .collect();
    let body = body.join("&");
    request(
        addr,
        "POST",
        path,
        Some(("application/x-www-form-urlencoded", body.as_bytes())),
        timeout,
    )
}

fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
    timeout: Duration,
) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xtask\r\nAccept: */*\r\nConnection: close\r\n"
    )
    .into_bytes();
    if let Some((content_type, body)) = body {
        request.extend_from_slice(
            format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        request.extend_from_slice(body);
    } else {
        request.extend_from_slice(b"\r\n");
    }
    // One write: the request goes out in a single segment.
    stream.write_all(&request)?;
    let mut response = Vec::new();
    stream.take(16 * 1024 * 1024).read_to_end(&mut response)?;
    parse(&response)
}

fn parse(response: &[u8]) -> io::Result<Response> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let line_end = response
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| invalid("no HTTP status line"))?;
    let status_line = std::str::from_utf8(&response[..line_end])
        .map_err(|_| invalid("status line is not UTF-8"))?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(invalid("not an HTTP response"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("bad status code"))?;
    let raw_body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|index| response[index + 4..].to_vec())
        .unwrap_or_default();
    Ok(Response { status, raw_body })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_responses() {
        let response =
            parse(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno").unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.raw_body, b"no");
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"SSH-2.0-OpenSSH\r\n").is_err());
    }

    #[test]
    fn talks_to_a_server() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "client closed early");
                request.extend_from_slice(&chunk[..n]);
            }
            assert!(request.starts_with(b"GET /readyz HTTP/1.1\r\n"));
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        });
        let response = get(addr, "/readyz", Duration::from_secs(5)).unwrap();
        assert_eq!(response.status, 200);
        server.join().unwrap();
    }
}
