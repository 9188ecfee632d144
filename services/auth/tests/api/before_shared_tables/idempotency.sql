-- Responses of creating POSTs, replayed for 24 h to clients retrying with the same
-- Idempotency-Key (kit::idempotency).
CREATE TABLE idempotency (
    key          text        PRIMARY KEY,
    fingerprint  bytea       NOT NULL,
    status       smallint    NOT NULL,
    headers      jsonb       NOT NULL,
    body         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idempotency_created_at_idx ON idempotency (created_at);
