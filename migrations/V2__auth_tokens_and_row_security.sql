-- V2: refresh tokens, revoked access tokens, and row-level security as the second lock behind the
-- WHERE user_id = ... that every query already has.
--
-- The server connects as a role that neither owns these tables nor bypasses RLS (orrery_app in the
-- project's cluster) and, inside each transaction, names its user with
--   SELECT set_config('orrery.user_id', '<uuid>', true)
-- A query run without that setting sees zero rows. A few flows must find a row before anyone is
-- known (login by email, refresh by token hash, an admin changing another account): they set
-- orrery.ctx to 'auth' or 'admin' for that one transaction.

CREATE FUNCTION orrery_uid() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('orrery.user_id', true), '')::uuid $$;

CREATE FUNCTION orrery_ctx() RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT coalesce(current_setting('orrery.ctx', true), '') $$;

CREATE TABLE refresh_tokens (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Every rotation stays in the family of the login that started it: presenting a token that
    -- was already rotated revokes the whole family (someone else has a copy).
    family_id   uuid        NOT NULL,
    token_hash  text        NOT NULL
                CONSTRAINT refresh_tokens_hash_key UNIQUE
                CONSTRAINT refresh_tokens_hash_hex CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    CONSTRAINT refresh_tokens_expiry CHECK (expires_at > created_at)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);

-- Access tokens are stateless for 15 minutes; logging out revokes the one used to log out.
CREATE TABLE revoked_access_tokens (
    jti         text        PRIMARY KEY CONSTRAINT revoked_access_tokens_jti CHECK (length(jti) BETWEEN 1 AND 64),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX revoked_access_tokens_user_idx ON revoked_access_tokens (user_id, expires_at);

ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY users_owner ON users
    USING (id = orrery_uid() OR orrery_ctx() IN ('auth', 'admin'))
    WITH CHECK (id = orrery_uid() OR orrery_ctx() IN ('auth', 'admin'));

ALTER TABLE refresh_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE refresh_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY refresh_tokens_owner ON refresh_tokens
    USING (user_id = orrery_uid() OR orrery_ctx() = 'auth')
    WITH CHECK (user_id = orrery_uid() OR orrery_ctx() = 'auth');

ALTER TABLE revoked_access_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE revoked_access_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY revoked_access_tokens_owner ON revoked_access_tokens
    USING (user_id = orrery_uid())
    WITH CHECK (user_id = orrery_uid());

-- The app role gets data rights only (no DDL), on these tables and every later one.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orrery_app') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO orrery_app;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO orrery_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO orrery_app;
        ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO orrery_app;
    END IF;
END
$$;

-- The migration history is the migrator's: the server only reads it (for /readyz).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orrery_app') THEN
        REVOKE INSERT, UPDATE, DELETE ON flyway_schema_history FROM orrery_app;
    END IF;
END
$$;
