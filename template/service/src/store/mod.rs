//! Queries, one module per table. Functions are named after what they do to which rows of
//! their table: `find` (one row by its UUID), `list` (a keyset page), `insert`, `update`,
//! `soft_delete`, `lock` (`FOR UPDATE`); another key is spelled out (`find_by_email`). Rows
//! reference users by the local key; everything returned carries UUIDs only. The users table
//! itself is `identity::users`' (created on first sight, kept current from events).

pub mod notes;
