-- V6: notes — markdown the assistant can answer from, with tags and full-text search.
--
-- search is a generated tsvector: the title with weight A, the body with weight B, so a word in
-- the title ranks above the same word in the body (ts_rank_cd). Only the first 100,000 characters
-- of the body are indexed: a tsvector cannot exceed 1 MB, and a 1 MB body of distinct short words
-- would (PostgreSQL counts up to ~6 bytes of tsvector per input character in the worst case, and
-- stops recording word positions at 16,383 anyway).

-- Tags: 1 to 50 characters each, lower-case, no duplicates, no NULLs, at most 50 of them.
CREATE FUNCTION notes_tags_valid(tags text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT cardinality(tags) <= 50
           AND array_position(tags, NULL) IS NULL
           AND NOT EXISTS (SELECT 1 FROM unnest(tags) t WHERE char_length(t) NOT BETWEEN 1 AND 50 OR t <> lower(t))
           AND (SELECT count(DISTINCT t) FROM unnest(tags) t) = cardinality(tags)
    $$;

CREATE TABLE notes (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title       text        NOT NULL DEFAULT ''
                CONSTRAINT notes_title_length CHECK (char_length(title) <= 500),
    -- 1 MiB of UTF-8.
    body        text        NOT NULL DEFAULT ''
                CONSTRAINT notes_body_size CHECK (octet_length(body) <= 1048576),
    tags        text[]      NOT NULL DEFAULT '{}'
                CONSTRAINT notes_tags_valid CHECK (notes_tags_valid(tags)),
    version     integer     NOT NULL DEFAULT 1
                CONSTRAINT notes_version_positive CHECK (version >= 1),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    search      tsvector    GENERATED ALWAYS AS (
                    setweight(to_tsvector('english'::regconfig, title), 'A') ||
                    setweight(to_tsvector('english'::regconfig, left(body, 100000)), 'B')
                ) STORED
);

-- GET /api/notes: newest first (keyset on created_at, id); ?tag= ; ?q= .
CREATE INDEX notes_user_created_idx ON notes (user_id, created_at DESC, id DESC);
CREATE INDEX notes_tags_idx ON notes USING gin (tags);
CREATE INDEX notes_search_idx ON notes USING gin (search);

ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY notes_owner ON notes
    USING (user_id = orrery_uid())
    WITH CHECK (user_id = orrery_uid());
