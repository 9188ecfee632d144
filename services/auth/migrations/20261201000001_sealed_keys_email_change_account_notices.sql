-- Private signing keys are stored sealed with the key-encryption key (app.key_encryption_key,
-- AES-256-GCM, see src/kek.rs): `sealed_private_key` holds nonce || ciphertext || tag and
-- `kek_id` the fingerprint of the key-encryption key that sealed it. The plaintext column stays
-- for one release (an instance of the previous release reads it) but is emptied as soon as a
-- key is sealed: a database dump alone holds no usable private key.
ALTER TABLE signing_keys
    ALTER COLUMN private_key DROP NOT NULL,
    ADD COLUMN sealed_private_key bytea,
    ADD COLUMN kek_id text;

-- Email change: a single-use link sent to the new address (its `email` column is the new address).
ALTER TABLE one_time_tokens DROP CONSTRAINT one_time_tokens_purpose_check;
ALTER TABLE one_time_tokens ADD CONSTRAINT one_time_tokens_purpose_check
    CHECK (purpose IN ('verify_email', 'reset_password', 'change_email')) NOT VALID;
ALTER TABLE one_time_tokens VALIDATE CONSTRAINT one_time_tokens_purpose_check;

-- Every change to an account is announced on the channel `auth_users_changed` (payload: the
-- user's UUID) when its transaction commits, whoever makes it: every instance drops its cached
-- copy of the account at once (see src/accounts.rs). Every column counts but the sign-in time
-- (`last_login_at`, written by every login: a login storm must not empty the cache); a column
-- added later must be added to the list.
CREATE FUNCTION auth_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('auth_users_changed', OLD.uuid::text);
    ELSE
        PERFORM pg_notify('auth_users_changed', NEW.uuid::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER users_changed
    AFTER INSERT OR DELETE
       OR UPDATE OF uuid, email, name, roles, is_active, created_at, updated_at, deleted_at,
                    password_hash, email_verified_at
    ON users
    FOR EACH ROW EXECUTE FUNCTION auth_users_changed();
