-- V7: the per-user secret that lets calendar apps subscribe to GET /api/calendar.ics?token=...
-- (they cannot send a bearer token). Only the SHA-256 of the token is stored; rotating replaces
-- the row's hash, so the old link stops working at once. One feed per user.

CREATE TABLE calendar_feeds (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE
                CONSTRAINT calendar_feeds_user_key UNIQUE,
    token_hash  text        NOT NULL
                CONSTRAINT calendar_feeds_hash_key UNIQUE
                CONSTRAINT calendar_feeds_hash_hex CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE calendar_feeds ENABLE ROW LEVEL SECURITY;
ALTER TABLE calendar_feeds FORCE ROW LEVEL SECURITY;
CREATE POLICY calendar_feeds_owner ON calendar_feeds
    USING (user_id = orrery_uid())
    WITH CHECK (user_id = orrery_uid());
-- The public feed route finds its user by the token's hash before anyone is known (orrery.ctx =
-- 'auth' for that one lookup, as refresh tokens do); reading only.
CREATE POLICY calendar_feeds_lookup ON calendar_feeds
    FOR SELECT
    USING (orrery_ctx() = 'auth');
