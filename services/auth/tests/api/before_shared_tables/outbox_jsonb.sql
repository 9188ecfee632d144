-- Events waiting to be published (bus::outbox). A row is written in the same transaction as
-- the change it announces, so it exists exactly when the change committed; the relay publishes
-- pending rows with publisher confirms, marks them published, and deletes them after the
-- retention period.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid        NOT NULL,
    event_type    text        NOT NULL,
    -- The complete CloudEvents envelope, published as is.
    envelope      jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);

-- The relay's work list (pending rows in id order) and the pruner's (published rows by age).
CREATE INDEX outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;

-- Wakes the relay as soon as a transaction with new events commits (NOTIFY is delivered at
-- commit, and only then); once per statement, and Postgres folds repeats within a transaction.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
