//! The HTTP side: Mailpit's v1 API ([`messages`]), scripted recipient failures
//! ([`chaos`]) and the web mailbox ([`ui`]).
//!
//! Served by axum on one dedicated thread running a single-threaded tokio runtime: the
//! handlers only take short locks on the mailbox, and a thread of its own keeps the API
//! answering whatever the embedding program's threads or runtime are doing.
//!
//! Errors are `application/problem+json` (`type`, `title`, `status`, `detail`, `code`,
//! optional `errors` per field) with Mailpit's status codes: 400 for a bad query or body,
//! 404 for an unknown message or part, 422 for a chaos rule that is valid JSON but not a
//! valid rule.

mod chaos;
mod messages;
mod ui;

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::Shared;

pub(crate) type State = Arc<Shared>;

/// The running HTTP server; [`Server::stop`] ends it and waits for its thread.
pub(crate) struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) fn start(listener: TcpListener, shared: State) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("smtp-sink-http".to_string())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(error) => {
                            eprintln!("smtp-sink: cannot serve HTTP on {addr}: {error}");
                            return;
                        }
                    };
                    tokio::select! {
                        served = axum::serve(listener, router(shared)) => {
                            if let Err(error) = served {
                                eprintln!("smtp-sink: HTTP server on {addr} failed: {error}");
                            }
                        }
                        // Stopping drops the runtime and with it every open connection:
                        // nothing a client is waiting for is worth delaying a test's exit.
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

pub(crate) fn router(shared: State) -> Router {
    Router::new()
        .merge(messages::router())
        .merge(chaos::router())
        .merge(ui::router())
        .fallback(|| async { Problem::not_found("no such page") })
        .with_state(shared)
}

/// An RFC 9457 problem response.
#[derive(Debug)]
pub(crate) struct Problem {
    status: StatusCode,
    code: &'static str,
    detail: String,
    errors: BTreeMap<String, Vec<String>>,
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    errors: &'a BTreeMap<String, Vec<String>>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code,
            detail: detail.into(),
            errors: BTreeMap::new(),
        }
    }

    pub(crate) fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub(crate) fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub(crate) fn validation(errors: BTreeMap<String, Vec<String>>) -> Self {
        Problem {
            errors,
            ..Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "the request is not valid; see errors",
            )
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            code: self.code,
            errors: &self.errors,
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            json,
        )
            .into_response()
    }
}
