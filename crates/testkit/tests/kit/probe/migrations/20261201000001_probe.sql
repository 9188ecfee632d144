-- The probe service's one table of its own: shows that a service's migrations run after the
-- shared tables it uses.
CREATE TABLE probe_marks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key         text        NOT NULL REFERENCES idempotency (key),
    created_at  timestamptz NOT NULL DEFAULT now()
);
