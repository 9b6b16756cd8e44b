/* store_occurrences — see store_occurrences.h. A series has at most one start a day (every start
 * is at DTSTART's time of day), which bounds each expansion: a window plus its margins spans less
 * than 800 days. */
#include "store_occurrences.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rrule.h"
#include "store_events.h"

#define WINDOW_DAYS_MAX 366
#define FREEBUSY_DAYS_MAX 31
#define OCCURRENCES_MAX 5000      /* shown by a window query (then truncated: true) */
#define EXPANDED_MAX 100000       /* local starts sent to PostgreSQL for one query */
#define SERIES_IN_WINDOW_MAX 1000 /* starts of one series in a window with its margins */
#define CONFLICT_PAIRS_MAX 1000
#define CREATE_CONFLICTS_MAX 100
#define FREE_SLOTS_MAX 5000
#define SLOT_ALIGN 900 /* 15 minutes */

/* ---- Small helpers ---- */

static int bad(struct store_err *err, const char *field, const char *message) {
    return store_fail(err, 400, "invalid_field", field, "%s", message);
}

int occ_time_ok(const char *s, int *is_date) {
    if (!store_time_valid(s, is_date)) return 0;
    int y = atoi(s), mo = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    return y >= EVENT_YEAR_FIRST && y <= EVENT_YEAR_LAST && d <= civil_days_in_month(y, mo);
}

static void format_utc(long long epoch, char out[32]) {
    time_t t = (time_t)epoch;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void format_date(struct civil c, char out[11]) {
    char s[20];
    civil_format(c, s);
    memcpy(out, s, 10);
    out[10] = '\0';
}

static long long to_ll(const char *s) { return strtoll(s, NULL, 10); }

/* ---- Occurrences ---- */

struct occ {
    size_t ev;          /* index into the set's events */
    struct civil local; /* local start in the event's zone */
    long long s, e;     /* instants (epoch seconds) */
};

struct occ_set {
    json_t *events;     /* array of event objects */
    long long *dur;     /* per event */
    int *all_day;
    struct occ *o;
    size_t n;
    int truncated;
};

static void occ_set_free(struct occ_set *set) {
    json_decref(set->events);
    free(set->dur);
    free(set->all_day);
    free(set->o);
    memset(set, 0, sizeof *set);
}

/* Every occurrence overlapping [F, T) of every event of the user, sorted by start (then by the
 * event's own start), at most max (more: set->truncated). */
static int collect(const struct store_ctx *ctx, long long F, long long T, size_t max, struct occ_set *set,
                   struct store_err *err) {
    char fs[24], ts[24], lim[24];
    memset(set, 0, sizeof *set);
    snprintf(fs, sizeof fs, "%lld", F);
    snprintf(ts, sizeof ts, "%lld", T);
    snprintf(lim, sizeof lim, "%zu", max + 1);
    const char *p[3] = {fs, ts, ctx->user_id};
    PGresult *r = store_exec(
        ctx, err,
        "SELECT " EVENT_JSON ", to_char(e.local_start, " FMT_LOCAL "), e.duration_s, e.all_day, e.recurrence, "
        "array_to_json(ARRAY(SELECT to_char(x, " FMT_LOCAL ") FROM unnest(e.exdates) x))::text, "
        "to_char(to_timestamp($1::double precision) AT TIME ZONE e.timezone, " FMT_LOCAL "), "
        "to_char(to_timestamp($2::double precision) AT TIME ZONE e.timezone, " FMT_LOCAL "), e.timezone, "
        "extract(epoch FROM e.starts_at)::bigint "
        "FROM events e WHERE e.user_id = $3::uuid AND e.starts_at < to_timestamp($2::double precision) AND ("
        "(e.recurrence IS NULL AND e.ends_at > to_timestamp($1::double precision) "
        "AND e.starts_at > to_timestamp($1::double precision) - interval '367 days') OR "
        "(e.recurrence IS NOT NULL AND (e.series_ends_at IS NULL "
        "OR e.series_ends_at > to_timestamp($1::double precision)))) "
        "ORDER BY e.starts_at, e.id",
        3, p);
    if (!r) return -1;
    int nev = PQntuples(r), rc = -1;
    struct civil *buf = malloc(SERIES_IN_WINDOW_MAX * sizeof *buf), *exd = malloc(EVENT_EXDATES_MAX * sizeof *exd);
    struct occ *cand = NULL;
    size_t ncand = 0, capcand = 0;
    json_t *batch = json_array();
    char *batch_s = NULL;
    PGresult *c = NULL;
    set->events = json_array();
    set->dur = calloc((size_t)nev + 1, sizeof *set->dur);
    set->all_day = calloc((size_t)nev + 1, sizeof *set->all_day);
    if (!buf || !exd || !batch || !set->events || !set->dur || !set->all_day) goto oom;
    for (int i = 0; i < nev; i++) {
        json_t *ev = json_loads(PQgetvalue(r, i, 0), 0, NULL);
        if (!ev) goto oom;
        json_array_append_new(set->events, ev);
        struct civil ls, lf, lt;
        long long dur = to_ll(PQgetvalue(r, i, 2));
        set->dur[i] = dur;
        set->all_day[i] = PQgetvalue(r, i, 3)[0] == 't';
        if (civil_parse(PQgetvalue(r, i, 1), &ls)) continue;
        int n = 0, more = 0;
        if (PQgetisnull(r, i, 4)) {
            buf[0] = ls;
            n = 1;
        } else {
            struct rrule rule;
            if (rrule_parse(PQgetvalue(r, i, 4), &rule, NULL, 0) || civil_parse(PQgetvalue(r, i, 6), &lf) ||
                civil_parse(PQgetvalue(r, i, 7), &lt))
                continue;
            json_t *xs = json_loads(PQgetvalue(r, i, 5), 0, NULL);
            size_t nex = 0;
            for (size_t j = 0; j < json_array_size(xs) && nex < EVENT_EXDATES_MAX; j++)
                if (!civil_parse(json_string_value(json_array_get(xs, j)), &exd[nex])) nex++;
            json_decref(xs);
            /* Local margins: an occurrence that started before the window may still overlap it,
             * and a zone's offset moves the local window by up to a day. */
            lf = civil_add_seconds(lf, -dur - 2 * 86400);
            lt = civil_add_seconds(lt, 2 * 86400);
            n = rrule_expand(&rule, ls, lf, lt, exd, nex, buf, SERIES_IN_WINDOW_MAX, &more);
            if (more) set->truncated = 1;
        }
        for (int j = 0; j < n; j++) {
            if (ncand >= EXPANDED_MAX) {
                set->truncated = 1;
                break;
            }
            if (ncand == capcand) {
                size_t nc = capcand ? capcand * 2 : 256;
                struct occ *g = realloc(cand, nc * sizeof *g);
                if (!g) goto oom;
                cand = g;
                capcand = nc;
            }
            cand[ncand] = (struct occ){.ev = (size_t)i, .local = buf[j]};
            char l[20];
            civil_format(buf[j], l);
            json_t *item = json_pack("{s:I, s:s, s:s, s:I, s:b}", "k", (json_int_t)ncand, "l", l, "tz",
                                     PQgetvalue(r, i, 8), "d", (json_int_t)dur, "ad", set->all_day[i]);
            /* The first occurrence keeps the instant given, even in an hour DST makes ambiguous
             * (local AT TIME ZONE picks one of the two). */
            if (!set->all_day[i] && civil_cmp(buf[j], ls) == 0)
                json_object_set_new(item, "f", json_integer((json_int_t)to_ll(PQgetvalue(r, i, 9))));
            json_array_append_new(batch, item);
            ncand++;
        }
    }
    if (ncand == 0) {
        rc = 0;
        goto done;
    }
    /* PostgreSQL turns each local start into an instant in its zone, keeps those overlapping the
     * window and sorts them. */
    batch_s = json_dumps(batch, JSON_COMPACT);
    if (!batch_s) goto oom;
    const char *q[4] = {batch_s, fs, ts, lim};
    c = store_exec(ctx, err,
                   "SELECT k, s, e FROM (SELECT o.k, "
                   "COALESCE(o.f, extract(epoch FROM (o.l AT TIME ZONE o.tz))::bigint) AS s, "
                   "CASE WHEN o.ad THEN extract(epoch FROM ((o.l + o.d / 86400 * interval '1 day') AT TIME ZONE o.tz))"
                   "::bigint ELSE COALESCE(o.f, extract(epoch FROM (o.l AT TIME ZONE o.tz))::bigint) + o.d END AS e "
                   "FROM json_to_recordset($1::json) "
                   "AS o(k int, l timestamp, tz text, d bigint, ad boolean, f bigint)) q "
                   "WHERE q.s < $3::bigint AND q.e > $2::bigint ORDER BY q.s, q.k LIMIT $4::bigint",
                   4, q);
    if (!c) goto done;
    size_t nrows = (size_t)PQntuples(c);
    if (nrows > max) {
        set->truncated = 1;
        nrows = max;
    }
    set->o = calloc(nrows ? nrows : 1, sizeof *set->o);
    if (!set->o) goto oom;
    for (size_t i = 0; i < nrows; i++) {
        long long k = to_ll(PQgetvalue(c, (int)i, 0));
        if (k < 0 || (size_t)k >= ncand) continue;
        set->o[set->n] = cand[k];
        set->o[set->n].s = to_ll(PQgetvalue(c, (int)i, 1));
        set->o[set->n].e = to_ll(PQgetvalue(c, (int)i, 2));
        set->n++;
    }
    rc = 0;
    goto done;
oom:
    store_fail(err, 500, "internal", NULL, "internal error");
done:
    PQclear(r);
    PQclear(c);
    free(buf);
    free(exd);
    free(cand);
    free(batch_s);
    json_decref(batch);
    if (rc) occ_set_free(set);
    return rc;
}

/* The occurrence's start and end as the API shows them: UTC instants, or dates for all-day. */
static void occ_times(const struct occ_set *set, const struct occ *o, char start[32], char end[32]) {
    if (set->all_day[o->ev]) {
        format_date(o->local, start);
        format_date(civil_add_days(o->local, (int)(set->dur[o->ev] / 86400)), end);
    } else {
        format_utc(o->s, start);
        format_utc(o->e, end);
    }
}

/* The whole event plus occurrence_start, occurrence_end and series_id (new reference). */
static json_t *occ_json(const struct occ_set *set, const struct occ *o) {
    json_t *ev = json_array_get(set->events, o->ev), *j = json_copy(ev);
    char s[32], e[32];
    occ_times(set, o, s, e);
    json_object_set_new(j, "occurrence_start", json_string(s));
    json_object_set_new(j, "occurrence_end", json_string(e));
    json_object_set(j, "series_id", json_object_get(ev, "id"));
    return j;
}

/* A short form for conflict lists (new reference). */
static json_t *occ_brief(const struct occ_set *set, const struct occ *o) {
    json_t *ev = json_array_get(set->events, o->ev);
    char s[32], e[32];
    occ_times(set, o, s, e);
    return json_pack("{s:O, s:O, s:O, s:s, s:s}", "series_id", json_object_get(ev, "id"), "title",
                     json_object_get(ev, "title"), "all_day", json_object_get(ev, "all_day"), "occurrence_start", s,
                     "occurrence_end", e);
}

/* ---- Windows and the queries over them ---- */

/* Checks from/to (RFC 3339 or dates; a date is midnight in the user's zone) and turns them into
 * epoch seconds; the window must be at most max_days long. */
static int window(const struct store_ctx *ctx, const char *from, const char *to, int max_days, long long *F,
                  long long *T, struct store_err *err) {
    int fd = 0, td = 0;
    char msg[128];
    if (!from || !*from) return bad(err, "from", "from is required (an RFC 3339 time or a date)");
    if (!occ_time_ok(from, &fd)) return bad(err, "from", "from must be an RFC 3339 time with offset or a date");
    if (!to || !*to) return bad(err, "to", "to is required (an RFC 3339 time or a date)");
    if (!occ_time_ok(to, &td)) return bad(err, "to", "to must be an RFC 3339 time with offset or a date");
    const char *p[5] = {from, fd ? "true" : "false", to, td ? "true" : "false", ctx->user_id};
    PGresult *r = store_exec(ctx, err,
                             /* ::text first: a parameter takes the type of its first cast */
                             "SELECT floor(extract(epoch FROM CASE WHEN $2::boolean "
                             "THEN $1::text::date::timestamp AT TIME ZONE u.timezone "
                             "ELSE $1::text::timestamptz END))::bigint, "
                             "floor(extract(epoch FROM CASE WHEN $4::boolean "
                             "THEN $3::text::date::timestamp AT TIME ZONE u.timezone "
                             "ELSE $3::text::timestamptz END))::bigint "
                             "FROM users u WHERE u.id = $5::uuid",
                             5, p);
    if (!r) return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return store_fail(err, 404, "not_found", NULL, "no such account");
    }
    *F = to_ll(PQgetvalue(r, 0, 0));
    *T = to_ll(PQgetvalue(r, 0, 1));
    PQclear(r);
    if (*T <= *F) return bad(err, "to", "to must be after from");
    /* An hour of slack: a window of whole local days may span a DST change. */
    if (*T - *F > (long long)max_days * 86400 + 3600) {
        snprintf(msg, sizeof msg, "the window from from to to may be at most %d days long", max_days);
        return bad(err, "to", msg);
    }
    return 0;
}
json_t *store_events_window(const struct store_ctx *ctx, const char *from, const char *to, int max,
                            struct store_err *err) {
    long long F, T;
    struct occ_set set;
    if (max < 1 || max > OCCURRENCES_MAX) max = OCCURRENCES_MAX;
    if (window(ctx, from, to, WINDOW_DAYS_MAX, &F, &T, err) || collect(ctx, F, T, (size_t)max, &set, err)) return NULL;
    json_t *items = json_array();
    for (size_t i = 0; i < set.n; i++) json_array_append_new(items, occ_json(&set, &set.o[i]));
    json_t *out = json_pack("{s:o, s:b}", "items", items, "truncated", set.truncated);
    occ_set_free(&set);
    return out;
}

json_t *store_events_conflicts(const struct store_ctx *ctx, const char *from, const char *to, struct store_err *err) {
    long long F, T;
    struct occ_set set;
    if (window(ctx, from, to, WINDOW_DAYS_MAX, &F, &T, err) || collect(ctx, F, T, OCCURRENCES_MAX, &set, err))
        return NULL;
    json_t *items = json_array();
    int truncated = set.truncated;
    /* Sorted by start: every occurrence starting before o[i] ends overlaps it (touching does not). */
    for (size_t i = 0; i < set.n && !truncated; i++)
        for (size_t j = i + 1; j < set.n && set.o[j].s < set.o[i].e; j++) {
            if (json_array_size(items) >= CONFLICT_PAIRS_MAX) {
                truncated = 1;
                break;
            }
            json_array_append_new(items, json_pack("{s:o, s:o}", "a", occ_brief(&set, &set.o[i]), "b",
                                                   occ_brief(&set, &set.o[j])));
        }
    json_t *out = json_pack("{s:o, s:b}", "items", items, "truncated", truncated);
    occ_set_free(&set);
    return out;
}

/* ---- Free/busy ---- */

/* "HH:MM" → minutes of the day (end may be 24:00), or -1. */
static int hhmm(json_t *v, int allow_24) {
    const char *s = json_string_value(v);
    if (!s || strlen(s) != 5 || s[2] != ':') return -1;
    for (int i = 0; i < 5; i++)
        if (i != 2 && (s[i] < '0' || s[i] > '9')) return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
    if (m > 59 || h > 24 || (h == 24 && (m || !allow_24))) return -1;
    return h * 60 + m;
}

struct span {
    long long a, b;
};

/* Appends to list the slots of len seconds that fit in [a, b), starting on quarter hours, step apart. */
static void slots(json_t *list, long long a, long long b, long long len, long long step) {
    long long rem = a % SLOT_ALIGN;
    if (rem < 0) rem += SLOT_ALIGN;
    for (long long t = rem ? a - rem + SLOT_ALIGN : a; t + len <= b && json_array_size(list) < FREE_SLOTS_MAX;
         t += step) {
        char x[32], y[32];
        format_utc(t, x);
        format_utc(t + len, y);
        json_array_append_new(list, json_pack("{s:s, s:s}", "start", x, "end", y));
    }
}

json_t *store_events_freebusy(const struct store_ctx *ctx, const char *from, const char *to, long duration_min,
                              struct store_err *err) {
    long long F, T;
    struct occ_set set;
    if (duration_min < 5 || duration_min > 1440) {
        bad(err, "duration", "duration must be a whole number of minutes from 5 to 1440");
        return NULL;
    }
    if (window(ctx, from, to, FREEBUSY_DAYS_MAX, &F, &T, err)) return NULL;

    /* Working hours from the user's preferences; what is missing or malformed takes the default. */
    const char *up[1] = {ctx->user_id};
    PGresult *r = store_exec(ctx, err, "SELECT (preferences -> 'working_hours')::text FROM users WHERE id = $1::uuid",
                             1, up);
    if (!r) return NULL;
    json_t *wh = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
    PQclear(r);
    int start = 9 * 60, end = 17 * 60, ws = hhmm(json_object_get(wh, "start"), 0),
        we = hhmm(json_object_get(wh, "end"), 1);
    if (ws >= 0 && we >= 0 && we > ws) start = ws, end = we;
    char days[32] = "{1,2,3,4,5}";
    json_t *dv = json_object_get(wh, "days");
    if (json_is_array(dv)) {
        unsigned seen = 0;
        int ok = 1;
        for (size_t i = 0; i < json_array_size(dv); i++) {
            json_t *d = json_array_get(dv, i);
            if (!json_is_integer(d) || json_integer_value(d) < 1 || json_integer_value(d) > 7) ok = 0;
            else seen |= 1u << json_integer_value(d);
        }
        if (ok) {
            size_t n = 0;
            n += (size_t)snprintf(days + n, sizeof days - n, "{");
            for (int d = 1; d <= 7; d++)
                if (seen & (1u << d)) n += (size_t)snprintf(days + n, sizeof days - n, "%s%d", n > 1 ? "," : "", d);
            snprintf(days + n, sizeof days - n, "}");
        }
    }
    json_decref(wh);

    if (collect(ctx, F, T, EXPANDED_MAX, &set, err)) return NULL;
    /* Busy: the occurrences clipped to the window, merged. */
    struct span *busy = calloc(set.n ? set.n : 1, sizeof *busy);
    size_t nb = 0;
    json_t *out = NULL, *busy_j = json_array(), *free_j = json_array();
    PGresult *w = NULL;
    if (!busy) {
        store_fail(err, 500, "internal", NULL, "internal error");
        goto done;
    }
    for (size_t i = 0; i < set.n; i++) {
        long long a = set.o[i].s < F ? F : set.o[i].s, b = set.o[i].e > T ? T : set.o[i].e;
        if (nb > 0 && a <= busy[nb - 1].b) {
            if (b > busy[nb - 1].b) busy[nb - 1].b = b;
        } else {
            busy[nb++] = (struct span){a, b};
        }
    }
    for (size_t i = 0; i < nb; i++) {
        char a[32], b[32];
        format_utc(busy[i].a, a);
        format_utc(busy[i].b, b);
        json_array_append_new(busy_j, json_pack("{s:s, s:s}", "start", a, "end", b));
    }
    /* Working windows: each selected local day of the user's zone around the window. */
    char fs[24], ts[24], st[16], en[16];
    snprintf(fs, sizeof fs, "%lld", F);
    snprintf(ts, sizeof ts, "%lld", T);
    snprintf(st, sizeof st, "%02d:%02d", start / 60, start % 60);
    snprintf(en, sizeof en, "%02d:%02d", end / 60, end % 60);
    const char *p[6] = {fs, ts, st, en, days, ctx->user_id};
    w = store_exec(ctx, err,
                   "SELECT extract(epoch FROM (g.d + $3::time) AT TIME ZONE u.timezone)::bigint, "
                   "extract(epoch FROM (g.d + $4::time) AT TIME ZONE u.timezone)::bigint "
                   "FROM users u, generate_series(date_trunc('day', to_timestamp($1::double precision) AT TIME ZONE "
                   "u.timezone) - interval '1 day', date_trunc('day', to_timestamp($2::double precision) AT TIME ZONE "
                   "u.timezone), interval '1 day') AS g(d) "
                   "WHERE u.id = $6::uuid AND extract(isodow FROM g.d)::int = ANY ($5::int[]) ORDER BY g.d",
                   6, p);
    if (!w) goto done;
    long long step = ((long long)duration_min * 60 + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN,
              len = (long long)duration_min * 60;
    for (int i = 0; i < PQntuples(w); i++) {
        long long a = to_ll(PQgetvalue(w, i, 0)), b = to_ll(PQgetvalue(w, i, 1)), cur;
        if (a < F) a = F;
        if (b > T) b = T;
        /* The gaps between the busy spans inside the working window [a, b). */
        cur = a;
        for (size_t j = 0; j < nb && cur < b; j++) {
            if (busy[j].b <= cur) continue;
            if (busy[j].a >= b) break;
            slots(free_j, cur, busy[j].a, len, step);
            cur = busy[j].b;
        }
        slots(free_j, cur, b, len, step);
    }
    out = json_pack("{s:O, s:O, s:I}", "busy", busy_j, "free", free_j, "duration", (json_int_t)duration_min);
done:
    PQclear(w);
    free(busy);
    json_decref(busy_j);
    json_decref(free_j);
    occ_set_free(&set);
    return out;
}

json_t *occ_conflicts_of(const struct store_ctx *ctx, const char *id, long long F, long long T,
                         struct store_err *err) {
    struct occ_set set;
    if (collect(ctx, F, T, EXPANDED_MAX, &set, err)) return NULL;
    json_t *list = json_array();
    for (size_t i = 0; i < set.n && json_array_size(list) < CREATE_CONFLICTS_MAX; i++)
        for (size_t j = i + 1; j < set.n && set.o[j].s < set.o[i].e; j++) {
            const char *a = json_string_value(json_object_get(json_array_get(set.events, set.o[i].ev), "id"));
            const char *b = json_string_value(json_object_get(json_array_get(set.events, set.o[j].ev), "id"));
            int ai = a && !strcmp(a, id), bj = b && !strcmp(b, id);
            if (ai == bj) continue; /* neither, or the series with itself */
            const struct occ *mine = ai ? &set.o[i] : &set.o[j], *other = ai ? &set.o[j] : &set.o[i];
            json_t *c = occ_brief(&set, other);
            char s[32], e[32];
            occ_times(&set, mine, s, e);
            json_object_set_new(c, "with", json_pack("{s:s, s:s}", "occurrence_start", s, "occurrence_end", e));
            json_array_append_new(list, c);
            if (json_array_size(list) >= CREATE_CONFLICTS_MAX) break;
        }
    occ_set_free(&set);
    return list;
}
