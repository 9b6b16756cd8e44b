-- V3: the activity log. Every create/update/delete of the user's data, by the REST API, an agent
-- or a workflow, writes one row in the same transaction as the change.

CREATE TABLE activity_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    actor_type  text        NOT NULL CONSTRAINT activity_actor_type CHECK (actor_type IN ('user', 'agent', 'workflow', 'system')),
    actor_id    text        NOT NULL CONSTRAINT activity_actor_id CHECK (length(actor_id) BETWEEN 1 AND 200),
    action      text        NOT NULL CONSTRAINT activity_action CHECK (action IN ('create', 'update', 'delete')),
    object_type text        NOT NULL CONSTRAINT activity_object_type CHECK (length(object_type) BETWEEN 1 AND 40),
    object_id   text        NOT NULL CONSTRAINT activity_object_id CHECK (length(object_id) BETWEEN 1 AND 200),
    diff        jsonb       NOT NULL DEFAULT '{}' CONSTRAINT activity_diff_object CHECK (jsonb_typeof(diff) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- Newest first, filtered by object type and actor: the three ways GET /api/activity pages.
CREATE INDEX activity_log_user_idx ON activity_log (user_id, id DESC);
CREATE INDEX activity_log_user_type_idx ON activity_log (user_id, object_type, id DESC);
CREATE INDEX activity_log_user_actor_idx ON activity_log (user_id, actor_type, id DESC);

ALTER TABLE activity_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE activity_log FORCE ROW LEVEL SECURITY;
CREATE POLICY activity_log_owner ON activity_log
    USING (user_id = orrery_uid())
    WITH CHECK (user_id = orrery_uid());
