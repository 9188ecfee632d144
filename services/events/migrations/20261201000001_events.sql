-- Events, their ticket types, registrations (seats, holds, the waitlist), check-ins and the
-- secret tokens of personal calendar feeds.
--
-- Seats are counted in `events.taken` and `ticket_types.taken` (confirmed + held seats), and
-- changed only by a transaction holding the event's row lock (`SELECT ... FOR UPDATE`), so
-- capacity is exact whatever the number of requests or processes. The CHECKs are the last line
-- of defence: a bug that would oversell fails the transaction instead.

CREATE TABLE events (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid                    uuid        NOT NULL UNIQUE,
    organizer_id            bigint      NOT NULL REFERENCES users (id),
    title                   text        NOT NULL,
    description             text        NOT NULL DEFAULT '',
    starts_at               timestamptz NOT NULL,
    ends_at                 timestamptz NOT NULL,
    time_zone               text        NOT NULL,
    venue                   text,
    online_url              text,
    status                  text        NOT NULL DEFAULT 'draft'
                            CHECK (status IN ('draft', 'published', 'cancelled', 'completed')),
    visibility              text        NOT NULL DEFAULT 'public'
                            CHECK (visibility IN ('public', 'unlisted')),
    registration_opens_at   timestamptz,
    registration_closes_at  timestamptz,
    capacity                integer     NOT NULL CHECK (capacity >= 0),
    taken                   integer     NOT NULL DEFAULT 0 CHECK (taken >= 0 AND taken <= capacity),
    max_guests              integer     NOT NULL DEFAULT 0 CHECK (max_guests >= 0),
    requires_approval       boolean     NOT NULL DEFAULT false,
    questions               jsonb       NOT NULL DEFAULT '[]',
    -- iCalendar SEQUENCE: grows with every change attendees should see.
    sequence                integer     NOT NULL DEFAULT 0,
    cancel_reason           text,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    deleted_at              timestamptz,
    CHECK (ends_at > starts_at)
);

-- The public listing: published public events, upcoming first.
CREATE INDEX events_listing_idx ON events (starts_at, uuid)
    WHERE status = 'published' AND visibility = 'public' AND deleted_at IS NULL;

CREATE TABLE ticket_types (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid        uuid    NOT NULL UNIQUE,
    event_id    bigint  NOT NULL REFERENCES events (id),
    name        text    NOT NULL,
    -- Minor units of `currency`; 0 (and no currency) for a free ticket.
    price       bigint  NOT NULL DEFAULT 0 CHECK (price >= 0),
    currency    text    CHECK (currency ~ '^[A-Z]{3}$'),
    capacity    integer NOT NULL CHECK (capacity >= 0),
    taken       integer NOT NULL DEFAULT 0 CHECK (taken >= 0 AND taken <= capacity),
    position    integer NOT NULL DEFAULT 0,
    CHECK ((price = 0) = (currency IS NULL))
);

CREATE INDEX ticket_types_event_idx ON ticket_types (event_id, position);

-- Waitlist order: position (this sequence), then time.
CREATE SEQUENCE waitlist_positions;

CREATE TABLE registrations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid            uuid        NOT NULL UNIQUE,
    event_id        bigint      NOT NULL REFERENCES events (id),
    ticket_type_id  bigint      NOT NULL REFERENCES ticket_types (id),
    user_id         bigint      NOT NULL REFERENCES users (id),
    status          text        NOT NULL CHECK (status IN ('pending_approval', 'pending_payment',
                                'confirmed', 'waitlisted', 'cancelled', 'expired', 'rejected')),
    guests          integer     NOT NULL DEFAULT 0 CHECK (guests >= 0),
    answers         jsonb       NOT NULL DEFAULT '{}',
    waitlist_position bigint,
    -- While `pending_payment`: the seat is held until then.
    expires_at      timestamptz,
    payment_id      uuid,
    client_secret   text,
    -- The ticket: an unguessable secret, set when the registration is confirmed.
    ticket_secret   text UNIQUE,
    cancel_reason   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    cancelled_at    timestamptz
);

-- One active registration per user per event.
CREATE UNIQUE INDEX registrations_one_active_idx ON registrations (event_id, user_id)
    WHERE status IN ('pending_approval', 'pending_payment', 'confirmed', 'waitlisted');
CREATE INDEX registrations_waitlist_idx ON registrations (event_id, waitlist_position, created_at)
    WHERE status = 'waitlisted';
CREATE INDEX registrations_holds_idx ON registrations (expires_at) WHERE status = 'pending_payment';
CREATE INDEX registrations_event_idx ON registrations (event_id, id);
CREATE INDEX registrations_user_idx ON registrations (user_id, id);

CREATE TABLE checkins (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid            uuid        NOT NULL UNIQUE,
    event_id        bigint      NOT NULL REFERENCES events (id),
    registration_id bigint      REFERENCES registrations (id),
    -- The scanner's nonce: a retried scan gets the first answer again.
    nonce           text        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('entry', 'exit')),
    result          text        NOT NULL CHECK (result IN ('ok', 'already_redeemed', 'invalid',
                                'unpaid', 'canceled')),
    attendee        text,
    scanned_by      bigint      NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    annulled_at     timestamptz,
    UNIQUE (event_id, nonce)
);

CREATE INDEX checkins_registration_idx ON checkins (registration_id, id) WHERE result = 'ok';

CREATE TABLE calendar_tokens (
    user_id     bigint      PRIMARY KEY REFERENCES users (id),
    token       text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
