/* lua_api_time — orrery.time: now() and monotonic() as float seconds, format(t [, fmt]) to a UTC
 * string (RFC 3339 by default) and parse(s) from RFC 3339. Everything is UTC here; time zones
 * belong to the user's preferences, not to the process's TZ. */
#include "lua_api.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

/* 0000-01-01T00:00:00Z .. 9999-12-31T23:59:59Z: four-digit years, as RFC 3339 requires. */
#define TIME_MIN (-62167219200.0)
#define TIME_MAX 253402300799.0

/* Conversions strftime may see, as in Lua's os.date: anything else is undefined behaviour in C. */
static const char plain_conversions[] = "aAbBcCdDeFgGhHIjmMnprRStTuUVwWxXyYzZ%";
static const char e_conversions[] = "cCxXyY";
static const char o_conversions[] = "deHImMSuUVwWy";

static double clock_seconds(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* now() -> seconds since the epoch (float, sub-millisecond). */
static int time_now(lua_State *L) {
    lua_pushnumber(L, clock_seconds(CLOCK_REALTIME));
    return 1;
}

/* monotonic() -> seconds from an arbitrary start; only differences mean anything. */
static int time_monotonic(lua_State *L) {
    lua_pushnumber(L, clock_seconds(CLOCK_MONOTONIC));
    return 1;
}

/* format(t [, fmt]) -> string. t is epoch seconds (fractions dropped); fmt is strftime's, UTC. */
static int time_format(lua_State *L) {
    lua_Number t = luaL_checknumber(L, 1);
    const char *fmt = luaL_optstring(L, 2, NULL);
    luaL_argcheck(L, isfinite(t) && t >= TIME_MIN && t <= TIME_MAX, 1,
                  "time out of range (years 0000 to 9999)");

    time_t secs = (time_t)floor(t);
    struct tm tm;
    if (!gmtime_r(&secs, &tm)) return luaL_error(L, "time.format: cannot convert %f", (double)t);

    if (fmt == NULL) {
        /* Not strftime: glibc's %Y drops leading zeros, RFC 3339 wants four digits. */
        char out[80]; /* room for any int fields, to satisfy -Wformat-truncation */
        snprintf(out, sizeof out, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        lua_pushstring(L, out);
        return 1;
    }

    /* One conversion at a time, as os.date does: no output-size guess, and each one checked. */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            luaL_addchar(&b, *p);
            continue;
        }
        /* spec: the conversion after '%', with its E or O modifier if any. */
        const char *spec = p + 1;
        size_t n = (spec[0] == 'E' || spec[0] == 'O') ? 2 : 1;
        const char *allowed = n == 1 ? plain_conversions : spec[0] == 'E' ? e_conversions : o_conversions;
        char conv[4] = {'%', spec[0], n == 2 ? spec[1] : '\0', '\0'};
        if (spec[n - 1] == '\0' || !strchr(allowed, spec[n - 1]))
            return luaL_argerror(L, 2, lua_pushfstring(L, "invalid conversion specifier '%s'", conv));
        p += n;
        char out[256];
        size_t len = strftime(out, sizeof out, conv, &tm);
        luaL_addlstring(&b, out, len);
    }
    luaL_pushresult(&b);
    return 1;
}

/* ---- RFC 3339 parsing ---- */

/* Reads exactly n digits at *p; returns -1 if they are not all there. */
static int digits(const char **p, int n) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    return v;
}

static int expect(const char **p, const char *any_of) {
    if (**p == '\0' || !strchr(any_of, **p)) return 0;
    (*p)++;
    return 1;
}

static int days_in_month(int year, int month) {
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    return month == 2 && leap ? 29 : days[month - 1];
}

/* Parses s into *out (epoch seconds) and *has_frac. Returns NULL or what was wrong. */
static const char *parse_rfc3339(const char *s, double *out, int *has_frac) {
    const char *p = s;
    int year = digits(&p, 4);
    if (year < 0 || !expect(&p, "-")) return "expected YYYY-";
    int month = digits(&p, 2);
    if (month < 1 || month > 12 || !expect(&p, "-")) return "invalid month";
    int day = digits(&p, 2);
    if (day < 1 || day > days_in_month(year, month)) return "invalid day";
    /* RFC 3339 allows 't' and, in its note, a space for readability. */
    if (!expect(&p, "Tt ")) return "expected 'T' between date and time";
    int hour = digits(&p, 2);
    if (hour < 0 || hour > 23 || !expect(&p, ":")) return "invalid hour";
    int min = digits(&p, 2);
    if (min < 0 || min > 59 || !expect(&p, ":")) return "invalid minute";
    int sec = digits(&p, 2);
    if (sec < 0 || sec > 60) return "invalid second"; /* 60: a leap second, read as the next one */

    double frac = 0;
    *has_frac = 0;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p)) return "expected digits after '.'";
        double scale = 0.1;
        for (; isdigit((unsigned char)*p); p++, scale /= 10) frac += (*p - '0') * scale;
        *has_frac = 1;
    }

    long offset = 0;
    if (expect(&p, "Zz")) {
        /* UTC */
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1;
        int oh = digits(&p, 2);
        if (oh < 0 || oh > 23 || !expect(&p, ":")) return "invalid offset hour";
        int om = digits(&p, 2);
        if (om < 0 || om > 59) return "invalid offset minute";
        offset = sign * (oh * 3600L + om * 60L);
    } else {
        return "expected 'Z' or an offset like +01:00";
    }
    if (*p != '\0') return "unexpected text after the time";

    struct tm tm = {0};
    tm.tm_year = year - 1900;
    tm.tm_mon = month - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    *out = (double)t - (double)offset + frac;
    return NULL;
}

/* parse(s) -> epoch seconds (an integer unless s has a fraction) | nil, "message". */
static int time_parse(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    double t;
    int has_frac;
    const char *why = strlen(s) != len ? "embedded NUL" : parse_rfc3339(s, &t, &has_frac);
    if (why) {
        lua_pushnil(L);
        lua_pushfstring(L, "invalid RFC 3339 time '%s': %s", len > 64 ? "(too long)" : s, why);
        return 2;
    }
    if (has_frac)
        lua_pushnumber(L, t);
    else
        lua_pushinteger(L, (lua_Integer)t);
    return 1;
}

void lua_api_time_inject(lua_State *L) {
    static const luaL_Reg funcs[] = {
        {"now", time_now},
        {"monotonic", time_monotonic},
        {"format", time_format},
        {"parse", time_parse},
        {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    lua_setfield(L, -2, "time");
}
