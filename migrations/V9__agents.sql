-- V9: agent sources that admins install at run time (PUT /api/agents/{name}), versioned.
--
-- One row per version of an agent; versions are immutable (the trigger below refuses any change
-- but `active`, and the server's role cannot delete). Exactly one version of a name is active: the
-- one every replica runs, overriding agents/<file>.lua of the same name. A PUT adds version
-- max + 1 and makes it active; a rollback makes the highest version below the active one active
-- (so a second rollback goes one further back, never forward: to return to a newer source, PUT it
-- again). Only the runtime ('system') and admins ('admin') see or write these rows.

CREATE TABLE agents (
    name        text        NOT NULL CONSTRAINT agents_name CHECK (name ~ '^[a-z0-9_-]{1,63}$'),
    version     integer     NOT NULL CONSTRAINT agents_version CHECK (version >= 1),
    source      text        NOT NULL CONSTRAINT agents_source CHECK (octet_length(source) BETWEEN 1 AND 262144),
    -- sha256 of the source's UTF-8 bytes, hex: set by the trigger, whatever the client sends.
    checksum    text        NOT NULL DEFAULT '' CONSTRAINT agents_checksum CHECK (checksum ~ '^([0-9a-f]{64})?$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  uuid        REFERENCES users (id) ON DELETE SET NULL,
    active      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (name, version)
);
CREATE UNIQUE INDEX agents_one_active ON agents (name) WHERE active;

CREATE FUNCTION agents_immutable() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.checksum := encode(sha256(convert_to(NEW.source, 'UTF8')), 'hex');
        RETURN NEW;
    END IF;
    -- Only `active` moves; created_by may become NULL when its user is deleted.
    IF NEW.name IS DISTINCT FROM OLD.name OR NEW.version IS DISTINCT FROM OLD.version
       OR NEW.source IS DISTINCT FROM OLD.source OR NEW.checksum IS DISTINCT FROM OLD.checksum
       OR NEW.created_at IS DISTINCT FROM OLD.created_at
       OR (NEW.created_by IS DISTINCT FROM OLD.created_by AND NEW.created_by IS NOT NULL) THEN
        RAISE EXCEPTION 'agent versions are immutable (only "active" changes)'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER agents_immutable BEFORE INSERT OR UPDATE ON agents
    FOR EACH ROW EXECUTE FUNCTION agents_immutable();

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY agents_admin ON agents
    USING (orrery_ctx() IN ('system', 'admin'))
    WITH CHECK (orrery_ctx() IN ('system', 'admin'));

-- History is kept: the server may add versions and move `active`, never delete one.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'orrery_app') THEN
        REVOKE DELETE, TRUNCATE ON agents FROM orrery_app;
    END IF;
END
$$;
