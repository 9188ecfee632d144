//! Bounds: the number of messages kept in memory.

use reqwest::StatusCode;
use smtp_sink::Options;

use crate::support::{Api, problem, send, simple, start_with};

#[tokio::test]
async fn only_the_newest_max_messages_are_kept() {
    let sink = start_with(Options {
        max_messages: 2,
        ..Options::default()
    });
    let api = Api::of(&sink);
    for n in 1..=3 {
        send(
            &sink,
            "a@example.com",
            &["b@example.com"],
            &simple("a@example.com", "b@example.com", &format!("n{n}"), "x"),
        );
    }
    let page = api.json("/api/v1/messages", StatusCode::OK).await;
    assert_eq!(page["total"], 2);
    let subjects: Vec<&str> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, vec!["n3", "n2"]);
    let kept: Vec<usize> = sink.messages().iter().map(|m| m.id).collect();
    assert_eq!(kept, vec![2, 3]);
    problem(api.get("/api/v1/message/1").await, StatusCode::NOT_FOUND).await;
}

#[test]
fn http_can_be_turned_off() {
    let sink = start_with(Options {
        http: None,
        ..Options::default()
    });
    assert_eq!(sink.http_addr(), None);
    assert_eq!(sink.http_url(), None);
}

#[test]
fn a_busy_http_port_is_reported_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let error = smtp_sink::Sink::start_with(
        "127.0.0.1:0",
        Options {
            http: Some(taken.local_addr().unwrap().to_string()),
            ..Options::default()
        },
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("cannot listen for HTTP"),
        "{error}"
    );
}
