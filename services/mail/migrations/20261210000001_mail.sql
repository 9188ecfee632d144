-- The mail service's tables. `users` (the local copy of platform users), `outbox`/`inbox` and
-- `idempotency` belong to the shared crates (identity, bus, kit) and are applied before these.

-- Templates: one row per key; the content lives in immutable versions, so a message keeps
-- pointing at exactly what it was rendered from.
CREATE TABLE templates (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key          text        NOT NULL UNIQUE,
    description  text        NOT NULL DEFAULT '',
    category     text        NOT NULL CHECK (category IN ('transactional', 'notification')),
    -- The newest version: what new messages use.
    version      integer     NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    archived_at  timestamptz
);

CREATE TABLE template_versions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    template_id     bigint      NOT NULL REFERENCES templates (id),
    version         integer     NOT NULL,
    default_locale  text        NOT NULL,
    -- {"<locale>": {"subject": ..., "text": ..., "html": ... | null}}
    locales         jsonb       NOT NULL,
    -- Example data: what a preview renders when given none.
    sample_data     jsonb       NOT NULL DEFAULT '{}',
    -- The admin who wrote this version (none for seed data).
    created_by      uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (template_id, version)
);

-- One send request (an API call or a platform event): what its messages share.
CREATE TABLE sends (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    template_version_id  bigint      NOT NULL REFERENCES template_versions (id),
    data                 jsonb       NOT NULL,
    -- Extra headers, name -> value.
    headers              jsonb       NOT NULL DEFAULT '{}',
    has_attachments      boolean     NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE attachments (
    send_id       bigint   NOT NULL REFERENCES sends (id),
    position      smallint NOT NULL,
    filename      text     NOT NULL,
    content_type  text     NOT NULL,
    content       bytea    NOT NULL,
    PRIMARY KEY (send_id, position)
);

-- One message per recipient: the unit of delivery. Exactly one of the terminal states
-- (sent, failed, suppressed, canceled) ends it. `next_attempt_at` is when it is due (queued,
-- deferred) or, while it is being sent, when its lease runs out: after a crash another worker
-- takes it again then, with the same Message-ID.
CREATE TABLE messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid             uuid        NOT NULL UNIQUE,
    send_id          bigint      NOT NULL REFERENCES sends (id),
    template_key     text        NOT NULL,
    template_version integer     NOT NULL,
    -- The locale actually rendered (after falling back).
    locale           text        NOT NULL,
    category         text        NOT NULL CHECK (category IN ('transactional', 'notification')),
    to_email         text        NOT NULL,
    to_name          text        NOT NULL DEFAULT '',
    user_id          bigint      REFERENCES users (id),
    status           text        NOT NULL CHECK (status IN
                         ('queued', 'sending', 'deferred', 'sent', 'failed', 'suppressed', 'canceled')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    send_at          timestamptz,
    -- The RFC 5322 Message-ID, angle brackets included; the same on every attempt.
    message_id       text        NOT NULL,
    last_reply       text,
    tags             text[]      NOT NULL DEFAULT '{}',
    metadata         jsonb       NOT NULL DEFAULT '{}',
    -- What caused it: the request id of the API call or of the event, the event itself, and
    -- who sent it (a service client or an admin).
    request_id       text,
    event_id         uuid,
    event_type       text,
    sender           uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);

-- The workers' queue: due and leased messages only.
CREATE INDEX messages_due_idx ON messages (next_attempt_at)
    WHERE status IN ('queued', 'sending', 'deferred');
-- Keyset listings, newest first: all, by recipient, by user, by sender.
CREATE INDEX messages_listing_idx ON messages (created_at DESC, uuid DESC);
CREATE INDEX messages_recipient_idx ON messages (lower(to_email), created_at DESC, uuid DESC);
CREATE INDEX messages_user_idx ON messages (user_id, created_at DESC, uuid DESC) WHERE user_id IS NOT NULL;
CREATE INDEX messages_sender_idx ON messages (sender, created_at DESC, uuid DESC);

-- Each message's timeline.
CREATE TABLE message_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id  bigint      NOT NULL REFERENCES messages (id),
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text        NOT NULL,
    attempt     integer,
    -- The SMTP reply, when there was one.
    reply       text,
    detail      text
);

CREATE INDEX message_events_message_idx ON message_events (message_id, id);

-- Addresses not to send to (lower-cased): every mail (category NULL) or one category (an
-- unsubscribe from notifications). Released entries are kept for the record.
CREATE TABLE suppressions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid         uuid        NOT NULL UNIQUE,
    email        text        NOT NULL,
    category     text        CHECK (category IN ('transactional', 'notification')),
    reason       text        NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'unsubscribe', 'manual')),
    note         text        NOT NULL DEFAULT '',
    expires_at   timestamptz,
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    released_at  timestamptz,
    released_by  uuid
);

CREATE INDEX suppressions_active_idx ON suppressions (email) WHERE released_at IS NULL;
CREATE INDEX suppressions_listing_idx ON suppressions (created_at DESC, uuid DESC);

-- Platform events that become mail: which template, and where in the event's data the
-- recipient is (JSON pointers). Seed data (populator/<scenario>/mail/); the consumer binds to
-- these event types when the service starts.
CREATE TABLE event_mails (
    event_type      text        PRIMARY KEY,
    template_key    text        NOT NULL,
    email_pointer   text        NOT NULL,
    name_pointer    text,
    user_pointer    text,
    locale_pointer  text,
    category        text        CHECK (category IN ('transactional', 'notification')),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Wakes the delivery workers as soon as a transaction that queued messages commits (NOTIFY is
-- delivered at commit; repeats within a transaction are folded).
CREATE FUNCTION mail_due_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('mail_due', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER messages_due_notify AFTER INSERT ON messages
    FOR EACH STATEMENT EXECUTE FUNCTION mail_due_notify();
