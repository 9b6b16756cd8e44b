/* ics_parse — see ics.h: the tolerant iCalendar parser behind ics_parse. Unfolds and splits
 * content lines, reads properties and parameters (RFC 6868 caret escapes), unescapes TEXT, reads
 * DATE / DATE-TIME / DURATION values, keeps the RRULE parts the store supports, maps Windows zone
 * names to IANA ones (ics_zone_name) and builds event JSON from each VEVENT, overridden
 * occurrences included. Uses jansson and the civil-time helpers of ics.c (ics_internal.h). */
#include "ics.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ics_internal.h"

#define MAX_DEPTH 16
#define MAX_PARAMS 16

/* ---- Time zone names ---- */

/* The CLDR "001" mapping of the Windows zones people actually export. */
static const char *const windows_zones[][2] = {
    {"Dateline Standard Time", "Etc/GMT+12"},
    {"Hawaiian Standard Time", "Pacific/Honolulu"},
    {"Alaskan Standard Time", "America/Anchorage"},
    {"Pacific Standard Time", "America/Los_Angeles"},
    {"Pacific Standard Time (Mexico)", "America/Tijuana"},
    {"US Mountain Standard Time", "America/Phoenix"},
    {"Mountain Standard Time", "America/Denver"},
    {"Mountain Standard Time (Mexico)", "America/Mazatlan"},
    {"Central America Standard Time", "America/Guatemala"},
    {"Central Standard Time", "America/Chicago"},
    {"Central Standard Time (Mexico)", "America/Mexico_City"},
    {"Canada Central Standard Time", "America/Regina"},
    {"SA Pacific Standard Time", "America/Bogota"},
    {"Eastern Standard Time", "America/New_York"},
    {"US Eastern Standard Time", "America/Indiana/Indianapolis"},
    {"Venezuela Standard Time", "America/Caracas"},
    {"Atlantic Standard Time", "America/Halifax"},
    {"SA Western Standard Time", "America/La_Paz"},
    {"Pacific SA Standard Time", "America/Santiago"},
    {"Newfoundland Standard Time", "America/St_Johns"},
    {"E. South America Standard Time", "America/Sao_Paulo"},
    {"Argentina Standard Time", "America/Argentina/Buenos_Aires"},
    {"SA Eastern Standard Time", "America/Cayenne"},
    {"Montevideo Standard Time", "America/Montevideo"},
    {"UTC", "UTC"},
    {"Coordinated Universal Time", "UTC"},
    {"GMT Standard Time", "Europe/London"},
    {"Greenwich Standard Time", "Atlantic/Reykjavik"},
    {"Morocco Standard Time", "Africa/Casablanca"},
    {"W. Europe Standard Time", "Europe/Berlin"},
    {"Central Europe Standard Time", "Europe/Budapest"},
    {"Romance Standard Time", "Europe/Paris"},
    {"Central European Standard Time", "Europe/Warsaw"},
    {"W. Central Africa Standard Time", "Africa/Lagos"},
    {"GTB Standard Time", "Europe/Bucharest"},
    {"E. Europe Standard Time", "Europe/Chisinau"},
    {"FLE Standard Time", "Europe/Kiev"},
    {"Egypt Standard Time", "Africa/Cairo"},
    {"South Africa Standard Time", "Africa/Johannesburg"},
    {"Israel Standard Time", "Asia/Jerusalem"},
    {"Jordan Standard Time", "Asia/Amman"},
    {"Turkey Standard Time", "Europe/Istanbul"},
    {"Russian Standard Time", "Europe/Moscow"},
    {"Arab Standard Time", "Asia/Riyadh"},
    {"Arabic Standard Time", "Asia/Baghdad"},
    {"E. Africa Standard Time", "Africa/Nairobi"},
    {"Iran Standard Time", "Asia/Tehran"},
    {"Arabian Standard Time", "Asia/Dubai"},
    {"Pakistan Standard Time", "Asia/Karachi"},
    {"India Standard Time", "Asia/Kolkata"},
    {"Sri Lanka Standard Time", "Asia/Colombo"},
    {"Nepal Standard Time", "Asia/Kathmandu"},
    {"Bangladesh Standard Time", "Asia/Dhaka"},
    {"SE Asia Standard Time", "Asia/Bangkok"},
    {"China Standard Time", "Asia/Shanghai"},
    {"Singapore Standard Time", "Asia/Singapore"},
    {"Taipei Standard Time", "Asia/Taipei"},
    {"W. Australia Standard Time", "Australia/Perth"},
    {"Tokyo Standard Time", "Asia/Tokyo"},
    {"Korea Standard Time", "Asia/Seoul"},
    {"Cen. Australia Standard Time", "Australia/Adelaide"},
    {"AUS Central Standard Time", "Australia/Darwin"},
    {"E. Australia Standard Time", "Australia/Brisbane"},
    {"AUS Eastern Standard Time", "Australia/Sydney"},
    {"Tasmania Standard Time", "Australia/Hobart"},
    {"New Zealand Standard Time", "Pacific/Auckland"},
};

static const char *const zone_areas[] = {"Africa/", "America/", "Antarctica/", "Arctic/", "Asia/", "Atlantic/",
                                         "Australia/", "Europe/", "Indian/", "Pacific/", "Etc/"};

const char *ics_zone_name(const char *name) {
    if (!name || !*name) return NULL;
    for (size_t i = 0; i < sizeof windows_zones / sizeof windows_zones[0]; i++)
        if (!strcasecmp(name, windows_zones[i][0])) return windows_zones[i][1];
    if (name[0] == '/') { /* "/mozilla.org/20070129_1/Europe/Berlin", "/citadel.org/.../Europe/Paris" */
        for (const char *p = name; p && *p; p = strchr(p + 1, '/')) {
            const char *seg = *p == '/' ? p + 1 : p;
            for (size_t i = 0; i < sizeof zone_areas / sizeof zone_areas[0]; i++)
                if (!strncmp(seg, zone_areas[i], strlen(zone_areas[i]))) return seg;
        }
        return NULL;
    }
    return strchr(name, ' ') ? NULL : name;
}

/* ---- Lines and properties ---- */

struct param {
    const char *name, *value;
};

struct prop {
    const char *name, *value;
    struct param params[MAX_PARAMS];
    int nparams, line;
};

static const char *param(const struct prop *p, const char *name) {
    for (int i = 0; i < p->nparams; i++)
        if (!strcmp(p->params[i].name, name)) return p->params[i].value;
    return NULL;
}

struct override {
    size_t out;       /* position in the output array */
    int cancelled;
    struct prop rid;  /* RECURRENCE-ID */
};

struct alarm {
    struct prop trigger;
    int has_trigger, none, line;
};

struct vevent {
    int index, line;
    struct prop uid, summary, description, location, dtstart, dtend, duration, rrule, rid, status;
    int has_uid, has_summary, has_description, has_location, has_dtstart, has_dtend, has_duration, nrrule, has_rid,
        has_status, has_rdate;
    struct prop *exdates, *attendees;
    int nexdates, nattendees, cexdates, cattendees;
    struct alarm *alarms;
    int nalarms, calarms;
};

struct parser {
    char *buf;            /* the unfolded text: lines separated by NUL */
    struct ics_err *err;
    json_t *out;
    struct override *ovr;
    size_t novr, covr;
    char cal_tz[128];     /* X-WR-TIMEZONE, mapped */
    int nevents;
};

static int pfail(struct ics_err *err, int line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int pfail(struct ics_err *err, int line, const char *field, const char *fmt, ...) {
    err->line = line;
    snprintf(err->field, sizeof err->field, "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

/* An error about one VEVENT: the message names its position and UID. */
static int efail(struct ics_err *err, const struct vevent *ev, int line, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int efail(struct ics_err *err, const struct vevent *ev, int line, const char *field, const char *fmt, ...) {
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    err->index = ev->index;
    snprintf(err->uid, sizeof err->uid, "%s", ev->has_uid ? ev->uid.value : "");
    if (err->uid[0])
        return pfail(err, line, field, "event %d (UID %.100s), line %d: %s", ev->index, err->uid, line, msg);
    return pfail(err, line, field, "event %d (no UID), line %d: %s", ev->index, line, msg);
}

static int valid_utf8(const unsigned char *s) {
    while (*s) {
        if (*s < 0x80) {
            s++;
            continue;
        }
        size_t n = ics_utf8_len(*s);
        if (n == 1) return 0;
        for (size_t i = 1; i < n; i++)
            if ((s[i] & 0xC0) != 0x80) return 0;
        if (n == 3 && ((*s == 0xE0 && s[1] < 0xA0) || (*s == 0xED && s[1] > 0x9F))) return 0;
        if (n == 4 && ((*s == 0xF0 && s[1] < 0x90) || (*s == 0xF4 && s[1] > 0x8F))) return 0;
        s += n;
    }
    return 1;
}

static int name_char(char c) { return isalnum((unsigned char)c) || c == '-'; }

/* RFC 6868: ^n newline, ^^ caret, ^' double quote (in place). */
static void caret_decode(char *s) {
    char *o = s;
    for (; *s; s++) {
        if (*s == '^' && (s[1] == 'n' || s[1] == 'N')) *o++ = '\n', s++;
        else if (*s == '^' && s[1] == '^') *o++ = '^', s++;
        else if (*s == '^' && s[1] == '\'') *o++ = '"', s++;
        else *o++ = *s;
    }
    *o = '\0';
}

/* Splits a content line in place: NAME *(;PARAM=VALUE[,VALUE]) : VALUE. Names upper-cased,
 * quotes removed, only the first value of a multi-valued parameter kept. Each delimiter is read
 * before the NUL that ends the token overwrites it. */
static int parse_prop(char *s, int line, struct prop *p, struct ics_err *err) {
    memset(p, 0, sizeof *p);
    p->line = line;
    p->name = s;
    for (; name_char(*s); s++) *s = (char)toupper((unsigned char)*s);
    if (s == p->name || (*s != ';' && *s != ':'))
        return pfail(err, line, "ics", "line %d is not an iCalendar content line", line);
    char delim = *s;
    *s++ = '\0';
    while (delim == ';') {
        char *pname = s, *first = NULL;
        for (; name_char(*s); s++) *s = (char)toupper((unsigned char)*s);
        if (s == pname || *s != '=') return pfail(err, line, "ics", "line %d: malformed parameter", line);
        *s++ = '\0';
        for (;;) {
            char *v = s;
            if (*s == '"') {
                v = ++s;
                while (*s && *s != '"') s++;
                if (*s != '"') return pfail(err, line, "ics", "line %d: unterminated quoted parameter", line);
                *s++ = '\0';
            } else {
                while (*s && *s != ';' && *s != ':' && *s != ',' && *s != '"') s++;
            }
            if (*s != ',' && *s != ';' && *s != ':')
                return pfail(err, line, "ics", "line %d: malformed parameter value", line);
            delim = *s;
            *s++ = '\0';
            if (!first) first = v;
            if (delim != ',') break;
        }
        caret_decode(first);
        if (p->nparams < MAX_PARAMS) p->params[p->nparams++] = (struct param){pname, first};
    }
    p->value = s;
    return 0;
}

/* ---- Values ---- */

/* TEXT unescaping: \\ \; \, \n \N; any other backslash stays as it was (a lone backslash from a
 * careless exporter is more likely meant literally). Returns a malloc'd string. */
static char *text_unescape(const char *s) {
    char *out = malloc(strlen(s) + 1), *o = out;
    if (!out) return NULL;
    for (; *s; s++) {
        if (*s == '\\' && (s[1] == '\\' || s[1] == ';' || s[1] == ',')) *o++ = *++s;
        else if (*s == '\\' && (s[1] == 'n' || s[1] == 'N')) *o++ = '\n', s++;
        else *o++ = *s;
    }
    *o = '\0';
    return out;
}

/* A DATE or DATE-TIME value as read: its kind, wall-clock fields and zone ("" = the event's
 * zone, or floating). */
struct ptime {
    enum ics_time_kind kind;
    struct tm6 t;
    char zone[128];
};

/* Reads one value v of property p (VALUE and TZID parameters honoured). 0, or -1 with why. */
static int read_time(const struct prop *p, const char *v, struct ptime *out, const char **why) {
    memset(out, 0, sizeof *out);
    while (*v == ' ') v++;
    size_t n = strlen(v);
    while (n > 0 && v[n - 1] == ' ') n--;
    const char *vt = param(p, "VALUE");
    int is_date = (vt && !strcasecmp(vt, "DATE")) || n == 8;
    *why = "is not a valid DATE or DATE-TIME value";
    if (ics_num(v, 4, &out->t.y) || ics_num(v + 4, 2, &out->t.mo) || ics_num(v + 6, 2, &out->t.d)) return -1;
    if (is_date) {
        if (n != 8 || !ics_tm_valid(&out->t, 0)) return -1;
        out->kind = ICS_TIME_DATE;
        return 0;
    }
    if ((n != 15 && n != 16) || (v[8] != 'T' && v[8] != 't') || ics_num(v + 9, 2, &out->t.h) ||
        ics_num(v + 11, 2, &out->t.mi) || ics_num(v + 13, 2, &out->t.s) || !ics_tm_valid(&out->t, 1))
        return -1;
    if (n == 16) {
        if (v[15] != 'Z' && v[15] != 'z') return -1;
        out->kind = ICS_TIME_UTC;
        return 0;
    }
    out->kind = ICS_TIME_LOCAL;
    const char *tzid = param(p, "TZID");
    if (tzid) {
        const char *z = ics_zone_name(tzid);
        if (!z || strlen(z) >= sizeof out->zone) {
            *why = "names a time zone (TZID) that is neither an IANA name nor a known Windows zone";
            return -1;
        }
        snprintf(out->zone, sizeof out->zone, "%s", z);
    }
    return 0;
}

/* The output text of t for an event whose zone is ev_zone (NULL: the caller's default). */
static void time_text(const struct ptime *t, const char *ev_zone, char *out, size_t outlen) {
    char civil[20];
    ics_fmt_civil(&t->t, t->kind != ICS_TIME_DATE, civil);
    if (t->kind == ICS_TIME_DATE) snprintf(out, outlen, "%s", civil);
    else if (t->kind == ICS_TIME_UTC) snprintf(out, outlen, "%sZ", civil);
    else if (!t->zone[0] || (ev_zone && !strcmp(t->zone, ev_zone))) snprintf(out, outlen, "%s", civil);
    else snprintf(out, outlen, "%s[%s]", civil, t->zone);
}

/* Two times on the same clock (both dates, both UTC, or local in the same zone). */
static int same_clock(const struct ptime *a, const struct ptime *b, const char *ev_zone) {
    if (a->kind != b->kind) return 0;
    if (a->kind != ICS_TIME_LOCAL) return 1;
    const char *za = a->zone[0] ? a->zone : (ev_zone ? ev_zone : "");
    const char *zb = b->zone[0] ? b->zone : (ev_zone ? ev_zone : "");
    return !strcmp(za, zb);
}

/* DURATION: [+|-]P(nW | nD[T[nH][nM][nS]] | T[nH][nM][nS]) → seconds. 0 or -1. */
static int parse_duration(const char *s, long long *secs) {
    long long sign = 1, total = 0;
    int any = 0, in_time = 0, after_t = 0;
    while (*s == ' ') s++;
    if (*s == '+' || *s == '-') sign = *s++ == '-' ? -1 : 1;
    if (*s != 'P' && *s != 'p') return -1;
    for (s++; *s && *s != ' ';) {
        if (*s == 'T' || *s == 't') {
            if (in_time) return -1;
            in_time = 1;
            s++;
            continue;
        }
        long long n = 0;
        int digits = 0;
        for (; *s >= '0' && *s <= '9'; s++, digits++)
            if ((n = n * 10 + (*s - '0')) > 100000000) return -1;
        char u = (char)toupper((unsigned char)*s);
        if (!digits || !u) return -1;
        if (!in_time && u == 'W') total += n * 604800;
        else if (!in_time && u == 'D') total += n * 86400;
        else if (in_time && u == 'H') total += n * 3600, after_t = 1;
        else if (in_time && u == 'M') total += n * 60, after_t = 1;
        else if (in_time && u == 'S') total += n, after_t = 1;
        else return -1;
        any = 1;
        s++;
    }
    if (!any || (in_time && !after_t)) return -1;
    *secs = sign * total;
    return 0;
}

static struct ptime time_add(struct ptime t, long long secs) {
    if (t.kind == ICS_TIME_DATE) {
        struct tm6 d = ics_tm_from_seconds(ics_days_from_civil(t.t.y, t.t.mo, t.t.d) * 86400 + secs);
        t.t.y = d.y, t.t.mo = d.mo, t.t.d = d.d;
        return t;
    }
    t.t = ics_tm_from_seconds(ics_tm_seconds(&t.t) + secs);
    return t;
}

/* ---- RRULE ---- */

/* Keeps the parts Orrery's recurrence rules support (FREQ=DAILY..YEARLY, INTERVAL, COUNT, UNTIL,
 * BYDAY, BYMONTHDAY: src/rrule.h) and drops two that cannot change the result here: WKST when no
 * week boundary matters, BYMONTH(+BYMONTHDAY) that only restates a YEARLY rule's start date.
 * Anything else is refused, never approximated. 0, or -1 with why. */
static int rrule_normalize(const char *in, const struct tm6 *start, char *out, size_t outlen, char *why,
                           size_t whylen) {
    char copy[512];
    if (!strncasecmp(in, "RRULE:", 6)) in += 6;
    if (strlen(in) >= sizeof copy) return snprintf(why, whylen, "RRULE is too long"), -1;
    snprintf(copy, sizeof copy, "%s", in);
    struct {
        char *name, *value;
    } parts[16];
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(copy, ";", &save); tok; tok = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq || eq == tok) return snprintf(why, whylen, "RRULE part '%.40s' is not NAME=VALUE", tok), -1;
        *eq = '\0';
        for (char *c = tok; *c; c++) *c = (char)toupper((unsigned char)*c);
        for (char *c = eq + 1; *c; c++) *c = (char)toupper((unsigned char)*c);
        for (int i = 0; i < n; i++)
            if (!strcmp(parts[i].name, tok)) return snprintf(why, whylen, "RRULE repeats %.40s", tok), -1;
        if (n == 16) return snprintf(why, whylen, "RRULE has too many parts"), -1;
        parts[n].name = tok;
        parts[n++].value = eq + 1;
    }
    const char *freq = NULL, *interval = NULL, *byday = NULL, *bymonthday = NULL, *bymonth = NULL, *wkst = NULL;
    for (int i = 0; i < n; i++) {
        const char *k = parts[i].name, *v = parts[i].value;
        if (!strcmp(k, "FREQ")) freq = v;
        else if (!strcmp(k, "INTERVAL")) interval = v;
        else if (!strcmp(k, "BYDAY")) byday = v;
        else if (!strcmp(k, "BYMONTHDAY")) bymonthday = v;
        else if (!strcmp(k, "BYMONTH")) bymonth = v;
        else if (!strcmp(k, "WKST")) wkst = v;
        else if (strcmp(k, "COUNT") && strcmp(k, "UNTIL"))
            return snprintf(why, whylen, "RRULE part %.40s is not supported", k), -1;
    }
    if (!freq) return snprintf(why, whylen, "RRULE has no FREQ"), -1;
    if (strcmp(freq, "DAILY") && strcmp(freq, "WEEKLY") && strcmp(freq, "MONTHLY") && strcmp(freq, "YEARLY"))
        return snprintf(why, whylen, "RRULE FREQ=%.20s is not supported", freq), -1;
    static const char *const wd[7] = {"MO", "TU", "WE", "TH", "FR", "SA", "SU"};
    int drop_wkst = 0, drop_month = 0;
    if (wkst) {
        int one_day = byday && !strchr(byday, ',') && !strcmp(byday, wd[ics_weekday(start->y, start->mo, start->d)]);
        drop_wkst = !strcmp(wkst, "MO") || strcmp(freq, "WEEKLY") || !interval || !strcmp(interval, "1") ||
                    !byday || one_day;
        if (!drop_wkst) return snprintf(why, whylen, "RRULE WKST=%.4s with INTERVAL and BYDAY is not supported", wkst), -1;
    }
    if (bymonth) {
        char mo[8], md[8];
        snprintf(mo, sizeof mo, "%d", start->mo);
        snprintf(md, sizeof md, "%d", start->d);
        drop_month = !strcmp(freq, "YEARLY") && !strcmp(bymonth, mo) && !byday &&
                     (!bymonthday || !strcmp(bymonthday, md));
        if (!drop_month) return snprintf(why, whylen, "RRULE part BYMONTH is not supported"), -1;
    }
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        const char *k = parts[i].name;
        if (!strcmp(k, "WKST") || (drop_month && (!strcmp(k, "BYMONTH") || !strcmp(k, "BYMONTHDAY")))) continue;
        int w = snprintf(out + len, outlen - len, "%s%s=%s", len ? ";" : "", k, parts[i].value);
        if (w < 0 || (size_t)w >= outlen - len) return snprintf(why, whylen, "RRULE is too long"), -1;
        len += (size_t)w;
    }
    return 0;
}

/* ---- Building an event ---- */

static int append_unique(json_t *arr, const char *s, int nocase) {
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        const char *t = json_string_value(v);
        if (t && (nocase ? !strcasecmp(t, s) : !strcmp(t, s))) return 0;
    }
    return json_array_append_new(arr, json_string(s));
}

static int add_text_field(json_t *o, const char *key, const char *raw) {
    char *s = text_unescape(raw);
    if (!s) return -1;
    int rc = json_object_set_new(o, key, json_string(s));
    free(s);
    return rc;
}

/* An EXDATE (or RECURRENCE-ID) value in the form of the event's start. */
static struct ptime exdate_like(struct ptime x, const struct ptime *start, int all_day) {
    if (all_day && x.kind != ICS_TIME_DATE) { /* the day of that occurrence */
        x.kind = ICS_TIME_DATE;
        x.zone[0] = '\0';
    } else if (!all_day && x.kind == ICS_TIME_DATE) { /* that day at the series' time */
        struct tm6 d = x.t;
        x = *start;
        x.t.y = d.y, x.t.mo = d.mo, x.t.d = d.d;
    }
    return x;
}

static json_t *build_event(struct parser *ps, struct vevent *ev) {
    struct ics_err *err = ps->err;
    const char *why;
    char text[200], rule[512], whybuf[160];
    json_t *o = json_object(), *exdates = json_array(), *reminders = json_array(), *attendees = json_array();
    struct ptime start, end;
    if (!o || !exdates || !reminders || !attendees) goto oom;
    if (!ev->has_dtstart) {
        efail(err, ev, ev->line, "starts_at", "DTSTART is missing");
        goto fail;
    }
    if (read_time(&ev->dtstart, ev->dtstart.value, &start, &why)) {
        efail(err, ev, ev->dtstart.line, strstr(why, "TZID") ? "timezone" : "starts_at", "DTSTART %s", why);
        goto fail;
    }
    int all_day = start.kind == ICS_TIME_DATE;
    const char *zone = start.zone[0] ? start.zone : (ps->cal_tz[0] ? ps->cal_tz : NULL);
    if (ev->has_dtend) {
        if (read_time(&ev->dtend, ev->dtend.value, &end, &why)) {
            efail(err, ev, ev->dtend.line, strstr(why, "TZID") ? "timezone" : "ends_at", "DTEND %s", why);
            goto fail;
        }
        if ((end.kind == ICS_TIME_DATE) != all_day) {
            efail(err, ev, ev->dtend.line, "ends_at", "DTEND must be a %s like DTSTART", all_day ? "DATE" : "DATE-TIME");
            goto fail;
        }
    } else if (ev->has_duration) {
        long long d;
        if (parse_duration(ev->duration.value, &d) || (all_day && d % 86400)) {
            efail(err, ev, ev->duration.line, "ends_at", "DURATION is not a valid %s", all_day ? "number of days" : "duration");
            goto fail;
        }
        end = time_add(start, d);
    } else {
        end = all_day ? time_add(start, 86400) : start; /* RFC 5545 3.6.1 */
    }
    if (ev->nrrule > 1 || ev->has_rdate) {
        efail(err, ev, ev->line, "recurrence", "%s", ev->has_rdate ? "RDATE and EXRULE are not supported"
                                                                    : "more than one RRULE is not supported");
        goto fail;
    }
    if (ev->nrrule && rrule_normalize(ev->rrule.value, &start.t, rule, sizeof rule, whybuf, sizeof whybuf)) {
        efail(err, ev, ev->rrule.line, "recurrence", "%s", whybuf);
        goto fail;
    }
    if (ev->has_uid) add_text_field(o, "uid", ev->uid.value);
    else json_object_set_new(o, "uid", json_null());
    json_object_set_new(o, "index", json_integer(ev->index));
    if (ev->has_summary && ev->summary.value[0]) add_text_field(o, "title", ev->summary.value);
    else json_object_set_new(o, "title", json_string("(no title)"));
    if (ev->has_description) add_text_field(o, "description", ev->description.value);
    if (ev->has_location) add_text_field(o, "location", ev->location.value);
    json_object_set_new(o, "all_day", json_boolean(all_day));
    time_text(&start, zone, text, sizeof text);
    json_object_set_new(o, "starts_at", json_string(text));
    time_text(&end, zone, text, sizeof text);
    json_object_set_new(o, "ends_at", json_string(text));
    if (zone) json_object_set_new(o, "timezone", json_string(zone));
    if (ev->nrrule) json_object_set_new(o, "recurrence", json_string(rule));
    for (int i = 0; i < ev->nexdates; i++) {
        const struct prop *p = &ev->exdates[i];
        char *list = strdup(p->value);
        if (!list) goto oom;
        for (char *save = NULL, *v = strtok_r(list, ",", &save); v; v = strtok_r(NULL, ",", &save)) {
            struct ptime x;
            if (read_time(p, v, &x, &why)) {
                free(list);
                efail(err, ev, p->line, strstr(why, "TZID") ? "timezone" : "exdates", "EXDATE %s", why);
                goto fail;
            }
            x = exdate_like(x, &start, all_day);
            time_text(&x, zone, text, sizeof text);
            append_unique(exdates, text, 0);
        }
        free(list);
    }
    for (int i = 0; i < ev->nalarms; i++) {
        const struct alarm *a = &ev->alarms[i];
        long long before;
        if (a->none || !a->has_trigger) continue; /* ACTION:NONE (Apple's placeholder), or no trigger */
        const char *vt = param(&a->trigger, "VALUE"), *rel = param(&a->trigger, "RELATED");
        if (vt && !strcasecmp(vt, "DATE-TIME")) {
            struct ptime t;
            if (read_time(&a->trigger, a->trigger.value, &t, &why) || t.kind != ICS_TIME_UTC ||
                start.kind != ICS_TIME_UTC) {
                efail(err, ev, a->line, "reminders",
                      "an alarm at a fixed time is supported only as UTC for an event that starts in UTC");
                goto fail;
            }
            before = ics_tm_seconds(&start.t) - ics_tm_seconds(&t.t);
        } else {
            long long d;
            if (parse_duration(a->trigger.value, &d)) {
                efail(err, ev, a->line, "reminders", "TRIGGER is not a valid duration");
                goto fail;
            }
            if (rel && !strcasecmp(rel, "END")) {
                if (!same_clock(&start, &end, zone)) {
                    efail(err, ev, a->line, "reminders", "TRIGGER;RELATED=END needs DTSTART and DTEND on one clock");
                    goto fail;
                }
                d += ics_tm_seconds(&end.t) - ics_tm_seconds(&start.t);
            }
            before = -d;
        }
        if (before < 0) {
            efail(err, ev, a->line, "reminders", "an alarm after the event starts is not supported");
            goto fail;
        }
        json_t *m = json_integer((before + 59) / 60);
        size_t k;
        json_t *v;
        int dup = 0;
        json_array_foreach(reminders, k, v) dup |= json_integer_value(v) == json_integer_value(m);
        if (dup) json_decref(m);
        else json_array_append_new(reminders, m);
    }
    for (int i = 0; i < ev->nattendees; i++) {
        const char *v = ev->attendees[i].value;
        while (*v == ' ') v++;
        if (strncasecmp(v, "mailto:", 7)) continue; /* urn:uuid:..., a bare name: no address */
        char addr[320];
        snprintf(addr, sizeof addr, "%s", v + 7);
        size_t n = strlen(addr);
        while (n > 0 && addr[n - 1] == ' ') addr[--n] = '\0';
        if (n) append_unique(attendees, addr, 1);
    }
    json_object_set_new(o, "exdates", exdates);
    json_object_set_new(o, "reminders", reminders);
    json_object_set_new(o, "attendees", attendees);
    return o;
oom:
    pfail(err, ev->line, "ics", "out of memory");
fail:
    json_decref(o);
    json_decref(exdates);
    json_decref(reminders);
    json_decref(attendees);
    return NULL;
}

/* ---- Components ---- */

static void vevent_free(struct vevent *ev) {
    free(ev->exdates);
    free(ev->attendees);
    free(ev->alarms);
    memset(ev, 0, sizeof *ev);
}

static int grow(void **arr, int *cap, int n, size_t size) {
    if (n < *cap) return 0;
    int c = *cap ? *cap * 2 : 4;
    void *p = realloc(*arr, (size_t)c * size);
    if (!p) return -1;
    *arr = p;
    *cap = c;
    return 0;
}

static int event_prop(struct vevent *ev, const struct prop *p) {
    const char *n = p->name;
#define ONCE(NAME, F)                                                                                                  \
    if (!strcmp(n, NAME)) {                                                                                            \
        if (!ev->has_##F) ev->F = *p, ev->has_##F = 1;                                                                 \
        return 0;                                                                                                      \
    }
    ONCE("UID", uid)
    ONCE("SUMMARY", summary)
    ONCE("DESCRIPTION", description)
    ONCE("LOCATION", location)
    ONCE("DTSTART", dtstart)
    ONCE("DTEND", dtend)
    ONCE("DURATION", duration)
    ONCE("RECURRENCE-ID", rid)
    ONCE("STATUS", status)
#undef ONCE
    if (!strcmp(n, "RRULE")) {
        if (!ev->nrrule++) ev->rrule = *p;
    } else if (!strcmp(n, "RDATE") || !strcmp(n, "EXRULE")) {
        ev->has_rdate = 1;
    } else if (!strcmp(n, "EXDATE")) {
        if (grow((void **)&ev->exdates, &ev->cexdates, ev->nexdates, sizeof *ev->exdates)) return -1;
        ev->exdates[ev->nexdates++] = *p;
    } else if (!strcmp(n, "ATTENDEE")) {
        if (grow((void **)&ev->attendees, &ev->cattendees, ev->nattendees, sizeof *ev->attendees)) return -1;
        ev->attendees[ev->nattendees++] = *p;
    }
    return 0; /* X- and every other property: not ours to keep */
}

/* Unfolds into ps->buf: one NUL-terminated logical line per entry of *lines, with the physical
 * line number it starts on. */
struct lline {
    size_t off;
    int no;
};

static int unfold(struct parser *ps, const char *text, size_t len, struct lline **linesp, size_t *nlines) {
    struct lline *lines = NULL;
    size_t n = 0, cap = 0, o = 0, i = 0;
    int phys = 0, open = 0;
    char *buf = malloc(len + 2);
    ps->buf = buf;
    if (!buf) return pfail(ps->err, 0, "ics", "out of memory");
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) i = 3;
    while (i < len) {
        size_t e = i;
        phys++;
        for (; e < len && text[e] != '\r' && text[e] != '\n'; e++)
            if (!text[e]) goto nul;
        size_t next = e < len ? (text[e] == '\r' && e + 1 < len && text[e + 1] == '\n' ? e + 2 : e + 1) : e;
        if (e > i && (text[i] == ' ' || text[i] == '\t')) {
            if (open) {
                memcpy(buf + o, text + i + 1, e - i - 1);
                o += e - i - 1;
            } else {
                for (size_t k = i; k < e; k++)
                    if (text[k] != ' ' && text[k] != '\t') {
                        free(lines);
                        return pfail(ps->err, phys, "ics", "line %d continues a line that does not exist", phys);
                    }
            }
        } else {
            if (open) buf[o++] = '\0';
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                struct lline *l = realloc(lines, cap * sizeof *l);
                if (!l) {
                    free(lines);
                    return pfail(ps->err, phys, "ics", "out of memory");
                }
                lines = l;
            }
            lines[n++] = (struct lline){o, phys};
            memcpy(buf + o, text + i, e - i);
            o += e - i;
            open = 1;
        }
        i = next;
    }
    if (open) buf[o++] = '\0';
    *linesp = lines;
    *nlines = n;
    return 0;
nul:
    free(lines);
    return pfail(ps->err, phys, "ics", "line %d contains a NUL byte", phys);
}

/* Overridden occurrences: each RECURRENCE-ID becomes an EXDATE of its series (so the original
 * time no longer shows) and the override, unless cancelled, stays as an event of its own. */
static int apply_overrides(struct parser *ps) {
    for (size_t i = 0; i < ps->novr; i++) {
        struct override *ov = &ps->ovr[i];
        json_t *o = json_array_get(ps->out, ov->out);
        const char *uid = json_string_value(json_object_get(o, "uid"));
        json_t *master = NULL;
        size_t j;
        json_t *m;
        json_array_foreach(ps->out, j, m) {
            if (j == ov->out || json_object_get(m, "_override")) continue;
            const char *u = json_string_value(json_object_get(m, "uid"));
            if (uid && u && !strcmp(u, uid)) master = m;
        }
        if (master) {
            struct ptime x, start = {0};
            const char *why, *zone = json_string_value(json_object_get(master, "timezone"));
            char civil[20], z[128], text[200];
            enum ics_time_kind k = ics_time_split(json_string_value(json_object_get(master, "starts_at")), civil, z,
                                                  sizeof z);
            if (read_time(&ov->rid, ov->rid.value, &x, &why)) {
                struct vevent ev = {.index = (int)json_integer_value(json_object_get(o, "index")), .has_uid = 1};
                ev.uid.value = uid;
                return efail(ps->err, &ev, ov->rid.line, "exdates", "RECURRENCE-ID %s", why);
            }
            start.kind = k;
            sscanf(civil, "%4d-%2d-%2dT%2d:%2d:%2d", &start.t.y, &start.t.mo, &start.t.d, &start.t.h, &start.t.mi,
                   &start.t.s);
            snprintf(start.zone, sizeof start.zone, "%s", z);
            x = exdate_like(x, &start, k == ICS_TIME_DATE);
            time_text(&x, zone, text, sizeof text);
            append_unique(json_object_get(master, "exdates"), text, 0);
        }
        if (ov->cancelled) json_object_set_new(o, "_drop", json_true());
    }
    json_t *kept = json_array();
    size_t j;
    json_t *m;
    json_array_foreach(ps->out, j, m) {
        if (json_object_get(m, "_drop")) continue;
        json_object_del(m, "_override");
        json_array_append(kept, m);
    }
    json_decref(ps->out);
    ps->out = kept;
    return 0;
}

json_t *ics_parse(const char *text, size_t len, size_t max_events, struct ics_err *err) {
    struct parser ps = {.err = err, .out = json_array()};
    struct lline *lines = NULL;
    size_t nlines = 0;
    struct vevent ev = {0};
    struct {
        const char *name;
        int line;
    } stack[MAX_DEPTH];
    int depth = 0, seen_cal = 0, in_event = 0;
    struct alarm *alarm = NULL;
    memset(err, 0, sizeof *err);
    err->index = -1;
    if (!ps.out || unfold(&ps, text, len, &lines, &nlines)) goto fail;
    for (size_t li = 0; li < nlines; li++) {
        char *s = ps.buf + lines[li].off;
        int no = lines[li].no;
        struct prop p;
        if (!*s) continue;
        if (!valid_utf8((const unsigned char *)s)) {
            pfail(err, no, "ics", "line %d is not valid UTF-8", no);
            goto fail;
        }
        if (parse_prop(s, no, &p, err)) goto fail;
        if (!strcmp(p.name, "BEGIN") || !strcmp(p.name, "END")) {
            char *c = (char *)p.value;
            for (char *q = c; *q; q++) *q = (char)toupper((unsigned char)*q);
            for (size_t k = strlen(c); k > 0 && c[k - 1] == ' '; k--) c[k - 1] = '\0';
            if (!strcmp(p.name, "BEGIN")) {
                if (depth == 0 && strcmp(c, "VCALENDAR")) {
                    pfail(err, no, "ics", "line %d: expected BEGIN:VCALENDAR", no);
                    goto fail;
                }
                if (depth == MAX_DEPTH) {
                    pfail(err, no, "ics", "line %d: components nested too deeply", no);
                    goto fail;
                }
                if (depth == 0) seen_cal = 1;
                if (depth == 1 && !strcmp(c, "VEVENT")) {
                    if (max_events && (size_t)ps.nevents >= max_events) {
                        pfail(err, no, "ics", "more than %zu events", max_events);
                        goto fail;
                    }
                    vevent_free(&ev);
                    ev.index = ps.nevents++;
                    ev.line = no;
                    in_event = 1;
                } else if (depth == 2 && in_event && !strcmp(c, "VALARM")) {
                    if (grow((void **)&ev.alarms, &ev.calarms, ev.nalarms, sizeof *ev.alarms)) {
                        pfail(err, no, "ics", "out of memory");
                        goto fail;
                    }
                    alarm = &ev.alarms[ev.nalarms++];
                    memset(alarm, 0, sizeof *alarm);
                    alarm->line = no;
                }
                stack[depth].name = c;
                stack[depth++].line = no;
                continue;
            }
            if (depth == 0 || strcmp(stack[depth - 1].name, c)) {
                if (depth == 0) pfail(err, no, "ics", "line %d: END:%.40s without BEGIN", no, c);
                else
                    pfail(err, no, "ics", "line %d: END:%.40s does not close BEGIN:%.40s of line %d", no, c,
                          stack[depth - 1].name, stack[depth - 1].line);
                goto fail;
            }
            depth--;
            if (depth == 2 && alarm && !strcmp(c, "VALARM")) alarm = NULL;
            if (depth == 1 && in_event && !strcmp(c, "VEVENT")) {
                in_event = 0;
                json_t *o = build_event(&ps, &ev);
                if (!o) goto fail;
                if (ev.has_rid) {
                    struct override *nv = ps.novr == ps.covr ? realloc(ps.ovr, (ps.covr = ps.covr ? ps.covr * 2 : 8) *
                                                                                   sizeof *ps.ovr)
                                                             : ps.ovr;
                    if (!nv) {
                        json_decref(o);
                        pfail(err, no, "ics", "out of memory");
                        goto fail;
                    }
                    ps.ovr = nv;
                    ps.ovr[ps.novr++] = (struct override){json_array_size(ps.out),
                                                          ev.has_status && !strcasecmp(ev.status.value, "CANCELLED"),
                                                          ev.rid};
                    json_object_set_new(o, "_override", json_true());
                }
                json_array_append_new(ps.out, o);
            }
            continue;
        }
        if (depth == 0) {
            pfail(err, no, "ics", "line %d: expected BEGIN:VCALENDAR", no);
            goto fail;
        }
        if (depth == 1 && !strcmp(p.name, "X-WR-TIMEZONE")) {
            const char *z = ics_zone_name(p.value);
            snprintf(ps.cal_tz, sizeof ps.cal_tz, "%s", z && strlen(z) < sizeof ps.cal_tz ? z : "");
        } else if (depth == 2 && in_event) {
            if (event_prop(&ev, &p)) {
                pfail(err, no, "ics", "out of memory");
                goto fail;
            }
        } else if (depth == 3 && alarm) {
            if (!strcmp(p.name, "TRIGGER") && !alarm->has_trigger) alarm->trigger = p, alarm->has_trigger = 1;
            else if (!strcmp(p.name, "ACTION") && !strcasecmp(p.value, "NONE")) alarm->none = 1;
        }
    }
    if (depth > 0) {
        pfail(err, stack[depth - 1].line, "ics", "BEGIN:%.40s of line %d is never closed", stack[depth - 1].name,
              stack[depth - 1].line);
        goto fail;
    }
    if (!seen_cal) {
        pfail(err, 0, "ics", "no VCALENDAR in the text");
        goto fail;
    }
    if (apply_overrides(&ps)) goto fail;
    vevent_free(&ev);
    free(lines);
    free(ps.buf);
    free(ps.ovr);
    return ps.out;
fail:
    if (!err->message[0]) pfail(err, 0, "ics", "out of memory");
    vevent_free(&ev);
    free(lines);
    free(ps.buf);
    free(ps.ovr);
    json_decref(ps.out);
    return NULL;
}
