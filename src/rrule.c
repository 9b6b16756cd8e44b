/* rrule — see rrule.h. Occurrences are generated period by period (a day, a week starting on
 * Monday, a month or a year, every INTERVAL periods from the one holding DTSTART): each day of the
 * period that the BY* parts select becomes an occurrence at DTSTART's time of day. Days are
 * counted as days since 1970-01-01 (proleptic Gregorian calendar), which makes weekdays, month
 * lengths and "the last Friday" plain arithmetic. civil_parse returns 0 or -1, like rrule_parse. */
#include "rrule.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_core.h"

#define YEAR_MIN 1
#define YEAR_MAX 9999
#define COUNT_MAX 100000
#define INTERVAL_MAX 1000
/* How far rrule_next looks past `after` for a rule whose BY* parts never select a day again
 * (FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=31 from February). */
#define NEXT_HORIZON_DAYS (400L * 366L)

static const char *const WEEKDAYS[7] = {"MO", "TU", "WE", "TH", "FR", "SA", "SU"};

/* ---- Civil time ---- */

static int is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int civil_days_in_month(int y, int mo) {
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12) return 0;
    return mo == 2 && is_leap(y) ? 29 : dim[mo - 1];
}

/* Days since 1970-01-01 (H. Hinnant's days_from_civil). */
static long days_from_civil(int y, int m, int d) {
    long yy = (long)y - (m <= 2);
    long era = (yy >= 0 ? yy : yy - 399) / 400;
    long yoe = yy - era * 400;
    long doy = (153L * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long z, int *y, int *m, int *d) {
    z += 719468;
    long era = (z >= 0 ? z : z - 146096) / 146097;
    long doe = z - era * 146097;
    long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* 0 = Monday; 1970-01-01 was a Thursday. */
static int weekday_of(long day) { return (int)(((day % 7) + 7 + 3) % 7); }

int civil_weekday(int y, int mo, int d) { return weekday_of(days_from_civil(y, mo, d)); }

int civil_cmp(struct civil a, struct civil b) {
    int av[6] = {a.y, a.mo, a.d, a.h, a.mi, a.s}, bv[6] = {b.y, b.mo, b.d, b.h, b.mi, b.s};
    for (int i = 0; i < 6; i++)
        if (av[i] != bv[i]) return av[i] < bv[i] ? -1 : 1;
    return 0;
}

static long long civil_seconds(struct civil c) {
    return (long long)days_from_civil(c.y, c.mo, c.d) * 86400 + c.h * 3600 + c.mi * 60 + c.s;
}

static struct civil civil_from_seconds(long long t) {
    long long day = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    long long sod = t - day * 86400;
    struct civil c;
    civil_from_days((long)day, &c.y, &c.mo, &c.d);
    c.h = (int)(sod / 3600);
    c.mi = (int)(sod / 60 % 60);
    c.s = (int)(sod % 60);
    return c;
}

struct civil civil_add_seconds(struct civil c, long long secs) { return civil_from_seconds(civil_seconds(c) + secs); }

struct civil civil_add_days(struct civil c, int days) { return civil_add_seconds(c, (long long)days * 86400); }

static int num(const char *s, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int civil_valid(struct civil c) {
    return c.y >= YEAR_MIN && c.y <= YEAR_MAX && c.mo >= 1 && c.mo <= 12 && c.d >= 1 &&
           c.d <= civil_days_in_month(c.y, c.mo) && c.h >= 0 && c.h <= 23 && c.mi >= 0 && c.mi <= 59 && c.s >= 0 &&
           c.s <= 59;
}

int civil_parse(const char *s, struct civil *out) {
    struct civil c = {0, 0, 0, 0, 0, 0};
    size_t n = s ? strlen(s) : 0;
    if (n < 10 || s[4] != '-' || s[7] != '-') return -1;
    c.y = num(s, 4);
    c.mo = num(s + 5, 2);
    c.d = num(s + 8, 2);
    if (n > 10) {
        /* PostgreSQL writes a space, RFC 3339 a T; a fraction of a second is dropped. */
        if (n < 19 || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' || s[16] != ':') return -1;
        c.h = num(s + 11, 2);
        c.mi = num(s + 14, 2);
        c.s = num(s + 17, 2);
        if (n > 19) {
            if (s[19] != '.' || n == 20 || n > 29) return -1;
            for (size_t i = 20; i < n; i++)
                if (s[i] < '0' || s[i] > '9') return -1;
        }
    }
    if (!civil_valid(c)) return -1;
    *out = c;
    return 0;
}

void civil_format(struct civil c, char out[20]) {
    /* Out-of-range fields (never produced here) are folded so the text always fits. */
    snprintf(out, 20, "%04u-%02u-%02uT%02u:%02u:%02u", (unsigned)c.y % 10000u, (unsigned)c.mo % 100u,
             (unsigned)c.d % 100u, (unsigned)c.h % 100u, (unsigned)c.mi % 100u, (unsigned)c.s % 100u);
}

/* ---- Parsing ---- */

static int fail(char *err, size_t errlen, const char *fmt, const char *part) {
    if (err && errlen) snprintf(err, errlen, fmt, part);
    return -1;
}

/* A whole decimal number in [min, max] spanning s[0..n). */
static int parse_int(const char *s, size_t n, long min, long max, long *out) {
    if (n == 0 || n > 9) return -1;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* A signed whole number ("-1", "+2", "15"), non-zero, |v| <= max. */
static int parse_signed(const char *s, size_t n, long max, long *out) {
    int neg = 0;
    if (n && (*s == '+' || *s == '-')) {
        neg = *s == '-';
        s++;
        n--;
    }
    long v;
    if (parse_int(s, n, 1, max, &v)) return -1;
    *out = neg ? -v : v;
    return 0;
}

static int parse_until(const char *s, size_t n, struct civil *out) {
    struct civil c = {0, 0, 0, 23, 59, 59}; /* a date: the whole day */
    if (n != 8 && n != 15 && n != 16) return -1;
    c.y = num(s, 4);
    c.mo = num(s + 4, 2);
    c.d = num(s + 6, 2);
    if (n > 8) {
        if (s[8] != 'T' || (n == 16 && s[15] != 'Z')) return -1;
        c.h = num(s + 9, 2);
        c.mi = num(s + 11, 2);
        c.s = num(s + 13, 2);
    }
    if (!civil_valid(c)) return -1;
    *out = c;
    return 0;
}

static int parse_byday(const char *v, size_t n, struct rrule *r) {
    const char *p = v, *end = v + n;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        size_t len = (size_t)(e - p);
        if (len < 2) return -1;
        int wd = -1;
        for (int i = 0; i < 7; i++)
            if (!strncmp(e - 2, WEEKDAYS[i], 2)) wd = i;
        if (wd < 0 || (r->byday & (1u << wd))) return -1; /* unknown, or the same day twice */
        long ord = 0;
        if (len > 2 && parse_signed(p, len - 2, 53, &ord)) return -1;
        r->byday |= 1u << wd;
        r->byday_ord[wd] = (int)ord;
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

static int parse_bymonthday(const char *v, size_t n, struct rrule *r) {
    const char *p = v, *end = v + n;
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        long d;
        if (parse_signed(p, (size_t)(e - p), 31, &d)) return -1;
        int dup = 0;
        for (int i = 0; i < r->nbymonthday; i++)
            if (r->bymonthday[i] == d) dup = 1;
        if (!dup) {
            if (r->nbymonthday >= 31) return -1;
            r->bymonthday[r->nbymonthday++] = (int)d;
        }
        if (!comma) break;
        p = comma + 1;
    }
    return 0;
}

int rrule_parse(const char *s, struct rrule *out, char *err, size_t errlen) {
    struct rrule r;
    memset(&r, 0, sizeof r);
    r.interval = 1;
    if (!s) return fail(err, errlen, "%s", "the rule is empty");
    if (!strncmp(s, "RRULE:", 6)) s += 6;
    if (!*s) return fail(err, errlen, "%s", "the rule is empty");
    enum { P_FREQ, P_INTERVAL, P_BYDAY, P_BYMONTHDAY, P_COUNT, P_UNTIL, P_N };
    static const char *const names[P_N] = {"FREQ", "INTERVAL", "BYDAY", "BYMONTHDAY", "COUNT", "UNTIL"};
    int seen[P_N] = {0};
    const char *p = s;
    for (;;) {
        const char *semi = strchr(p, ';');
        size_t len = semi ? (size_t)(semi - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        char key[16];
        if (!eq || eq == p || (size_t)(eq - p) >= sizeof key) {
            char part[24];
            snprintf(part, sizeof part, "%.*s", (int)(len < 20 ? len : 20), p);
            return fail(err, errlen, "'%s' is not a NAME=VALUE part", part);
        }
        memcpy(key, p, (size_t)(eq - p));
        key[eq - p] = '\0';
        const char *v = eq + 1;
        size_t vn = len - (size_t)(eq - p) - 1;
        int k = -1;
        for (int i = 0; i < P_N; i++)
            if (!strcmp(key, names[i])) k = i;
        if (k < 0)
            return fail(err, errlen, "unknown part %s (supported: FREQ, INTERVAL, BYDAY, BYMONTHDAY, COUNT, UNTIL)",
                        key);
        if (seen[k]) return fail(err, errlen, "%s is given twice", key);
        seen[k] = 1;
        long n;
        switch (k) {
        case P_FREQ:
            if (vn == 5 && !strncmp(v, "DAILY", 5)) r.freq = RRULE_DAILY;
            else if (vn == 6 && !strncmp(v, "WEEKLY", 6)) r.freq = RRULE_WEEKLY;
            else if (vn == 7 && !strncmp(v, "MONTHLY", 7)) r.freq = RRULE_MONTHLY;
            else if (vn == 6 && !strncmp(v, "YEARLY", 6)) r.freq = RRULE_YEARLY;
            else return fail(err, errlen, "%s must be DAILY, WEEKLY, MONTHLY or YEARLY", "FREQ");
            break;
        case P_INTERVAL:
            if (parse_int(v, vn, 1, INTERVAL_MAX, &n))
                return fail(err, errlen, "%s must be a whole number from 1 to 1000", "INTERVAL");
            r.interval = (int)n;
            break;
        case P_COUNT:
            if (parse_int(v, vn, 1, COUNT_MAX, &n))
                return fail(err, errlen, "%s must be a whole number from 1 to 100000", "COUNT");
            r.count = (int)n;
            break;
        case P_UNTIL:
            if (parse_until(v, vn, &r.until))
                return fail(err, errlen, "%s must be YYYYMMDD or YYYYMMDDTHHMMSS[Z]", "UNTIL");
            r.has_until = 1;
            break;
        case P_BYDAY:
            if (parse_byday(v, vn, &r))
                return fail(err, errlen, "%s must list weekdays such as MO,WE or 2TU,-1FR, each once", "BYDAY");
            break;
        case P_BYMONTHDAY:
            if (parse_bymonthday(v, vn, &r))
                return fail(err, errlen, "%s must list days from 1 to 31 or -31 to -1", "BYMONTHDAY");
            break;
        default:
            break;
        }
        if (!semi) break;
        p = semi + 1;
        if (!*p) break; /* a trailing ';' */
    }
    if (!seen[P_FREQ]) return fail(err, errlen, "%s is required", "FREQ");
    if (seen[P_COUNT] && seen[P_UNTIL]) return fail(err, errlen, "%s", "COUNT and UNTIL cannot both be given");
    for (int i = 0; i < 7; i++) {
        int o = r.byday_ord[i];
        if (o == 0) continue;
        if (r.freq != RRULE_MONTHLY && r.freq != RRULE_YEARLY)
            return fail(err, errlen, "%s may carry a position (2TU, -1FR) only with FREQ=MONTHLY or YEARLY", "BYDAY");
        if (r.freq == RRULE_MONTHLY && (o > 5 || o < -5))
            return fail(err, errlen, "%s positions in a month go from -5 to 5", "BYDAY");
    }
    *out = r;
    return 0;
}

int rrule_format(const struct rrule *r, char *out, size_t outlen) {
    static const char *const freqs[5] = {"", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"};
    char buf[512];
    size_t n = 0;
    int f = (r->freq >= RRULE_DAILY && r->freq <= RRULE_YEARLY) ? (int)r->freq : 0;
    if (!f) return -1;
#define PUT(...) n += (size_t)snprintf(buf + n, sizeof buf - n, __VA_ARGS__)
    PUT("FREQ=%s", freqs[f]);
    if (r->interval > 1) PUT(";INTERVAL=%d", r->interval);
    if (r->byday) {
        PUT(";BYDAY=");
        int first = 1;
        for (int i = 0; i < 7; i++) {
            if (!(r->byday & (1u << i))) continue;
            if (!first) PUT(",");
            first = 0;
            if (r->byday_ord[i]) PUT("%d%s", r->byday_ord[i], WEEKDAYS[i]);
            else PUT("%s", WEEKDAYS[i]);
        }
    }
    if (r->nbymonthday > 0) {
        PUT(";BYMONTHDAY=");
        for (int i = 0; i < r->nbymonthday && i < 31; i++) PUT("%s%d", i ? "," : "", r->bymonthday[i]);
    }
    if (r->count > 0) PUT(";COUNT=%d", r->count);
    if (r->has_until) {
        struct civil u = r->until;
        if (u.h == 23 && u.mi == 59 && u.s == 59) PUT(";UNTIL=%04d%02d%02d", u.y % 10000, u.mo % 100, u.d % 100);
        else
            PUT(";UNTIL=%04d%02d%02dT%02d%02d%02d", u.y % 10000, u.mo % 100, u.d % 100, u.h % 100, u.mi % 100,
                u.s % 100);
    }
#undef PUT
    if (n >= outlen) return -1;
    memcpy(out, buf, n + 1);
    return 0;
}

/* ---- Expansion ---- */

/* Walks the occurrences of one series in order. */
struct gen {
    const struct rrule *r;
    struct civil dtstart;
    long dstart;           /* DTSTART's day */
    long k;                /* the current period's index (0 = DTSTART's) */
    long limit;            /* no period starting after this day is looked at */
    int emitted;           /* occurrences produced so far (COUNT) */
    int started;           /* DTSTART itself was produced or skipped */
    long cand[366];        /* the selected days of the current period */
    int ncand, pos;
    int done;
};

/* The n-th (n > 0) or n-th last (n < 0) weekday wd within [p0, p1], or -1. */
static long nth_weekday(long p0, long p1, int wd, int n) {
    long first = p0 + ((wd - weekday_of(p0)) % 7 + 7) % 7;
    if (first > p1) return -1;
    long count = (p1 - first) / 7 + 1;
    if (n > 0) return n <= count ? first + 7L * (n - 1) : -1;
    return -n <= count ? first + 7L * (count + n) : -1;
}

/* Whether `day` of the period [p0, p1] is selected by the rule's BY* parts (or, without them, by
 * DTSTART's weekday / day of month / date, as RFC 5545 derives them). */
static int selected(const struct gen *g, long day, long p0, long p1) {
    const struct rrule *r = g->r;
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    if (r->nbymonthday > 0) {
        int dim = civil_days_in_month(y, m), hit = 0;
        for (int i = 0; i < r->nbymonthday && !hit; i++) {
            int want = r->bymonthday[i] > 0 ? r->bymonthday[i] : dim + 1 + r->bymonthday[i];
            hit = want == d;
        }
        if (!hit) return 0;
    }
    if (r->byday) {
        int wd = weekday_of(day);
        if (!(r->byday & (1u << wd))) return 0;
        int ord = r->byday_ord[wd];
        if (ord && nth_weekday(p0, p1, wd, ord) != day) return 0;
    }
    if (!r->byday && r->nbymonthday == 0) {
        switch (r->freq) {
        case RRULE_WEEKLY:
            return weekday_of(day) == weekday_of(g->dstart);
        case RRULE_MONTHLY:
            return d == g->dtstart.d;
        case RRULE_YEARLY:
            return m == g->dtstart.mo && d == g->dtstart.d;
        default:
            return 1;
        }
    }
    return 1;
}

/* The first and last day of period k; 0, or -1 past year 9999. */
static int period(const struct gen *g, long k, long *p0, long *p1) {
    const struct rrule *r = g->r;
    long step = k * r->interval;
    switch (r->freq) {
    case RRULE_DAILY:
        *p0 = *p1 = g->dstart + step;
        break;
    case RRULE_WEEKLY:
        *p0 = g->dstart - weekday_of(g->dstart) + 7 * step;
        *p1 = *p0 + 6;
        break;
    case RRULE_MONTHLY: {
        long mi = (long)g->dtstart.y * 12 + (g->dtstart.mo - 1) + step;
        int y = (int)(mi / 12), m = (int)(mi % 12) + 1;
        if (y > YEAR_MAX) return -1;
        *p0 = days_from_civil(y, m, 1);
        *p1 = *p0 + civil_days_in_month(y, m) - 1;
        break;
    }
    default: {
        long y = g->dtstart.y + step;
        if (y > YEAR_MAX) return -1;
        *p0 = days_from_civil((int)y, 1, 1);
        *p1 = days_from_civil((int)y, 12, 31);
        break;
    }
    }
    return *p0 > days_from_civil(YEAR_MAX, 12, 31) ? -1 : 0;
}

/* Index of the period holding `day` (day >= DTSTART's day). */
static long period_of(const struct gen *g, long day) {
    const struct rrule *r = g->r;
    int y, m, d;
    civil_from_days(day, &y, &m, &d);
    switch (r->freq) {
    case RRULE_DAILY:
        return (day - g->dstart) / r->interval;
    case RRULE_WEEKLY:
        return ((day - (g->dstart - weekday_of(g->dstart))) / 7) / r->interval;
    case RRULE_MONTHLY:
        return (((long)y * 12 + m - 1) - ((long)g->dtstart.y * 12 + g->dtstart.mo - 1)) / r->interval;
    default:
        return ((long)y - g->dtstart.y) / r->interval;
    }
}

/* Starts a walk; `from_day` lets a series without COUNT skip the periods before that day (with
 * COUNT every occurrence since DTSTART must be counted). No period after limit_day is examined. */
static void gen_init(struct gen *g, const struct rrule *r, struct civil dtstart, long from_day, long limit_day) {
    memset(g, 0, sizeof *g);
    g->r = r;
    g->dtstart = dtstart;
    g->dstart = days_from_civil(dtstart.y, dtstart.mo, dtstart.d);
    g->limit = limit_day;
    if (r->count == 0 && from_day > g->dstart) {
        long k = period_of(g, from_day);
        if (k > 0) {
            g->k = k;
            g->started = 1; /* DTSTART lies in period 0, before from_day */
        }
    }
}

static int gen_next(struct gen *g, struct civil *out) {
    const struct rrule *r = g->r;
    struct civil c;
    if (g->done) return 0;
    if (r->count && g->emitted >= r->count) return g->done = 1, 0;
    if (!g->started) {
        g->started = 1;
        c = g->dtstart;
        goto found;
    }
    while (g->pos >= g->ncand) {
        long p0, p1;
        if (period(g, g->k, &p0, &p1) || p0 > g->limit) return g->done = 1, 0;
        g->k++;
        g->ncand = g->pos = 0;
        for (long day = p0 > g->dstart ? p0 : g->dstart + 1; day <= p1; day++)
            if (selected(g, day, p0, p1)) g->cand[g->ncand++] = day;
    }
    c = g->dtstart;
    civil_from_days(g->cand[g->pos++], &c.y, &c.mo, &c.d);
found:
    if (r->has_until && civil_cmp(c, r->until) > 0) return g->done = 1, 0;
    g->emitted++;
    *out = c;
    return 1;
}

int rrule_expand(const struct rrule *r, struct civil dtstart, struct civil from, struct civil to,
                 const struct civil *exdates, size_t nex, struct civil *out, int max, int *more) {
    struct gen g;
    struct civil c;
    int n = 0;
    if (more) *more = 0;
    if (!civil_valid(dtstart) || civil_cmp(from, to) >= 0) return 0;
    gen_init(&g, r, dtstart, days_from_civil(from.y, from.mo, from.d), days_from_civil(to.y, to.mo, to.d));
    while (gen_next(&g, &c)) {
        if (civil_cmp(c, to) >= 0) break;
        if (civil_cmp(c, from) < 0) continue;
        int excluded = 0;
        for (size_t i = 0; i < nex && !excluded; i++) excluded = civil_cmp(exdates[i], c) == 0;
        if (excluded) continue;
        if (n >= max) {
            if (more) *more = 1;
            break;
        }
        out[n++] = c;
    }
    return n;
}

int rrule_next(const struct rrule *r, struct civil dtstart, struct civil after, struct civil *next) {
    struct gen g;
    struct civil c;
    if (!civil_valid(dtstart)) return 0;
    long a = days_from_civil(after.y, after.mo, after.d), d0 = days_from_civil(dtstart.y, dtstart.mo, dtstart.d);
    gen_init(&g, r, dtstart, a, (a > d0 ? a : d0) + NEXT_HORIZON_DAYS);
    while (gen_next(&g, &c))
        if (civil_cmp(c, after) > 0) {
            *next = c;
            return 1;
        }
    return 0;
}

/* ---- Lua binding (orrery.core) ---- */

static struct civil check_civil(lua_State *L, int arg) {
    struct civil c;
    if (civil_parse(luaL_checkstring(L, arg), &c)) luaL_argerror(L, arg, "expected YYYY-MM-DD[THH:MM:SS]");
    return c;
}

/* core.rrule_parse(text) -> canonical text | nil, message */
static int l_rrule_parse(lua_State *L) {
    struct rrule r;
    char err[160], buf[512];
    if (rrule_parse(luaL_checkstring(L, 1), &r, err, sizeof err)) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (rrule_format(&r, buf, sizeof buf)) return luaL_error(L, "rrule_format: buffer too small");
    lua_pushstring(L, buf);
    return 1;
}

/* core.rrule_expand(rule, dtstart, from, to [, exdates [, max]]) -> {starts...}, more | nil, message */
static int l_rrule_expand(lua_State *L) {
    struct rrule r;
    char err[160];
    const char *rule = luaL_checkstring(L, 1);
    struct civil dt = check_civil(L, 2), from = check_civil(L, 3), to = check_civil(L, 4);
    lua_Integer max = luaL_optinteger(L, 6, 1000);
    luaL_argcheck(L, max >= 0 && max <= 100000, 6, "max must be 0..100000");
    size_t nex = 0;
    if (!lua_isnoneornil(L, 5)) {
        luaL_checktype(L, 5, LUA_TTABLE);
        nex = (size_t)luaL_len(L, 5);
    }
    if (rrule_parse(rule, &r, err, sizeof err)) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    /* Lua-owned buffers: a luaL_argerror below cannot leak them. */
    struct civil *ex = lua_newuserdatauv(L, (nex ? nex : 1) * sizeof *ex, 0);
    for (size_t i = 0; i < nex; i++) {
        lua_geti(L, 5, (lua_Integer)i + 1);
        if (!lua_isstring(L, -1) || civil_parse(lua_tostring(L, -1), &ex[i]))
            return luaL_argerror(L, 5, "exdates must be YYYY-MM-DD[THH:MM:SS] strings");
        lua_pop(L, 1);
    }
    struct civil *out = lua_newuserdatauv(L, (size_t)(max ? max : 1) * sizeof *out, 0);
    int more = 0;
    int n = rrule_expand(&r, dt, from, to, ex, nex, out, (int)max, &more);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        char s[20];
        civil_format(out[i], s);
        lua_pushstring(L, s);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushboolean(L, more);
    return 2;
}

/* core.rrule_next(rule, dtstart, after) -> start | nil (ended) | nil, message */
static int l_rrule_next(lua_State *L) {
    struct rrule r;
    char err[160], s[20];
    const char *rule = luaL_checkstring(L, 1);
    struct civil dt = check_civil(L, 2), after = check_civil(L, 3), next;
    if (rrule_parse(rule, &r, err, sizeof err)) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    if (!rrule_next(&r, dt, after, &next)) {
        lua_pushnil(L);
        return 1;
    }
    civil_format(next, s);
    lua_pushstring(L, s);
    return 1;
}

/* core.civil_add_seconds(civil, secs) -> civil; core.civil_weekday(civil) -> 0 (Monday)..6 */
static int l_civil_add_seconds(lua_State *L) {
    struct civil c = check_civil(L, 1);
    char s[20];
    civil_format(civil_add_seconds(c, (long long)luaL_checkinteger(L, 2)), s);
    lua_pushstring(L, s);
    return 1;
}

static int l_civil_weekday(lua_State *L) {
    struct civil c = check_civil(L, 1);
    lua_pushinteger(L, civil_weekday(c.y, c.mo, c.d));
    return 1;
}

void rrule_lua_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"rrule_parse", l_rrule_parse},
        {"rrule_expand", l_rrule_expand},
        {"rrule_next", l_rrule_next},
        {"civil_add_seconds", l_civil_add_seconds},
        {"civil_weekday", l_civil_weekday},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0); /* stack: core */
}
