-- V5: calendar events. A series is anchored by its local wall-clock start in its own time zone
-- (local_start, timestamp without time zone) plus a duration, so that recurrence is expanded in
-- local time and each occurrence becomes an instant with `local AT TIME ZONE timezone`: a weekly
-- 09:00 meeting stays at 09:00 local across DST changes. starts_at/ends_at are the instants of
-- the first occurrence; series_ends_at bounds the last one (NULL: the series never ends).

CREATE TABLE events (
    id             uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title          text        NOT NULL CONSTRAINT events_title_length CHECK (length(title) BETWEEN 1 AND 500),
    description    text        NOT NULL DEFAULT '' CONSTRAINT events_description_length CHECK (length(description) <= 10000),
    location       text        NOT NULL DEFAULT '' CONSTRAINT events_location_length CHECK (length(location) <= 500),
    all_day        boolean     NOT NULL DEFAULT false,
    timezone       text        NOT NULL CONSTRAINT events_timezone_length CHECK (length(timezone) BETWEEN 1 AND 64),
    local_start    timestamp   NOT NULL,
    -- Seconds of elapsed time for timed events; whole days for all-day ones (ends_at exclusive).
    duration_s     bigint      NOT NULL CONSTRAINT events_duration_range CHECK (duration_s BETWEEN 1 AND 366 * 86400),
    starts_at      timestamptz NOT NULL,
    ends_at        timestamptz NOT NULL,
    recurrence     text        CONSTRAINT events_recurrence_text
                   CHECK (recurrence IS NULL OR (length(recurrence) BETWEEN 6 AND 500 AND recurrence LIKE 'FREQ=%')),
    exdates        timestamp[] NOT NULL DEFAULT '{}'
                   CONSTRAINT events_exdates_size CHECK (cardinality(exdates) <= 1000 AND array_position(exdates, NULL) IS NULL),
    series_ends_at timestamptz,
    reminders      integer[]   NOT NULL DEFAULT '{}'
                   CONSTRAINT events_reminders_valid CHECK (cardinality(reminders) <= 20
                       AND array_position(reminders, NULL) IS NULL
                       AND 0 <= ALL (reminders) AND 40320 >= ALL (reminders)),
    attendees      text[]      NOT NULL DEFAULT '{}'
                   CONSTRAINT events_attendees_valid CHECK (cardinality(attendees) <= 100
                       AND array_position(attendees, NULL) IS NULL),
    version        integer     NOT NULL DEFAULT 1 CONSTRAINT events_version_positive CHECK (version >= 1),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_ends_after_starts CHECK (ends_at > starts_at),
    CONSTRAINT events_all_day_whole_days CHECK (NOT all_day OR (duration_s % 86400 = 0 AND local_start::time = '00:00')),
    CONSTRAINT events_series_end CHECK (recurrence IS NOT NULL OR series_ends_at IS NULL)
);

-- The window query: single events by their start (they last at most 366 days, so a window only
-- looks back that far), recurring series by their first start among the user's series.
CREATE INDEX events_user_starts_idx ON events (user_id, starts_at) WHERE recurrence IS NULL;
CREATE INDEX events_user_series_idx ON events (user_id, starts_at, series_ends_at) WHERE recurrence IS NOT NULL;
-- The export (every series, oldest first).
CREATE INDEX events_user_created_idx ON events (user_id, created_at, id);

ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_owner ON events
    USING (user_id = orrery_uid())
    WITH CHECK (user_id = orrery_uid());
