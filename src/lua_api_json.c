/* lua_api_json — orrery.json = {encode, decode, null}, backed by lua-cjson (liblua5.4-cjson).
 * Each orrery table gets a private cjson instance, so one script changing cjson's settings
 * cannot affect another state or the global `cjson` module. Decoding untrusted text is an
 * expected failure (nil, "message"); encoding a value JSON cannot hold is a bug and raises. */
#include "lua_api.h"

#include <math.h>
#include <string.h>

#include <lauxlib.h>
#include <lua-cjson.h>

/* Deep enough for any real document, shallow enough that a hostile one cannot exhaust the C stack. */
#define JSON_MAX_DEPTH 128

/* instance[name](value), for cjson's integer settings. */
static void set_option(lua_State *L, int instance, const char *name, lua_Integer value) {
    lua_getfield(L, instance, name);
    lua_pushinteger(L, value);
    lua_call(L, 1, 0);
}

/* Below 2^53 a whole double is exactly that integer; from 2^53 on the text may already have been
 * rounded, and staying a float says so. */
#define JSON_EXACT_INT 9007199254740992.0 /* 2^53 */

/* Replaces the value at idx by an integer if it is a float with an exact integer value. */
static void integerize(lua_State *L, int idx) {
    lua_Number x = lua_tonumber(L, idx);
    if (x == floor(x) && fabs(x) < JSON_EXACT_INT && !(x == 0 && signbit(x))) {
        lua_pushinteger(L, (lua_Integer)x);
        lua_replace(L, idx);
    }
}

/* cjson 2.1 decodes every number as a float, so 3 would print as "3.0" in a message built from
 * a document. JSON has one number type; give Lua 5.4 integers where the value is one exactly.
 * Walks the table at idx in place; cjson's decode_max_depth bounds the recursion. */
static void integerize_table(lua_State *L, int idx) {
    luaL_checkstack(L, 3, "JSON nested too deeply");
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        /* stack: key, value */
        if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            integerize(L, lua_gettop(L));
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, idx); /* assigning an existing key during traversal is allowed */
        } else {
            if (lua_type(L, -1) == LUA_TTABLE) integerize_table(L, lua_gettop(L));
            lua_pop(L, 1);
        }
    }
}

/* decode(text) -> value | nil, "message". The upvalue is the instance's raising decode. */
/* The JSON texts most messages carry as content are a bare integer, true, false or a short plain
 * string: pushed here without cjson's buffer and protected call. Anything else (fractions,
 * exponents, escapes, leading zeros, signs other than one '-', more than 15 digits) is cjson's. */
static int decode_scalar(lua_State *L, const char *s, size_t len) {
    if (len == 4 && memcmp(s, "true", 4) == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (len == 5 && memcmp(s, "false", 5) == 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (len >= 2 && len <= 256 && s[0] == '"' && s[len - 1] == '"') {
        for (size_t i = 1; i + 1 < len; i++)
            if (s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] < 0x20) return 0;
        lua_pushlstring(L, s + 1, len - 2);
        return 1;
    }
    size_t i = s[0] == '-';
    size_t digits = len - i;
    if (digits == 0 || digits > 15 || (s[i] == '0' && digits > 1)) return 0;
    lua_Integer v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return 0;
        v = v * 10 + (s[i] - '0');
    }
    if (s[0] == '-') {
        if (v == 0) return 0; /* -0 is a float to cjson: keep its answer */
        v = -v;
    }
    lua_pushinteger(L, v);
    return 1;
}

static int json_decode(lua_State *L) {
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len); /* a non-string is misuse: raise, not bad JSON */
    if (len > 0 && decode_scalar(L, text, len)) return 1;
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    /* stack: decode, text */
    int rc = lua_pcall(L, 1, 1, 0);
    if (rc == LUA_OK) {
        if (lua_type(L, -1) == LUA_TTABLE)
            integerize_table(L, lua_gettop(L));
        else if (lua_type(L, -1) == LUA_TNUMBER)
            integerize(L, lua_gettop(L));
        return 1;
    }
    if (rc != LUA_ERRRUN) return lua_error(L); /* out of memory is not bad input */
    lua_pushnil(L);
    lua_insert(L, -2);
    /* stack: nil, message */
    return 2;
}

void lua_api_json_inject(lua_State *L) {
    int orrery = lua_gettop(L);

    /* luaopen_cjson builds a fresh module table; .new() guarantees an instance whose settings
     * are ours alone whatever the build does with the module table. */
    lua_pushcfunction(L, luaopen_cjson);
    lua_call(L, 0, 1);
    lua_getfield(L, -1, "new");
    lua_call(L, 0, 1);
    lua_remove(L, -2);
    int cjson = lua_gettop(L);
    /* stack: orrery, cjson instance */

    set_option(L, cjson, "encode_max_depth", JSON_MAX_DEPTH);
    set_option(L, cjson, "decode_max_depth", JSON_MAX_DEPTH);
    /* Strict JSON in: no hex, NaN or Infinity from outside. */
    lua_getfield(L, cjson, "decode_invalid_numbers");
    lua_pushboolean(L, 0);
    lua_call(L, 1, 0);
    /* cjson 2.1 caps precision at 14 digits; take the most it allows. */
    set_option(L, cjson, "encode_number_precision", 14);

    lua_createtable(L, 0, 3);
    /* stack: orrery, cjson instance, json */
    lua_getfield(L, cjson, "encode");
    lua_setfield(L, -2, "encode");
    lua_getfield(L, cjson, "decode");
    lua_pushcclosure(L, json_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_getfield(L, cjson, "null");
    lua_setfield(L, -2, "null");

    lua_setfield(L, orrery, "json");
    lua_settop(L, orrery);
    /* stack: orrery */
}
