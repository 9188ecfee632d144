//! Consumers: typed handlers per event type, each delivery applied exactly once.
//!
//! A delivery goes through these steps; every outcome ends with the delivery acknowledged
//! (so nothing loops), and only after whatever had to be durable is:
//!
//! 1. Decode: not JSON, not a CloudEvents 1.0 envelope, a `type` without handler, a
//!    `dataversion` without handler, or `data` not matching the handler's payload type →
//!    **parked at once** (retrying cannot help), with `x-bus-reason`, `x-bus-error` and
//!    `x-bus-attempts` headers.
//! 2. In one database transaction: insert `(consumer, event_id)` into the inbox. Already there
//!    → a duplicate delivery: acknowledged without running the handler. Otherwise run the
//!    handler on the same transaction and commit; the acknowledgement follows the commit. A
//!    process that dies in between leaves the delivery unacknowledged, RabbitMQ delivers it
//!    again, and the inbox row makes that a duplicate.
//! 3. The handler fails (error, panic or timeout) → the transaction rolls back and a copy goes
//!    to the retry queue of that attempt (`x-bus-attempts` + 1), which hands it back to the
//!    service queue after the delay; after `max_attempts` runs it is parked instead
//!    (`handler_failed`). The copy is confirmed by RabbitMQ before the original is
//!    acknowledged.
//! 4. The database itself is unreachable (connection errors, pool timeouts) → not the event's
//!    fault: it waits in the first retry queue without using up an attempt.
//!
//! Deliveries run concurrently (`amqp.concurrency`), so handlers must not rely on the order of
//! events; RabbitMQ sends `amqp.prefetch` ahead.
//!
//! The parts:
//! - [`registry`]: the handlers by type and `dataversion`, and what a delivery's body comes to
//!   (a handler call, or parking with a reason); no I/O.
//! - [`headers`]: the `x-bus-*` headers of retried and parked copies.
//! - `inbox`: the inbox row and the handler in one transaction.
//! - `delivery`: one delivery (or batch) from dispatch to acknowledgement, retry or parking.
//! - `runtime`: the connection, channels, prefetch and concurrency, and the orderly stop.

mod delivery;
pub mod headers;
mod inbox;
pub mod registry;
mod runtime;

pub use headers::{
    ATTEMPTS_HEADER, ERROR_HEADER, PARKED_AT_HEADER, REASON_HEADER, ROUTING_KEY_HEADER,
};
pub(crate) use headers::{header_text, header_u32};
pub use registry::{Consumers, Received, Tx, topic_matches};
pub use runtime::{Consumer, ConsumerConfig};
