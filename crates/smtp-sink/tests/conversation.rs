//! Real SMTP conversations over TCP: the protocol itself, no API.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use smtp_sink::{Options, Sink};

use crate::support::{Client, start};

#[test]
fn delivers_dot_stuffed_message_with_all_recipients() {
    let dir = std::env::temp_dir().join(format!("smtp-sink-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sink = Sink::start_with_dir("127.0.0.1:0", &dir).unwrap();
    let mut client = Client::connect(&sink);
    let ehlo = client.expect("EHLO client.example", "250");
    assert!(ehlo.contains("SIZE"), "EHLO should advertise SIZE: {ehlo}");
    client.expect("MAIL FROM:<sender@example.com> SIZE=200", "250");
    client.expect("RCPT TO:<one@example.com>", "250");
    client.expect("RCPT TO:<two@example.com>", "250");
    client.expect("DATA", "354");
    client.send_raw(
        b"From: sender@example.com\r\n\
          Subject: Dots\r\n\
          \r\n\
          first line\r\n\
          ..leading dot\r\n\
          ...\r\n\
          ..\r\n\
          last line\r\n\
          .\r\n",
    );
    let queued = client.read_reply();
    assert!(queued.starts_with("250 "), "after DATA: {queued}");
    client.expect("QUIT", "221");

    let messages = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1);
    let message = &messages[0];
    assert_eq!(message.id, 1);
    assert_eq!(message.from, "sender@example.com");
    assert_eq!(
        message.recipients,
        vec!["one@example.com".to_string(), "two@example.com".to_string()]
    );
    assert_eq!(
        message.text(),
        "From: sender@example.com\r\nSubject: Dots\r\n\r\nfirst line\r\n.leading dot\r\n..\r\n.\r\nlast line\r\n"
    );
    assert_eq!(message.subject().as_deref(), Some("Dots"));
    assert_eq!(std::fs::read(dir.join("1.eml")).unwrap(), message.data);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn several_messages_on_one_connection_and_rset() {
    let sink = start();
    let mut client = Client::connect(&sink);
    client.expect("HELO client", "250");
    for n in 1..=2 {
        client.expect(&format!("MAIL FROM:<s{n}@example.com>"), "250");
        client.expect(&format!("RCPT TO:<r{n}@example.com>"), "250");
        client.expect("DATA", "354");
        client.send_raw(format!("Subject: {n}\r\n\r\nbody {n}\r\n.\r\n").as_bytes());
        assert!(client.read_reply().starts_with("250"));
    }
    // An abandoned transaction is not delivered.
    client.expect("MAIL FROM:<dropped@example.com>", "250");
    client.expect("RCPT TO:<nobody@example.com>", "250");
    client.expect("RSET", "250");
    client.expect("RCPT TO:<nobody@example.com>", "503");
    client.expect("NOOP", "250");
    client.expect("QUIT", "221");

    let messages = sink.wait_for(2, Duration::from_secs(5));
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].from, "s2@example.com");
    assert_eq!(messages[1].body(), "body 2\r\n");
    // Nothing else shows up.
    assert_eq!(sink.wait_for(3, Duration::from_millis(200)).len(), 2);
}

#[test]
fn oversized_message_is_rejected_and_connection_stays_usable() {
    let options = Options {
        max_message_size: 1024,
        ..Options::default()
    };
    let sink = Sink::start_with("127.0.0.1:0", options).unwrap();
    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    // Declared too large up front.
    client.expect("MAIL FROM:<big@example.com> SIZE=4096", "552");
    // Undeclared, but too large once sent.
    client.expect("MAIL FROM:<big@example.com>", "250");
    client.expect("RCPT TO:<r@example.com>", "250");
    client.expect("DATA", "354");
    let line = "x".repeat(100);
    for _ in 0..50 {
        client.send_raw(format!("{line}\r\n").as_bytes());
    }
    // One single line longer than the whole budget as well.
    client.send_raw(format!("{}\r\n.\r\n", "y".repeat(5000)).as_bytes());
    let reply = client.read_reply();
    assert!(
        reply.starts_with("552"),
        "oversized DATA answered {reply:?}"
    );

    // The transaction was reset; a small message still goes through.
    client.expect("MAIL FROM:<small@example.com>", "250");
    client.expect("RCPT TO:<r@example.com>", "250");
    client.expect("DATA", "354");
    client.send_raw(b"Subject: small\r\n\r\nok\r\n.\r\n");
    assert!(client.read_reply().starts_with("250"));
    client.expect("QUIT", "221");

    let messages = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].from, "small@example.com");
}

#[test]
fn garbage_is_answered_and_connection_still_usable() {
    let sink = start();
    let mut client = Client::connect(&sink);
    client.expect("HELLO THERE", "500");
    client.expect("", "500");
    client.expect("VRFY someone", "502");
    client.expect(&"Z".repeat(5000), "500");
    client.send_raw(b"\xff\xfe\x00garbage\r\n");
    assert!(client.read_reply().starts_with("500"));
    // Commands out of order.
    client.expect("MAIL FROM:<a@example.com>", "503");
    client.expect("EHLO", "501");
    client.expect("EHLO client", "250");
    client.expect("RCPT TO:<r@example.com>", "503");
    client.expect("DATA", "503");
    client.expect("MAIL FROM:a@example.com", "250");
    client.expect("MAIL FROM:<again@example.com>", "503");
    client.expect("RCPT TO:<>", "501");
    client.expect("RCPT TO:<r@example.com>", "250");
    client.expect("DATA extra", "501");
    client.expect("DATA", "354");
    client.send_raw(b"Subject: after garbage\r\n\r\nstill works\r\n.\r\n");
    assert!(client.read_reply().starts_with("250"));
    client.expect("QUIT", "221");

    let messages = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].from, "a@example.com");
    assert_eq!(messages[0].subject().as_deref(), Some("after garbage"));
}

#[test]
fn auth_accepts_anything() {
    let sink = start();
    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    client.expect("AUTH PLAIN AHVzZXIAcGFzcw==", "235");
    let mut client = Client::connect(&sink);
    client.expect("EHLO client", "250");
    client.expect("AUTH LOGIN", "334");
    client.expect("dXNlcg==", "334");
    client.expect("cGFzcw==", "235");
    client.expect("AUTH CRAM-MD5", "504");
}

#[test]
fn concurrent_connections_and_bare_lf_clients() {
    let sink = start();
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let addr = sink.addr();
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                // Pipelined, LF-only client: write everything, then read replies.
                let script = format!(
                    "EHLO c{n}\nMAIL FROM:<c{n}@example.com>\nRCPT TO:<r@example.com>\nDATA\n\
                     Subject: {n}\n\nhello\n.\nQUIT\n"
                );
                stream.write_all(script.as_bytes()).unwrap();
                let mut all = String::new();
                let mut reader = BufReader::new(stream);
                while reader.read_line(&mut all).unwrap() > 0 {}
                assert!(all.contains("221 "), "client {n} transcript: {all}");
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let messages = sink.wait_for(4, Duration::from_secs(5));
    assert_eq!(messages.len(), 4);
    let mut ids: Vec<usize> = messages.iter().map(|m| m.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert!(messages.iter().all(|m| m.body() == "hello\n"));
}

#[test]
fn wait_for_returns_at_deadline() {
    let sink = start();
    let started = std::time::Instant::now();
    assert!(sink.wait_for(1, Duration::from_millis(100)).is_empty());
    assert!(started.elapsed() >= Duration::from_millis(100));
}
