-- Payments, their refunds and history, provider webhooks seen, partner webhook endpoints and
-- their deliveries. Amounts are bigint minor units; statuses are the domain's text values.

CREATE TABLE payments (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid                  uuid        NOT NULL UNIQUE,
    user_id               bigint      NOT NULL REFERENCES users (id),
    amount                bigint      NOT NULL CHECK (amount > 0),
    currency              text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    description           text,
    metadata              jsonb       NOT NULL DEFAULT '{}',
    reference_service     text        NOT NULL,
    reference_id          text        NOT NULL,
    -- Who created it: a user's or a service client's UUID. A reference is unique per source.
    source                uuid        NOT NULL,
    provider              text        NOT NULL,
    -- NULL until the provider made its side (a crash in between is repaired by reconciliation).
    provider_payment_id   text,
    client_secret         text,
    payment_method        text,
    capture_method        text        NOT NULL CHECK (capture_method IN ('automatic', 'manual')),
    status                text        NOT NULL CHECK (status IN ('requires_payment_method',
                              'requires_confirmation', 'requires_action', 'processing',
                              'requires_capture', 'succeeded', 'failed', 'canceled')),
    decline_code          text,
    failure_message       text,
    next_action           jsonb,
    cancellation_reason   text,
    amount_captured       bigint      NOT NULL DEFAULT 0,
    amount_refunded       bigint      NOT NULL DEFAULT 0,
    -- Refunds sent to the provider and not final yet: reserved, so refunds never overshoot.
    amount_refund_pending bigint      NOT NULL DEFAULT 0,
    version               integer     NOT NULL DEFAULT 1,
    -- The create request: its scoped Idempotency-Key (hashed) and body fingerprint, so a retry
    -- after a crash finds the payment it started.
    request_key           text        UNIQUE,
    request_fingerprint   bytea,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    reconciled_at         timestamptz,
    CHECK (amount_captured BETWEEN 0 AND amount),
    CHECK (amount_refunded >= 0 AND amount_refund_pending >= 0),
    CHECK (amount_refunded + amount_refund_pending <= amount_captured)
);

-- One live payment per reference and source; a failed or canceled one frees its reference.
CREATE UNIQUE INDEX payments_reference_key ON payments (source, reference_service, reference_id)
    WHERE status NOT IN ('failed', 'canceled');
CREATE UNIQUE INDEX payments_provider_key ON payments (provider, provider_payment_id);
CREATE INDEX payments_reference_idx ON payments (reference_service, reference_id);
-- Keyset listings, newest first: all payments, and one user's.
CREATE INDEX payments_listing_idx ON payments (created_at DESC, uuid DESC);
CREATE INDEX payments_user_listing_idx ON payments (user_id, created_at DESC, uuid DESC);
-- What reconciliation looks at.
CREATE INDEX payments_open_idx ON payments (updated_at)
    WHERE status NOT IN ('succeeded', 'failed', 'canceled');

CREATE TABLE refunds (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid                uuid        NOT NULL UNIQUE,
    payment_id          bigint      NOT NULL REFERENCES payments (id),
    amount              bigint      NOT NULL CHECK (amount > 0),
    reason              text,
    metadata            jsonb       NOT NULL DEFAULT '{}',
    status              text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    failure_reason      text,
    provider_refund_id  text,
    source              uuid        NOT NULL,
    request_key         text        UNIQUE,
    request_fingerprint bytea,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    reconciled_at       timestamptz
);

CREATE INDEX refunds_payment_idx ON refunds (payment_id, created_at DESC, uuid DESC);
CREATE UNIQUE INDEX refunds_provider_key ON refunds (provider_refund_id);
CREATE INDEX refunds_pending_idx ON refunds (updated_at) WHERE status = 'pending';

-- Every transition of a payment or of one of its refunds, with its cause.
CREATE TABLE payment_history (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id        bigint      NOT NULL REFERENCES payments (id),
    refund_id         bigint      REFERENCES refunds (id),
    from_status       text,
    to_status         text        NOT NULL,
    cause             text        NOT NULL CHECK (cause IN ('api', 'webhook', 'reconciliation', 'seed')),
    provider_event_id text,
    request_id        text,
    version           integer     NOT NULL,
    at                timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payment_history_payment_idx ON payment_history (payment_id, id);

-- Provider webhooks already applied: a redelivered event is recognised by its id.
CREATE TABLE provider_events (
    provider     text        NOT NULL,
    event_id     text        NOT NULL,
    event_type   text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_id)
);

CREATE INDEX provider_events_received_idx ON provider_events (received_at);

-- Partners' endpoints for outgoing webhooks.
CREATE TABLE webhook_endpoints (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid                 uuid        NOT NULL UNIQUE,
    url                  text        NOT NULL,
    description          text,
    secret               text        NOT NULL,
    -- Empty: every event type.
    event_types          text[]      NOT NULL DEFAULT '{}',
    enabled              boolean     NOT NULL DEFAULT true,
    disabled_reason      text,
    consecutive_failures integer     NOT NULL DEFAULT 0,
    request_key          text        UNIQUE,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz
);

CREATE INDEX webhook_endpoints_listing_idx ON webhook_endpoints (created_at DESC, uuid DESC)
    WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid            uuid        NOT NULL UNIQUE,
    endpoint_id     bigint      NOT NULL REFERENCES webhook_endpoints (id),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    payload         jsonb       NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    replay_of       uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at DESC, uuid DESC);

-- The delivery log: every attempt with what the endpoint answered.
CREATE TABLE webhook_attempts (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id   bigint      NOT NULL REFERENCES webhook_deliveries (id),
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    status_code   integer,
    error         text,
    response_body text,
    duration_ms   integer     NOT NULL
);

CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, id);

-- The built-in `test` provider's own side, as a real provider would keep it: payment intents and
-- refunds under its ids, created idempotently from the callers' idempotency keys.
CREATE TABLE test_provider_intents (
    id              text        PRIMARY KEY,
    amount          bigint      NOT NULL,
    currency        text        NOT NULL,
    capture_method  text        NOT NULL,
    payment_method  text,
    status          text        NOT NULL,
    client_secret   text        NOT NULL,
    amount_received bigint      NOT NULL DEFAULT 0,
    amount_refunded bigint      NOT NULL DEFAULT 0,
    last_error      jsonb,
    next_action     jsonb,
    cancellation_reason text,
    -- The idempotency key of the call that put it in its current state.
    last_key        text,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE test_provider_refunds (
    id              text        PRIMARY KEY,
    payment_intent  text        NOT NULL REFERENCES test_provider_intents (id),
    amount          bigint      NOT NULL,
    status          text        NOT NULL,
    failure_reason  text,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
