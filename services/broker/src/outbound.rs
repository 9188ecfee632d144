//! One connection's socket and outgoing queue. The queue is bounded, so a client that does not
//! read can never make the broker buffer without limit. Replies and published messages share it,
//! which keeps them in order (a subscribe's `ok` always precedes the messages of that
//! subscription). Notices for the connection's session (revocations) come in through it too,
//! with the same wakeup.
//!
//! The websocket itself lives here, behind the same lock, so that whoever queued a publication's
//! frames can also write them at once ([`Outbound::write_now`]): a delivery then costs one
//! `write` and no task wakeup. The connection's own task takes over whatever cannot go out at once
//! (the socket would block, or the lock is busy reading): it is woken and writes with its own
//! waker ([`Outbound::poll_write`]), and it reads client frames through the same lock
//! ([`Outbound::poll_recv`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::SlowClient;
use crate::logins::SessionNotice;
use crate::metrics::{Metrics, now_us};

/// A text frame waiting to be written.
pub struct OutFrame {
    pub text: Utf8Bytes,
    /// When the publisher stamped the message (µs since the epoch; 0 = not stamped), for the
    /// publish-to-send latency.
    pub published_us: i64,
}

impl OutFrame {
    pub fn reply(text: String) -> OutFrame {
        OutFrame {
            text: Utf8Bytes::from(text),
            published_us: 0,
        }
    }
}

/// Why a connection is being closed by the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// The queue overflowed with `slow_client = disconnect`.
    SlowClient,
    /// Writing to the socket failed (the client is gone).
    WriteFailed,
    /// The connection ended; nothing more is accepted.
    Closed,
}

struct State {
    /// `None` before [`Outbound::attach`] and after [`Outbound::close`].
    socket: Option<WebSocket>,
    frames: VecDeque<OutFrame>,
    /// Since when the socket holds bytes it could not write yet (only the connection's task,
    /// whose waker the socket has, may write then).
    blocked_since: Option<Instant>,
    /// A keepalive ping is due.
    ping: bool,
    closing: Option<Closing>,
    notices: VecDeque<SessionNotice>,
}

pub struct Outbound {
    state: Mutex<State>,
    /// Woken when the connection's task has work: frames it must write, a notice, a close.
    pub wake: Notify,
    /// Woken when the queue overflows with `slow_client = disconnect` (watched while a write
    /// is stuck, so the connection is cut without waiting for the write timeout).
    pub kill: Notify,
    capacity: usize,
    policy: SlowClient,
    /// `notices` is not empty (read on every turn without taking the lock).
    has_notices: AtomicBool,
}

/// What became of a write attempt.
enum Wrote {
    /// Everything queued is on the socket.
    All,
    /// The socket would block (or is busy): the connection's task must go on.
    Blocked,
    Failed,
}

impl Outbound {
    pub fn new(capacity: usize, policy: SlowClient) -> Outbound {
        Outbound {
            state: Mutex::new(State {
                socket: None,
                frames: VecDeque::new(),
                blocked_since: None,
                ping: false,
                closing: None,
                notices: VecDeque::new(),
            }),
            wake: Notify::new(),
            kill: Notify::new(),
            capacity: capacity.max(1),
            policy,
            has_notices: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the websocket over: from now on queued frames are written to it.
    pub fn attach(&self, socket: WebSocket) {
        self.lock().socket = Some(socket);
    }

    /// Queues a frame and wakes the connection's task to write it; never blocks. A full queue
    /// either closes the connection or drops the oldest frame, as configured.
    pub fn push(&self, frame: OutFrame, metrics: &Metrics) {
        if self.enqueue(frame, metrics) {
            self.wake.notify_one();
        }
    }

    /// Queues a frame without waking anyone; true when it is the first one waiting (the caller
    /// then writes with [`Outbound::write_now`] once it queued everything it had).
    pub fn enqueue(&self, frame: OutFrame, metrics: &Metrics) -> bool {
        let mut state = self.lock();
        if state.closing.is_some() {
            return false;
        }
        if state.frames.len() >= self.capacity {
            match self.policy {
                SlowClient::Disconnect => {
                    state.closing = Some(Closing::SlowClient);
                    let dropped = state.frames.len() as u64 + 1;
                    // Free the memory now: the connection is going away.
                    state.frames = VecDeque::new();
                    drop(state);
                    metrics.dropped.increment(dropped);
                    metrics.slow_disconnects.increment(1);
                    self.wake.notify_one();
                    self.kill.notify_one();
                    return false;
                }
                SlowClient::DropOldest => {
                    state.frames.pop_front();
                    metrics.dropped.increment(1);
                }
            }
        }
        let was_empty = state.frames.is_empty();
        state.frames.push_back(frame);
        was_empty
    }

    /// Writes what is queued right away, from whichever task queued it, adding the frames
    /// written to `written` (counted once per batch: one shared counter bumped per frame by
    /// several threads would bounce between their caches). When the socket would block, is
    /// being read, or is not attached, the connection's task is woken to finish.
    pub fn write_now(&self, metrics: &Metrics, written: &mut u64) {
        let Ok(mut state) = self.state.try_lock() else {
            // The connection's task holds it (reading or writing): it writes at its next turn.
            self.wake.notify_one();
            return;
        };
        if state.closing.is_some() || state.blocked_since.is_some() || state.socket.is_none() {
            drop(state);
            self.wake.notify_one();
            return;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match write_queued(&mut state, &mut cx, metrics, written) {
            Poll::Ready(Wrote::All) => {}
            Poll::Ready(Wrote::Failed) => {
                state.closing = Some(Closing::WriteFailed);
                drop(state);
                self.wake.notify_one();
            }
            Poll::Ready(Wrote::Blocked) | Poll::Pending => {
                // The socket kept our no-op waker: the connection's task must poll it again
                // with its own.
                state.blocked_since.get_or_insert_with(Instant::now);
                drop(state);
                self.wake.notify_one();
            }
        }
    }

    /// The connection's task writes what is queued (and a due ping). Ready(Ok) once all of it
    /// is on the socket; Pending while the socket would block.
    pub fn poll_write(&self, cx: &mut Context<'_>, metrics: &Metrics) -> Poll<Result<(), Closing>> {
        let mut state = self.lock();
        if let Some(closing) = state.closing {
            return Poll::Ready(Err(closing));
        }
        if state.frames.is_empty() && !state.ping && state.blocked_since.is_none() {
            return Poll::Ready(Ok(()));
        }
        let mut written = 0;
        let outcome = write_queued(&mut state, cx, metrics, &mut written);
        metrics.messages_out.increment(written);
        match outcome {
            Poll::Ready(Wrote::All) => {
                state.blocked_since = None;
                // This task writes replies and leftovers, rarely: an idle connection keeps no
                // queue allocated (delivery threads, writing every message, keep theirs).
                state.frames = VecDeque::new();
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Wrote::Failed) => {
                state.closing = Some(Closing::WriteFailed);
                Poll::Ready(Err(Closing::WriteFailed))
            }
            Poll::Ready(Wrote::Blocked) | Poll::Pending => {
                state.blocked_since.get_or_insert_with(Instant::now);
                Poll::Pending
            }
        }
    }

    /// Since when a write has been waiting for the socket (for the write timeout).
    pub fn blocked_since(&self) -> Option<Instant> {
        self.lock().blocked_since
    }

    /// The next frame from the client (`None` once the stream ended or no socket is attached).
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Message, axum::Error>>> {
        let mut state = self.lock();
        match state.socket.as_mut() {
            Some(socket) => socket.poll_next_unpin(cx),
            None => Poll::Ready(None),
        }
    }

    /// Queues a keepalive ping (written with the next write).
    pub fn ping(&self) {
        self.lock().ping = true;
    }

    /// Sends a close frame after what is queued; Ready once written (or impossible).
    pub fn poll_close(&self, cx: &mut Context<'_>, frame: &CloseFrame) -> Poll<()> {
        let mut state = self.lock();
        let Some(socket) = state.socket.as_mut() else {
            return Poll::Ready(());
        };
        match socket.poll_ready_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(())) => {}
        }
        if socket
            .start_send_unpin(Message::Close(Some(frame.clone())))
            .is_err()
        {
            return Poll::Ready(());
        }
        socket.poll_flush_unpin(cx).map(|_| ())
    }

    /// Hands a notice to the connection's session (handled before its next client event).
    pub fn notify(&self, notice: SessionNotice) {
        let mut state = self.lock();
        if state.closing.is_some() {
            return;
        }
        state.notices.push_back(notice);
        self.has_notices.store(true, Ordering::Release);
        drop(state);
        self.wake.notify_one();
    }

    /// The oldest notice for the session, if any.
    pub fn take_notice(&self) -> Option<SessionNotice> {
        if !self.has_notices.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        let notice = state.notices.pop_front();
        if state.notices.is_empty() {
            state.notices = VecDeque::new();
            self.has_notices.store(false, Ordering::Release);
        }
        notice
    }

    /// Moves every queued frame into `batch` (for a queue with no socket attached).
    pub fn take(&self, batch: &mut VecDeque<OutFrame>) -> Option<Closing> {
        let mut state = self.lock();
        batch.extend(state.frames.drain(..));
        state.closing
    }

    pub fn closing(&self) -> Option<Closing> {
        self.lock().closing
    }

    /// Stops accepting frames (the connection ended), frees what was queued and drops the
    /// socket.
    pub fn close(&self) {
        let mut state = self.lock();
        if state.closing.is_none() {
            state.closing = Some(Closing::Closed);
        }
        state.frames = VecDeque::new();
        state.notices = VecDeque::new();
        state.socket = None;
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closing.is_some()
    }
}

/// Feeds the due ping and every queued frame to the socket and flushes once (one `write` for
/// the lot when the socket takes it).
fn write_queued(
    state: &mut State,
    cx: &mut Context<'_>,
    metrics: &Metrics,
    written: &mut u64,
) -> Poll<Wrote> {
    let State {
        socket,
        frames,
        ping,
        ..
    } = state;
    let Some(socket) = socket.as_mut() else {
        return Poll::Ready(Wrote::Blocked);
    };
    let mut now = 0;
    loop {
        match socket.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Poll::Ready(Wrote::Failed),
            Poll::Pending => return Poll::Ready(Wrote::Blocked),
        }
        let message = if *ping {
            *ping = false;
            Message::Ping(Default::default())
        } else if let Some(frame) = frames.pop_front() {
            *written += 1;
            if frame.published_us > 0 {
                if now == 0 {
                    now = now_us();
                }
                metrics.sample_latency(frame.published_us, now);
            }
            Message::Text(frame.text)
        } else {
            break;
        };
        if socket.start_send_unpin(message).is_err() {
            return Poll::Ready(Wrote::Failed);
        }
    }
    match socket.poll_flush_unpin(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Wrote::All),
        Poll::Ready(Err(_)) => Poll::Ready(Wrote::Failed),
        Poll::Pending => Poll::Pending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> OutFrame {
        OutFrame::reply(text.to_owned())
    }

    #[test]
    fn overflow_closes_or_drops_oldest() {
        let metrics = Metrics::detached();
        let out = Outbound::new(2, SlowClient::Disconnect);
        out.push(frame("a"), &metrics);
        out.push(frame("b"), &metrics);
        assert_eq!(out.closing(), None);
        out.push(frame("c"), &metrics);
        assert_eq!(out.closing(), Some(Closing::SlowClient));
        let mut batch = VecDeque::new();
        assert_eq!(out.take(&mut batch), Some(Closing::SlowClient));
        assert!(batch.is_empty(), "an overflowing queue is freed");

        let out = Outbound::new(2, SlowClient::DropOldest);
        for text in ["a", "b", "c"] {
            out.push(frame(text), &metrics);
        }
        let mut batch = VecDeque::new();
        assert_eq!(out.take(&mut batch), None);
        let texts: Vec<&str> = batch.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(texts, ["b", "c"]);
    }
}
