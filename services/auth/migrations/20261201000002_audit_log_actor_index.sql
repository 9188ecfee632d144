-- no-transaction
-- The admin audit API lists a user's entries: those they did (actor) and those about them
-- (subject, indexed already), newest first. Built concurrently: the log is written on every
-- sign-in.
CREATE INDEX CONCURRENTLY IF NOT EXISTS audit_log_actor_idx ON audit_log (actor, at DESC);
