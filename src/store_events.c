/* store_events — see store_events.h. A series is stored as its local wall-clock start in its own
 * time zone (events.local_start) plus a duration; rrule expands it in local time and PostgreSQL
 * turns each local start into an instant (local AT TIME ZONE tz), so a weekly 09:00 meeting stays
 * at 09:00 local across DST. Time text from clients is checked here before PostgreSQL parses it.
 * This file validates and writes; store_occurrences.c expands series into occurrences (windows,
 * conflicts, free/busy). Uses store, store_occurrences, rrule and api (time zone names, emails). */
#include "store_events.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "rrule.h"
#include "store_occurrences.h"

#define TITLE_MAX 500
#define DESCRIPTION_MAX 10000
#define LOCATION_MAX 500
#define RECURRENCE_MAX 500
#define EXDATES_MAX EVENT_EXDATES_MAX
#define REMINDERS_MAX 20
#define REMINDER_MINUTES_MAX 40320 /* four weeks */
#define ATTENDEES_MAX 100
#define DURATION_MAX (366LL * 86400)
#define YEAR_FIRST EVENT_YEAR_FIRST
#define YEAR_LAST EVENT_YEAR_LAST

/* The fields a client may send (POST takes check_conflicts too). */
static const char *const EVENT_FIELDS[] = {"title",     "description", "location",  "all_day",
                                           "starts_at", "ends_at",     "timezone",  "recurrence",
                                           "exdates",   "reminders",   "attendees", NULL};

/* ---- Small helpers ---- */

/* A string member: absent or null → *out = NULL (an error when required). */
static int get_string(json_t *obj, const char *field, int required, size_t min, size_t max, const char **out,
                      struct store_err *err) {
    json_t *v = json_object_get(obj, field);
    char msg[160];
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (!required) return 0;
        snprintf(msg, sizeof msg, "%s is required", field);
        return store_bad_field(err, field, msg);
    }
    if (!json_is_string(v)) {
        snprintf(msg, sizeof msg, "%s must be a string", field);
        return store_bad_field(err, field, msg);
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) {
        snprintf(msg, sizeof msg, "%s must not contain NUL characters", field);
        return store_bad_field(err, field, msg);
    }
    size_t n = store_utf8_chars(s);
    if (n < min || n > max) {
        snprintf(msg, sizeof msg, "%s must be %zu to %zu characters long", field, min, max);
        return store_bad_field(err, field, msg);
    }
    *out = s;
    return 0;
}
static long long to_ll(const char *s) { return strtoll(s, NULL, 10); }

/* ---- Validation ---- */

/* What a create or an update writes, checked. Strings are borrowed from the input JSON. */
struct ev_in {
    const char *title, *description, *location, *timezone, *starts, *ends, *recurrence;
    int all_day;
    json_t *exdates, *reminders, *attendees; /* new references: JSON arrays, normalized */
    struct rrule rule;
    int has_rule, until_utc;
    int check_conflicts;
    long long keep_duration; /* PATCH moving starts_at alone keeps the duration (0 = default) */
};

static void ev_in_free(struct ev_in *v) {
    json_decref(v->exdates);
    json_decref(v->reminders);
    json_decref(v->attendees);
}

/* An array member of at most max items (absent or null → an empty array). */
static json_t *get_array(json_t *obj, const char *field, size_t max, struct store_err *err) {
    json_t *v = json_object_get(obj, field);
    char msg[128];
    if (!v || json_is_null(v)) return json_array();
    if (!json_is_array(v)) {
        snprintf(msg, sizeof msg, "%s must be an array", field);
        store_bad_field(err, field, msg);
        return NULL;
    }
    if (json_array_size(v) > max) {
        snprintf(msg, sizeof msg, "%s may hold at most %zu items", field, max);
        store_bad_field(err, field, msg);
        return NULL;
    }
    return json_incref(v);
}

/* Whether the UNTIL part of rule text is given in UTC ("...Z"). */
static int until_is_utc(const char *rule) {
    const char *u = strstr(rule, "UNTIL=");
    if (!u) return 0;
    u += 6;
    size_t n = strcspn(u, ";");
    return n > 0 && u[n - 1] == 'Z';
}

static int validate(const struct store_ctx *ctx, json_t *in, int allow_check, struct ev_in *v, struct store_err *err) {
    memset(v, 0, sizeof *v);
    if (!json_is_object(in)) return store_bad_field(err, "body", "the body must be a JSON object");
    const char *k;
    json_t *val;
    json_object_foreach(in, k, val) {
        int ok = allow_check && !strcmp(k, "check_conflicts");
        for (const char *const *f = EVENT_FIELDS; *f && !ok; f++) ok = !strcmp(*f, k);
        if (!ok) {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown field '%.60s'", k);
            return store_bad_field(err, k, msg);
        }
    }
    if (get_string(in, "title", 1, 1, TITLE_MAX, &v->title, err) ||
        get_string(in, "description", 0, 0, DESCRIPTION_MAX, &v->description, err) ||
        get_string(in, "location", 0, 0, LOCATION_MAX, &v->location, err))
        return -1;
    json_t *ad = json_object_get(in, "all_day");
    if (ad && !json_is_null(ad) && !json_is_boolean(ad)) return store_bad_field(err, "all_day", "all_day must be true or false");
    json_t *cc = json_object_get(in, "check_conflicts");
    if (cc && !json_is_null(cc) && !json_is_boolean(cc))
        return store_bad_field(err, "check_conflicts", "check_conflicts must be true or false");
    v->check_conflicts = cc && json_is_true(cc);

    int sdate = 0, edate = 0;
    if (get_string(in, "starts_at", 1, 1, 64, &v->starts, err)) return -1;
    if (!occ_time_ok(v->starts, &sdate))
        return store_bad_field(err, "starts_at", "starts_at must be an RFC 3339 time with offset (2026-03-01T09:00:00+01:00) "
                                     "or, for all-day events, a date (2026-03-01)");
    v->all_day = ad && json_is_boolean(ad) ? json_is_true(ad) : sdate;
    if (v->all_day != sdate)
        return store_bad_field(err, "starts_at",
                   v->all_day ? "all-day events start on a date such as 2026-03-01"
                              : "timed events start at an RFC 3339 time such as 2026-03-01T09:00:00Z");
    if (get_string(in, "ends_at", 0, 1, 64, &v->ends, err)) return -1;
    if (v->ends && (!occ_time_ok(v->ends, &edate) || edate != v->all_day))
        return store_bad_field(err, "ends_at", v->all_day ? "ends_at of an all-day event must be a date (exclusive)"
                                              : "ends_at must be an RFC 3339 time with offset");

    if (get_string(in, "timezone", 0, 1, 64, &v->timezone, err)) return -1;
    if (v->timezone && !store_timezone_valid(ctx->db, v->timezone))
        return store_bad_field(err, "timezone", "timezone must be an IANA time zone name such as Europe/Berlin");

    if (get_string(in, "recurrence", 0, 1, RECURRENCE_MAX, &v->recurrence, err)) return -1;
    if (v->recurrence) {
        char why[160], msg[200];
        if (rrule_parse(v->recurrence, &v->rule, why, sizeof why)) {
            snprintf(msg, sizeof msg, "recurrence is not a supported RRULE: %s", why);
            return store_bad_field(err, "recurrence", msg);
        }
        if (v->rule.has_until && (v->rule.until.y < YEAR_FIRST || v->rule.until.y > YEAR_LAST))
            return store_bad_field(err, "recurrence", "recurrence: UNTIL must lie between the years 1000 and 9000");
        v->has_rule = 1;
        v->until_utc = v->rule.has_until && until_is_utc(v->recurrence);
    }

    if (!(v->exdates = get_array(in, "exdates", EXDATES_MAX, err))) return -1;
    for (size_t i = 0; i < json_array_size(v->exdates); i++) {
        json_t *x = json_array_get(v->exdates, i);
        int xd = 0;
        if (!json_is_string(x) || !occ_time_ok(json_string_value(x), &xd) || xd != v->all_day)
            return store_bad_field(err, "exdates", v->all_day ? "exdates of an all-day event must be dates"
                                                  : "exdates must be RFC 3339 times, like starts_at");
    }
    if (!(v->reminders = get_array(in, "reminders", REMINDERS_MAX, err))) return -1;
    for (size_t i = 0; i < json_array_size(v->reminders); i++) {
        json_t *x = json_array_get(v->reminders, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > REMINDER_MINUTES_MAX)
            return store_bad_field(err, "reminders", "reminders must be whole numbers of minutes from 0 to 40320");
    }
    json_t *att = get_array(in, "attendees", ATTENDEES_MAX, err);
    if (!att) return -1;
    v->attendees = json_array();
    for (size_t i = 0; i < json_array_size(att); i++) {
        json_t *x = json_array_get(att, i);
        char email[256];
        if (!json_is_string(x) || strlen(json_string_value(x)) != json_string_length(x) ||
            store_email_normalize(json_string_value(x), email, sizeof email)) {
            json_decref(att);
            return store_bad_field(err, "attendees", "attendees must be email addresses such as ana@example.com");
        }
        int dup = 0;
        for (size_t j = 0; j < json_array_size(v->attendees) && !dup; j++)
            dup = !strcmp(json_string_value(json_array_get(v->attendees, j)), email);
        if (!dup) json_array_append_new(v->attendees, json_string(email));
    }
    json_decref(att);
    return 0;
}

/* ---- Writes ---- */

/* Converts the checked times of v into the stored form, then inserts (id == NULL) or updates the
 * row. Returns the row's result (EVENT_JSON, start epoch, bound of the conflict check), or NULL. */
static PGresult *write_event(const struct store_ctx *ctx, const char *id, struct ev_in *v, struct store_err *err) {
    char *ex = json_dumps(v->exdates, JSON_COMPACT), *rem = json_dumps(v->reminders, JSON_COMPACT),
         *att = json_dumps(v->attendees, JSON_COMPACT);
    char until[20] = "", keep[24];
    PGresult *r = NULL, *out = NULL;
    if (!ex || !rem || !att) {
        store_fail(err, 500, "internal", NULL, "internal error");
        goto done;
    }
    if (v->until_utc) civil_format(v->rule.until, until);
    snprintf(keep, sizeof keep, "%lld", v->keep_duration);
    const char *p[8] = {v->starts, v->ends, v->timezone, v->all_day ? "true" : "false", ex, until[0] ? until : NULL,
                        keep, ctx->user_id};
    /* One statement converts: the zone (the user's by default), the local start, the duration,
     * the exdates into local starts, a UTC UNTIL into local time. Parameters are cast to text
     * first: an untyped parameter takes the type of its first cast ($1::date would drop the time). */
    r = store_exec(ctx, err,
                   "WITH z AS (SELECT COALESCE($3::text, (SELECT u.timezone FROM users u WHERE u.id = $8::uuid), "
                   "'UTC') AS tz), "
                   "s AS (SELECT z.tz, CASE WHEN $4::boolean THEN $1::text::date::timestamp "
                   "ELSE date_trunc('second', $1::text::timestamptz) AT TIME ZONE z.tz END AS ls, "
                   "CASE WHEN $4::boolean THEN ($2::text::date - $1::text::date)::bigint * 86400 "
                   "ELSE extract(epoch FROM date_trunc('second', $2::text::timestamptz) "
                   "- date_trunc('second', $1::text::timestamptz))::bigint END AS dur FROM z) "
                   "SELECT s.tz, to_char(s.ls, " FMT_LOCAL "), COALESCE(s.dur, NULLIF($7::bigint, 0), "
                   "CASE WHEN $4::boolean THEN 86400 ELSE 3600 END), "
                   "(SELECT COALESCE(json_agg(to_char(CASE WHEN $4::boolean THEN x::date::timestamp "
                   "ELSE x::timestamptz AT TIME ZONE s.tz END, " FMT_LOCAL ") ORDER BY i), '[]') "
                   "FROM json_array_elements_text($5::json) WITH ORDINALITY t(x, i))::text, "
                   "to_char(($6::timestamp AT TIME ZONE 'UTC') AT TIME ZONE s.tz, " FMT_LOCAL ") FROM s",
                   8, p);
    if (!r) goto done;
    const char *tz = PQgetvalue(r, 0, 0), *ls = PQgetvalue(r, 0, 1), *exl = PQgetvalue(r, 0, 3);
    long long dur = to_ll(PQgetvalue(r, 0, 2));
    struct civil start;
    if (civil_parse(ls, &start) || start.y < YEAR_FIRST || start.y > YEAR_LAST) {
        store_bad_field(err, "starts_at", "starts_at is out of range");
        goto done;
    }
    if (dur <= 0) {
        store_bad_field(err, "ends_at", "ends_at must be after starts_at");
        goto done;
    }
    if (dur > DURATION_MAX) {
        store_bad_field(err, "ends_at", "an event may last at most 366 days");
        goto done;
    }
    char canon[600], last_s[20] = "";
    if (v->has_rule) {
        if (v->until_utc && civil_parse(PQgetvalue(r, 0, 4), &v->rule.until)) {
            store_bad_field(err, "recurrence", "recurrence: UNTIL is out of range");
            goto done;
        }
        if (v->rule.has_until && civil_cmp(v->rule.until, start) < 0) {
            store_bad_field(err, "recurrence", "recurrence: UNTIL is before starts_at");
            goto done;
        }
        if (rrule_format(&v->rule, canon, sizeof canon)) {
            store_bad_field(err, "recurrence", "recurrence is too long");
            goto done;
        }
        /* The last start bounds the series for the window query (NULL: it never ends). */
        if (v->rule.has_until) {
            civil_format(v->rule.until, last_s);
        } else if (v->rule.count > 0) {
            struct civil *all = malloc((size_t)v->rule.count * sizeof *all), end = {YEAR_LAST + 1, 1, 1, 0, 0, 0};
            if (!all) {
                store_fail(err, 500, "internal", NULL, "internal error");
                goto done;
            }
            int n = rrule_expand(&v->rule, start, start, end, NULL, 0, all, v->rule.count, NULL);
            if (n > 0) civil_format(all[n - 1], last_s);
            free(all);
        }
    }
    const char *q[15] = {ctx->user_id,
                         v->title,
                         v->description ? v->description : "",
                         v->location ? v->location : "",
                         v->all_day ? "true" : "false",
                         tz,
                         ls,
                         PQgetvalue(r, 0, 2),
                         v->all_day ? NULL : v->starts,
                         v->has_rule ? canon : NULL,
                         exl,
                         last_s[0] ? last_s : NULL,
                         rem,
                         att,
                         id};
    /* $9: the instant given for a timed event (the first occurrence keeps it exactly, even in an
     * hour that DST makes ambiguous); all-day events start at local midnight. */
#define EV_VALUES                                                                                          \
    "$2, $3, $4, $5::boolean, $6, $7::timestamp, $8::bigint, "                                             \
    "COALESCE(date_trunc('second', $9::timestamptz), $7::timestamp AT TIME ZONE $6), "                     \
    "CASE WHEN $5::boolean THEN ($7::timestamp + $8::bigint / 86400 * interval '1 day') AT TIME ZONE $6 "  \
    "ELSE COALESCE(date_trunc('second', $9::timestamptz), $7::timestamp AT TIME ZONE $6) "                 \
    "+ $8::bigint * interval '1 second' END, "                                                             \
    "$10, ARRAY(SELECT x::timestamp FROM json_array_elements_text($11::json) WITH ORDINALITY t(x, i) "     \
    "ORDER BY i), "                                                                                        \
    "CASE WHEN $12::timestamp IS NULL THEN NULL WHEN $5::boolean "                                         \
    "THEN ($12::timestamp + $8::bigint / 86400 * interval '1 day') AT TIME ZONE $6 "                       \
    "ELSE ($12::timestamp AT TIME ZONE $6) + $8::bigint * interval '1 second' END, "                       \
    "ARRAY(SELECT x::int FROM json_array_elements_text($13::json) WITH ORDINALITY t(x, i) ORDER BY i), "   \
    "ARRAY(SELECT x FROM json_array_elements_text($14::json) WITH ORDINALITY t(x, i) ORDER BY i)"
#define EV_RETURNING                                                                                       \
    " RETURNING " EVENT_JSON ", extract(epoch FROM e.starts_at)::bigint, "                                 \
    "extract(epoch FROM LEAST(COALESCE(e.series_ends_at, e.ends_at), e.starts_at + interval '366 days'))::bigint"
    if (!id)
        out = store_exec(ctx, err,
                         "INSERT INTO events AS e (user_id, title, description, location, all_day, timezone, "
                         "local_start, duration_s, starts_at, ends_at, recurrence, exdates, series_ends_at, "
                         "reminders, attendees) VALUES ($1::uuid, " EV_VALUES ") " EV_RETURNING,
                         14, q);
    else
        out = store_exec(ctx, err,
                         "UPDATE events AS e SET (title, description, location, all_day, timezone, local_start, "
                         "duration_s, starts_at, ends_at, recurrence, exdates, series_ends_at, reminders, "
                         "attendees) = (" EV_VALUES "), version = e.version + 1, updated_at = now() "
                         "WHERE e.id = $15::uuid AND e.user_id = $1::uuid" EV_RETURNING,
                         15, q);
#undef EV_VALUES
#undef EV_RETURNING
    if (out && PQntuples(out) != 1) {
        PQclear(out);
        out = NULL;
        store_fail(err, 404, "not_found", NULL, "no such event");
    }
done:
    PQclear(r);
    free(ex);
    free(rem);
    free(att);
    return out;
}
/* ---- Public: reads ---- */

json_t *store_event_get(const struct store_ctx *ctx, const char *id, struct store_err *err) {
    if (!store_is_uuid(id)) {
        store_fail(err, 404, "not_found", NULL, "no such event");
        return NULL;
    }
    const char *p[2] = {id, ctx->user_id};
    PGresult *r = store_exec(ctx, err,
                             "SELECT " EVENT_JSON " FROM events e WHERE e.id = $1::uuid AND e.user_id = $2::uuid",
                             2, p);
    if (!r) return NULL;
    json_t *ev = PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
    if (!ev) store_fail(err, 404, "not_found", NULL, "no such event");
    PQclear(r);
    return ev;
}

json_t *store_events_all(const struct store_ctx *ctx, struct store_err *err) {
    const char *p[1] = {ctx->user_id};
    PGresult *r = store_exec(ctx, err,
                             "SELECT " EVENT_JSON " FROM events e WHERE e.user_id = $1::uuid "
                             "ORDER BY e.created_at, e.id",
                             1, p);
    if (!r) return NULL;
    json_t *all = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *ev = json_loads(PQgetvalue(r, i, 0), 0, NULL);
        if (ev) json_array_append_new(all, ev);
    }
    PQclear(r);
    return all;
}

/* ---- Public: writes ---- */

static int savepoint(const struct store_ctx *ctx, const char *sql, struct store_err *err) {
    PGresult *r = store_exec(ctx, err, sql, 0, NULL);
    if (!r) return -1;
    PQclear(r);
    return 0;
}

json_t *store_event_create_checked(const struct store_ctx *ctx, json_t *in, json_t **conflicts,
                                   struct store_err *err) {
    struct ev_in v;
    json_t *ev = NULL, *list = NULL;
    PGresult *r = NULL;
    if (conflicts) *conflicts = NULL;
    if (validate(ctx, in, 1, &v, err)) goto done;
    /* Under a savepoint: a refused check_conflicts, or any failure after the INSERT, leaves
     * nothing behind whoever the caller (REST or a script that goes on with its transaction). */
    if (savepoint(ctx, "SAVEPOINT store_event_create", err)) goto done;
    r = write_event(ctx, NULL, &v, err);
    if (!r || !(ev = json_loads(PQgetvalue(r, 0, 0), 0, NULL))) {
        if (r) store_fail(err, 500, "internal", NULL, "internal error");
        goto undo;
    }
    const char *id = json_string_value(json_object_get(ev, "id"));
    list = occ_conflicts_of(ctx, id, to_ll(PQgetvalue(r, 0, 1)), to_ll(PQgetvalue(r, 0, 2)), err);
    if (!list) goto undo;
    if (v.check_conflicts && json_array_size(list) > 0) {
        store_fail(err, 409, "conflict", NULL, "the event overlaps %zu other occurrence(s); nothing was created",
                   json_array_size(list));
        if (conflicts) *conflicts = json_incref(list);
        goto undo;
    }
    if (store_activity(ctx, err, "create", "event", id, ev) ||
        savepoint(ctx, "RELEASE SAVEPOINT store_event_create", err))
        goto undo;
    json_object_set(ev, "conflicts", list);
    goto done;
undo: {
    struct store_err ignored;
    if (!savepoint(ctx, "ROLLBACK TO SAVEPOINT store_event_create", &ignored))
        savepoint(ctx, "RELEASE SAVEPOINT store_event_create", &ignored);
    json_decref(ev);
    ev = NULL;
}
done:
    json_decref(list);
    PQclear(r);
    ev_in_free(&v);
    return ev;
}

json_t *store_event_create(const struct store_ctx *ctx, json_t *in, struct store_err *err) {
    return store_event_create_checked(ctx, in, NULL, err);
}

/* Reads the event for a change, locked; 404 or 412 when it is missing or another version. */
static json_t *lock_event(const struct store_ctx *ctx, const char *id, const struct store_match *match,
                          long long *duration, struct store_err *err) {
    if (!store_is_uuid(id)) {
        store_fail(err, 404, "not_found", NULL, "no such event");
        return NULL;
    }
    const char *p[2] = {id, ctx->user_id};
    PGresult *r = store_exec(ctx, err,
                             "SELECT " EVENT_JSON ", e.duration_s FROM events e "
                             "WHERE e.id = $1::uuid AND e.user_id = $2::uuid FOR UPDATE",
                             2, p);
    if (!r) return NULL;
    json_t *ev = PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
    if (ev && duration) *duration = to_ll(PQgetvalue(r, 0, 1));
    PQclear(r);
    if (!ev) {
        store_fail(err, 404, "not_found", NULL, "no such event");
        return NULL;
    }
    if (!store_match_ok(match, (long long)json_integer_value(json_object_get(ev, "version")))) {
        json_decref(ev);
        store_fail(err, 412, "precondition_failed", NULL,
                   "the event has changed since you read it (If-Match does not match its ETag)");
        return NULL;
    }
    return ev;
}

json_t *store_event_update(const struct store_ctx *ctx, const char *id, json_t *patch,
                           const struct store_match *match, struct store_err *err) {
    struct ev_in v;
    memset(&v, 0, sizeof v);
    json_t *old = NULL, *merged = NULL, *ev = NULL, *diff = NULL;
    PGresult *r = NULL;
    long long duration = 0;
    if (!json_is_object(patch)) {
        store_bad_field(err, "body", "the body must be a JSON object");
        return NULL;
    }
    const char *k;
    json_t *val;
    json_object_foreach(patch, k, val) {
        int ok = 0;
        for (const char *const *f = EVENT_FIELDS; *f && !ok; f++) ok = !strcmp(*f, k);
        if (!ok) {
            char msg[128];
            snprintf(msg, sizeof msg, "unknown field '%.60s'", k);
            store_bad_field(err, k, msg);
            return NULL;
        }
    }
    if (json_object_size(patch) == 0) {
        store_bad_field(err, "body", "nothing to change: send at least one field");
        return NULL;
    }
    if (!(old = lock_event(ctx, id, match, &duration, err))) return NULL;
    merged = json_object();
    for (const char *const *f = EVENT_FIELDS; *f; f++) {
        json_t *x = json_object_get(patch, *f);
        if (!x) x = json_object_get(old, *f);
        if (x) json_object_set(merged, *f, x);
    }
    /* A new start alone says whether the event is all-day, and keeps the length (unless the kind
     * changes). Null clears a field: the validator reads absent and null alike. */
    int moved = json_object_get(patch, "starts_at") && !json_object_get(patch, "ends_at");
    if (json_object_get(patch, "starts_at") && !json_object_get(patch, "all_day")) json_object_del(merged, "all_day");
    if (moved) json_object_del(merged, "ends_at");
    if (validate(ctx, merged, 0, &v, err)) goto done;
    if (moved && v.all_day == json_is_true(json_object_get(old, "all_day"))) v.keep_duration = duration;
    if (!(r = write_event(ctx, id, &v, err))) goto done;
    if (!(ev = json_loads(PQgetvalue(r, 0, 0), 0, NULL))) {
        store_fail(err, 500, "internal", NULL, "internal error");
        goto done;
    }
    diff = json_object();
    json_object_foreach(patch, k, val) {
        json_t *before = json_object_get(old, k), *after = json_object_get(ev, k);
        if (!json_equal(before, after))
            json_object_set_new(diff, k, json_pack("{s:O?, s:O?}", "from", before, "to", after));
    }
    if (store_activity(ctx, err, "update", "event", id, diff)) {
        json_decref(ev);
        ev = NULL;
    }
done:
    PQclear(r);
    ev_in_free(&v);
    json_decref(old);
    json_decref(merged);
    json_decref(diff);
    return ev;
}

int store_event_delete(const struct store_ctx *ctx, const char *id, const struct store_match *match,
                       struct store_err *err) {
    json_t *old = lock_event(ctx, id, match, NULL, err);
    if (!old) return -1;
    const char *p[2] = {id, ctx->user_id};
    PGresult *r = store_exec(ctx, err, "DELETE FROM events WHERE id = $1::uuid AND user_id = $2::uuid", 2, p);
    int rc = -1;
    if (r) {
        json_t *diff = json_pack("{s:O, s:O}", "title", json_object_get(old, "title"), "starts_at",
                                 json_object_get(old, "starts_at"));
        rc = store_activity(ctx, err, "delete", "event", id, diff);
        json_decref(diff);
    }
    PQclear(r);
    json_decref(old);
    return rc;
}
