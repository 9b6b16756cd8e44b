/* replica_lua — orrery.core's view of a replica (src/replica.c), so specs can drive several in one
 * process: core.replica_new(url, instance) returns an object whose handlers queue what arrives,
 * and :poll(timeout_ms) hands the queued events to Lua. Envelopes cross as the bus binding's
 * tables (bus_lua.h). Uses replica, bus_lua and pthreads. */
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus_lua.h"
#include "lua_core.h"
#include "replica.h"

#define REPLICA_MT "orrery.replica"
#define EVENTS_MAX 100000 /* events not yet polled; beyond, they are counted in `lost` */

enum { EV_PUBLISH, EV_AGENT, EV_RESYNC };

struct event {
    struct event *next;
    int kind;
    struct bus_envelope *env;    /* EV_PUBLISH (owned) */
    char name[BUS_NAME_MAX + 1]; /* EV_AGENT */
    long version;
};

/* Filled by the replica thread, emptied by :poll. Outlives the replica (freed after replica_free). */
struct inbox {
    pthread_mutex_t mu;
    pthread_cond_t arrived;
    struct event *head, *tail;
    size_t n;
    unsigned long lost;
};

struct lreplica {
    struct replica *r;
    struct inbox *box;
};

/* ---- Handlers (replica thread) ---- */

static void put(struct inbox *box, struct event *ev) {
    pthread_mutex_lock(&box->mu);
    if (box->n >= EVENTS_MAX) {
        box->lost++;
        pthread_mutex_unlock(&box->mu);
        bus_envelope_free(ev->env);
        free(ev);
        return;
    }
    if (box->tail) box->tail->next = ev;
    else box->head = ev;
    box->tail = ev;
    box->n++;
    pthread_cond_signal(&box->arrived);
    pthread_mutex_unlock(&box->mu);
}

static void on_publish(void *ud, struct bus_envelope *env) {
    struct event *ev = calloc(1, sizeof *ev);
    if (!ev) {
        bus_envelope_free(env);
        return;
    }
    ev->kind = EV_PUBLISH;
    ev->env = env;
    put(ud, ev);
}

static void on_agent(void *ud, const char *name, long version) {
    struct event *ev = calloc(1, sizeof *ev);
    if (!ev) return;
    ev->kind = EV_AGENT;
    snprintf(ev->name, sizeof ev->name, "%s", name);
    ev->version = version;
    put(ud, ev);
}

static void on_resync(void *ud) {
    struct event *ev = calloc(1, sizeof *ev);
    if (!ev) return;
    ev->kind = EV_RESYNC;
    put(ud, ev);
}

static void inbox_free(struct inbox *box) {
    if (!box) return;
    while (box->head) {
        struct event *ev = box->head;
        box->head = ev->next;
        bus_envelope_free(ev->env);
        free(ev);
    }
    pthread_cond_destroy(&box->arrived);
    pthread_mutex_destroy(&box->mu);
    free(box);
}

static struct inbox *inbox_new(void) {
    struct inbox *box = calloc(1, sizeof *box);
    pthread_condattr_t ca;
    if (!box) return NULL;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a wall-clock jump cannot stretch a poll */
    pthread_cond_init(&box->arrived, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&box->mu, NULL);
    return box;
}

/* ---- Lua ---- */

static struct lreplica *check(lua_State *L) {
    struct lreplica *lr = luaL_checkudata(L, 1, REPLICA_MT);
    if (!lr->r) luaL_error(L, "replica is closed");
    return lr;
}

/* core.replica_new(url, instance_uuid) -> replica | nil, err */
static int l_new(lua_State *L) {
    const char *url = luaL_checkstring(L, 1), *instance = luaL_checkstring(L, 2);
    struct lreplica *lr = lua_newuserdatauv(L, sizeof *lr, 0); /* stack: url, instance, lr */
    lr->r = NULL;
    lr->box = NULL;
    luaL_setmetatable(L, REPLICA_MT);
    if (!(lr->box = inbox_new())) return luaL_error(L, "out of memory");
    struct replica_handlers h = {on_publish, on_agent, lr->box, on_resync};
    char err[256];
    if (!(lr->r = replica_new(url, instance, &h, err, sizeof err))) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

/* r:close() (and __gc): sends what is queued, stops the thread, drops unpolled events. */
static int l_close(lua_State *L) {
    struct lreplica *lr = luaL_checkudata(L, 1, REPLICA_MT);
    replica_free(lr->r); /* joins the thread: no handler touches the inbox after this */
    lr->r = NULL;
    inbox_free(lr->box);
    lr->box = NULL;
    return 0;
}

/* r:publish(envelope) -> true | nil, "refused" */
static int l_publish(lua_State *L) {
    struct lreplica *lr = check(L);
    struct bus_envelope e;
    bus_lua_check_envelope(L, 2, &e);
    int rc = replica_publish(lr->r, &e);
    bus_envelope_clear(&e);
    if (rc != 0) {
        luaL_pushfail(L);
        lua_pushliteral(L, "refused");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* r:agent_changed(name, version) -> true | nil, "refused" */
static int l_agent_changed(lua_State *L) {
    struct lreplica *lr = check(L);
    if (replica_agent_changed(lr->r, luaL_checkstring(L, 2), (long)luaL_checkinteger(L, 3)) != 0) {
        luaL_pushfail(L);
        lua_pushliteral(L, "refused");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* r:poll(timeout_ms) -> list of events ({kind = "publish", envelope = {...}} or
 * {kind = "agent", name = ..., version = ...} or {kind = "resync"} after a reconnection), waiting at
 * most timeout_ms for the first one. */
static int l_poll(lua_State *L) {
    struct lreplica *lr = check(L);
    lua_Integer ms = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, ms >= 0 && ms <= 600000, 2, "timeout must be 0..600000 ms");
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    struct inbox *box = lr->box;
    pthread_mutex_lock(&box->mu);
    while (!box->head && pthread_cond_timedwait(&box->arrived, &box->mu, &until) == 0) {}
    struct event *ev = box->head;
    box->head = box->tail = NULL;
    box->n = 0;
    pthread_mutex_unlock(&box->mu);

    lua_newtable(L); /* stack: self, ms, list */
    for (int i = 1; ev; i++) {
        struct event *next = ev->next;
        lua_createtable(L, 0, 3); /* stack: self, ms, list, event */
        if (ev->kind == EV_PUBLISH) {
            lua_pushliteral(L, "publish");
            lua_setfield(L, -2, "kind");
            bus_lua_push_envelope(L, ev->env);
            lua_setfield(L, -2, "envelope");
        } else if (ev->kind == EV_RESYNC) {
            lua_pushliteral(L, "resync");
            lua_setfield(L, -2, "kind");
        } else {
            lua_pushliteral(L, "agent");
            lua_setfield(L, -2, "kind");
            lua_pushstring(L, ev->name);
            lua_setfield(L, -2, "name");
            lua_pushinteger(L, ev->version);
            lua_setfield(L, -2, "version");
        }
        lua_rawseti(L, -2, i);
        bus_envelope_free(ev->env);
        free(ev);
        ev = next;
    }
    return 1;
}

/* r:stats() -> {sent, received, dropped, reconnects, fetched, invalid, queued, connected, lost} */
static int l_stats(lua_State *L) {
    struct lreplica *lr = check(L);
    struct replica_stats s;
    replica_stats(lr->r, &s);
    pthread_mutex_lock(&lr->box->mu);
    unsigned long lost = lr->box->lost;
    pthread_mutex_unlock(&lr->box->mu);
    const struct {
        const char *k;
        unsigned long v;
    } f[] = {{"sent", s.sent},       {"received", s.received}, {"dropped", s.dropped},
             {"reconnects", s.reconnects}, {"fetched", s.fetched},   {"invalid", s.invalid},
             {"queued", s.queued},   {"lost", lost}};
    lua_createtable(L, 0, 9);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        lua_pushinteger(L, (lua_Integer)f[i].v);
        lua_setfield(L, -2, f[i].k);
    }
    lua_pushboolean(L, s.connected);
    lua_setfield(L, -2, "connected");
    return 1;
}

void replica_lua_register(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"publish", l_publish}, {"agent_changed", l_agent_changed}, {"poll", l_poll},
        {"stats", l_stats},     {"close", l_close},                 {NULL, NULL},
    };
    if (luaL_newmetatable(L, REPLICA_MT)) { /* stack: core, mt */
        luaL_newlib(L, methods);            /* stack: core, mt, methods */
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1); /* stack: core */
    lua_pushcfunction(L, l_new);
    lua_setfield(L, -2, "replica_new");
}
