//! Queries, one module per table. Functions are named after what they do to which rows of
//! their table: `find` (one row by its UUID), `list` (a keyset page), `insert`, `update`,
//! `lock` (`FOR UPDATE`); another key is spelled out (`find_by_secret`). Rows reference users by
//! the local key; everything returned carries UUIDs only. The users table itself is
//! `identity::users`' (created on first sight, kept current from events).
//!
//! Lock order, everywhere: the event's row, then its registrations. Seat counters change only
//! under the event's lock.

pub mod checkins;
pub mod events;
pub mod registrations;
