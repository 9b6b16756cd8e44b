/* ics_write — see ics.h: the iCalendar writer behind ics_write. Turns event JSON into one
 * VCALENDAR: content lines folded at 75 octets without splitting UTF-8 sequences, TEXT and
 * parameter escaping, TZID / UTC / date values, RRULE, EXDATE, ATTENDEE, VALARM and VTIMEZONE
 * blocks from the offsets the caller supplies. Uses jansson and the civil-time helpers of ics.c
 * (ics_internal.h). */
#include "ics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ics_internal.h"
#include "version.h"

#define FOLD_AT 75

/* ---- Growable buffer ---- */

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void buf_add(struct buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_add(b, s, strlen(s)); }

/* Appends one content line, folded: at most 75 octets per physical line (the leading space of
 * a continuation counts), never inside a UTF-8 sequence, each ended by CRLF. */
static void emit_line(struct buf *out, const char *line, size_t n) {
    size_t col = 0;
    for (size_t i = 0; i < n;) {
        size_t k = ics_utf8_len((unsigned char)line[i]);
        if (i + k > n) k = n - i;
        if (col + k > FOLD_AT) {
            buf_add(out, "\r\n ", 3);
            col = 1;
        }
        buf_add(out, line + i, k);
        col += k;
        i += k;
    }
    buf_add(out, "\r\n", 2);
}

/* TEXT escaping (RFC 5545 3.3.11): backslash, semicolon, comma, newline; other control
 * characters are not allowed in TEXT and are dropped. */
static void add_text(struct buf *b, const char *s) {
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\' || c == ';' || c == ',') {
            char e[2] = {'\\', (char)c};
            buf_add(b, e, 2);
        } else if (c == '\r') {
            buf_add(b, "\\n", 2);
            if (s[1] == '\n') s++;
        } else if (c == '\n') {
            buf_add(b, "\\n", 2);
        } else if (c == '\t' || (c >= 0x20 && c != 0x7f)) {
            buf_add(b, s, 1);
        }
    }
}

/* A parameter value: quoted when it holds ':', ';' or ','; DQUOTE and controls dropped. */
static void add_param_value(struct buf *b, const char *s) {
    int quote = strpbrk(s, ":;,") != NULL;
    if (quote) buf_add(b, "\"", 1);
    for (; *s; s++)
        if (*s != '"' && (unsigned char)*s >= 0x20 && *s != 0x7f) buf_add(b, s, 1);
    if (quote) buf_add(b, "\"", 1);
}

/* The logical line being built, then folded into out. */
struct writer {
    struct buf out, line;
    char *err;
    size_t errlen;
    int failed;
    json_t *zones_used; /* set of TZIDs named, in order of first use */
};

static void line_end(struct writer *w) {
    if (!w->line.oom) emit_line(&w->out, w->line.p ? w->line.p : "", w->line.len);
    if (w->line.oom) w->out.oom = 1;
    w->line.len = 0;
    if (w->line.p) w->line.p[0] = '\0';
}

static void prop_text(struct writer *w, const char *name, const char *value) {
    buf_str(&w->line, name);
    buf_add(&w->line, ":", 1);
    add_text(&w->line, value);
    line_end(w);
}

static void prop_raw(struct writer *w, const char *name, const char *value) {
    buf_str(&w->line, name);
    buf_add(&w->line, ":", 1);
    buf_str(&w->line, value);
    line_end(w);
}

static int wfail(struct writer *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int wfail(struct writer *w, const char *fmt, ...) {
    if (!w->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(w->err, w->errlen, fmt, ap);
        va_end(ap);
    }
    w->failed = 1;
    return -1;
}

/* "2026-03-01T09:30:00" → "20260301T093000"; "2026-03-01" → "20260301". */
static void basic_form(const char *civil, char out[17]) {
    size_t j = 0;
    for (const char *p = civil; *p && j < 16; p++)
        if (*p != '-' && *p != ':') out[j++] = *p;
    out[j] = '\0';
}

/* A time value with its parameters: kind, TZID (or NULL) and basic form. */
struct wtime {
    enum ics_time_kind kind;
    char zone[64];
    char basic[17];
};

static int wtime_get(struct writer *w, const char *s, const char *event_tz, struct wtime *t, long idx,
                     const char *field) {
    char civil[20];
    t->kind = ics_time_split(s, civil, t->zone, sizeof t->zone);
    if (t->kind == ICS_TIME_BAD) return wfail(w, "event %ld: %s is not a time the writer knows", idx, field);
    if (t->kind == ICS_TIME_LOCAL && !t->zone[0] && event_tz) snprintf(t->zone, sizeof t->zone, "%s", event_tz);
    if (t->zone[0] && !json_object_get(w->zones_used, t->zone))
        json_object_set_new(w->zones_used, t->zone, json_true());
    basic_form(civil, t->basic);
    return 0;
}

/* The parameters and the value of one time property (without the name). */
static void add_time_params(struct buf *b, const struct wtime *t) {
    if (t->kind == ICS_TIME_DATE) {
        buf_str(b, ";VALUE=DATE");
    } else if (t->zone[0]) {
        buf_str(b, ";TZID=");
        add_param_value(b, t->zone);
    }
}

static void prop_time(struct writer *w, const char *name, const struct wtime *t) {
    buf_str(&w->line, name);
    add_time_params(&w->line, t);
    buf_add(&w->line, ":", 1);
    buf_str(&w->line, t->basic);
    if (t->kind == ICS_TIME_UTC) buf_add(&w->line, "Z", 1);
    line_end(w);
}

/* An RFC 3339 UTC stamp ("2026-03-01T08:30:00.123Z") as "20260301T083000Z"; now when absent. */
static void stamp(const char *rfc3339, long long now, char out[20]) {
    char civil[20], zone[2];
    if (rfc3339 && ics_time_split(rfc3339, civil, zone, sizeof zone) == ICS_TIME_UTC) {
        basic_form(civil, out);
        size_t n = strlen(out);
        out[n] = 'Z';
        out[n + 1] = '\0';
        return;
    }
    struct tm6 t = ics_tm_from_seconds(now);
    ics_fmt_tm(&t, 1, 1, out);
    out[15] = 'Z';
    out[16] = '\0';
}

static const char *str_field(json_t *ev, const char *key) {
    json_t *v = json_object_get(ev, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static void write_event(struct writer *w, json_t *ev, long idx, long long now) {
    if (!json_is_object(ev)) {
        wfail(w, "event %ld is not an object", idx);
        return;
    }
    const char *id = str_field(ev, "id"), *title = str_field(ev, "title"), *tz = str_field(ev, "timezone");
    const char *start = str_field(ev, "starts_at"), *end = str_field(ev, "ends_at");
    const char *desc = str_field(ev, "description"), *loc = str_field(ev, "location");
    const char *rule = str_field(ev, "recurrence");
    struct wtime ts, te;
    if (!id || !*id) {
        wfail(w, "event %ld has no id", idx);
        return;
    }
    if (!start || wtime_get(w, start, tz, &ts, idx, "starts_at")) {
        wfail(w, "event %ld: starts_at is missing or invalid", idx);
        return;
    }
    if (end && wtime_get(w, end, tz, &te, idx, "ends_at")) return;
    buf_str(&w->line, "UID:");
    add_text(&w->line, id);
    buf_str(&w->line, "@orrery");
    line_end(w);
    char st[20];
    stamp(str_field(ev, "updated_at"), now, st);
    prop_raw(w, "DTSTAMP", st);
    if (str_field(ev, "created_at")) {
        char cr[20];
        stamp(str_field(ev, "created_at"), now, cr);
        prop_raw(w, "CREATED", cr);
        prop_raw(w, "LAST-MODIFIED", st);
    }
    prop_time(w, "DTSTART", &ts);
    if (end) prop_time(w, "DTEND", &te);
    prop_text(w, "SUMMARY", title ? title : "");
    if (desc && *desc) prop_text(w, "DESCRIPTION", desc);
    if (loc && *loc) prop_text(w, "LOCATION", loc);
    if (rule && *rule) {
        if (!strncasecmp(rule, "RRULE:", 6)) rule += 6;
        for (const char *p = rule; *p; p++)
            if ((unsigned char)*p < 0x21 || *p == ':') {
                wfail(w, "event %ld: recurrence holds characters an RRULE cannot", idx);
                return;
            }
        prop_raw(w, "RRULE", rule);
    }
    /* EXDATE: one property per run of values of the same form, as a comma list. */
    json_t *ex = json_object_get(ev, "exdates");
    size_t n = json_is_array(ex) ? json_array_size(ex) : 0;
    struct wtime prev = {0};
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(ex, i));
        struct wtime t;
        if (!s || wtime_get(w, s, tz, &t, idx, "exdates")) {
            wfail(w, "event %ld: exdates[%zu] is not a time", idx, i);
            return;
        }
        if (i > 0 && t.kind == prev.kind && !strcmp(t.zone, prev.zone)) {
            buf_add(&w->line, ",", 1);
        } else {
            if (i > 0) line_end(w);
            buf_str(&w->line, "EXDATE");
            add_time_params(&w->line, &t);
            buf_add(&w->line, ":", 1);
        }
        buf_str(&w->line, t.basic);
        if (t.kind == ICS_TIME_UTC) buf_add(&w->line, "Z", 1);
        prev = t;
    }
    if (n > 0) line_end(w);
    json_t *att = json_object_get(ev, "attendees");
    for (size_t i = 0; json_is_array(att) && i < json_array_size(att); i++) {
        const char *a = json_string_value(json_array_get(att, i));
        if (!a || strpbrk(a, "\r\n:;,\"")) continue; /* not an address an ATTENDEE can carry */
        buf_str(&w->line, "ATTENDEE:mailto:");
        buf_str(&w->line, a);
        line_end(w);
    }
    json_t *rem = json_object_get(ev, "reminders");
    for (size_t i = 0; json_is_array(rem) && i < json_array_size(rem); i++) {
        json_t *m = json_array_get(rem, i);
        if (!json_is_integer(m) || json_integer_value(m) < 0) {
            wfail(w, "event %ld: reminders[%zu] is not a number of minutes", idx, i);
            return;
        }
        char trig[32];
        snprintf(trig, sizeof trig, "-PT%lldM", (long long)json_integer_value(m));
        prop_raw(w, "BEGIN", "VALARM");
        prop_raw(w, "ACTION", "DISPLAY");
        prop_text(w, "DESCRIPTION", title && *title ? title : "Reminder");
        prop_raw(w, "TRIGGER", trig);
        prop_raw(w, "END", "VALARM");
    }
}

static void offset_text(long long secs, char out[16]) {
    char sign = secs < 0 ? '-' : '+';
    long long a = secs < 0 ? -secs : secs;
    if (a % 60)
        snprintf(out, 16, "%c%02lld%02lld%02lld", sign, a / 3600 % 100, a % 3600 / 60, a % 60);
    else
        snprintf(out, 16, "%c%02lld%02lld", sign, a / 3600 % 100, a % 3600 / 60);
}

static void observance(struct writer *w, long long from, long long to, const char *name, const char *dtstart,
                       const char *rrule) {
    char f[16], t[16];
    offset_text(from, f);
    offset_text(to, t);
    prop_raw(w, "BEGIN", to > from ? "DAYLIGHT" : "STANDARD");
    prop_raw(w, "TZOFFSETFROM", f);
    prop_raw(w, "TZOFFSETTO", t);
    if (name && *name) prop_text(w, "TZNAME", name);
    prop_raw(w, "DTSTART", dtstart);
    if (rrule) prop_raw(w, "RRULE", rrule);
    prop_raw(w, "END", to > from ? "DAYLIGHT" : "STANDARD");
}

/* One VTIMEZONE: a zone that changes offset twice a year gets the two yearly rules (as Google
 * and Thunderbird write them: DTSTART in 1970 plus an RRULE such as BYMONTH=3;BYDAY=-1SU);
 * anything else gets its base offset and the year's changes as single observances. */
static void write_zone(struct writer *w, const char *tzid, json_t *z) {
    static const char *const wd[7] = {"MO", "TU", "WE", "TH", "FR", "SA", "SU"};
    json_t *tr = json_object_get(z, "transitions");
    size_t n = json_is_array(tr) ? json_array_size(tr) : 0;
    struct {
        struct tm6 t;
        long long from, to;
        const char *name;
    } obs[8];
    size_t k = 0;
    for (size_t i = 0; i < n && k < 8; i++) {
        json_t *o = json_array_get(tr, i);
        char civil[20], zone[2];
        const char *s = str_field(o, "start");
        if (!s || ics_time_split(s, civil, zone, sizeof zone) != ICS_TIME_LOCAL || zone[0]) continue;
        struct tm6 t = {0};
        sscanf(civil, "%4d-%2d-%2dT%2d:%2d:%2d", &t.y, &t.mo, &t.d, &t.h, &t.mi, &t.s);
        obs[k].t = t;
        obs[k].from = json_integer_value(json_object_get(o, "from"));
        obs[k].to = json_integer_value(json_object_get(o, "to"));
        obs[k].name = str_field(o, "name");
        k++;
    }
    prop_raw(w, "BEGIN", "VTIMEZONE");
    buf_str(&w->line, "TZID:");
    buf_str(&w->line, tzid);
    line_end(w);
    buf_str(&w->line, "X-LIC-LOCATION:");
    buf_str(&w->line, tzid);
    line_end(w);
    char dt[20];
    if (k == 2 && obs[0].from == obs[1].to && obs[1].from == obs[0].to) {
        for (size_t i = 0; i < 2; i++) {
            struct tm6 t = obs[i].t;
            int dim = ics_days_in_month(t.y, t.mo), wday = ics_weekday(t.y, t.mo, t.d);
            int ord = t.d + 7 > dim ? -1 : (t.d - 1) / 7 + 1;
            /* DTSTART must itself be an occurrence: the same weekday rule in 1970. */
            struct tm6 s = t;
            s.y = 1970;
            if (ord > 0) {
                int first = ics_weekday(1970, t.mo, 1);
                s.d = 1 + (wday - first + 7) % 7 + (ord - 1) * 7;
            } else {
                int last = ics_days_in_month(1970, t.mo);
                s.d = last - (ics_weekday(1970, t.mo, last) - wday + 7) % 7;
            }
            char rule[64];
            snprintf(rule, sizeof rule, "FREQ=YEARLY;BYMONTH=%d;BYDAY=%d%s", t.mo, ord, wd[wday]);
            ics_fmt_tm(&s, 1, 1, dt);
            observance(w, obs[i].from, obs[i].to, obs[i].name, dt, rule);
        }
    } else {
        json_t *off = json_object_get(z, "offset");
        long long base = k > 0 ? obs[0].from : json_integer_value(off);
        observance(w, base, base, k > 0 ? NULL : str_field(z, "name"), "19700101T000000", NULL);
        for (size_t i = 0; i < k; i++) {
            struct tm6 t = obs[i].t;
            ics_fmt_tm(&t, 1, 1, dt);
            observance(w, obs[i].from, obs[i].to, obs[i].name, dt, NULL);
        }
    }
    prop_raw(w, "END", "VTIMEZONE");
}

char *ics_write(json_t *events, const struct ics_calendar *cal, size_t *len, char *err, size_t errlen) {
    struct writer w = {.err = err, .errlen = errlen, .zones_used = json_object()};
    char *result = NULL;
    if (errlen) err[0] = '\0';
    if (!json_is_array(events)) {
        wfail(&w, "events must be an array");
        goto done;
    }
    /* Events first into their own buffer: the VTIMEZONEs they name go before them. */
    size_t i;
    json_t *ev;
    json_array_foreach(events, i, ev) {
        prop_raw(&w, "BEGIN", "VEVENT");
        write_event(&w, ev, (long)i, cal->now);
        if (w.failed) goto done;
        prop_raw(&w, "END", "VEVENT");
    }
    struct buf body = w.out;
    w.out = (struct buf){0};
    prop_raw(&w, "BEGIN", "VCALENDAR");
    prop_raw(&w, "VERSION", "2.0");
    prop_raw(&w, "PRODID", "-//Orrery//Orrery " ORRERY_VERSION "//EN");
    prop_raw(&w, "CALSCALE", "GREGORIAN");
    prop_text(&w, "X-WR-CALNAME", cal->name ? cal->name : "Orrery");
    if (cal->timezone && *cal->timezone) prop_text(&w, "X-WR-TIMEZONE", cal->timezone);
    prop_raw(&w, "REFRESH-INTERVAL;VALUE=DURATION", "PT1H");
    prop_raw(&w, "X-PUBLISHED-TTL", "PT1H");
    const char *tzid;
    json_t *unused;
    json_object_foreach(w.zones_used, tzid, unused) {
        json_t *z = cal->zones ? json_object_get(cal->zones, tzid) : NULL;
        if (json_is_object(z)) write_zone(&w, tzid, z);
    }
    if (body.len) buf_add(&w.out, body.p, body.len);
    if (body.oom) w.out.oom = 1;
    free(body.p);
    prop_raw(&w, "END", "VCALENDAR");
    if (w.out.oom || w.line.oom) {
        wfail(&w, "out of memory");
        goto done;
    }
    result = w.out.p;
    *len = w.out.len;
    w.out.p = NULL;
done:
    free(w.out.p);
    free(w.line.p);
    json_decref(w.zones_used);
    return result;
}
