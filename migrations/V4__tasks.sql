-- V4: tasks. The C store (src/store_tasks.c) validates every field and names the bad one; the
-- constraints below are the schema's own promise, whatever code writes the rows.
--
-- Due dates keep the form they were given in. A timestamp is stored in due_at. A date-only due
-- date is stored in due_date (returned as "YYYY-MM-DD") and due_at then holds the start of that
-- day in the user's time zone when it was set, so that one indexed column sorts and filters both.

-- Labels: short, lower-case, no duplicates (the store lower-cases and de-duplicates them first).
CREATE FUNCTION tasks_labels_valid(labels text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT coalesce(array_ndims(labels), 1) = 1
           AND coalesce(bool_and(l IS NOT NULL AND char_length(l) BETWEEN 1 AND 50 AND l = lower(l)), true)
           AND count(l) = count(DISTINCT l)
          FROM unnest(labels) AS l
    $$;

CREATE TABLE tasks (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id          uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    parent_id        uuid,
    title            text        NOT NULL
                     CONSTRAINT tasks_title_valid
                     CHECK (char_length(title) BETWEEN 1 AND 500 AND title ~ '[^[:space:]]'),
    notes            text        NOT NULL DEFAULT ''
                     CONSTRAINT tasks_notes_length CHECK (char_length(notes) <= 100000),
    status           text        NOT NULL DEFAULT 'open'
                     CONSTRAINT tasks_status_valid CHECK (status IN ('open', 'in_progress', 'done', 'cancelled')),
    priority         smallint    NOT NULL DEFAULT 4
                     CONSTRAINT tasks_priority_range CHECK (priority BETWEEN 1 AND 4),
    due_at           timestamptz,
    due_date         date,
    labels           text[]      NOT NULL DEFAULT '{}'
                     CONSTRAINT tasks_labels_count CHECK (cardinality(labels) <= 20)
                     CONSTRAINT tasks_labels_valid CHECK (tasks_labels_valid(labels)),
    recurrence       text
                     CONSTRAINT tasks_recurrence_length CHECK (char_length(recurrence) BETWEEN 1 AND 500),
    -- The first occurrence of the series as local wall-clock time, carried from one occurrence to
    -- the next (COUNT counts from it); NULL: this task's own due date starts the series.
    recurrence_start timestamp,
    -- The occurrence created when this one was completed (so reopening and completing it again
    -- does not create a second one).
    next_id          uuid        REFERENCES tasks (id) ON DELETE SET NULL,
    completed_at     timestamptz,
    version          integer     NOT NULL DEFAULT 1 CONSTRAINT tasks_version_positive CHECK (version >= 1),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    search           tsvector    GENERATED ALWAYS AS (to_tsvector('simple', title || ' ' || notes)) STORED,
    CONSTRAINT tasks_id_user_key UNIQUE (id, user_id),
    -- A sub-task's parent belongs to the same user; deleting a task deletes its sub-tasks.
    CONSTRAINT tasks_parent_fk FOREIGN KEY (parent_id, user_id) REFERENCES tasks (id, user_id) ON DELETE CASCADE,
    CONSTRAINT tasks_parent_not_self CHECK (parent_id <> id),
    CONSTRAINT tasks_due_date_has_instant CHECK (due_date IS NULL OR due_at IS NOT NULL),
    CONSTRAINT tasks_completed_when_done CHECK ((status = 'done') = (completed_at IS NOT NULL))
);

-- One index per list filter and sort order (each list is the user's own: user_id first).
CREATE INDEX tasks_user_created_idx ON tasks (user_id, created_at, id);
CREATE INDEX tasks_user_status_idx ON tasks (user_id, status);
CREATE INDEX tasks_user_due_idx ON tasks (user_id, due_at, created_at, id);
CREATE INDEX tasks_user_priority_idx ON tasks (user_id, priority, created_at, id);
CREATE INDEX tasks_user_parent_idx ON tasks (user_id, parent_id);
CREATE INDEX tasks_labels_idx ON tasks USING gin (labels);
CREATE INDEX tasks_search_idx ON tasks USING gin (search);
CREATE INDEX tasks_next_idx ON tasks (next_id) WHERE next_id IS NOT NULL;

ALTER TABLE tasks ENABLE ROW LEVEL SECURITY;
ALTER TABLE tasks FORCE ROW LEVEL SECURITY;
CREATE POLICY tasks_owner ON tasks
    USING (user_id = orrery_uid())
    WITH CHECK (user_id = orrery_uid());
