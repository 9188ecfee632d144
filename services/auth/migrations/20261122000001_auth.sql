-- The auth service owns the platform's users. It keeps the template's `users` table (the
-- shape every service shares, so the local key/UUID split and identity's helpers hold here
-- too) and adds what only auth knows: credentials, verification, last login.
ALTER TABLE users
    ADD COLUMN password_hash     text,
    ADD COLUMN email_verified_at timestamptz,
    ADD COLUMN last_login_at     timestamptz;

-- Emails are stored normalised (trimmed, lower-case). One account per address, deleted ones
-- included: a deleted account keeps its address so it can be restored.
CREATE UNIQUE INDEX users_email_key ON users (email);
-- The admin listing, newest first (keyset on created_at, uuid).
CREATE INDEX users_listing_idx ON users (created_at DESC, uuid DESC);

-- A login: the `sid` of every access token issued for it. Ended by logout, password change or
-- reset, refresh-token reuse, deactivation or deletion (revoked_at), or by reaching expires_at
-- (refreshing never extends it).
CREATE TABLE sessions (
    id                 uuid        PRIMARY KEY,
    user_id            bigint      NOT NULL REFERENCES users (id),
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    last_refreshed_at  timestamptz,
    revoked_at         timestamptz,
    revoked_reason     text,
    ip                 text,
    user_agent         text
);
CREATE INDEX sessions_user_live_idx ON sessions (user_id) WHERE revoked_at IS NULL;

-- Refresh tokens are opaque random strings; only their SHA-256 is kept. Each refresh marks the
-- presented token rotated and issues its successor; a rotated token presented again after the
-- grace period ends the session (it was stolen, or the client is broken).
CREATE TABLE refresh_tokens (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  uuid        NOT NULL REFERENCES sessions (id),
    token_hash  bytea       NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz
);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- Email verification and password reset links: random, single-use, expiring, stored hashed.
CREATE TABLE one_time_tokens (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    purpose     text        NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    token_hash  bytea       NOT NULL UNIQUE,
    user_id     bigint      NOT NULL REFERENCES users (id),
    -- The address the link was sent to (a verification proves this address, not "the user's").
    email       text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX one_time_tokens_user_idx ON one_time_tokens (user_id, purpose) WHERE used_at IS NULL;

-- Ed25519 keys the access tokens are signed with. A new key is published (in the JWKS) at
-- once but signs only from activates_at, so verifiers can learn it first; the key it replaces
-- signs until then (its retired_at) and stays published until every token it signed has
-- expired.
CREATE TABLE signing_keys (
    kid           text        PRIMARY KEY,
    -- PKCS#8 DER. Secret: never leaves this database except into the service's memory.
    private_key   bytea       NOT NULL,
    public_key    bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    activates_at  timestamptz NOT NULL DEFAULT now(),
    retired_at    timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active_key ON signing_keys ((true)) WHERE retired_at IS NULL;

-- Service clients (OAuth client credentials). The secret is 256 random bits, kept as SHA-256.
CREATE TABLE clients (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid         uuid        NOT NULL UNIQUE,
    name         text        NOT NULL UNIQUE,
    secret_hash  bytea       NOT NULL,
    scopes       text[]      NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz
);

-- Who did what, when, from where: signups, logins (with the reason of a failure), logouts,
-- refresh-token reuse, password changes and resets, role changes, deletions and restores.
CREATE TABLE audit_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    action      text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('success', 'failure')),
    reason      text,
    -- The user or client who acted (NULL when unknown, e.g. a login with an unknown email).
    actor       uuid,
    -- The user the action concerns.
    subject     uuid,
    ip          text,
    request_id  text,
    detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_subject_idx ON audit_log (subject, at DESC);
CREATE INDEX audit_log_at_idx ON audit_log (at);
