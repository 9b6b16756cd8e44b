/* store_notes — see store_notes.h. */
#include "store_notes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TS_MS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
/* The cursor keeps created_at to the microsecond: PostgreSQL reads it back exactly. */
#define TS_US(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

/* Columns 0..6: id, title, body (or the excerpt), tags as JSON, version, created_at, updated_at. */
#define NOTE_COLUMNS \
    "id, title, body, array_to_json(tags)::text, version, " TS_MS("created_at") ", " TS_MS("updated_at")
#define EXCERPT_CHARS "200"
/* The part of the body the search indexes (V6) and the snippets come from. */
#define SEARCH_CHARS "100000"
/* to_tsvector skips words longer than this many bytes, with a NOTICE (see quiet). */
#define LONG_WORD 2047
#define HEADLINE_OPTS "'StartSel=<mark>, StopSel=</mark>, MaxFragments=2'"

/* ---- Small helpers ---- */


static json_t *not_found(struct store_err *err) {
    store_fail(err, 404, "not_found", NULL, "no such note");
    return NULL;
}

/* Keeps PostgreSQL's NOTICEs (a search made only of stop words, a word too long to index) off the
 * connection for the rest of the transaction: libpq would print them on stderr, outside the log. */
static int quiet(const struct store_ctx *ctx, struct store_err *err) {
    PGresult *r = store_exec(ctx, err, "SELECT set_config('client_min_messages', 'warning', true)", 0, NULL);
    if (!r) return -1;
    PQclear(r);
    return 0;
}

/* The note at row `row` of r (columns as NOTE_COLUMNS); the body under body_key. New reference,
 * or NULL when out of memory. */
static json_t *note_json(const PGresult *r, int row, const char *body_key) {
    json_t *tags = json_loads(PQgetvalue(r, row, 3), 0, NULL);
    return json_pack("{s:s, s:s, s:s, s:o, s:I, s:s, s:s}", "id", PQgetvalue(r, row, 0), "title",
                     PQgetvalue(r, row, 1), body_key, PQgetvalue(r, row, 2), "tags", tags ? tags : json_array(),
                     "version", (json_int_t)strtoll(PQgetvalue(r, row, 4), NULL, 10), "created_at",
                     PQgetvalue(r, row, 5), "updated_at", PQgetvalue(r, row, 6));
}

static json_t *oom(struct store_err *err) {
    store_fail(err, 500, "internal", NULL, "internal error");
    return NULL;
}

/* ---- Validation ---- */

static int only_keys(json_t *in, const char *const *allowed, struct store_err *err) {
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, k)) ok = 1;
        if (!ok) return store_fail(err, 400, "invalid_field", k, "unknown field '%.60s'", k);
    }
    return 0;
}

/* A string field (absent: *out stays NULL). max_chars counts code points, max_bytes bytes (0 = no
 * byte limit). */
static int text_field(json_t *in, const char *field, size_t max_chars, size_t max_bytes, const char **out,
                      struct store_err *err) {
    json_t *v = json_object_get(in, field);
    *out = NULL;
    if (!v) return 0;
    if (!json_is_string(v)) return store_fail(err, 400, "invalid_field", field, "%s must be a string", field);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len) return store_fail(err, 400, "invalid_field", field, "%s must not contain NUL characters", field);
    if (max_bytes && len > max_bytes)
        return store_fail(err, 400, "invalid_field", field, "%s must be at most %zu bytes of UTF-8", field, max_bytes);
    if (store_utf8_chars(s) > max_chars)
        return store_fail(err, 400, "invalid_field", field, "%s must be at most %zu characters long", field, max_chars);
    *out = s;
    return 0;
}

static int tag_fail(struct store_err *err) {
    return store_fail(err, 400, "invalid_field", "tags",
                      "tags must be an array of at most %d strings of 1 to %d characters", STORE_NOTE_TAGS_MAX,
                      STORE_NOTE_TAG_MAX);
}

/* tags as given → lower-cased (by PostgreSQL, as the CHECK sees it), without duplicates, in the
 * order first seen. Absent: *out = NULL. Otherwise *out is a new JSON array. */
static int tags_field(const struct store_ctx *ctx, json_t *in, json_t **out, struct store_err *err) {
    json_t *v = json_object_get(in, "tags"), *t;
    size_t i;
    *out = NULL;
    if (!v) return 0;
    if (!json_is_array(v) || json_array_size(v) > STORE_NOTE_TAGS_MAX) return tag_fail(err);
    json_array_foreach(v, i, t) {
        if (!json_is_string(t)) return tag_fail(err);
        const char *s = json_string_value(t);
        size_t n = store_utf8_chars(s);
        if (strlen(s) != json_string_length(t) || n < 1 || n > STORE_NOTE_TAG_MAX) return tag_fail(err);
    }
    json_t *tags = json_array();
    char *given = tags ? json_dumps(v, JSON_COMPACT) : NULL;
    if (!given) {
        json_decref(tags);
        oom(err);
        return -1;
    }
    if (json_array_size(v) == 0) {
        free(given);
        *out = tags;
        return 0;
    }
    const char *p[1] = {given};
    PGresult *r = store_exec(ctx, err,
                             "SELECT lower(x) FROM jsonb_array_elements_text($1::jsonb) WITH ORDINALITY e(x, o) "
                             "ORDER BY o",
                             1, p);
    free(given);
    if (!r) {
        json_decref(tags);
        return -1;
    }
    for (int row = 0; row < PQntuples(r); row++) {
        const char *s = PQgetvalue(r, row, 0);
        size_t n = store_utf8_chars(s);
        if (n < 1 || n > STORE_NOTE_TAG_MAX) { /* lower-casing can change the length */
            PQclear(r);
            json_decref(tags);
            return tag_fail(err);
        }
        int seen = 0;
        json_array_foreach(tags, i, t) if (!strcmp(json_string_value(t), s)) seen = 1;
        if (!seen) json_array_append_new(tags, json_string(s));
    }
    PQclear(r);
    *out = tags;
    return 0;
}

/* The fields of a create or update: title, body, tags (each NULL when absent; tags owned). */
struct note_input {
    const char *title;
    const char *body;
    json_t *tags;
};

static int note_input(const struct store_ctx *ctx, json_t *in, struct note_input *ni, struct store_err *err) {
    static const char *const allowed[] = {"title", "body", "tags", NULL};
    memset(ni, 0, sizeof *ni);
    if (!json_is_object(in)) return store_fail(err, 400, "invalid_field", NULL, "a note must be a JSON object");
    if (only_keys(in, allowed, err) || text_field(in, "title", STORE_NOTE_TITLE_MAX, 0, &ni->title, err) ||
        text_field(in, "body", STORE_NOTE_BODY_MAX, STORE_NOTE_BODY_MAX, &ni->body, err) ||
        tags_field(ctx, in, &ni->tags, err))
        return -1;
    return 0;
}

/* ---- Create, read, update, delete ---- */

json_t *store_note_create(const struct store_ctx *ctx, json_t *in, struct store_err *err) {
    struct note_input ni;
    if (note_input(ctx, in, &ni, err)) return NULL;
    if (!ni.tags && !(ni.tags = json_array())) return oom(err);
    char *tags = json_dumps(ni.tags, JSON_COMPACT);
    json_t *note = NULL, *diff = NULL;
    PGresult *r = NULL;
    if (!tags) {
        oom(err);
        goto done;
    }
    if (ni.body && strlen(ni.body) > LONG_WORD && quiet(ctx, err)) goto done;
    const char *p[4] = {ctx->user_id, ni.title ? ni.title : "", ni.body ? ni.body : "", tags};
    r = store_exec(ctx, err,
                   "INSERT INTO notes (user_id, title, body, tags) VALUES ($1::uuid, $2, $3, "
                   "ARRAY(SELECT x FROM jsonb_array_elements_text($4::jsonb) WITH ORDINALITY e(x, o) ORDER BY o)) "
                   "RETURNING " NOTE_COLUMNS,
                   4, p);
    if (!r) goto done;
    note = note_json(r, 0, "body");
    diff = json_pack("{s:{s:s}, s:{s:O}, s:{s:b, s:I}}", "title", "to", PQgetvalue(r, 0, 1), "tags", "to", ni.tags,
                     "body", "changed", 1, "length", (json_int_t)strlen(PQgetvalue(r, 0, 2)));
    if (!note || !diff) {
        json_decref(note);
        note = oom(err);
        goto done;
    }
    if (store_activity(ctx, err, "create", "note", json_string_value(json_object_get(note, "id")), diff)) {
        json_decref(note);
        note = NULL;
    }
done:
    PQclear(r);
    free(tags);
    json_decref(diff);
    json_decref(ni.tags);
    return note;
}

json_t *store_note_get(const struct store_ctx *ctx, const char *id, struct store_err *err) {
    if (!store_is_uuid(id)) return not_found(err);
    const char *p[2] = {id, ctx->user_id};
    PGresult *r = store_exec(ctx, err, "SELECT " NOTE_COLUMNS " FROM notes WHERE id = $1::uuid AND user_id = $2::uuid", 2,
                             p);
    if (!r) return NULL;
    json_t *note = NULL;
    if (PQntuples(r) != 1) not_found(err);
    else if (!(note = note_json(r, 0, "body"))) oom(err);
    PQclear(r);
    return note;
}

/* The current title, tags and version of a note, locked for the rest of the transaction, and
 * whether `body` (may be NULL) differs from its body. NULL with err (404) when there is none. */
static PGresult *lock_note(const struct store_ctx *ctx, const char *id, const char *body, struct store_err *err) {
    if (!store_is_uuid(id)) {
        not_found(err);
        return NULL;
    }
    const char *p[3] = {id, ctx->user_id, body};
    PGresult *r = store_exec(ctx, err,
                             "SELECT title, array_to_json(tags)::text, version, "
                             "$3::text IS NOT NULL AND body IS DISTINCT FROM $3::text, octet_length(body) "
                             "FROM notes WHERE id = $1::uuid AND user_id = $2::uuid FOR UPDATE",
                             3, p);
    if (r && PQntuples(r) != 1) {
        PQclear(r);
        not_found(err);
        return NULL;
    }
    return r;
}

static int precondition(const PGresult *cur, const struct store_match *match, struct store_err *err) {
    long v = strtol(PQgetvalue(cur, 0, 2), NULL, 10);
    if (store_match_ok(match, v)) return 0;
    return store_fail(err, 412, "precondition_failed", NULL,
                      "the note has changed (it is at version %ld): fetch it again and retry", v);
}

json_t *store_note_update(const struct store_ctx *ctx, const char *id, json_t *in,
                          const struct store_match *match, struct store_err *err) {
    struct note_input ni;
    if (note_input(ctx, in, &ni, err)) return NULL;
    json_t *note = NULL, *diff = json_object(), *old_tags = NULL;
    char *tags = NULL;
    PGresult *cur = lock_note(ctx, id, ni.body, err), *r = NULL;
    if (!cur || precondition(cur, match, err)) goto done;
    if (!diff) {
        oom(err);
        goto done;
    }
    /* Only what really changes is written and recorded. */
    const char *old_title = PQgetvalue(cur, 0, 0);
    if (ni.title && strcmp(ni.title, old_title) != 0)
        json_object_set_new(diff, "title", json_pack("{s:s, s:s}", "from", old_title, "to", ni.title));
    else ni.title = NULL;
    old_tags = json_loads(PQgetvalue(cur, 0, 1), 0, NULL);
    if (ni.tags && !json_equal(ni.tags, old_tags)) {
        json_object_set_new(diff, "tags", json_pack("{s:O?, s:O}", "from", old_tags, "to", ni.tags));
        tags = json_dumps(ni.tags, JSON_COMPACT);
        if (!tags) {
            oom(err);
            goto done;
        }
    }
    const char *body = NULL;
    if (strcmp(PQgetvalue(cur, 0, 3), "t") == 0) {
        body = ni.body;
        json_object_set_new(diff, "body", json_pack("{s:b, s:I}", "changed", 1, "length", (json_int_t)strlen(body)));
    }
    if (json_object_size(diff) == 0) { /* nothing to change: the note as it is */
        note = store_note_get(ctx, id, err);
        goto done;
    }
    if (body && strlen(body) > LONG_WORD && quiet(ctx, err)) goto done;
    const char *p[5] = {id, ctx->user_id, ni.title, body, tags};
    r = store_exec(ctx, err,
                   "UPDATE notes SET title = COALESCE($3, title), body = COALESCE($4, body), "
                   "tags = CASE WHEN $5::jsonb IS NULL THEN tags ELSE "
                   "ARRAY(SELECT x FROM jsonb_array_elements_text($5::jsonb) WITH ORDINALITY e(x, o) ORDER BY o) END, "
                   "version = version + 1, updated_at = now() "
                   "WHERE id = $1::uuid AND user_id = $2::uuid RETURNING " NOTE_COLUMNS,
                   5, p);
    if (!r) goto done;
    if (PQntuples(r) != 1) {
        not_found(err);
        goto done;
    }
    note = note_json(r, 0, "body");
    if (!note) {
        oom(err);
        goto done;
    }
    if (store_activity(ctx, err, "update", "note", id, diff)) {
        json_decref(note);
        note = NULL;
    }
done:
    PQclear(cur);
    PQclear(r);
    free(tags);
    json_decref(diff);
    json_decref(old_tags);
    json_decref(ni.tags);
    return note;
}

int store_note_delete(const struct store_ctx *ctx, const char *id, const struct store_match *match,
                      struct store_err *err) {
    PGresult *cur = lock_note(ctx, id, NULL, err), *r = NULL;
    json_t *diff = NULL;
    int rc = -1;
    if (!cur || precondition(cur, match, err)) goto done;
    const char *p[2] = {id, ctx->user_id};
    r = store_exec(ctx, err, "DELETE FROM notes WHERE id = $1::uuid AND user_id = $2::uuid", 2, p);
    if (!r) goto done;
    /* What was removed; the body only by its size. */
    json_t *tags = json_loads(PQgetvalue(cur, 0, 1), 0, NULL);
    diff = json_pack("{s:{s:s}, s:{s:o?}, s:{s:b, s:I}}", "title", "from", PQgetvalue(cur, 0, 0), "tags", "from", tags,
                     "body", "changed", 1, "length", (json_int_t)strtoll(PQgetvalue(cur, 0, 4), NULL, 10));
    if (!diff) {
        oom(err);
        goto done;
    }
    rc = store_activity(ctx, err, "delete", "note", id, diff);
done:
    PQclear(cur);
    PQclear(r);
    json_decref(diff);
    return rc;
}

/* ---- Listing and search ---- */

static json_t *bad_cursor(struct store_err *err) {
    store_fail(err, 400, "invalid_field", "cursor", "cursor is not valid: pass back the next_cursor of a previous page");
    return NULL;
}

json_t *store_notes_list(const struct store_ctx *ctx, json_t *in, struct store_err *err) {
    static const char *const allowed[] = {"q", "tag", "limit", "cursor", NULL};
    if (!json_is_object(in)) {
        store_fail(err, 400, "invalid_field", NULL, "expected an object");
        return NULL;
    }
    const char *q, *tag;
    if (only_keys(in, allowed, err) || text_field(in, "q", STORE_NOTE_QUERY_MAX, 0, &q, err) ||
        text_field(in, "tag", STORE_NOTE_TAG_MAX, 0, &tag, err))
        return NULL;
    if (q && !*q) q = NULL; /* an empty search box lists everything */
    if (tag && !*tag) {
        store_fail(err, 400, "invalid_field", "tag", "tag must be 1 to 50 characters");
        return NULL;
    }
    json_t *lv = json_object_get(in, "limit"), *cursor = json_object_get(in, "cursor");
    long limit = 50;
    if (lv) {
        if (!json_is_integer(lv) || json_integer_value(lv) < 1 || json_integer_value(lv) > 200) {
            store_fail(err, 400, "invalid_field", "limit", "limit must be a whole number from 1 to 200");
            return NULL;
        }
        limit = (long)json_integer_value(lv);
    }
    /* The position after which this page starts: created_at + id, or (searching) rank + id. */
    const char *after = NULL, *after_id = NULL;
    if (cursor && !json_is_null(cursor)) {
        if (!json_is_object(cursor)) return bad_cursor(err);
        json_t *pos = json_object_get(cursor, q ? "r" : "t"), *cid = json_object_get(cursor, "id");
        if (json_object_size(cursor) != 2 || !json_is_string(pos) || !json_is_string(cid) ||
            !store_is_uuid(json_string_value(cid)))
            return bad_cursor(err);
        after = json_string_value(pos);
        after_id = json_string_value(cid);
        int is_date = 0;
        char *end = NULL;
        double rank = q ? strtod(after, &end) : 0;
        if (q ? (end == after || *end || !isfinite(rank) || strspn(after, "0123456789.eE+-") != strlen(after))
              : (!store_time_valid(after, &is_date) || is_date))
            return bad_cursor(err);
    }
    char lim[24];
    snprintf(lim, sizeof lim, "%ld", limit + 1); /* one more tells whether there is a next page */
    PGresult *r;
    if (q) {
        if (quiet(ctx, err)) return NULL;
        const char *p[6] = {ctx->user_id, q, tag, after, after_id, lim};
        r = store_exec(ctx, err,
                       "SELECT id, title, substr(body, 1, " EXCERPT_CHARS "), array_to_json(tags)::text, version, "
                       TS_MS("created_at") ", " TS_MS("updated_at") ", rank::text, "
                       "ts_headline('english', substr(body, 1, " SEARCH_CHARS "), query, " HEADLINE_OPTS ") "
                       "FROM (SELECT * FROM (SELECT n.id, n.title, n.body, n.tags, n.version, n.created_at, "
                       "n.updated_at, q.query, ts_rank_cd(n.search, q.query) AS rank "
                       "FROM notes n, websearch_to_tsquery('english', $2) AS q(query) "
                       "WHERE n.user_id = $1::uuid AND n.search @@ q.query "
                       "AND ($3::text IS NULL OR n.tags @> ARRAY[lower($3::text)])) m "
                       "WHERE $4::real IS NULL OR m.rank < $4::real OR (m.rank = $4::real AND m.id > $5::uuid) "
                       "ORDER BY m.rank DESC, m.id LIMIT $6::int) s "
                       "ORDER BY rank DESC, id",
                       6, p);
    } else {
        const char *p[5] = {ctx->user_id, tag, after, after_id, lim};
        r = store_exec(ctx, err,
                       "SELECT id, title, substr(body, 1, " EXCERPT_CHARS "), array_to_json(tags)::text, version, "
                       TS_MS("created_at") ", " TS_MS("updated_at") ", " TS_US("created_at") " "
                       "FROM notes WHERE user_id = $1::uuid "
                       "AND ($2::text IS NULL OR tags @> ARRAY[lower($2::text)]) "
                       "AND ($3::timestamptz IS NULL OR (created_at, id) < ($3::timestamptz, $4::uuid)) "
                       "ORDER BY created_at DESC, id DESC LIMIT $5::int",
                       5, p);
    }
    if (!r) return NULL;
    int rows = PQntuples(r), shown = rows > limit ? (int)limit : rows;
    json_t *items = json_array();
    for (int i = 0; items && i < shown; i++) {
        json_t *item = note_json(r, i, "excerpt");
        if (item && q) json_object_set_new(item, "snippet", json_string(PQgetvalue(r, i, 8)));
        if (!item || json_array_append_new(items, item)) {
            json_decref(items);
            items = NULL;
        }
    }
    json_t *next = json_null();
    if (rows > limit)
        next = json_pack("{s:s, s:s}", q ? "r" : "t", PQgetvalue(r, shown - 1, 7), "id", PQgetvalue(r, shown - 1, 0));
    PQclear(r);
    json_t *out = items && next ? json_object() : NULL;
    if (out) {
        json_object_set_new(out, "items", items);
        json_object_set_new(out, "next", next);
    } else {
        json_decref(items);
        json_decref(next);
    }
    return out ? out : oom(err);
}
