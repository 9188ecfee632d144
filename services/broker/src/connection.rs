//! One websocket connection's task: reads client frames, writes what the outgoing queue holds,
//! pings the client, and runs the session's events one at a time beside that (so a slow
//! callback never stops deliveries or pong handling). On SIGTERM it sends a close frame
//! (1001) so the client reconnects to another process.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use tokio::time::{Instant, sleep_until, timeout};

use crate::Broker;
use crate::metrics::now_us;
use crate::outbound::{Closing, OutFrame, Outbound};
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

type Running = Pin<Box<dyn Future<Output = Box<Session>> + Send>>;

/// Holds one of the `max_connections` places; given back when dropped (also when the upgrade
/// never completes).
pub struct Permit(pub(crate) Arc<Broker>);

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.release_connection();
    }
}

pub async fn serve(mut ws: WebSocket, permit: Permit, request_id: String) {
    let broker = permit.0.clone();
    let limits = broker.config.limits.clone();
    let out = Arc::new(Outbound::new(limits.outgoing_queue, limits.slow_client));
    let id = broker.next_session_id();
    let mut session = Some(Box::new(Session::new(
        broker.clone(),
        out.clone(),
        id,
        request_id,
    )));
    let mut running: Option<Running> = None;
    let mut backlog: VecDeque<Utf8Bytes> = VecDeque::new();
    let mut batch: VecDeque<OutFrame> = VecDeque::new();
    let mut stamps: Vec<i64> = Vec::new();
    let ping_every = broker.config.ping.interval;
    let pong_within = broker.config.ping.timeout;
    let mut next_ping = Instant::now() + ping_every;
    let mut pong_due: Option<Instant> = None;
    let notified = out.wake.notified();
    tokio::pin!(notified);
    let timer = sleep_until(next_ping);
    tokio::pin!(timer);
    let mut timer_at = Some(next_ping);
    let shutdown = broker.shutdown.clone();

    let end = loop {
        // The next event (or due timers) starts as soon as the previous one is done.
        if running.is_none()
            && let Some(mut idle) = session.take()
        {
            if let Some(text) = backlog.pop_front() {
                running = Some(Box::pin(async move {
                    idle.handle(text.as_str()).await;
                    idle
                }));
            } else if idle.next_timer().is_some_and(|due| due <= Instant::now()) {
                running = Some(Box::pin(async move {
                    idle.run_timers().await;
                    idle
                }));
            } else {
                session = Some(idle);
            }
        }
        if let Err(end) = write_queued(&mut ws, &out, &mut batch, &mut stamps, &broker).await {
            break end;
        }
        let mut deadline = pong_due.map_or(next_ping, |due| due.min(next_ping));
        if let Some(due) = session.as_ref().and_then(|s| s.next_timer()) {
            deadline = deadline.min(due);
        }
        if timer_at != Some(deadline) {
            timer.as_mut().reset(deadline);
            timer_at = Some(deadline);
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break End::Shutdown,
            done = async { running.as_mut().expect("guarded by is_some").await }, if running.is_some() => {
                running = None;
                session = Some(done);
            }
            received = ws.recv(), if backlog.len() < limits.pending_events => match received {
                None => break End::ClientGone,
                Some(Err(err)) => break if is_too_big(err) { End::TooBig } else { End::ClientGone },
                Some(Ok(Message::Text(text))) => {
                    broker.metrics.messages_in.increment(1);
                    backlog.push_back(text);
                }
                Some(Ok(Message::Binary(bytes))) => {
                    // socketshark parses binary frames as JSON too.
                    broker.metrics.messages_in.increment(1);
                    backlog.push_back(Utf8Bytes::try_from(bytes).unwrap_or_default());
                }
                Some(Ok(Message::Pong(_))) => pong_due = None,
                // tungstenite answers pings by itself.
                Some(Ok(Message::Ping(_))) => {}
                Some(Ok(Message::Close(_))) => break End::ClientGone,
            },
            () = &mut timer => {
                // Re-armed at the top of the loop.
                timer_at = None;
                let now = Instant::now();
                if pong_due.is_some_and(|due| due <= now) {
                    break End::PingTimeout;
                }
                if now >= next_ping {
                    next_ping = now + ping_every;
                    if pong_due.is_none() {
                        let sent = timeout(limits.write_timeout, ws.send(Message::Ping(Default::default()))).await;
                        if !matches!(sent, Ok(Ok(()))) {
                            break End::ClientGone;
                        }
                        pong_due = Some(now + pong_within);
                    }
                }
            }
            // Last: queued frames are written at the top of every turn anyway, this only wakes an
            // idle connection (first, it could starve pongs on a busy one).
            () = &mut notified => {
                notified.set(out.wake.notified());
            }
        }
    };

    out.close();
    let goodbye = match end {
        End::Shutdown => Some((close::GOING_AWAY, "server shutting down")),
        End::TooBig => Some((close::TOO_BIG, "frame too large")),
        End::PingTimeout => Some((close::POLICY, "ping timeout")),
        End::SlowClient | End::ClientGone => None,
    };
    if let Some((code, reason)) = goodbye {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let _ = timeout(CLOSE_TIMEOUT, ws.send(Message::Close(Some(frame)))).await;
    }
    if end != End::ClientGone && end != End::Shutdown {
        tracing::info!(session = id, reason = ?end, "closed a connection");
    }
    drop(ws);
    // The event in progress finishes (it may hold a half-made subscription), then every
    // subscription is removed with its callbacks.
    if let Some(running) = running {
        session = Some(running.await);
    }
    if let Some(mut session) = session {
        session.close().await;
    }
    drop(permit);
}

/// Writes everything queued, one flush per batch. Gives up on a client that makes no progress
/// within the write timeout or whose queue overflows meanwhile.
async fn write_queued(
    ws: &mut WebSocket,
    out: &Outbound,
    batch: &mut VecDeque<OutFrame>,
    stamps: &mut Vec<i64>,
    broker: &Broker,
) -> Result<(), End> {
    loop {
        if out.take(batch) == Some(Closing::SlowClient) {
            return Err(End::SlowClient);
        }
        if batch.is_empty() {
            // Don't keep a burst's worth of capacity on an idle connection.
            if batch.capacity() > 64 {
                *batch = VecDeque::new();
            }
            return Ok(());
        }
        let count = batch.len() as u64;
        stamps.clear();
        stamps.extend(batch.iter().map(|f| f.published_us).filter(|&us| us > 0));
        let write = async {
            for frame in batch.drain(..) {
                ws.feed(Message::Text(frame.text)).await?;
            }
            ws.flush().await
        };
        let write = timeout(broker.config.limits.write_timeout, write);
        tokio::pin!(write);
        let written = tokio::select! {
                written = &mut write => written,
                // An overflow while we are stuck ends the connection.
                () = out.kill.notified() => return Err(End::SlowClient),
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(End::ClientGone),
            Err(_) => {
                broker.metrics.slow_disconnects.increment(1);
                return Err(End::SlowClient);
            }
        }
        broker.metrics.messages_out.increment(count);
        if !stamps.is_empty() {
            let now = now_us();
            for &published in stamps.iter() {
                broker.metrics.sample_latency(published, now);
            }
        }
    }
}

fn is_too_big(err: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        err.into_inner().downcast_ref::<Error>(),
        Some(Error::Capacity(_))
    )
}
