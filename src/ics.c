/* ics — see ics.h. This unit holds what the writer (ics_write.c) and the parser (ics_parse.c)
 * share: civil-time arithmetic on proleptic Gregorian dates, ics_time_split, UTF-8 sequence
 * lengths, and the core.ics_write / core.ics_parse Lua bindings for specs. Uses jansson and Lua. */
#include "ics.h"

#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ics_internal.h"

/* ---- Civil time (proleptic Gregorian, no zones) ---- */

static int is_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

int ics_days_in_month(int y, int mo) {
    static const int dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return mo == 2 && is_leap(y) ? 29 : dm[mo - 1];
}

/* Days since 1970-01-01 (H. Hinnant's algorithm). */
long long ics_days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long long z, int *y, int *m, int *d) {
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* 0 = Monday ... 6 = Sunday. */
int ics_weekday(int y, int m, int d) {
    long long z = ics_days_from_civil(y, m, d); /* 1970-01-01 was a Thursday */
    return (int)(((z % 7) + 7 + 3) % 7);
}

long long ics_tm_seconds(const struct tm6 *t) {
    return ics_days_from_civil(t->y, t->mo, t->d) * 86400 + t->h * 3600 + t->mi * 60 + t->s;
}

struct tm6 ics_tm_from_seconds(long long secs) {
    struct tm6 t;
    long long days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    long long rem = secs - days * 86400;
    civil_from_days(days, &t.y, &t.mo, &t.d);
    t.h = (int)(rem / 3600);
    t.mi = (int)(rem % 3600 / 60);
    t.s = (int)(rem % 60);
    return t;
}

int ics_tm_valid(const struct tm6 *t, int with_time) {
    if (t->y < 1 || t->y > 9999 || t->mo < 1 || t->mo > 12 || t->d < 1 || t->d > ics_days_in_month(t->y, t->mo))
        return 0;
    return !with_time || (t->h >= 0 && t->h <= 23 && t->mi >= 0 && t->mi <= 59 && t->s >= 0 && t->s <= 59);
}

int ics_num(const char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static char *put_digits(char *o, int v, int n) {
    unsigned u = v < 0 ? 0u : (unsigned)v;
    for (int i = n - 1; i >= 0; i--, u /= 10) o[i] = (char)('0' + u % 10);
    return o + n;
}

/* "2026-03-01T09:30:00" (extended) or "20260301T093000" (basic); dates without the time. out
 * holds 20 bytes. */
void ics_fmt_tm(const struct tm6 *t, int with_time, int basic, char *out) {
    char *o = put_digits(out, t->y, 4);
    if (!basic) *o++ = '-';
    o = put_digits(o, t->mo, 2);
    if (!basic) *o++ = '-';
    o = put_digits(o, t->d, 2);
    if (with_time) {
        *o++ = 'T';
        o = put_digits(o, t->h, 2);
        if (!basic) *o++ = ':';
        o = put_digits(o, t->mi, 2);
        if (!basic) *o++ = ':';
        o = put_digits(o, t->s, 2);
    }
    *o = '\0';
}

void ics_fmt_civil(const struct tm6 *t, int with_time, char out[20]) { ics_fmt_tm(t, with_time, 0, out); }

enum ics_time_kind ics_time_split(const char *s, char civil[20], char *zone, size_t zonelen) {
    struct tm6 t = {0};
    if (zonelen) zone[0] = '\0';
    civil[0] = '\0';
    if (!s || strlen(s) < 10 || ics_num(s, 4, &t.y) || s[4] != '-' || ics_num(s + 5, 2, &t.mo) || s[7] != '-' ||
        ics_num(s + 8, 2, &t.d))
        return ICS_TIME_BAD;
    if (s[10] == '\0') {
        if (!ics_tm_valid(&t, 0)) return ICS_TIME_BAD;
        ics_fmt_civil(&t, 0, civil);
        return ICS_TIME_DATE;
    }
    const char *p = s + 10;
    if (*p != 'T' || ics_num(p + 1, 2, &t.h) || p[3] != ':' || ics_num(p + 4, 2, &t.mi) || p[6] != ':' ||
        ics_num(p + 7, 2, &t.s) || !ics_tm_valid(&t, 1))
        return ICS_TIME_BAD;
    p += 9;
    if (*p == '.') {
        int k = 0;
        for (p++; *p >= '0' && *p <= '9'; p++) k++;
        if (k < 1 || k > 9) return ICS_TIME_BAD;
    }
    ics_fmt_civil(&t, 1, civil);
    if (*p == 'Z' && p[1] == '\0') return ICS_TIME_UTC;
    if (*p == '\0') return ICS_TIME_LOCAL;
    size_t n = strlen(p);
    if (*p != '[' || p[n - 1] != ']' || n < 3 || n - 2 >= zonelen) return ICS_TIME_BAD;
    for (size_t i = 1; i < n - 1; i++)
        if (p[i] == '[' || p[i] == ']' || (unsigned char)p[i] < 0x21) return ICS_TIME_BAD;
    memcpy(zone, p + 1, n - 2);
    zone[n - 2] = '\0';
    return ICS_TIME_LOCAL;
}

/* ---- UTF-8 ---- */

/* Length of the UTF-8 sequence that starts with byte c (1 for anything unexpected, so a
 * malformed byte never swallows its neighbours). */
size_t ics_utf8_len(unsigned char c) {
    if (c >= 0xF0 && c <= 0xF4) return 4;
    if (c >= 0xE0) return c <= 0xEF ? 3 : 1;
    if (c >= 0xC2) return 2;
    return 1;
}

/* ==== Lua bindings (for specs) ==== */

/* core.ics_write(events_json, cal_name[, opts_json]) -> text | nil, err
 * opts: {"timezone": "Europe/Berlin", "zones": {...}, "now": 1767225600} */
static int l_ics_write(lua_State *L) {
    size_t n;
    const char *events_text = luaL_checklstring(L, 1, &n);
    const char *name = luaL_checkstring(L, 2);
    const char *opts_text = luaL_optstring(L, 3, NULL);
    json_error_t jerr;
    json_t *events = json_loadb(events_text, n, 0, &jerr);
    json_t *opts = opts_text ? json_loads(opts_text, 0, &jerr) : NULL;
    if (!events || (opts_text && !json_is_object(opts))) {
        json_decref(events);
        json_decref(opts);
        lua_pushnil(L);
        lua_pushfstring(L, "invalid JSON: %s", jerr.text);
        return 2;
    }
    json_t *now = json_object_get(opts, "now");
    struct ics_calendar cal = {
        .name = name,
        .timezone = json_string_value(json_object_get(opts, "timezone")),
        .zones = json_object_get(opts, "zones"),
        .now = json_is_integer(now) ? (long long)json_integer_value(now) : (long long)time(NULL),
    };
    char err[256];
    size_t len = 0;
    char *text = ics_write(events, &cal, &len, err, sizeof err);
    json_decref(events);
    json_decref(opts);
    if (!text) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushlstring(L, text, len);
    free(text);
    return 1;
}

/* core.ics_parse(text[, max_events]) -> events_json | nil, err, {index, uid, field, line} */
static int l_ics_parse(lua_State *L) {
    size_t n;
    const char *text = luaL_checklstring(L, 1, &n);
    lua_Integer max = luaL_optinteger(L, 2, 0);
    struct ics_err err;
    json_t *events = ics_parse(text, n, max > 0 ? (size_t)max : 0, &err);
    if (!events) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        lua_createtable(L, 0, 4); /* stack: nil, message, details */
        lua_pushinteger(L, err.index);
        lua_setfield(L, -2, "index");
        lua_pushstring(L, err.uid);
        lua_setfield(L, -2, "uid");
        lua_pushstring(L, err.field);
        lua_setfield(L, -2, "field");
        lua_pushinteger(L, err.line);
        lua_setfield(L, -2, "line");
        return 3;
    }
    char *s = json_dumps(events, JSON_COMPACT);
    json_decref(events);
    if (!s) return luaL_error(L, "out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

void ics_lua_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"ics_write", l_ics_write},
        {"ics_parse", l_ics_parse},
        {NULL, NULL},
    };
    luaL_setfuncs(L, fns, 0); /* stack: core */
}
