-- The service's local copy of platform users (identity::users): a local key for rows inside
-- this service, the shared UUID for everything that crosses a service boundary. Defined here
-- once for every service.
--
-- IF NOT EXISTS: databases made before identity owned this table already have it, created by
-- a copy of this definition in the service's own migrations; it is adopted as it is. (The auth
-- service adds its credential columns to it in its own migrations.)
CREATE TABLE IF NOT EXISTS users (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid        uuid        NOT NULL UNIQUE,
    email       text        NOT NULL,
    name        text        NOT NULL,
    roles       text[]      NOT NULL DEFAULT '{}',
    is_active   boolean     NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
