/* api_calendar — the calendar as iCalendar: GET /api/calendar.ics?token= (public: calendar apps
 * subscribe with a secret per-user feed token, not a bearer token), POST and DELETE
 * /api/calendar/feed-token (create or rotate, revoke), POST /api/calendar/import ({"ics": text}
 * or {"ics_base64": bytes}).
 * ics.c does the text, store_events.c validates and writes; this file looks up the feed's user
 * and converts between the store's UTC instants and the local wall-clock times iCalendar writes
 * with TZID (in PostgreSQL, one statement per request, on checked text only).
 * Uses api, auth, ics and store_events. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "ics.h"
#include "log.h"
#include "routes.h"
#include "store_events.h"

#define IMPORT_MAX 5000
#define FEED_URL "/api/calendar.ics?token="
#define FMT_LOCAL "'YYYY-MM-DD\"T\"HH24:MI:SS'"
#define FMT_UTC "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'"

/* ---- Time conversion ---- */

/* Converts a batch in one statement. Each item is ["l", utc, zone] (→ local wall-clock time
 * "YYYY-MM-DDTHH:MM:SS" in zone) or ["u", local, zone] (→ "YYYY-MM-DDTHH:MM:SSZ"); every text
 * and zone was checked by the caller. Returns the results in order (new reference), or NULL with
 * the response set. */
static json_t *convert(struct http_req *req, json_t *batch) {
    if (json_array_size(batch) == 0) return json_array();
    char *b = json_dumps(batch, JSON_COMPACT);
    if (!b) {
        http_error(req, 500, "internal", "internal error", NULL);
        return NULL;
    }
    const char *p[1] = {b};
    PGresult *r = api_exec(req,
                           "SELECT CASE WHEN e->>0 = 'l' "
                           "THEN to_char((e->>1)::timestamptz AT TIME ZONE (e->>2), " FMT_LOCAL ") "
                           "ELSE to_char(((e->>1)::timestamp AT TIME ZONE (e->>2)) AT TIME ZONE 'UTC', " FMT_UTC
                           ") END FROM json_array_elements($1::json) WITH ORDINALITY AS t(e, i) ORDER BY i",
                           1, p);
    free(b);
    if (!r) return NULL;
    json_t *out = json_array();
    for (int i = 0; i < PQntuples(r); i++) json_array_append_new(out, json_string(PQgetvalue(r, i, 0)));
    PQclear(r);
    return out;
}

/* A conversion pass walks the events twice in the same order: first collecting the batch
 * (results == NULL), then storing each result where its input came from. */
struct pass {
    json_t *batch, *results;
    size_t next;
};

/* Queues (or, on the second walk, applies) one conversion of the string at holder[key] or
 * holder[index] (key NULL). */
static void step(struct pass *ps, json_t *holder, const char *key, size_t index, const char *dir, const char *text,
                 const char *zone) {
    if (!ps->results) {
        json_array_append_new(ps->batch, json_pack("[s, s, s]", dir, text, zone));
        return;
    }
    json_t *v = json_array_get(ps->results, ps->next++);
    if (!v) return;
    if (key) json_object_set(holder, key, v);
    else json_array_set(holder, index, v);
}

/* The UNTIL=value of an RRULE: a pointer to the value (length in *n), or NULL. */
static const char *rule_until(const char *rule, size_t *n) {
    for (const char *p = rule; p && *p; p = strchr(p, ';') ? strchr(p, ';') + 1 : NULL)
        if (!strncmp(p, "UNTIL=", 6)) {
            *n = strcspn(p + 6, ";");
            return p + 6;
        }
    return NULL;
}

/* rule with its UNTIL value replaced (malloc'd). */
static char *rule_with_until(const char *rule, const char *value) {
    size_t n;
    const char *u = rule_until(rule, &n);
    size_t len = strlen(rule) - n + strlen(value) + 1;
    char *out = malloc(len);
    if (out) snprintf(out, len, "%.*s%s%s", (int)(u - rule), rule, value, u + n);
    return out;
}

/* "20260401T095959" / "20260401" → "2026-04-01T09:59:59" (a date is the end of that day). */
static int until_local(const char *v, size_t n, char out[20]) {
    if (n != 8 && n != 15) return -1;
    if (n == 8) snprintf(out, 20, "%.4s-%.2s-%.2sT23:59:59", v, v + 4, v + 6);
    else snprintf(out, 20, "%.4s-%.2s-%.2sT%.2s:%.2s:%.2s", v, v + 4, v + 6, v + 9, v + 11, v + 13);
    char civil[20], zone[2];
    return ics_time_split(out, civil, zone, sizeof zone) == ICS_TIME_LOCAL ? 0 : -1;
}

/* For export: a timed event's times become local in its zone (written with TZID=zone); an UNTIL,
 * which the store keeps in local time, becomes UTC as RFC 5545 asks when DTSTART has a TZID
 * (an all-day series keeps a DATE). */
static void localize_walk(struct http_req *req, struct pass *ps, json_t *events, json_t *zones) {
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        const char *tz = json_string_value(json_object_get(ev, "timezone"));
        const char *rule = json_string_value(json_object_get(ev, "recurrence"));
        char civil[20], zone[2], local[20];
        size_t n;
        if (json_is_true(json_object_get(ev, "all_day"))) {
            const char *u = rule ? rule_until(rule, &n) : NULL;
            if (!ps->results && u && n > 8) { /* UNTIL must be a DATE like DTSTART */
                char date[9];
                snprintf(date, sizeof date, "%.8s", u);
                char *r2 = rule_with_until(rule, date);
                if (r2) json_object_set_new(ev, "recurrence", json_string(r2));
                free(r2);
            }
            continue;
        }
        if (!tz || !store_timezone_valid(api_ctx(req)->db, tz)) continue; /* stays in UTC */
        if (!ps->results) json_object_set_new(zones, tz, json_true());
        const char *keys[2] = {"starts_at", "ends_at"};
        for (int k = 0; k < 2; k++) {
            const char *s = json_string_value(json_object_get(ev, keys[k]));
            if (s && ics_time_split(s, civil, zone, sizeof zone) == ICS_TIME_UTC)
                step(ps, ev, keys[k], 0, "l", s, tz);
        }
        json_t *ex = json_object_get(ev, "exdates");
        for (size_t j = 0; j < json_array_size(ex); j++) {
            const char *s = json_string_value(json_array_get(ex, j));
            if (s && ics_time_split(s, civil, zone, sizeof zone) == ICS_TIME_UTC) step(ps, ex, NULL, j, "l", s, tz);
        }
        const char *u = rule ? rule_until(rule, &n) : NULL;
        if (u && until_local(u, n, local) == 0) {
            if (!ps->results) {
                step(ps, NULL, NULL, 0, "u", local, tz);
            } else {
                json_t *v = json_array_get(ps->results, ps->next++);
                char basic[20];
                const char *t = json_string_value(v);
                if (t && strlen(t) == 20) {
                    snprintf(basic, sizeof basic, "%.4s%.2s%.2sT%.2s%.2s%.2sZ", t, t + 5, t + 8, t + 11, t + 14,
                             t + 17);
                    char *r2 = rule_with_until(rule, basic);
                    if (r2) json_object_set_new(ev, "recurrence", json_string(r2));
                    free(r2);
                }
            }
        }
    }
}

static int localize(struct http_req *req, json_t *events, json_t *zones) {
    struct pass ps = {.batch = json_array()};
    localize_walk(req, &ps, events, zones);
    ps.results = convert(req, ps.batch);
    json_decref(ps.batch);
    if (!ps.results) return -1;
    localize_walk(req, &ps, events, NULL);
    json_decref(ps.results);
    return 0;
}

/* The offsets of each zone for VTIMEZONE blocks: this year's changes, found by sampling every
 * 15 minutes (every zone changes on a quarter hour), with PostgreSQL's abbreviations. A zone's
 * rules for a year cannot change while the process runs: each is computed once (~25 ms). */
#define ZONE_CACHE_MAX 1024

static pthread_mutex_t zone_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char key[160]; /* "<year>|<zone>" */
    char *rules;  /* JSON text */
} zone_cache[ZONE_CACHE_MAX];
static size_t zone_cached;

static json_t *zone_cache_get(const char *key) {
    json_t *z = NULL;
    pthread_mutex_lock(&zone_mu);
    for (size_t i = 0; i < zone_cached && !z; i++)
        if (!strcmp(zone_cache[i].key, key)) z = json_loads(zone_cache[i].rules, 0, NULL);
    pthread_mutex_unlock(&zone_mu);
    return z;
}

static void zone_cache_put(const char *key, const char *rules) {
    pthread_mutex_lock(&zone_mu);
    if (zone_cached < ZONE_CACHE_MAX && strlen(key) < sizeof zone_cache[0].key) {
        char *copy = strdup(rules);
        if (copy) {
            snprintf(zone_cache[zone_cached].key, sizeof zone_cache[0].key, "%s", key);
            zone_cache[zone_cached++].rules = copy;
        }
    }
    pthread_mutex_unlock(&zone_mu);
}

static int zone_rules(struct http_req *req, json_t *zones) {
    const char *tz;
    json_t *v;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    json_object_foreach(zones, tz, v) {
        char key[160];
        snprintf(key, sizeof key, "%d|%s", tm.tm_year + 1900, tz);
        json_t *z = zone_cache_get(key);
        if (z) {
            json_object_set_new(zones, tz, z);
            continue;
        }
        const char *p[2] = {tz, key};
        PGresult *r = api_exec(req, "SELECT set_config('TimeZone', $1, true)", 1, p);
        if (!r) return -1;
        PQclear(r);
        r = api_exec(req,
                     "WITH y AS (SELECT make_timestamptz(split_part($2, '|', 1)::int, 1, 1, 0, 0, 0, 'UTC') AS y0), "
                     "s AS (SELECT t, (t AT TIME ZONE $1) - (t AT TIME ZONE 'UTC') AS off FROM y, "
                     "generate_series(y.y0, y.y0 + interval '1 year', interval '15 minutes') t), "
                     "c AS (SELECT t, off, lag(off) OVER (ORDER BY t) AS prev FROM s) "
                     "SELECT json_build_object('offset', "
                     "(SELECT extract(epoch FROM s.off)::int FROM s ORDER BY s.t LIMIT 1), "
                     "'name', (SELECT to_char(y.y0, 'TZ') FROM y), 'transitions', COALESCE((SELECT json_agg("
                     "json_build_object('start', to_char((c.t AT TIME ZONE 'UTC') + c.prev, " FMT_LOCAL "), "
                     "'from', extract(epoch FROM c.prev)::int, 'to', extract(epoch FROM c.off)::int, "
                     "'name', to_char(c.t, 'TZ')) ORDER BY c.t) "
                     "FROM c WHERE c.prev IS NOT NULL AND c.prev <> c.off), '[]'::json))::text",
                     2, p);
        if (!r) return -1;
        z = PQntuples(r) == 1 ? json_loads(PQgetvalue(r, 0, 0), 0, NULL) : NULL;
        if (z) zone_cache_put(key, PQgetvalue(r, 0, 0));
        PQclear(r);
        json_object_set_new(zones, tz, z ? z : json_null());
    }
    return 0;
}

/* ---- GET /api/calendar.ics?token= ---- */

static int token_shape_ok(const char *t) {
    if (!t || strlen(t) != AUTH_REFRESH_LEN) return 0;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_'))
            return 0;
    return 1;
}

static void no_feed(struct http_req *req) { http_error(req, 404, "not_found", "no such calendar", NULL); }

static void calendar_feed(struct http_req *req) {
    const char *token = http_query(req, "token");
    if (!token_shape_ok(token)) {
        no_feed(req);
        return;
    }
    char hash[AUTH_SHA256_HEX + 1], user[AUTH_UUID_LEN + 1], name[256], tz[80];
    auth_sha256_hex(token, strlen(token), hash);
    /* A public route has no user yet: find it by the token's hash (orrery.ctx 'auth'), then act
     * as that user alone for the rest of the transaction. */
    if (!api_tx(req, NULL, "auth")) return;
    const char *p[1] = {hash};
    PGresult *r = api_exec(req,
                           "SELECT f.user_id, u.name, u.timezone FROM calendar_feeds f "
                           "JOIN users u ON u.id = f.user_id WHERE f.token_hash = $1",
                           1, p);
    if (!r) return;
    if (PQntuples(r) != 1) {
        PQclear(r);
        no_feed(req);
        return;
    }
    snprintf(user, sizeof user, "%s", PQgetvalue(r, 0, 0));
    snprintf(name, sizeof name, "%s", PQgetvalue(r, 0, 1));
    snprintf(tz, sizeof tz, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    const char *q[1] = {user};
    r = api_exec(req, "SELECT set_config('orrery.user_id', $1, true), set_config('orrery.ctx', '', true)", 1, q);
    if (!r) return;
    PQclear(r);
    struct store_ctx ctx = {.db = api_ctx(req)->db, .user_id = user, .actor_type = "user", .actor_id = user};
    struct store_err err;
    json_t *events = store_events_all(&ctx, &err), *zones = json_object();
    if (!events) {
        json_decref(zones);
        api_store_error(req, &err);
        return;
    }
    char calname[300], msg[256];
    snprintf(calname, sizeof calname, "%s%s", name[0] ? name : "Orrery", name[0] ? " (Orrery)" : "");
    struct ics_calendar cal = {.name = calname, .timezone = tz, .zones = zones, .now = (long long)time(NULL)};
    size_t len = 0;
    char *text = NULL;
    if (localize(req, events, zones) == 0 && zone_rules(req, zones) == 0) {
        text = ics_write(events, &cal, &len, msg, sizeof msg);
        if (!text) {
            log_error("calendar: export failed: %s", msg);
            http_error(req, 500, "internal", "internal error", NULL);
        }
    }
    json_decref(events);
    json_decref(zones);
    if (!text) return;
    http_add_header(req, "Cache-Control", "private, no-cache");
    http_add_header(req, "Content-Disposition", "inline; filename=\"orrery.ics\"");
    http_text(req, 200, "text/calendar; charset=utf-8", text, len);
    free(text);
}

/* ---- POST / DELETE /api/calendar/feed-token ---- */

static void feed_token_create(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    char token[AUTH_REFRESH_LEN + 1], hash[AUTH_SHA256_HEX + 1];
    if (auth_refresh_new(token) != 0) {
        http_error(req, 500, "internal", "internal error", NULL);
        return;
    }
    auth_sha256_hex(token, strlen(token), hash);
    const char *p[2] = {ctx.user_id, hash};
    /* One row per user: a second call replaces the hash, so the old token stops working. */
    PGresult *r = api_exec(req,
                           "INSERT INTO calendar_feeds AS f (user_id, token_hash) VALUES ($1::uuid, $2) "
                           "ON CONFLICT (user_id) DO UPDATE SET token_hash = EXCLUDED.token_hash, created_at = now() "
                           "RETURNING f.id, f.xmax = 0, "
                           "to_char(f.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
                           2, p);
    if (!r) return;
    char id[AUTH_UUID_LEN + 1], created[40];
    int inserted = PQgetvalue(r, 0, 1)[0] == 't';
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    snprintf(created, sizeof created, "%s", PQgetvalue(r, 0, 2));
    PQclear(r);
    json_t *diff = json_pack("{s:b}", "rotated", !inserted); /* never the token */
    int rc = store_activity(&ctx, &err, inserted ? "create" : "update", "calendar_feed", id, diff);
    json_decref(diff);
    if (rc) {
        api_store_error(req, &err);
        return;
    }
    char url[sizeof FEED_URL + AUTH_REFRESH_LEN];
    snprintf(url, sizeof url, "%s%s", FEED_URL, token);
    http_json(req, 201, json_pack("{s:s, s:s, s:s}", "token", token, "url", url, "created_at", created));
}

static void feed_token_delete(struct http_req *req) {
    struct store_ctx ctx = api_store(req);
    struct store_err err;
    const char *p[1] = {ctx.user_id};
    PGresult *r = api_exec(req, "DELETE FROM calendar_feeds WHERE user_id = $1::uuid RETURNING id", 1, p);
    if (!r) return;
    if (PQntuples(r) != 1) {
        PQclear(r);
        http_error(req, 404, "not_found", "there is no calendar feed token", NULL);
        return;
    }
    char id[AUTH_UUID_LEN + 1];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (store_activity(&ctx, &err, "delete", "calendar_feed", id, NULL)) {
        api_store_error(req, &err);
        return;
    }
    http_text(req, 204, "application/json", "", 0);
}

/* ---- POST /api/calendar/import ---- */

/* A 400 about one event of the import: details name its index, UID and field. */
static void event_error(struct http_req *req, json_t *ev, const char *code, const char *field, const char *message) {
    json_t *uid = json_object_get(ev, "uid");
    long long index = (long long)json_integer_value(json_object_get(ev, "index"));
    char msg[512];
    if (json_is_string(uid))
        snprintf(msg, sizeof msg, "event %lld (UID %.120s): %s", index, json_string_value(uid), message);
    else
        snprintf(msg, sizeof msg, "event %lld (no UID): %s", index, message);
    http_error(req, 400, code, msg,
               json_pack("{s:s, s:I, s:O}", "field", field, "index", (json_int_t)index, "uid",
                         json_is_string(uid) ? uid : json_null()));
}

/* For import: local times (the event's zone, or the zone of a [suffix]) become UTC; the zones
 * are checked first. A floating time without a zone is in the user's time zone. Returns 0, or
 * -1 with the response set. */
static int globalize_walk(struct http_req *req, struct pass *ps, json_t *events, const char *user_tz) {
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        const char *tz = json_string_value(json_object_get(ev, "timezone"));
        PGconn *db = api_ctx(req)->db;
        if (!ps->results && tz && !store_timezone_valid(db, tz)) {
            event_error(req, ev, "invalid_field", "timezone", "the time zone is not an IANA name PostgreSQL knows");
            return -1;
        }
        const char *keys[2] = {"starts_at", "ends_at"};
        json_t *ex = json_object_get(ev, "exdates");
        size_t nex = json_array_size(ex);
        for (size_t k = 0; k < 2 + nex; k++) {
            json_t *holder = k < 2 ? ev : ex;
            const char *s = json_string_value(k < 2 ? json_object_get(ev, keys[k]) : json_array_get(ex, k - 2));
            char civil[20], zone[128];
            if (!s || ics_time_split(s, civil, zone, sizeof zone) != ICS_TIME_LOCAL) continue;
            const char *z = zone[0] ? zone : tz ? tz : user_tz;
            if (!ps->results && !store_timezone_valid(db, z)) {
                event_error(req, ev, "invalid_field", "timezone", "a TZID is not an IANA name PostgreSQL knows");
                return -1;
            }
            step(ps, holder, k < 2 ? keys[k] : NULL, k < 2 ? 0 : k - 2, "u", civil, z);
        }
    }
    return 0;
}

static int globalize(struct http_req *req, json_t *events) {
    const char *p[1] = {api_ctx(req)->claims.sub};
    PGresult *r = api_exec(req, "SELECT timezone FROM users WHERE id = $1::uuid", 1, p);
    if (!r) return -1;
    char user_tz[80];
    snprintf(user_tz, sizeof user_tz, "%s", PQntuples(r) == 1 ? PQgetvalue(r, 0, 0) : "UTC");
    PQclear(r);
    struct pass ps = {.batch = json_array()};
    int rc = globalize_walk(req, &ps, events, user_tz);
    if (rc == 0) ps.results = convert(req, ps.batch);
    json_decref(ps.batch);
    if (rc || !ps.results) return -1;
    globalize_walk(req, &ps, events, user_tz);
    json_decref(ps.results);
    return 0;
}

/* Base64 (standard or URL-safe alphabet, padding optional, whitespace ignored) into a malloc'd
 * buffer; NULL when it is not base64. */
static unsigned char *b64_decode(const char *s, size_t *len) {
    unsigned char *out = malloc(strlen(s) / 4 * 3 + 3);
    unsigned acc = 0;
    int bits = 0, pad = 0;
    size_t n = 0;
    if (!out) return NULL;
    for (; *s; s++) {
        char c = *s;
        int v;
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        if (pad) break; /* data after padding */
        if (c >= 'A' && c <= 'Z') v = c - 'A';
        else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
        else if (c >= '0' && c <= '9') v = c - '0' + 52;
        else if (c == '+' || c == '-') v = 62;
        else if (c == '/' || c == '_') v = 63;
        else break;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (*s || pad > 2 || bits >= 6) {
        free(out);
        return NULL;
    }
    *len = n;
    return out;
}

static void calendar_import(struct http_req *req) {
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"ics", "ics_base64", NULL};
    const char *text, *b64;
    unsigned char *raw = NULL;
    size_t len;
    if (api_only_keys(req, body, allowed) || api_string(req, body, "ics", 0, 1, (size_t)-1, &text) ||
        api_string(req, body, "ics_base64", 0, 1, (size_t)-1, &b64))
        return;
    if (!text == !b64) {
        api_bad_field(req, "ics", "send the iCalendar text as ics, or its bytes in base64 as ics_base64 (not both)");
        return;
    }
    if (b64) { /* the file's bytes exactly, even a fold that splits a UTF-8 sequence */
        if (!(raw = b64_decode(b64, &len))) {
            api_bad_field(req, "ics_base64", "ics_base64 is not base64");
            return;
        }
        text = (const char *)raw;
    } else {
        len = strlen(text);
    }
    struct ics_err ierr;
    json_t *events = ics_parse(text, len, IMPORT_MAX, &ierr);
    free(raw);
    if (!events) {
        json_t *details = json_pack("{s:s}", "field", ierr.field);
        if (ierr.index >= 0) json_object_set_new(details, "index", json_integer(ierr.index));
        if (ierr.uid[0]) json_object_set_new(details, "uid", json_string(ierr.uid));
        if (ierr.line > 0) json_object_set_new(details, "line", json_integer(ierr.line));
        if (b64 && !strcmp(ierr.field, "ics")) json_object_set_new(details, "field", json_string("ics_base64"));
        http_error(req, 400, "invalid_field", ierr.message, details);
        return;
    }
    if (globalize(req, events)) {
        json_decref(events);
        return;
    }
    /* Every event in this request's transaction: one refused and the end hook rolls all back. */
    struct store_ctx ctx = api_store(req);
    json_t *created = json_array();
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        struct store_err err;
        json_t *in = json_copy(ev);
        json_object_del(in, "uid");
        json_object_del(in, "index");
        json_t *out = store_event_create(&ctx, in, &err);
        json_decref(in);
        if (!out) {
            if (err.status == 400) event_error(req, ev, err.code, err.field[0] ? err.field : "ics", err.message);
            else api_store_error(req, &err);
            api_ctx(req)->failed = 1;
            json_decref(created);
            json_decref(events);
            return;
        }
        json_array_append_new(created, out);
    }
    json_decref(events);
    http_json(req, 201, json_pack("{s:I, s:o}", "imported", (json_int_t)json_array_size(created), "events", created));
}

const struct route api_calendar_routes[] = {
    {"GET", "/api/calendar.ics", calendar_feed, ROUTE_PUBLIC},
    {"POST", "/api/calendar/feed-token", feed_token_create, 0},
    {"DELETE", "/api/calendar/feed-token", feed_token_delete, 0},
    {"POST", "/api/calendar/import", calendar_import, ROUTE_JSON_BODY},
    {NULL, NULL, NULL, 0},
};
