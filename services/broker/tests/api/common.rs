//! What the broker's tests share: the broker on a real socket with its own Redis channel prefix,
//! real websocket clients, a real HTTP server playing the services' callbacks (socketshark's
//! request/response shape), and publishing through Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use broker::config::{Config, ServiceConfig, TicketAuth};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::TestApp;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

pub const REDIS: &str = "redis://127.0.0.1:6379";
/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

pub const ADA: &str = "0193a000-0000-7000-8000-000000000001";
pub const BOB: &str = "0193a000-0000-7000-8000-000000000002";

/// A unique Redis channel prefix, so concurrent tests never see each other's messages.
pub fn unique_prefix() -> String {
    format!("test.{}.", uuid::Uuid::now_v7().simple())
}

pub struct TestBroker {
    pub app: TestApp,
    pub prefix: String,
}

impl TestBroker {
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.app.base_url.replacen("http://", "ws://", 1))
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.ws_url()).await
    }

    pub async fn metrics(&self) -> String {
        self.app.get("/metrics").await.text().await.unwrap()
    }

    /// Waits until `/readyz` answers 200: Redis listens (to the revocation channel too).
    pub async fn ready(&self) {
        testkit::eventually("the broker is ready", WAIT, || async {
            (self.app.get("/readyz").await.status() == 200).then_some(())
        })
        .await;
    }
}

/// A broker on 127.0.0.1 with test-sized timings, its own channel prefix and `configure`'s
/// services.
pub async fn spawn_broker(configure: impl FnOnce(&mut Config)) -> TestBroker {
    spawn_broker_on(REDIS, &unique_prefix(), configure).await
}

pub async fn spawn_broker_on(
    redis: &str,
    prefix: &str,
    configure: impl FnOnce(&mut Config),
) -> TestBroker {
    spawn_broker_with(redis, prefix, |settings| configure(&mut settings.app)).await
}

/// A broker as [`spawn_broker_on`] makes it, then `adjust` on all its settings (kit's `auth`
/// section to trust a real auth service, for instance).
pub async fn spawn_broker_with(
    redis: &str,
    prefix: &str,
    adjust: impl FnOnce(&mut kit::Settings<Config>),
) -> TestBroker {
    let prefix = prefix.to_owned();
    let channel_prefix = prefix.clone();
    let redis = redis.to_owned();
    let app = TestApp::spawn_with::<broker::BrokerService>(move |settings| {
        settings.redis.url = Some(kit::SecretUrl::new(redis));
        // Tokens minted by testkit verify (jwt auth).
        testkit::tokens::trust(settings);
        settings.http.shutdown_grace = Duration::from_secs(3);
        let app = &mut settings.app;
        app.channel_prefix = channel_prefix;
        app.callbacks.timeout = Duration::from_secs(2);
        app.callbacks.tries = 1;
        app.callbacks.wait = Duration::from_millis(50);
        app.redis.reconnect_min_delay = Duration::from_millis(50);
        app.redis.reconnect_max_delay = Duration::from_millis(300);
        app.redis.ping_interval = Duration::from_millis(500);
        app.redis.ping_timeout = Duration::from_millis(500);
        app.redis.connect_timeout = Duration::from_secs(1);
        adjust(settings);
    })
    .await;
    TestBroker { app, prefix }
}

/// socketshark's test services (`empty`, `simple`, `simple_auth`) plus ours.
pub fn basic_services(config: &mut Config) {
    config
        .services
        .insert("empty".into(), ServiceConfig::default());
    config.services.insert(
        "simple".into(),
        ServiceConfig {
            require_authentication: false,
            filter_fields: vec!["session_id".into(), "extra".into()],
            extra_fields: vec!["extra".into()],
            ..ServiceConfig::default()
        },
    );
    config.services.insert(
        "simple_auth".into(),
        ServiceConfig {
            filter_fields: vec!["session_id".into()],
            ..ServiceConfig::default()
        },
    );
}

/// Ticket authentication against `callbacks` (`/ticket`).
pub fn ticket_auth(config: &mut Config, callbacks: &CallbackServer) {
    config.authentication.ticket = Some(TicketAuth {
        validation_url: callbacks.url("ticket"),
        auth_fields: vec!["session_id".into(), "user_id".into(), "roles".into()],
        client: None,
    });
}

/// A websocket client (tungstenite, as the load tool uses).
pub struct Client {
    pub ws: WebSocketStream<TcpStream>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        Self::try_connect(url).await.expect("websocket connects")
    }

    pub async fn try_connect(url: &str) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let address = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_owned();
        let stream = TcpStream::connect(address).await?;
        let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
        Ok(Client { ws })
    }

    pub async fn send(&mut self, event: Value) {
        self.send_text(&event.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send a frame");
    }

    /// The next text frame, as JSON.
    pub async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a frame within 5 s")
                .expect("connection open")
                .expect("frame readable");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("frames are JSON");
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends an event and returns the reply.
    pub async fn request(&mut self, event: Value) -> Value {
        self.send(event).await;
        self.recv().await
    }

    /// Authenticates with `ticket` (the callback server must accept it).
    pub async fn auth(&mut self, ticket: &str) {
        let reply = self
            .request(json!({"event": "auth", "method": "ticket", "ticket": ticket}))
            .await;
        assert_eq!(reply, json!({"event": "auth", "status": "ok"}));
    }

    pub async fn subscribe(&mut self, subscription: &str) {
        let reply = self
            .request(json!({"event": "subscribe", "subscription": subscription}))
            .await;
        assert_eq!(
            reply,
            json!({"event": "subscribe", "subscription": subscription, "status": "ok"})
        );
    }

    /// Reads until the server closes; returns its close frame (None if the connection just
    /// ended).
    pub async fn closed(&mut self) -> Option<CloseFrame> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("closed within 5 s");
            match next {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
            }
        }
    }
}

/// A message as clients receive it.
pub fn message(subscription: &str, data: Value) -> Value {
    json!({"event": "message", "subscription": subscription, "data": data})
}

/// Publishes a raw payload on `<prefix><channel>`, as any socketshark publisher would.
pub async fn publish_raw(prefix: &str, channel: &str, payload: &str) -> usize {
    let client = redis::Client::open(REDIS).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PUBLISH")
        .arg(format!("{prefix}{channel}"))
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// The typed publisher services use.
pub async fn publisher(prefix: &str, service: &str) -> realtime::Publisher {
    realtime::Publisher::connect(&kit::SecretUrl::new(REDIS), service)
        .expect("a Redis URL")
        .with_prefix(prefix)
}

/// One answer of the callback server.
#[derive(Clone)]
pub enum Answer {
    Json(Value),
    Status(u16, Vec<(&'static str, &'static str)>),
    /// Answers `{"status":"ok"}` after this long.
    Slow(Duration),
}

#[derive(Default)]
struct Script {
    /// (name, body, X-Request-Id, Authorization)
    requests: Vec<(String, Value, Option<String>, Option<String>)>,
    answers: HashMap<String, VecDeque<Answer>>,
}

/// A real HTTP server on 127.0.0.1 standing in for the services' callback endpoints
/// (`POST /<name>`): it records each JSON body and answers with the queued answers for that
/// name, then `{"status":"ok"}`.
pub struct CallbackServer {
    base: String,
    script: Arc<Mutex<Script>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl CallbackServer {
    pub async fn start() -> CallbackServer {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new()
            .route("/{name}", axum::routing::post(answer))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .ok();
        });
        CallbackServer {
            base,
            script,
            _stop: stop,
        }
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// Queues answers for `name`, used in order.
    pub fn answer(&self, name: &str, answers: impl IntoIterator<Item = Answer>) {
        self.script
            .lock()
            .unwrap()
            .answers
            .entry(name.to_owned())
            .or_default()
            .extend(answers);
    }

    pub fn ok(&self, name: &str, body: Value) {
        self.answer(name, [Answer::Json(body)]);
    }

    /// The JSON bodies `name` received so far.
    pub fn requests(&self, name: &str) -> Vec<Value> {
        self.script
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(n, _, _, _)| n == name)
            .map(|(_, body, _, _)| body.clone())
            .collect()
    }

    /// The `X-Request-Id` headers `name` received.
    pub fn request_ids(&self, name: &str) -> Vec<Option<String>> {
        self.script
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(n, _, _, _)| n == name)
            .map(|(_, _, id, _)| id.clone())
            .collect()
    }

    /// The `Authorization` headers `name` received.
    pub fn authorizations(&self, name: &str) -> Vec<Option<String>> {
        self.script
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(n, _, _, _)| n == name)
            .map(|(_, _, _, auth)| auth.clone())
            .collect()
    }

    /// Waits until `name` received `count` requests and returns them.
    pub async fn wait_for(&self, name: &str, count: usize) -> Vec<Value> {
        testkit::eventually(&format!("{count} call(s) to /{name}"), WAIT, || async {
            let requests = self.requests(name);
            (requests.len() >= count).then_some(requests)
        })
        .await
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (request_id, authorization) = (header("x-request-id"), header("authorization"));
    let next = {
        let mut script = script.lock().unwrap();
        script
            .requests
            .push((name.clone(), body, request_id, authorization));
        script.answers.get_mut(&name).and_then(VecDeque::pop_front)
    };
    match next {
        None => Json(json!({"status": "ok"})).into_response(),
        Some(Answer::Json(value)) => Json(value).into_response(),
        Some(Answer::Slow(pause)) => {
            tokio::time::sleep(pause).await;
            Json(json!({"status": "ok"})).into_response()
        }
        Some(Answer::Status(code, headers)) => {
            let mut response = StatusCode::from_u16(code).unwrap().into_response();
            for (name, value) in headers {
                response.headers_mut().insert(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            response
        }
    }
}
