CREATE TABLE notes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid        uuid        NOT NULL UNIQUE,
    owner_id    bigint      NOT NULL REFERENCES users (id),
    title       text        NOT NULL,
    body        text        NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

-- Keyset listings, newest first: all notes, and one owner's notes. Soft-deleted rows are
-- never listed, so they stay out of the indexes.
CREATE INDEX notes_listing_idx ON notes (created_at DESC, uuid DESC) WHERE deleted_at IS NULL;
CREATE INDEX notes_owner_listing_idx ON notes (owner_id, created_at DESC, uuid DESC) WHERE deleted_at IS NULL;
