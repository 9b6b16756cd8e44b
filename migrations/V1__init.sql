-- V1: accounts. The constraints are the schema's own promise, whatever code writes the rows.
-- gen_random_uuid() is core since PostgreSQL 13: no pgcrypto, which the non-superuser app role
-- could not create anyway.
-- Applied migrations never change (their checksum is recorded): later changes go in V2, V3, ...

CREATE TABLE users (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Stored normalized so that UNIQUE means one account per address, whatever the casing typed.
    email         text        NOT NULL
                  CONSTRAINT users_email_key UNIQUE
                  CONSTRAINT users_email_normalized CHECK (email = lower(btrim(email)))
                  CONSTRAINT users_email_length CHECK (length(email) BETWEEN 3 AND 320),
    password_hash text        NOT NULL,
    name          text        NOT NULL DEFAULT ''
                  CONSTRAINT users_name_length CHECK (length(name) <= 200),
    timezone      text        NOT NULL DEFAULT 'UTC'
                  CONSTRAINT users_timezone_length CHECK (length(timezone) <= 64),
    role          text        NOT NULL DEFAULT 'user'
                  CONSTRAINT users_role_valid CHECK (role IN ('user', 'admin')),
    preferences   jsonb       NOT NULL DEFAULT '{}'
                  CONSTRAINT users_preferences_object CHECK (jsonb_typeof(preferences) = 'object'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
