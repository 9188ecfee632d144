-- The test service's one table of its own, referencing identity's shared `users` (applied
-- before a service's own migrations).
CREATE TABLE seen (
    user_id  bigint      NOT NULL REFERENCES users (id),
    at       timestamptz NOT NULL DEFAULT now()
);
