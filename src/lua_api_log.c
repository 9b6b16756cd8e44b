/* lua_api_log — orrery.log: debug/info/warn/error(msg [, fields]) and orrery.log(msg [, fields])
 * (= info). Writes through the C logger (log.h), so a script's lines look like the server's:
 * one JSON object per line, plus "source":"lua". The fields table becomes a JSON object; its
 * values are kept as JSON where they can be and tostring'd where they cannot, because a log
 * call must never fail on what it is asked to record. */
#include "lua_api.h"

#include <math.h>
#include <string.h>

#include <jansson.h>
#include <lauxlib.h>

#include "log.h"

/* Nested tables deeper than this (or cycles) are logged as their tostring. */
#define LOG_FIELDS_MAX_DEPTH 8

/* ---- Lua values to JSON ---- */

/* Length of the valid UTF-8 sequence at s (at most len bytes), or 0 if it is not one. */
static size_t utf8_seq(const unsigned char *s, size_t len) {
    static const unsigned lead_mask[] = {0, 0, 0x1F, 0x0F, 0x07};
    static const unsigned min_for_len[] = {0, 0, 0x80, 0x800, 0x10000}; /* below: overlong */
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2 || c > 0xF4) return 0; /* a continuation byte, or an overlong or too-large lead */
    size_t n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    if (n > len) return 0;
    c &= lead_mask[n];
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min_for_len[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    return n;
}

/* Pushes the value at idx as text that is valid UTF-8 and returns it: a string as it is (invalid
 * bytes become U+FFFD: scripts handle binary data), anything else as tostring would show it.
 * Never converts the value in place, so it is safe on a key during lua_next. May raise. */
static const char *push_text(lua_State *L, int idx, size_t *len) {
    size_t n;
    const char *s;
    if (lua_type(L, idx) == LUA_TSTRING) {
        lua_pushvalue(L, idx);
        s = lua_tolstring(L, -1, &n);
    } else {
        s = luaL_tolstring(L, idx, &n);
    }
    size_t i = 0, step;
    while (i < n && (step = utf8_seq((const unsigned char *)s + i, n - i)) != 0) i += step;
    if (i < n) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (i = 0; i < n; i += step ? step : 1) {
            step = utf8_seq((const unsigned char *)s + i, n - i);
            if (step)
                luaL_addlstring(&b, s + i, step);
            else
                luaL_addstring(&b, "\xEF\xBF\xBD");
        }
        luaL_pushresult(&b);
        lua_remove(L, -2);
        s = lua_tolstring(L, -1, &n);
    }
    *len = n;
    return s;
}

static json_t *text_json(lua_State *L, int idx) {
    size_t len;
    const char *s = push_text(L, idx, &len);
    json_t *j = json_stringn(s, len);
    lua_pop(L, 1);
    return j;
}

/* Number of elements if the table at idx is a non-empty sequence 1..n, else 0. */
static lua_Integer sequence_length(lua_State *L, int idx) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
    if (n == 0) return 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        /* n distinct integer keys, all within 1..n: exactly 1..n */
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > n) {
            lua_pop(L, 1);
            return 0;
        }
        count++;
    }
    return count == n ? n : 0;
}

static void fill(lua_State *L, int idx, json_t *container, lua_Integer seq_len, int depth);

/* Adds the value at idx to parent: under key (an object) or at the end (an array, key NULL).
 * Every json_t is handed to its parent before anything that can raise, so the caller's root is
 * the only thing to free if a __tostring or an allocation fails. */
static void add_value(lua_State *L, int idx, json_t *parent, const char *key, size_t key_len, int depth) {
    json_t *v;
    lua_Integer seq_len = 0;
    int nested = 0;
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            v = json_integer((json_int_t)lua_tointeger(L, idx));
        else if (isfinite(lua_tonumber(L, idx)))
            v = json_real(lua_tonumber(L, idx));
        else
            v = text_json(L, idx); /* JSON has no NaN or infinity: "nan", "inf" */
        break;
    case LUA_TBOOLEAN:
        v = json_boolean(lua_toboolean(L, idx));
        break;
    case LUA_TLIGHTUSERDATA:
        v = lua_touserdata(L, idx) == NULL ? json_null() : text_json(L, idx); /* NULL: orrery.json.null */
        break;
    case LUA_TTABLE:
        /* Too deep (or a cycle), or an object that describes itself: log its description. */
        if (depth >= LOG_FIELDS_MAX_DEPTH || luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
            if (depth < LOG_FIELDS_MAX_DEPTH) lua_pop(L, 1);
            v = text_json(L, idx);
            break;
        }
        seq_len = sequence_length(L, idx);
        v = seq_len > 0 ? json_array() : json_object();
        nested = 1;
        break;
    default: /* strings; functions, userdata and threads as tostring shows them */
        v = text_json(L, idx);
        break;
    }
    /* Both calls take v, even when they fail (and then free it). */
    int rc = key ? json_object_setn_new(parent, key, key_len, v) : json_array_append_new(parent, v);
    if (rc == 0 && nested) fill(L, idx, v, seq_len, depth + 1);
}

/* Fills container (owned by its parent) from the table at idx. */
static void fill(lua_State *L, int idx, json_t *container, lua_Integer seq_len, int depth) {
    luaL_checkstack(L, 4, "log fields");
    if (seq_len > 0) {
        for (lua_Integer i = 1; i <= seq_len; i++) {
            lua_rawgeti(L, idx, i);
            add_value(L, lua_gettop(L), container, NULL, 0, depth);
            lua_pop(L, 1);
        }
        return;
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* stack: key, value. Non-string keys use their text, as cjson does for number keys. */
        size_t key_len;
        const char *key = push_text(L, -2, &key_len);
        add_value(L, lua_gettop(L) - 1, container, key, key_len, depth);
        lua_pop(L, 2);
        /* stack: key */
    }
}

/* ---- orrery.log ---- */

/* Runs protected: (root, msg, fields|nil) -> msg text; fills root. */
static int build_record(lua_State *L) {
    json_t *root = lua_touserdata(L, 1);
    if (lua_istable(L, 3)) fill(L, 3, root, 0, 0);
    size_t len;
    push_text(L, 2, &len);
    return 1;
}

/* Logs args (msg [, fields]) at level; the arguments are at 1 and 2. */
static int emit(lua_State *L, int level) {
    luaL_checkany(L, 1);
    if (!lua_isnoneornil(L, 2) && !lua_istable(L, 2)) return luaL_typeerror(L, 2, "table or nil");
    if (level < log_get_level()) return 0; /* checked after the arguments: misuse raises at any level */

    json_t *root = json_object();
    if (!root) return luaL_error(L, "not enough memory");
    lua_pushcfunction(L, build_record);
    lua_pushlightuserdata(L, root);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        json_decref(root);
        return lua_error(L);
    }
    /* Set last, so a script cannot pass its lines off as the server's. */
    json_object_set_new(root, "source", json_string("lua"));
    log_fields(level, root, "%s", lua_tostring(L, -1));
    json_decref(root);
    return 0;
}

/* orrery.log.<level>(msg [, fields]); the level is upvalue 1. */
static int log_at_level(lua_State *L) {
    return emit(L, (int)lua_tointeger(L, lua_upvalueindex(1)));
}

/* orrery.log(msg [, fields]): __call gets the table first. */
static int log_call(lua_State *L) {
    lua_remove(L, 1);
    return emit(L, LOG_INFO);
}

void lua_api_log_inject(lua_State *L) {
    static const struct {
        const char *name;
        int level;
    } levels[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO}, {"warn", LOG_WARN}, {"error", LOG_ERROR}};

    lua_createtable(L, 0, 4);
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        lua_pushinteger(L, levels[i].level);
        lua_pushcclosure(L, log_at_level, 1);
        lua_setfield(L, -2, levels[i].name);
    }
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, log_call);
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, -2);
    /* stack: orrery, log */
    lua_setfield(L, -2, "log");
}
