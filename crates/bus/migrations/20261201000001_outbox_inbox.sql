-- The event bus's tables, defined here once for every service that publishes or consumes.
--
-- IF NOT EXISTS and the steps after the CREATEs: databases made before the bus owned these
-- tables already have them, created by copies in the services' own migrations that had
-- drifted (one kept the envelope as jsonb and indexed published_at). They are adopted and
-- brought to this one definition; no row is lost.

-- Events waiting to be published (bus::outbox). A row is written in the same transaction as
-- the change it announces, so it exists exactly when the change committed; the relay publishes
-- pending rows with publisher confirms, marks them published, and deletes them after the
-- retention period.
CREATE TABLE IF NOT EXISTS outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid        NOT NULL,
    event_type    text        NOT NULL,
    -- The complete CloudEvents envelope, published byte for byte (json, not jsonb: kept as
    -- written, so the relay sends it without re-encoding; still queryable with ->>).
    envelope      json        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);

-- A drifted copy kept the envelope as jsonb. The outbox holds only unpublished and recently
-- published rows (the relay prunes it), so rewriting it is short.
DO $$
BEGIN
    IF (SELECT data_type FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name = 'outbox'
          AND column_name = 'envelope') = 'jsonb' THEN
        ALTER TABLE outbox ALTER COLUMN envelope TYPE json USING envelope::json;
    END IF;
END
$$;

-- The relay's work list: pending rows in id order. (Published rows need no index of their
-- own: the pruner walks the oldest ids through the primary key, and every index on
-- published_at would cost the relay's UPDATE another insert per row.)
CREATE INDEX IF NOT EXISTS outbox_pending_idx ON outbox (id) WHERE published_at IS NULL;
DROP INDEX IF EXISTS outbox_published_idx;

-- Wakes the relay as soon as a transaction with new events commits (NOTIFY is delivered at
-- commit, and only then); once per statement, and Postgres folds repeats within a transaction.
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

-- Events this service has handled (bus consumers): the handler's writes and this row commit
-- together, so a redelivered event finds its row and is acknowledged without running the
-- handler again. Rows are deleted after the inbox retention period.
CREATE TABLE IF NOT EXISTS inbox (
    consumer      text        NOT NULL,
    event_id      uuid        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX IF NOT EXISTS inbox_processed_at_idx ON inbox (processed_at);
