-- Events this service has handled (bus consumers): the handler's writes and this row commit
-- together, so a redelivered event finds its row and is acknowledged without running the
-- handler again. Rows are deleted after the inbox retention period.
CREATE TABLE inbox (
    consumer      text        NOT NULL,
    event_id      uuid        NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);
