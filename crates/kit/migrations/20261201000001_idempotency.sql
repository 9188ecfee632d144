-- Responses of creating POSTs, replayed for 24 h to clients retrying with the same
-- Idempotency-Key (kit::idempotency). Defined here once for every service that uses it.
--
-- IF NOT EXISTS: databases made before kit owned this table already have it, created by a
-- copy of this definition in the service's own migrations; it is adopted as it is.
CREATE TABLE IF NOT EXISTS idempotency (
    key          text        PRIMARY KEY,
    fingerprint  bytea       NOT NULL,
    status       smallint    NOT NULL,
    headers      jsonb       NOT NULL,
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- The hourly pruner deletes by age.
CREATE INDEX IF NOT EXISTS idempotency_created_at_idx ON idempotency (created_at);
