//! Queries. Rows reference users by the local key; everything returned carries UUIDs. The users
//! table itself is `identity::users`' (created on first sight, kept current from events).

pub mod payments;
pub mod refunds;
pub mod webhooks;
