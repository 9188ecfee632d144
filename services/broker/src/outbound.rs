//! One connection's outgoing queue: bounded, so a client that does not read can never make the
//! broker buffer without limit. Replies and published messages share it, which keeps them in
//! order (a subscribe's `ok` always precedes the messages of that subscription). Notices for the
//! connection's session (revocations) come in through it too, with the same wakeup.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::Notify;

use crate::config::SlowClient;
use crate::logins::SessionNotice;
use crate::metrics::Metrics;

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
    /// The connection ended; nothing more is accepted.
    Closed,
}

struct Queue {
    frames: VecDeque<OutFrame>,
    closing: Option<Closing>,
    notices: VecDeque<SessionNotice>,
}

pub struct Outbound {
    queue: Mutex<Queue>,
    /// Woken when the queue goes from empty to non-empty, or when the connection must close.
    pub wake: Notify,
    /// Woken when the queue overflows with `slow_client = disconnect` (watched while a write
    /// is stuck, so the connection is cut without waiting for the write timeout).
    pub kill: Notify,
    capacity: usize,
    policy: SlowClient,
    /// `notices` is not empty (read on every turn without taking the lock).
    has_notices: AtomicBool,
}

impl Outbound {
    pub fn new(capacity: usize, policy: SlowClient) -> Outbound {
        Outbound {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
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

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a frame; never blocks. A full queue either closes the connection or drops the
    /// oldest frame, as configured.
    pub fn push(&self, frame: OutFrame, metrics: &Metrics) {
        let mut queue = self.lock();
        if queue.closing.is_some() {
            return;
        }
        if queue.frames.len() >= self.capacity {
            match self.policy {
                SlowClient::Disconnect => {
                    queue.closing = Some(Closing::SlowClient);
                    let dropped = queue.frames.len() as u64 + 1;
                    // Free the memory now: the connection is going away.
                    queue.frames = VecDeque::new();
                    drop(queue);
                    metrics.dropped.increment(dropped);
                    metrics.slow_disconnects.increment(1);
                    self.wake.notify_one();
                    self.kill.notify_one();
                    return;
                }
                SlowClient::DropOldest => {
                    queue.frames.pop_front();
                    metrics.dropped.increment(1);
                }
            }
        }
        let was_empty = queue.frames.is_empty();
        queue.frames.push_back(frame);
        drop(queue);
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Moves every queued frame into `batch` (which must be empty), keeping allocations.
    pub fn take(&self, batch: &mut VecDeque<OutFrame>) -> Option<Closing> {
        let mut queue = self.lock();
        std::mem::swap(&mut queue.frames, batch);
        queue.closing
    }

    /// Hands a notice to the connection's session (handled before its next client event).
    pub fn notify(&self, notice: SessionNotice) {
        let mut queue = self.lock();
        if queue.closing.is_some() {
            return;
        }
        queue.notices.push_back(notice);
        self.has_notices.store(true, Ordering::Release);
        drop(queue);
        self.wake.notify_one();
    }

    /// The oldest notice for the session, if any.
    pub fn take_notice(&self) -> Option<SessionNotice> {
        if !self.has_notices.load(Ordering::Acquire) {
            return None;
        }
        let mut queue = self.lock();
        let notice = queue.notices.pop_front();
        if queue.notices.is_empty() {
            queue.notices = VecDeque::new();
            self.has_notices.store(false, Ordering::Release);
        }
        notice
    }

    pub fn closing(&self) -> Option<Closing> {
        self.lock().closing
    }

    /// Stops accepting frames (the connection ended) and frees what was queued.
    pub fn close(&self) {
        let mut queue = self.lock();
        if queue.closing.is_none() {
            queue.closing = Some(Closing::Closed);
        }
        queue.frames = VecDeque::new();
        queue.notices = VecDeque::new();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closing.is_some()
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
