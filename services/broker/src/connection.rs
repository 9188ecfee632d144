//! One websocket connection: reads client frames, writes what the delivery threads could not
//! write at once (and replies, pings), pings the client, and runs the session's events one at a
//! time beside that (so a slow callback never stops deliveries or pong handling). On SIGTERM it
//! sends a close frame (1001) so the client reconnects to another process.
//!
//! [`Connection`] waits on every event source at once (the socket itself lives in the
//! connection's [`Outbound`], where delivery threads write to it); each source has its
//! own small method (`on_client_frame`, `write_queued`, `on_tick`, `start_next_event` for the
//! session's events: notices about its token, client frames, timers), and `finish` says goodbye
//! and unsubscribes everything.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use tokio::time::{Instant, Sleep, sleep_until, timeout};

use crate::Broker;
use crate::logins::SessionNotice;
use crate::outbound::{Closing, Outbound};
use crate::protocol::close;
use crate::session::Session;

/// How long a close frame may take to go out before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Closed, reset or errored by the client.
    ClientGone,
    /// A frame over the size limit.
    TooBig,
    /// The outgoing queue overflowed (or a write made no progress).
    SlowClient,
    /// No pong in time.
    PingTimeout,
    /// The process is shutting down.
    Shutdown,
}

impl End {
    /// The close frame sent for this ending, if any (a slow client's socket is full, a gone
    /// client cannot read it).
    fn goodbye(self) -> Option<(u16, &'static str)> {
        match self {
            End::Shutdown => Some((close::GOING_AWAY, "server shutting down")),
            End::TooBig => Some((close::TOO_BIG, "frame too large")),
            End::PingTimeout => Some((close::POLICY, "ping timeout")),
            End::SlowClient | End::ClientGone => None,
        }
    }
}

type Running = Pin<Box<dyn Future<Output = Box<Session>> + Send>>;

/// The session waits for its next event, or runs one (it is moved into the running future and
/// comes back when the event is done).
enum SessionTask {
    Idle(Box<Session>),
    Busy(Running),
}

impl SessionTask {
    /// Completes when the running event is done; never while idle.
    async fn finished(&mut self) -> Box<Session> {
        match self {
            SessionTask::Busy(running) => running.await,
            SessionTask::Idle(_) => std::future::pending().await,
        }
    }
}

/// What the session handles next, one at a time.
enum SessionEvent {
    /// From outside the connection: auth revoked the token or changed the user's roles.
    Notice(SessionNotice),
    ClientFrame(Utf8Bytes),
    /// Re-authorizations, heartbeats, the token's expiry.
    TimersDue,
}

/// What woke the connection up.
enum Wake {
    Shutdown,
    EventDone(Box<Session>),
    ClientFrame(Option<Result<Message, axum::Error>>),
    Tick,
    /// Frames or a session notice were queued (both are taken at the top of every turn).
    Queued,
}

/// Holds one of the `max_connections` places; given back when dropped (also when the upgrade
/// never completes).
pub struct Permit(pub(crate) Arc<Broker>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release_connection();
    }
}

/// Serves one upgraded websocket until it ends. Not an `async fn`: its arguments would stay in
/// the future beside the connection they move into, for the life of every connection.
pub fn serve(ws: WebSocket, permit: Permit, request_id: String) -> impl Future<Output = ()> + Send {
    Connection::new(ws, permit, request_id).run()
}

/// Server pings and the pong they wait for.
struct Keepalive {
    next_ping: Instant,
    pong_due: Option<Instant>,
}

struct Connection {
    broker: Arc<Broker>,
    /// Holds the websocket: delivery threads write to it directly, this task reads from it and
    /// writes what they could not.
    out: Arc<Outbound>,
    id: u64,
    session: SessionTask,
    /// Client frames waiting for the session (at most `limits.pending_events`).
    backlog: VecDeque<Utf8Bytes>,
    keepalive: Keepalive,
    /// Fires at the earliest of the next ping, the pong deadline and the session's next timer.
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    permit: Permit,
}

impl Connection {
    fn new(ws: WebSocket, permit: Permit, request_id: String) -> Connection {
        let broker = permit.0.clone();
        let limits = &broker.config.limits;
        let out = Arc::new(Outbound::new(limits.outgoing_queue, limits.slow_client));
        out.attach(ws);
        let id = broker.next_session_id();
        let session = Box::new(Session::new(broker.clone(), out.clone(), id, request_id));
        let next_ping = Instant::now() + broker.config.ping.interval;
        Connection {
            out,
            id,
            session: SessionTask::Idle(session),
            backlog: VecDeque::new(),
            keepalive: Keepalive {
                next_ping,
                pong_due: None,
            },
            timer: Box::pin(sleep_until(next_ping)),
            timer_at: Some(next_ping),
            broker,
            permit,
        }
    }

    async fn run(mut self) {
        let end = loop {
            self.start_next_event();
            if let Err(end) = self.write_queued().await {
                break end;
            }
            self.arm_timer();
            let handled = match self.next_wake().await {
                Wake::Shutdown => Err(End::Shutdown),
                Wake::EventDone(session) => {
                    self.session = SessionTask::Idle(session);
                    Ok(())
                }
                Wake::ClientFrame(frame) => self.on_client_frame(frame),
                Wake::Tick => self.on_tick(),
                Wake::Queued => Ok(()),
            };
            if let Err(end) = handled {
                break end;
            }
        };
        // Boxed: its callbacks' futures are large, and only a closing connection needs them.
        Box::pin(self.finish(end)).await;
    }

    /// Waits for the first event source with something to do. Shutdown comes first; queued
    /// frames last (they are written at the top of every turn anyway: first, a flood of them
    /// could starve pongs).
    async fn next_wake(&mut self) -> Wake {
        let reading = self.backlog.len() < self.broker.config.limits.pending_events;
        let Connection {
            broker,
            out,
            session,
            timer,
            ..
        } = self;
        tokio::select! {
            biased;
            () = broker.shutdown.cancelled() => Wake::Shutdown,
            done = session.finished() => Wake::EventDone(done),
            frame = std::future::poll_fn(|cx| out.poll_recv(cx)), if reading => Wake::ClientFrame(frame),
            () = timer.as_mut() => Wake::Tick,
            () = out.wake.notified() => Wake::Queued,
        }
    }

    /// When idle, starts the session's next event: a notice about its token first (a
    /// revocation must not wait behind client frames), then the next client frame, then the
    /// session's due timers.
    fn start_next_event(&mut self) {
        let SessionTask::Idle(session) = &self.session else {
            return;
        };
        let event = if let Some(notice) = self.out.take_notice() {
            SessionEvent::Notice(notice)
        } else if let Some(text) = self.backlog.pop_front() {
            SessionEvent::ClientFrame(text)
        } else if session
            .next_timer()
            .is_some_and(|due| due <= Instant::now())
        {
            SessionEvent::TimersDue
        } else {
            return;
        };
        // A boxed `pending()` is zero-sized: no allocation for the moment it stands in.
        let taken = std::mem::replace(
            &mut self.session,
            SessionTask::Busy(Box::pin(std::future::pending())),
        );
        let SessionTask::Idle(mut session) = taken else {
            unreachable!("checked idle above")
        };
        self.session = SessionTask::Busy(Box::pin(async move {
            match event {
                SessionEvent::Notice(notice) => session.notice(notice).await,
                SessionEvent::ClientFrame(text) => session.handle(text.as_str()).await,
                SessionEvent::TimersDue => session.run_timers().await,
            }
            session
        }));
    }

    /// One frame (or the end of the stream) from the client.
    fn on_client_frame(&mut self, frame: Option<Result<Message, axum::Error>>) -> Result<(), End> {
        match frame {
            None => Err(End::ClientGone),
            Some(Err(err)) if is_too_big(&err) => Err(End::TooBig),
            Some(Err(_)) => Err(End::ClientGone),
            Some(Ok(Message::Text(text))) => {
                self.broker.metrics.messages_in.increment(1);
                self.backlog.push_back(text);
                Ok(())
            }
            Some(Ok(Message::Binary(bytes))) => {
                // socketshark parses binary frames as JSON too.
                self.broker.metrics.messages_in.increment(1);
                self.backlog
                    .push_back(Utf8Bytes::try_from(bytes).unwrap_or_default());
                Ok(())
            }
            Some(Ok(Message::Pong(_))) => {
                self.keepalive.pong_due = None;
                Ok(())
            }
            // tungstenite answers pings by itself.
            Some(Ok(Message::Ping(_))) => Ok(()),
            Some(Ok(Message::Close(_))) => Err(End::ClientGone),
        }
    }

    /// The timer fired: a pong is overdue, or a ping is due (the session's timers start at the
    /// top of the next turn).
    fn on_tick(&mut self) -> Result<(), End> {
        // Re-armed at the top of the loop.
        self.timer_at = None;
        let now = Instant::now();
        if self.keepalive.pong_due.is_some_and(|due| due <= now) {
            return Err(End::PingTimeout);
        }
        if now < self.keepalive.next_ping {
            return Ok(());
        }
        let ping = &self.broker.config.ping;
        self.keepalive.next_ping = now + ping.interval;
        if self.keepalive.pong_due.is_none() {
            // Written at the top of the next turn, like any queued frame.
            self.out.ping();
            self.keepalive.pong_due = Some(now + ping.timeout);
        }
        Ok(())
    }

    /// Points the timer at the earliest deadline (resetting it only when that changed).
    fn arm_timer(&mut self) {
        let keepalive = &self.keepalive;
        let mut deadline = keepalive
            .pong_due
            .map_or(keepalive.next_ping, |due| due.min(keepalive.next_ping));
        if let SessionTask::Idle(session) = &self.session
            && let Some(due) = session.next_timer()
        {
            deadline = deadline.min(due);
        }
        if self.timer_at != Some(deadline) {
            self.timer.as_mut().reset(deadline);
            self.timer_at = Some(deadline);
        }
    }

    /// Writes what the delivery threads could not (and replies, pings), one flush per batch.
    /// Gives up on a client that makes no progress within the write timeout or whose queue
    /// overflows meanwhile.
    async fn write_queued(&mut self) -> Result<(), End> {
        let (out, metrics) = (&self.out, &self.broker.metrics);
        let write = std::future::poll_fn(|cx| out.poll_write(cx, metrics));
        let written = tokio::select! {
            biased;
            written = timeout(self.broker.config.limits.write_timeout, write) => written,
            // An overflow while we are stuck ends the connection.
            () = out.kill.notified() => return Err(End::SlowClient),
        };
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(Closing::SlowClient)) => Err(End::SlowClient),
            Ok(Err(Closing::WriteFailed | Closing::Closed)) => Err(End::ClientGone),
            Err(_) => {
                metrics.slow_disconnects.increment(1);
                Err(End::SlowClient)
            }
        }
    }

    /// Sends the close frame the ending calls for, then lets the event in progress finish (it
    /// may hold a half-made subscription) and removes every subscription with its callbacks.
    async fn finish(self, end: End) {
        let Connection {
            out,
            id,
            session,
            permit,
            ..
        } = self;
        if let Some((code, reason)) = end.goodbye() {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let close = std::future::poll_fn(|cx| out.poll_close(cx, &frame));
            let _ = timeout(CLOSE_TIMEOUT, close).await;
        }
        if end != End::ClientGone && end != End::Shutdown {
            tracing::info!(session = id, reason = ?end, "closed a connection");
        }
        // Drops the socket too.
        out.close();
        let mut session = match session {
            SessionTask::Idle(session) => session,
            SessionTask::Busy(running) => running.await,
        };
        session.close().await;
        drop(permit);
    }
}

fn is_too_big(err: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<Error>())
        .is_some_and(|err| matches!(err, Error::Capacity(_)))
}
