/* agents_lua — what an agent's Lua state sees besides the sandbox's libraries: the `orrery` table
 * (log, json, time from lua_api; bus.send/publish/request/reply/directory/subscribe/unsubscribe;
 * sleep) and a `require` that loads Lua modules (text only) from the runtime's lib directory.
 * Every message an agent sends carries the agent's name as sender and the user of the message being
 * handled: no script can speak as another agent or name another user. Content is any Lua value that
 * JSON can hold, encoded with the state's own orrery.json. Uses agents.c, bus.c, lua_api. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "agents_internal.h"
#include "aio.h"
#include "bus_lua.h"
#include "lua_api.h"

#define MODULE_MAX_BYTES (1 << 20)
#define SLEEP_MAX 86400.0

static const char KEY_LOADED = 'l'; /* registry: require's cache */

/* The run being handled, or a Lua error naming fn. */
static struct run *current_run(lua_State *L, const char *fn) {
    struct state *st = agents_state_of(L);
    if (!st || !st->current || !st->agent) luaL_error(L, "%s: only inside a message handler", fn);
    return st->current;
}

/* Encodes the value at idx with the state's orrery.json.encode; NULL for nil. Malloc'd. Raises. */
static char *encode(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return NULL;
    idx = lua_absindex(L, idx);
    struct state *st = agents_state_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->encode_ref);
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    char *out = s ? malloc(len + 1) : NULL;
    if (!out) luaL_error(L, "content: cannot encode");
    memcpy(out, s, len + 1);
    lua_pop(L, 1);
    return out;
}

/* Replaces t.content (JSON text) in the table at idx by its decoded value. Raises. */
static void decode_content(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    if (lua_getfield(L, idx, "content") != LUA_TSTRING) {
        lua_pop(L, 1);
        return;
    }
    struct state *st = agents_state_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->decode_ref);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    lua_setfield(L, idx, "content");
}

static void copy_field(char *dst, size_t size, lua_State *L, int t, const char *key, const char *def) {
    const char *v = def;
    if (lua_getfield(L, t, key) != LUA_TNIL) {
        v = lua_tostring(L, -1);
        if (!v) luaL_error(L, "%s must be a string", key);
        if (strlen(v) >= size) luaL_error(L, "%s is longer than %d bytes", key, (int)size - 1);
    }
    snprintf(dst, size, "%s", v ? v : "");
    lua_pop(L, 1);
}

/* Copies src into dst[size], cut to fit (every message sent goes through here: no printf). */
static void copy_str(char *dst, size_t size, const char *src) {
    size_t n = strnlen(src, size - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* An envelope from this run: sender the agent, user and conversation from the message handled. */
static void base_envelope(struct run *r, struct bus_envelope *env) {
    memset(env, 0, sizeof *env);
    copy_str(env->sender, sizeof env->sender, agents_agent_name(r->st->agent));
    if (r->msg) {
        copy_str(env->user_id, sizeof env->user_id, r->msg->user_id);
        copy_str(env->conversation_id, sizeof env->conversation_id, r->msg->conversation_id);
    }
}

static const char *bus_error(int rc) {
    switch (rc) {
    case BUS_UNKNOWN: return "unknown_agent";
    case BUS_FULL: return "busy";
    case BUS_INVALID: return "invalid";
    default: return "error";
    }
}

/* Sends env (content owned by env) and returns true | nil, error. */
static int send_result(lua_State *L, struct agents *rt, struct bus_envelope *env) {
    char err[128];
    if (bus_envelope_validate(env, err, sizeof err) != BUS_OK) {
        free(env->content);
        return luaL_error(L, "orrery.bus: %s", err);
    }
    int rc = agents_send(rt, env);
    free(env->content);
    if (rc != BUS_OK) {
        lua_pushnil(L);
        lua_pushstring(L, bus_error(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* orrery.bus.send(receiver, performative, content [, {conversation_id=, reply_with=, in_reply_to=}]) */
static int l_send(lua_State *L) {
    struct run *r = current_run(L, "orrery.bus.send");
    struct bus_envelope env;
    base_envelope(r, &env);
    const char *receiver = luaL_checkstring(L, 1);
    const char *perf = luaL_checkstring(L, 2);
    if (strlen(receiver) >= sizeof env.receiver) return luaL_argerror(L, 1, "agent name too long");
    if (!bus_performative_valid(perf)) return luaL_argerror(L, 2, "not a performative");
    strcpy(env.receiver, receiver);
    strcpy(env.performative, perf);
    if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        copy_field(env.conversation_id, sizeof env.conversation_id, L, 4, "conversation_id", env.conversation_id);
        copy_field(env.reply_with, sizeof env.reply_with, L, 4, "reply_with", "");
        copy_field(env.in_reply_to, sizeof env.in_reply_to, L, 4, "in_reply_to", "");
    }
    env.content = encode(L, 3);
    return send_result(L, agents_agent_runtime(r->st->agent), &env);
}

/* orrery.bus.reply(performative, content): answers the message being handled. */
static int l_reply(lua_State *L) {
    struct run *r = current_run(L, "orrery.bus.reply");
    const char *perf = luaL_checkstring(L, 1);
    if (!bus_performative_valid(perf)) return luaL_argerror(L, 1, "not a performative");
    if (!r->msg || !r->msg->sender[0]) return luaL_error(L, "orrery.bus.reply: the message has no sender to answer");
    struct bus_envelope env;
    base_envelope(r, &env);
    strcpy(env.performative, perf);
    strcpy(env.receiver, r->msg->sender);
    strcpy(env.in_reply_to, r->msg->reply_with[0] ? r->msg->reply_with : r->msg->id);
    env.content = encode(L, 2);
    r->replied = 1;
    return send_result(L, agents_agent_runtime(r->st->agent), &env);
}

/* orrery.bus.publish(topic, content) -> number of local subscribers reached */
static int l_publish(lua_State *L) {
    struct run *r = current_run(L, "orrery.bus.publish");
    struct bus_envelope env;
    base_envelope(r, &env);
    const char *topic = luaL_checkstring(L, 1);
    if (strlen(topic) >= sizeof env.topic) return luaL_argerror(L, 1, "topic too long");
    strcpy(env.topic, topic);
    strcpy(env.performative, "inform");
    env.content = encode(L, 2);
    int n = agents_publish(agents_agent_runtime(r->st->agent), &env);
    free(env.content);
    if (n < 0) {
        lua_pushnil(L);
        lua_pushstring(L, bus_error(n));
        return 2;
    }
    lua_pushinteger(L, n);
    return 1;
}

/* After orrery.bus.request's wait: the reply table (content decoded) or nil, "timeout". */
static int request_k(lua_State *L, int status, lua_KContext base) {
    (void)status;
    int n = lua_gettop(L) - (int)base;
    if (n >= 1 && lua_type(L, (int)base + 1) == LUA_TTABLE) {
        lua_settop(L, (int)base + 1);
        decode_content(L, -1);
        return 1;
    }
    return n;
}

/* orrery.bus.request(receiver, content [, {timeout=, performative=}]) -> reply | nil, error */
static int l_request(lua_State *L) {
    struct run *r = current_run(L, "orrery.bus.request");
    struct agents *rt = agents_agent_runtime(r->st->agent);
    struct bus_envelope env;
    base_envelope(r, &env);
    const char *receiver = luaL_checkstring(L, 1);
    if (strlen(receiver) >= sizeof env.receiver) return luaL_argerror(L, 1, "agent name too long");
    strcpy(env.receiver, receiver);
    strcpy(env.performative, "request");
    double timeout = agents_request_timeout(rt);
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "timeout") != LUA_TNIL) {
            timeout = luaL_checknumber(L, -1);
            if (!(timeout > 0 && timeout <= SLEEP_MAX)) return luaL_error(L, "timeout must be in (0, %d] seconds", (int)SLEEP_MAX);
        }
        lua_pop(L, 1);
        copy_field(env.performative, sizeof env.performative, L, 3, "performative", "request");
        if (!bus_performative_valid(env.performative)) return luaL_error(L, "performative: not a performative");
    }
    if (!lua_isyieldable(L)) return luaL_error(L, "orrery.bus.request: cannot wait here");
    struct agents_token tok;
    if (agents_wait_begin(L, &tok) != 0) return luaL_error(L, "orrery.bus.request: only inside a message handler");
    char rnd[37];
    if (bus_uuid4(rnd) != BUS_OK) return luaL_error(L, "orrery.bus.request: no randomness");
    snprintf(env.reply_with, sizeof env.reply_with, "r%llx.%lx.%.8s%.4s", tok.run_id, tok.wait_seq, rnd, rnd + 9);
    env.content = encode(L, 2);
    copy_str(r->wait_reply, sizeof r->wait_reply, env.reply_with);
    char err[128];
    int rc = bus_envelope_validate(&env, err, sizeof err) == BUS_OK ? agents_send(rt, &env) : BUS_INVALID;
    free(env.content);
    if (rc != BUS_OK) {
        r->wait_reply[0] = '\0';
        r->wait_seq++; /* nobody completes this wait */
        lua_pushnil(L);
        lua_pushstring(L, bus_error(rc));
        return 2;
    }
    agents_wait_timer(&tok, timeout, "timeout");
    return agents_wait_yieldk(L, request_k);
}

static struct agents *runtime_of(lua_State *L, const char *fn) {
    struct state *st = agents_state_of(L);
    if (!st || !st->agent) luaL_error(L, "%s: only inside a message handler", fn);
    return agents_agent_runtime(st->agent);
}

static int push_string(lua_State *L) {
    lua_pushstring(L, lua_touserdata(L, 1));
    return 1;
}

/* orrery.bus.directory() -> {{name=, description=, capabilities={...}}, ...} */
static int l_directory(lua_State *L) {
    struct agents *rt = runtime_of(L, "orrery.bus.directory");
    json_t *dir = bus_directory(agents_bus(rt));
    char *text = dir ? json_dumps(dir, JSON_COMPACT) : NULL;
    json_decref(dir);
    if (!text) return luaL_error(L, "orrery.bus.directory: out of memory");
    lua_pushcfunction(L, push_string);
    lua_pushlightuserdata(L, text);
    int st = lua_pcall(L, 1, 1, 0); /* the copy may fail on the memory cap: free the text first */
    free(text);
    if (st != LUA_OK) return lua_error(L);
    struct state *state = agents_state_of(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, state->decode_ref);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    return 1;
}

static int subscription(lua_State *L, int on) {
    struct state *st = agents_state_of(L);
    if (!st || !st->agent) return luaL_error(L, "orrery.bus.subscribe: only inside a message handler");
    const char *pattern = luaL_checkstring(L, 1);
    struct bus *bus = agents_bus(agents_agent_runtime(st->agent));
    const char *name = agents_agent_name(st->agent);
    int rc = on ? bus_subscribe(bus, name, pattern) : bus_unsubscribe(bus, name, pattern);
    if (rc != BUS_OK) {
        lua_pushnil(L);
        lua_pushstring(L, rc == BUS_INVALID ? "invalid pattern" : bus_error(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_subscribe(lua_State *L) {
    return subscription(L, 1);
}

static int l_unsubscribe(lua_State *L) {
    return subscription(L, 0);
}

static int sleep_k(lua_State *L, int status, lua_KContext base) {
    (void)status;
    lua_settop(L, (int)base);
    lua_pushboolean(L, 1);
    return 1;
}

/* orrery.sleep(seconds): the handler waits; the worker goes on with other work. */
static int l_sleep(lua_State *L) {
    current_run(L, "orrery.sleep");
    double s = luaL_checknumber(L, 1);
    if (!(s >= 0 && s <= SLEEP_MAX)) return luaL_argerror(L, 1, "seconds must be between 0 and 86400");
    if (!lua_isyieldable(L)) return luaL_error(L, "orrery.sleep: cannot wait here");
    struct agents_token tok;
    if (agents_wait_begin(L, &tok) != 0) return luaL_error(L, "orrery.sleep: only inside a message handler");
    agents_wait_timer(&tok, s, NULL);
    return agents_wait_yieldk(L, sleep_k);
}

/* ---- orrery.db and orrery.http: I/O on the runtime's loop ---- */

static struct aio *aio_of(lua_State *L, const char *fn) {
    struct state *st = agents_state_of(L);
    if (!st || !st->agent) luaL_error(L, "%s: only inside a message handler", fn);
    struct aio *aio = agents_aio(agents_agent_runtime(st->agent));
    if (!aio) luaL_error(L, "%s: not available in this runtime", fn);
    return aio;
}

struct db_wait {
    struct agents_token tok;
    struct aio_result r;
};

static int push_rows(lua_State *L, void *data) {
    struct db_wait *w = data;
    PGresult *res = w->r.res;
    if (!res) {
        lua_pushnil(L);
        lua_pushstring(L, w->r.error);
        return 2;
    }
    int rows = PQntuples(res), cols = PQnfields(res);
    lua_createtable(L, rows, 0);
    for (int i = 0; i < rows; i++) {
        lua_createtable(L, 0, cols);
        for (int j = 0; j < cols; j++) {
            if (PQgetisnull(res, i, j)) continue;
            const char *v = PQgetvalue(res, i, j);
            switch (PQftype(res, j)) {
            case 16: lua_pushboolean(L, v[0] == 't'); break;                         /* bool */
            case 20: case 21: case 23: lua_pushinteger(L, strtoll(v, NULL, 10)); break; /* int8/2/4 */
            case 700: case 701: case 1700: lua_pushnumber(L, strtod(v, NULL)); break;    /* float4/8, numeric */
            default: lua_pushlstring(L, v, (size_t)PQgetlength(res, i, j)); break;
            }
            lua_setfield(L, -2, PQfname(res, j));
        }
        lua_rawseti(L, -2, i + 1);
    }
    const char *affected = PQcmdTuples(res);
    lua_pushinteger(L, *affected ? strtoll(affected, NULL, 10) : rows);
    return 2;
}

static void drop_rows(void *data) {
    struct db_wait *w = data;
    PQclear(w->r.res);
    free(w);
}

static void db_done(void *ud, struct aio_result *r) {
    struct db_wait *w = ud;
    w->r = *r;
    agents_wait_complete(&w->tok, push_rows, w, drop_rows);
}

#define DB_MAX_PARAMS 100

/* orrery.db.query(sql [, {params...}]) -> rows, count | nil, error. Runs as the user of the message
 * being handled (row-level security applies); for agents an admin installed. */
static int l_query(lua_State *L) {
    struct aio *aio = aio_of(L, "orrery.db.query");
    struct run *r = current_run(L, "orrery.db.query");
    const char *sql = luaL_checkstring(L, 1);
    const char *params[DB_MAX_PARAMS];
    int n = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "n");
        n = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : (int)lua_rawlen(L, 2);
        lua_pop(L, 1);
        if (n < 0 || n > DB_MAX_PARAMS) return luaL_argerror(L, 2, "at most 100 parameters");
        luaL_checkstack(L, n + 4, "too many parameters");
        for (int i = 0; i < n; i++) {
            int t = lua_rawgeti(L, 2, i + 1);
            if (t == LUA_TNIL) {
                params[i] = NULL;
            } else if (t == LUA_TBOOLEAN) {
                params[i] = lua_toboolean(L, -1) ? "true" : "false";
            } else if (t == LUA_TNUMBER || t == LUA_TSTRING) {
                params[i] = lua_tostring(L, -1); /* stays on the stack until the query is queued */
            } else {
                return luaL_error(L, "orrery.db.query: parameter %d must be a string, number, boolean or nil", i + 1);
            }
        }
    }
    if (!lua_isyieldable(L)) return luaL_error(L, "orrery.db.query: cannot wait here");
    struct db_wait *w = calloc(1, sizeof *w);
    if (!w || agents_wait_begin(L, &w->tok) != 0) {
        free(w);
        return luaL_error(L, "orrery.db.query: cannot wait");
    }
    if (aio_query(aio, r->msg ? r->msg->user_id : "", sql, n, params, db_done, w) != 0) {
        r->wait_seq++;
        free(w);
        return luaL_error(L, "orrery.db.query: out of memory");
    }
    return agents_wait_yield(L);
}

struct fetch_wait {
    struct agents_token tok;
    struct aio_response *resp;
};

static int push_response(lua_State *L, void *data) {
    struct fetch_wait *w = data;
    struct aio_response *r = w->resp;
    if (!r || r->status == 0) {
        lua_pushnil(L);
        lua_pushstring(L, r ? r->error : "out of memory");
        return 2;
    }
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, r->body ? r->body : "", r->body_len);
    lua_setfield(L, -2, "body");
    lua_createtable(L, 0, r->n_headers);
    for (int i = 0; i < r->n_headers; i++) {
        lua_pushstring(L, r->headers[i].value);
        lua_setfield(L, -2, r->headers[i].name);
    }
    lua_setfield(L, -2, "headers");
    return 1;
}

static void drop_response(void *data) {
    struct fetch_wait *w = data;
    aio_response_free(w->resp);
    free(w);
}

static void fetch_done(void *ud, struct aio_response *resp) {
    struct fetch_wait *w = ud;
    w->resp = resp;
    agents_wait_complete(&w->tok, push_response, w, drop_response);
}

#define FETCH_MAX_HEADERS 50

/* orrery.http.fetch(url [, {method=, headers={name=value}, body=, timeout=}])
 *   -> {status=, headers={lower-case name=value}, body=} | nil, error */
static int l_fetch(lua_State *L) {
    struct aio *aio = aio_of(L, "orrery.http.fetch");
    struct run *r = current_run(L, "orrery.http.fetch");
    struct aio_fetch req;
    memset(&req, 0, sizeof req);
    req.url = luaL_checkstring(L, 1);
    struct aio_header headers[FETCH_MAX_HEADERS];
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "method");
        req.method = luaL_optstring(L, -1, "GET");
        lua_getfield(L, 2, "body");
        if (!lua_isnil(L, -1)) req.body = luaL_checklstring(L, -1, &req.body_len);
        lua_getfield(L, 2, "timeout");
        req.timeout = luaL_optnumber(L, -1, 0);
        if (lua_getfield(L, 2, "headers") == LUA_TTABLE) {
            int t = lua_gettop(L);
            lua_pushnil(L);
            while (lua_next(L, t)) {
                if (req.n_headers >= FETCH_MAX_HEADERS) return luaL_error(L, "orrery.http.fetch: too many headers");
                if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                    return luaL_error(L, "orrery.http.fetch: headers must map names to strings");
                headers[req.n_headers].name = (char *)lua_tostring(L, -2);
                headers[req.n_headers].value = (char *)lua_tostring(L, -1);
                req.n_headers++;
                lua_pop(L, 1); /* the strings stay referenced by the headers table */
            }
        }
        req.headers = headers;
    }
    if (!lua_isyieldable(L)) return luaL_error(L, "orrery.http.fetch: cannot wait here");
    struct fetch_wait *w = calloc(1, sizeof *w);
    if (!w || agents_wait_begin(L, &w->tok) != 0) {
        free(w);
        return luaL_error(L, "orrery.http.fetch: cannot wait");
    }
    char err[256];
    if (aio_fetch(aio, &req, fetch_done, w, err, sizeof err) != 0) {
        r->wait_seq++; /* nothing will complete this wait */
        free(w);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return agents_wait_yield(L);
}

void agents_lua_build(lua_State *L, void *ud) {
    (void)ud;
    static const luaL_Reg bus[] = {
        {"send", l_send},
        {"reply", l_reply},
        {"publish", l_publish},
        {"request", l_request},
        {"directory", l_directory},
        {"subscribe", l_subscribe},
        {"unsubscribe", l_unsubscribe},
        {NULL, NULL},
    };
    lua_api_push(L);
    luaL_newlib(L, bus);
    lua_setfield(L, -2, "bus");
    lua_pushcfunction(L, l_sleep);
    lua_setfield(L, -2, "sleep");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_query);
    lua_setfield(L, -2, "query");
    lua_setfield(L, -2, "db");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_fetch);
    lua_setfield(L, -2, "fetch");
    lua_setfield(L, -2, "http");
}

/* ---- require ---- */

static int module_name_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 128 || s[0] == '.' || s[n - 1] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || (c == '.' && s[i + 1] != '.')))
            return 0;
    }
    return 1;
}

static int env_newindex(lua_State *L) {
    return luaL_error(L, "attempt to create a global '%s' in a module", lua_tostring(L, 2) ? lua_tostring(L, 2) : "?");
}

/* require(name): upvalue 1 is the lib directory. Modules run once per state, in an environment of
 * their own that reads the sandbox's globals. */
static int l_require(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    if (!module_name_valid(name)) return luaL_argerror(L, 1, "module names are [a-z0-9_] words joined by dots");
    lua_settop(L, 1);
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_LOADED) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_LOADED);
    }
    /* stack: name, loaded */
    if (lua_getfield(L, 2, name) != LUA_TNIL) {
        if (lua_type(L, -1) == LUA_TLIGHTUSERDATA) return luaL_error(L, "require: '%s' requires itself", name);
        return 1;
    }
    lua_pop(L, 1);

    char path[512];
    int n = snprintf(path, sizeof path, "%s/", lua_tostring(L, lua_upvalueindex(1)));
    for (const char *p = name; *p && n < (int)sizeof path - 5; p++) path[n++] = *p == '.' ? '/' : *p;
    snprintf(path + n, sizeof path - (size_t)n, ".lua");
    FILE *f = fopen(path, "rb");
    if (!f) return luaL_error(L, "require: module '%s' not found (%s)", name, path);
    luaL_Buffer b;
    char *buf = luaL_buffinitsize(L, &b, MODULE_MAX_BYTES);
    size_t got = fread(buf, 1, MODULE_MAX_BYTES, f);
    int big = got == MODULE_MAX_BYTES && fgetc(f) != EOF;
    fclose(f);
    if (big) return luaL_error(L, "require: module '%s' is larger than %d bytes", name, MODULE_MAX_BYTES);
    luaL_pushresultsize(&b, got);
    /* stack: name, loaded, source */
    char chunk[sizeof path + 1];
    snprintf(chunk, sizeof chunk, "@%s", path);
    size_t len;
    const char *src = lua_tolstring(L, 3, &len);
    if (luaL_loadbufferx(L, src, len, chunk, "t") != LUA_OK) return lua_error(L);
    /* the module's environment */
    lua_newtable(L);
    lua_createtable(L, 0, 3);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, env_newindex);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    lua_setupvalue(L, -2, 1);
    lua_pushlightuserdata(L, (void *)&KEY_LOADED); /* loading: a cycle is an error */
    lua_setfield(L, 2, name);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, 2, name);
    return 1;
}

void agents_lua_require_build(lua_State *L, void *ud) {
    lua_pushstring(L, ud);
    lua_pushcclosure(L, l_require, 1);
}
