/* agents_core — orrery.core's view of the agent runtime, so specs and bench/agents.lua run real
 * agents on the real scheduler without a server:
 *
 *   local rt = core.agents_new{workers=2, mailbox=1024, memory=bytes, instructions=n, seconds=s,
 *                              run_timeout=s, max_runs=n, request_timeout=s, lib_dir="lib",
 *                              db_url=, fetch_allow=, fetch_allow_private=, fetch_max_bytes=, io=true}
 *     (db_url or any fetch option, or io=true, gives the agents orrery.db / orrery.http)
 *   rt:load(source [, chunkname [, version]]) -> name | nil, err
 *   rt:check(source [, chunkname])            -> {name, description, capabilities, subscribes} | nil, err
 *   rt:request(agent, content_json [, {timeout=, user_id=, conversation_id=, performative=}])
 *                                              -> reply envelope table (content as JSON text)
 *   rt:requests(list_of {agent, content_json, opts}, [timeout]) -> list of replies, all sent at once
 *   rt:send(envelope) / rt:publish(envelope)   -> the bus result
 *   rt:status() / rt:directory()               -> JSON text
 *   rt:unload(name), rt:degraded(), rt:close()
 *
 * request/requests block the calling (spec) thread on a condition variable until every reply is in;
 * the runtime's own threads do the work. */
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "agents.h"
#include "aio.h"
#include "bus_lua.h"
#include "lua_core.h"

#define RT_MT "orrery.agents"

struct lua_rt {
    struct agents *rt;
    struct aio *aio; /* owned; NULL unless db_url or fetch options were given */
};

static struct agents *check_rt(lua_State *L) {
    struct lua_rt *u = luaL_checkudata(L, 1, RT_MT);
    if (!u->rt) luaL_error(L, "the runtime is closed");
    return u->rt;
}

static double opt_num(lua_State *L, int t, const char *name, double def) {
    if (lua_type(L, t) != LUA_TTABLE) return def;
    lua_getfield(L, t, name);
    double v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    if (v < 0) luaL_error(L, "agents_new: %s must not be negative", name);
    return v < 1e15 ? v : 1e15;
}

static int l_new(lua_State *L) {
    struct agents_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.workers = (int)opt_num(L, 1, "workers", 2);
    cfg.mailbox = (size_t)opt_num(L, 1, "mailbox", 0);
    cfg.limits.memory_bytes = (size_t)opt_num(L, 1, "memory", 0);
    cfg.limits.instructions = (long)opt_num(L, 1, "instructions", 0);
    cfg.limits.seconds = opt_num(L, 1, "seconds", 0);
    cfg.run_timeout = opt_num(L, 1, "run_timeout", 0);
    cfg.max_runs = (int)opt_num(L, 1, "max_runs", 0);
    cfg.request_timeout = opt_num(L, 1, "request_timeout", 0);
    struct aio_config ac;
    memset(&ac, 0, sizeof ac);
    int want_aio = 0;
    if (lua_type(L, 1) == LUA_TTABLE) {
        lua_getfield(L, 1, "lib_dir");
        cfg.lib_dir = luaL_optstring(L, -1, "lib");
        lua_getfield(L, 1, "db_url");
        ac.db_url = luaL_optstring(L, -1, NULL);
        lua_getfield(L, 1, "fetch_allow");
        ac.fetch_allow = luaL_optstring(L, -1, NULL);
        lua_getfield(L, 1, "fetch_allow_private");
        ac.fetch_allow_private = lua_toboolean(L, -1);
        lua_getfield(L, 1, "io");
        want_aio = lua_toboolean(L, -1) || ac.db_url || ac.fetch_allow || ac.fetch_allow_private;
        ac.fetch_max_bytes = (size_t)opt_num(L, 1, "fetch_max_bytes", 0);
        ac.fetch_timeout = opt_num(L, 1, "fetch_timeout", 0);
        ac.db_timeout_ms = (int)opt_num(L, 1, "db_timeout_ms", 0);
    }
    struct lua_rt *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->rt = NULL;
    u->aio = NULL;
    luaL_setmetatable(L, RT_MT);
    char err[256];
    if (want_aio && !(u->aio = aio_new(&ac, err, sizeof err))) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    cfg.aio = u->aio;
    u->rt = agents_new(&cfg, err, sizeof err);
    if (!u->rt) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

static int l_load(lua_State *L) {
    struct agents *rt = check_rt(L);
    size_t len;
    const char *src = luaL_checklstring(L, 2, &len);
    const char *chunk = luaL_optstring(L, 3, "=agent");
    long version = (long)luaL_optinteger(L, 4, 1);
    char name[BUS_NAME_MAX + 1], err[1024];
    if (agents_load(rt, chunk, src, len, version, name, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushstring(L, name);
    return 1;
}

static int l_check(lua_State *L) {
    struct agents *rt = check_rt(L);
    size_t len;
    const char *src = luaL_checklstring(L, 2, &len);
    const char *chunk = luaL_optstring(L, 3, "=agent");
    struct agents_info info;
    char err[1024];
    if (agents_check(rt, chunk, src, len, &info, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_createtable(L, 0, 4);
    lua_pushstring(L, info.name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, info.description);
    lua_setfield(L, -2, "description");
    lua_pushstring(L, info.capabilities_json);
    lua_setfield(L, -2, "capabilities");
    lua_pushstring(L, info.subscribes_json);
    lua_setfield(L, -2, "subscribes");
    agents_info_clear(&info);
    return 1;
}

/* ---- Blocking requests ---- */

struct waitset {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
    struct bus_envelope **replies;
};

struct waiter {
    struct waitset *ws;
    int index;
};

static void on_reply(void *ud, struct bus_envelope *reply) {
    struct waiter *w = ud;
    pthread_mutex_lock(&w->ws->mu);
    w->ws->replies[w->index] = reply;
    w->ws->pending--;
    pthread_cond_signal(&w->ws->cv);
    pthread_mutex_unlock(&w->ws->mu);
}

/* Reads {agent, content_json, opts} (or the arguments at idx..idx+2) into env. */
static void read_request(lua_State *L, int agent_idx, int content_idx, int opts_idx, struct bus_envelope *env) {
    memset(env, 0, sizeof *env);
    const char *agent = luaL_checkstring(L, agent_idx);
    if (strlen(agent) >= sizeof env->receiver) luaL_error(L, "agent name too long");
    strcpy(env->receiver, agent);
    if (lua_type(L, opts_idx) == LUA_TTABLE) {
        static const struct { const char *key; size_t off, size; } f[] = {
            {"user_id", offsetof(struct bus_envelope, user_id), sizeof env->user_id},
            {"conversation_id", offsetof(struct bus_envelope, conversation_id), sizeof env->conversation_id},
            {"performative", offsetof(struct bus_envelope, performative), sizeof env->performative},
        };
        for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
            lua_getfield(L, opts_idx, f[i].key);
            const char *v = lua_tostring(L, -1);
            if (v && strlen(v) < f[i].size) strcpy((char *)env + f[i].off, v);
            lua_pop(L, 1);
        }
    }
    if (!lua_isnoneornil(L, content_idx)) {
        env->content = strdup(luaL_checkstring(L, content_idx));
        if (!env->content) luaL_error(L, "out of memory");
    }
}

/* Sends n requests and waits for every reply; pushes the list (or one reply when single). */
static int run_requests(lua_State *L, struct agents *rt, struct bus_envelope *envs, int n, double timeout, int single) {
    struct waitset ws;
    pthread_mutex_init(&ws.mu, NULL);
    pthread_cond_init(&ws.cv, NULL);
    ws.pending = 0;
    ws.replies = calloc((size_t)n, sizeof *ws.replies);
    struct waiter *w = calloc((size_t)n, sizeof *w);
    if (!ws.replies || !w) {
        free(ws.replies);
        free(w);
        for (int i = 0; i < n; i++) bus_envelope_clear(&envs[i]);
        return luaL_error(L, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        w[i].ws = &ws;
        w[i].index = i;
        pthread_mutex_lock(&ws.mu);
        ws.pending++;
        pthread_mutex_unlock(&ws.mu);
        if (agents_request(rt, &envs[i], timeout, on_reply, &w[i]) != 0) {
            pthread_mutex_lock(&ws.mu);
            ws.pending--;
            pthread_mutex_unlock(&ws.mu);
        }
        bus_envelope_clear(&envs[i]);
    }
    pthread_mutex_lock(&ws.mu);
    while (ws.pending > 0) pthread_cond_wait(&ws.cv, &ws.mu);
    pthread_mutex_unlock(&ws.mu);
    pthread_mutex_destroy(&ws.mu);
    pthread_cond_destroy(&ws.cv);
    free(w);
    /* Copy into Lua; on a memory error the rest would leak, so move them into Lua one by one. */
    if (!single) lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        if (ws.replies[i])
            bus_lua_push_envelope(L, ws.replies[i]);
        else
            lua_pushboolean(L, 0);
        bus_envelope_free(ws.replies[i]);
        ws.replies[i] = NULL;
        if (!single) lua_rawseti(L, -2, i + 1);
    }
    free(ws.replies);
    return 1;
}

static int l_request(lua_State *L) {
    struct agents *rt = check_rt(L);
    struct bus_envelope env;
    read_request(L, 2, 3, 4, &env);
    double timeout = opt_num(L, 4, "timeout", 0);
    return run_requests(L, rt, &env, 1, timeout, 1);
}

static int l_requests(lua_State *L) {
    struct agents *rt = check_rt(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 3, 0);
    int n = (int)luaL_len(L, 2);
    struct bus_envelope *envs = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *envs, 0);
    memset(envs, 0, (size_t)(n > 0 ? n : 1) * sizeof *envs);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        int t = lua_gettop(L);
        luaL_checktype(L, t, LUA_TTABLE);
        lua_rawgeti(L, t, 1);
        lua_rawgeti(L, t, 2);
        lua_rawgeti(L, t, 3);
        read_request(L, t + 1, t + 2, t + 3, &envs[i]);
        lua_settop(L, t - 1);
    }
    return run_requests(L, rt, envs, n, timeout, 0);
}

static int l_send(lua_State *L) {
    struct agents *rt = check_rt(L);
    struct bus_envelope env;
    bus_lua_check_envelope(L, 2, &env);
    int rc = agents_deliver(rt, &env, 0);
    bus_envelope_clear(&env);
    lua_pushinteger(L, rc);
    return 1;
}

static void push_json_text(lua_State *L, json_t *v) {
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!s) luaL_error(L, "out of memory");
    lua_pushstring(L, s);
    free(s);
}

static int l_status(lua_State *L) {
    push_json_text(L, agents_status(check_rt(L)));
    return 1;
}

static int l_directory(lua_State *L) {
    push_json_text(L, bus_directory(agents_bus(check_rt(L))));
    return 1;
}

static int l_degraded(lua_State *L) {
    lua_pushinteger(L, agents_degraded(check_rt(L)));
    return 1;
}

static int l_unload(lua_State *L) {
    lua_pushboolean(L, agents_unload(check_rt(L), luaL_checkstring(L, 2)) == 0);
    return 1;
}

static int l_close(lua_State *L) {
    struct lua_rt *u = luaL_checkudata(L, 1, RT_MT);
    agents_stop(u->rt); /* nothing runs now: the I/O loop can go, its completions are only queued */
    aio_free(u->aio);
    u->aio = NULL;
    agents_free(u->rt);
    u->rt = NULL;
    return 0;
}

void agents_lua_register(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"load", l_load},         {"check", l_check},   {"request", l_request}, {"requests", l_requests},
        {"send", l_send},         {"publish", l_send},  {"status", l_status},   {"directory", l_directory},
        {"degraded", l_degraded}, {"unload", l_unload}, {"close", l_close},     {NULL, NULL},
    };
    if (luaL_newmetatable(L, RT_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "agents_new");
}
