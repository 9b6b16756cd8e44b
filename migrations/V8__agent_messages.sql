-- V8: every envelope of the agent bus, recorded off the hot path by a batching writer (src/msglog.c),
-- so a conversation can be traced (GET /api/agents/messages) and a message accepted but not yet
-- handled is redelivered once after a restart; and the processes (replicas) that record them.
--
-- One row per delivery: a direct message has one (receiver = the agent), a publication has one row
-- with receiver '' (the publication itself) plus one per local subscriber that got a copy. Rows of a
-- user's conversations are theirs (RLS); rows without a user are system traffic, seen by admins.

CREATE TABLE agent_messages (
    seq             bigint      GENERATED ALWAYS AS IDENTITY,
    id              uuid        NOT NULL,
    receiver        text        NOT NULL DEFAULT ''
                    CONSTRAINT agent_messages_receiver CHECK (receiver ~ '^[a-z0-9_-]{0,63}$'),
    performative    text        NOT NULL CONSTRAINT agent_messages_performative CHECK (performative IN
                    ('request', 'inform', 'agree', 'refuse', 'failure', 'query', 'propose', 'accept',
                     'reject', 'cancel', 'subscribe')),
    sender          text        NOT NULL DEFAULT '' CONSTRAINT agent_messages_sender CHECK (length(sender) <= 63),
    topic           text        NOT NULL DEFAULT '' CONSTRAINT agent_messages_topic CHECK (length(topic) <= 127),
    conversation_id text        NOT NULL DEFAULT '' CONSTRAINT agent_messages_conversation CHECK (length(conversation_id) <= 63),
    reply_with      text        NOT NULL DEFAULT '' CONSTRAINT agent_messages_reply_with CHECK (length(reply_with) <= 63),
    in_reply_to     text        NOT NULL DEFAULT '' CONSTRAINT agent_messages_in_reply_to CHECK (length(in_reply_to) <= 63),
    user_id         uuid        REFERENCES users (id) ON DELETE CASCADE,
    content         jsonb,
    created_at      timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    -- The process that accepted the delivery (agent_instances.id) and what became of it: 'trace'
    -- (recorded only), 'pending' (in a mailbox, not yet handled), 'handled', 'redelivered' (claimed
    -- once after its process died; handled marks it 'handled' again).
    instance        uuid        NOT NULL,
    state           text        NOT NULL DEFAULT 'trace'
                    CONSTRAINT agent_messages_state CHECK (state IN ('trace', 'pending', 'handled', 'redelivered')),
    PRIMARY KEY (id, receiver)
);
CREATE INDEX agent_messages_conversation_idx ON agent_messages (conversation_id, created_at, seq)
    WHERE conversation_id <> '';
CREATE INDEX agent_messages_pending_idx ON agent_messages (instance, created_at, seq) WHERE state = 'pending';
CREATE INDEX agent_messages_user_idx ON agent_messages (user_id, created_at);

ALTER TABLE agent_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_messages FORCE ROW LEVEL SECURITY;
-- The runtime's writer and the replicas act as 'system'; an admin reads everything; a user reads
-- the rows of their own conversations.
CREATE POLICY agent_messages_owner ON agent_messages
    USING (user_id = orrery_uid() OR orrery_ctx() IN ('system', 'admin'))
    WITH CHECK (orrery_ctx() = 'system');

-- The running processes. Each holds a session advisory lock on its row's lock_key for its whole
-- life (on the connection its writer keeps), so "is this process alive" is a question PostgreSQL
-- answers (pg_locks), with no heartbeat to tune: a crashed process's lock is gone with its session.
CREATE TABLE agent_instances (
    id          uuid        PRIMARY KEY,
    lock_key    bigint      NOT NULL UNIQUE,
    hostname    text        NOT NULL DEFAULT '' CONSTRAINT agent_instances_hostname CHECK (length(hostname) <= 255),
    started_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE agent_instances ENABLE ROW LEVEL SECURITY;
ALTER TABLE agent_instances FORCE ROW LEVEL SECURITY;
CREATE POLICY agent_instances_system ON agent_instances
    USING (orrery_ctx() IN ('system', 'admin'))
    WITH CHECK (orrery_ctx() = 'system');
