/* bus_lua — orrery.core's view of the bus (src/bus.c) for specs and bench/bus.lua, plus the
 * thread self-test and the C benchmark loops. Envelopes cross as Lua tables whose content is JSON
 * text; the scheduler's own agent API (orrery.bus) comes later and is not this. */
#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus.h"
#include "bus_lua.h"
#include "lua_core.h"

/* ---- Self-test: senders, a consumer and a churn thread on one bus ---- */

struct st {
    struct bus *bus;
    int threads, messages;
    atomic_int wakeups, failed;
    char err[256];
    pthread_mutex_t err_mu;
};

static void st_fail(struct st *st, const char *msg) {
    pthread_mutex_lock(&st->err_mu);
    if (!atomic_load(&st->failed)) snprintf(st->err, sizeof st->err, "%s", msg);
    atomic_store(&st->failed, 1);
    pthread_mutex_unlock(&st->err_mu);
}

static void st_notify(void *ud, const char *agent) {
    (void)agent;
    atomic_fetch_add(&((struct st *)ud)->wakeups, 1);
}

struct st_sender {
    struct st *st;
    int index;
    pthread_t tid;
};

static void *st_send(void *arg) {
    struct st_sender *s = arg;
    struct bus_envelope env;
    memset(&env, 0, sizeof env);
    strcpy(env.performative, "inform");
    strcpy(env.receiver, "sink");
    snprintf(env.sender, sizeof env.sender, "s%d", s->index);
    char content[32];
    env.content = content;
    for (int i = 0; i < s->st->messages && !atomic_load(&s->st->failed); i++) {
        snprintf(content, sizeof content, "%d", i);
        env.id[0] = '\0';
        int rc;
        while ((rc = bus_send(s->st->bus, &env)) == BUS_FULL) sched_yield(); /* back-pressure */
        if (rc != BUS_OK) {
            st_fail(s->st, "bus_send failed");
            break;
        }
    }
    return NULL;
}

static void *st_consume(void *arg) {
    struct st *st = arg;
    int *next = calloc((size_t)st->threads, sizeof *next);
    long total = (long)st->threads * st->messages, got = 0;
    if (!next) {
        st_fail(st, "out of memory");
        return NULL;
    }
    while (got < total && !atomic_load(&st->failed)) {
        struct bus_envelope *e;
        if (bus_take(st->bus, "sink", &e) != BUS_OK) {
            sched_yield();
            continue;
        }
        int who = atoi(e->sender + 1), seq = e->content ? atoi(e->content) : -1;
        if (who < 0 || who >= st->threads || seq != next[who]) st_fail(st, "per-sender order broken");
        else next[who]++;
        bus_envelope_free(e);
        got++;
    }
    free(next);
    return NULL;
}

/* Registers, subscribes, publishes to, drains and unregisters short-lived agents while the
 * senders run, so table writers and mailbox users meet. */
static void *st_churn(void *arg) {
    struct st *st = arg;
    struct bus_envelope env;
    memset(&env, 0, sizeof env);
    strcpy(env.performative, "inform");
    strcpy(env.topic, "churn.tick");
    for (int i = 0; i < 200 && !atomic_load(&st->failed); i++) {
        char name[32];
        snprintf(name, sizeof name, "tmp%d", i % 4);
        if (bus_register(st->bus, name, "temporary", NULL, NULL, 0) != BUS_OK) continue;
        bus_subscribe(st->bus, name, "churn.*");
        env.id[0] = '\0';
        if (bus_publish(st->bus, &env) < 1) st_fail(st, "publish reached no subscriber");
        struct bus_envelope *e;
        while (bus_take(st->bus, name, &e) == BUS_OK) bus_envelope_free(e);
        if (bus_unregister(st->bus, name) != BUS_OK) st_fail(st, "unregister failed");
        json_decref(bus_directory(st->bus));
    }
    return NULL;
}

int bus_selftest_threads(int threads, int messages, char *err, size_t errlen) {
    if (threads < 1 || threads > 64 || messages < 1) {
        snprintf(err, errlen, "threads must be 1..64 and messages >= 1");
        return BUS_ERROR;
    }
    struct st st;
    memset(&st, 0, sizeof st);
    pthread_mutex_init(&st.err_mu, NULL);
    st.threads = threads;
    st.messages = messages;
    st.bus = bus_new(64); /* small, so senders meet BUS_FULL */
    struct st_sender *senders = calloc((size_t)threads, sizeof *senders);
    int rc = BUS_ERROR, started = 0;
    pthread_t consumer, churn;
    if (!st.bus || !senders || bus_register(st.bus, "sink", "", NULL, NULL, 0) != BUS_OK) {
        snprintf(err, errlen, "setup failed");
        goto done;
    }
    bus_set_notify(st.bus, st_notify, &st);
    pthread_create(&consumer, NULL, st_consume, &st);
    pthread_create(&churn, NULL, st_churn, &st);
    for (; started < threads; started++) {
        senders[started].st = &st;
        senders[started].index = started;
        pthread_create(&senders[started].tid, NULL, st_send, &senders[started]);
    }
    for (int i = 0; i < started; i++) pthread_join(senders[i].tid, NULL);
    pthread_join(consumer, NULL);
    pthread_join(churn, NULL);
    if (atomic_load(&st.failed)) {
        snprintf(err, errlen, "%s", st.err);
    } else if (bus_depth(st.bus, "sink") != 0) {
        snprintf(err, errlen, "mailbox not drained");
    } else if (atomic_load(&st.wakeups) < 1) {
        snprintf(err, errlen, "notify never called");
    } else {
        rc = BUS_OK;
    }
done:
    bus_free(st.bus);
    free(senders);
    pthread_mutex_destroy(&st.err_mu);
    return rc;
}

/* ---- Benchmark loops ---- */

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

double bus_bench_roundtrips(long n) {
    struct bus *bus = bus_new(1024);
    if (!bus || bus_register(bus, "client", "", NULL, NULL, 0) != BUS_OK ||
        bus_register(bus, "server", "", NULL, NULL, 0) != BUS_OK) {
        bus_free(bus);
        return -1;
    }
    struct bus_envelope req, rep;
    memset(&req, 0, sizeof req);
    strcpy(req.performative, "request");
    strcpy(req.sender, "client");
    strcpy(req.receiver, "server");
    strcpy(req.conversation_id, "bench");
    req.content = "{\"op\":\"ping\"}";
    double t0 = mono(), elapsed = -1;
    for (long i = 0; i < n; i++) {
        struct bus_envelope *got, *back;
        req.id[0] = '\0';
        snprintf(req.reply_with, sizeof req.reply_with, "r%ld", i);
        if (bus_send(bus, &req) != BUS_OK || bus_take(bus, "server", &got) != BUS_OK) goto done;
        memset(&rep, 0, sizeof rep);
        strcpy(rep.performative, "inform");
        memcpy(rep.sender, got->receiver, sizeof rep.sender);
        memcpy(rep.receiver, got->sender, sizeof rep.receiver);
        memcpy(rep.conversation_id, got->conversation_id, sizeof rep.conversation_id);
        memcpy(rep.in_reply_to, got->reply_with, sizeof rep.in_reply_to);
        rep.content = "{\"op\":\"pong\"}";
        bus_envelope_free(got);
        if (bus_send(bus, &rep) != BUS_OK || bus_take(bus, "client", &back) != BUS_OK) goto done;
        bus_envelope_free(back);
    }
    elapsed = mono() - t0;
done:
    bus_free(bus);
    return elapsed;
}

double bus_bench_publish(long n, int subscribers) {
    struct bus *bus = bus_new(1024);
    char names[256][16];
    if (!bus || subscribers < 1 || subscribers > 256) {
        bus_free(bus);
        return -1;
    }
    for (int s = 0; s < subscribers; s++) {
        snprintf(names[s], sizeof names[s], "sub%d", s);
        if (bus_register(bus, names[s], "", NULL, NULL, 0) != BUS_OK || bus_subscribe(bus, names[s], "task.*") != BUS_OK) {
            bus_free(bus);
            return -1;
        }
    }
    struct bus_envelope ev;
    memset(&ev, 0, sizeof ev);
    strcpy(ev.performative, "inform");
    strcpy(ev.sender, "tasks");
    strcpy(ev.topic, "task.created");
    ev.content = "{\"id\":42}";
    double t0 = mono(), elapsed = -1;
    for (long i = 0; i < n; i++) {
        ev.id[0] = '\0';
        if (bus_publish(bus, &ev) != subscribers) goto done;
        for (int s = 0; s < subscribers; s++) {
            struct bus_envelope *e;
            if (bus_take(bus, names[s], &e) != BUS_OK) goto done;
            bus_envelope_free(e);
        }
    }
    elapsed = mono() - t0;
done:
    bus_free(bus);
    return elapsed;
}

/* ---- Lua binding ---- */

#define BUS_MT "orrery.bus"

struct lbus {
    struct bus *bus;
    atomic_long wakeups;
};

static void l_notify(void *ud, const char *agent) {
    (void)agent;
    atomic_fetch_add(&((struct lbus *)ud)->wakeups, 1);
}

static struct bus *checkbus(lua_State *L) {
    struct lbus *b = luaL_checkudata(L, 1, BUS_MT);
    if (!b->bus) luaL_error(L, "bus is closed");
    return b->bus;
}

static const char *const STRING_FIELDS[] = {"id",         "performative", "sender",      "receiver", "topic",
                                            "conversation_id", "reply_with", "in_reply_to", "user_id", NULL};

/* Where each of STRING_FIELDS lives in an envelope, and its size (one table, not rebuilt per call:
 * this runs for every message an agent handles). */
#define FIELD(f) {offsetof(struct bus_envelope, f), sizeof ((struct bus_envelope *)0)->f}
static const struct {
    size_t off, size;
} FIELDS[] = {FIELD(id),           FIELD(performative), FIELD(sender),      FIELD(receiver), FIELD(topic),
              FIELD(conversation_id), FIELD(reply_with), FIELD(in_reply_to), FIELD(user_id)};
#undef FIELD

static char *field_ptr(struct bus_envelope *e, int i, size_t *size) {
    *size = FIELDS[i].size;
    return (char *)e + FIELDS[i].off;
}

/* See bus_lua.h. */
void bus_lua_check_envelope(lua_State *L, int idx, struct bus_envelope *e) {
    luaL_checktype(L, idx, LUA_TTABLE);
    memset(e, 0, sizeof *e);
    for (int i = 0; STRING_FIELDS[i]; i++) {
        size_t size, len;
        char *dst = field_ptr(e, i, &size);
        int t = lua_getfield(L, idx, STRING_FIELDS[i]);
        if (t != LUA_TNIL) {
            if (t != LUA_TSTRING) luaL_error(L, "envelope.%s must be a string", STRING_FIELDS[i]);
            const char *s = lua_tolstring(L, -1, &len);
            if (len >= size || strlen(s) != len)
                luaL_error(L, "envelope.%s is too long (max %d bytes)", STRING_FIELDS[i], (int)size - 1);
            memcpy(dst, s, len + 1);
        }
        lua_pop(L, 1);
    }
    if (lua_getfield(L, idx, "created_at") != LUA_TNIL) e->created_at = luaL_checknumber(L, -1);
    lua_pop(L, 1);
    int t = lua_getfield(L, idx, "content");
    if (t != LUA_TNIL) {
        if (t != LUA_TSTRING) luaL_error(L, "envelope.content must be JSON text");
        json_t *v = json_loads(lua_tostring(L, -1), JSON_DECODE_ANY, NULL);
        if (!v) luaL_error(L, "envelope.content is not valid JSON");
        json_decref(v);
        e->content = strdup(lua_tostring(L, -1));
        if (!e->content) luaL_error(L, "out of memory");
    }
    lua_pop(L, 1);
    char err[128];
    if (bus_envelope_validate(e, err, sizeof err) != BUS_OK) {
        bus_envelope_clear(e);
        luaL_error(L, "%s", err);
    }
}

/* See bus_lua.h. */
void bus_lua_push_envelope(lua_State *L, const struct bus_envelope *e) {
    lua_createtable(L, 0, 12); /* stack: env */
    for (int i = 0; STRING_FIELDS[i]; i++) {
        size_t size;
        const char *s = field_ptr((struct bus_envelope *)e, i, &size);
        if (!*s) continue;
        lua_pushlstring(L, s, strnlen(s, size)); /* not lua_pushstring: its cache costs two strcmp a field */
        lua_setfield(L, -2, STRING_FIELDS[i]);
    }
    if (e->content) {
        lua_pushlstring(L, e->content, strlen(e->content));
        lua_setfield(L, -2, "content");
    }
    lua_pushnumber(L, e->created_at);
    lua_setfield(L, -2, "created_at");
}

static void push_json(lua_State *L, json_t *v) {
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(v);
    if (!s) luaL_error(L, "out of memory");
    lua_pushstring(L, s);
    free(s);
}

static int l_bus_new(lua_State *L) {
    lua_Integer cap = luaL_optinteger(L, 1, BUS_DEFAULT_CAPACITY);
    luaL_argcheck(L, cap >= 1, 1, "capacity must be >= 1");
    struct lbus *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->bus = NULL;
    atomic_init(&b->wakeups, 0);
    luaL_setmetatable(L, BUS_MT);
    if (!(b->bus = bus_new((size_t)cap))) return luaL_error(L, "out of memory");
    bus_set_notify(b->bus, l_notify, b);
    return 1;
}

static int l_gc(lua_State *L) {
    struct lbus *b = luaL_checkudata(L, 1, BUS_MT);
    bus_free(b->bus);
    b->bus = NULL;
    return 0;
}

static int l_register(lua_State *L) {
    struct bus *bus = checkbus(L);
    char err[256];
    if (bus_register(bus, luaL_checkstring(L, 2), luaL_optstring(L, 3, ""), luaL_optstring(L, 4, NULL), err,
                     sizeof err) != BUS_OK) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_unregister(lua_State *L) {
    lua_pushboolean(L, bus_unregister(checkbus(L), luaL_checkstring(L, 2)) == BUS_OK);
    return 1;
}

static int l_send(lua_State *L) {
    struct bus *bus = checkbus(L);
    struct bus_envelope e;
    bus_lua_check_envelope(L, 2, &e);
    int rc = bus_send(bus, &e);
    bus_envelope_clear(&e);
    switch (rc) {
    case BUS_OK: lua_pushliteral(L, "ok"); break;
    case BUS_UNKNOWN: lua_pushliteral(L, "unknown"); break;
    case BUS_FULL: lua_pushliteral(L, "full"); break;
    case BUS_INVALID: return luaL_error(L, "invalid envelope (a receiver is required)");
    default: return luaL_error(L, "bus_send failed");
    }
    return 1;
}

static int l_publish(lua_State *L) {
    struct bus *bus = checkbus(L);
    struct bus_envelope e;
    bus_lua_check_envelope(L, 2, &e);
    int n = bus_publish(bus, &e);
    bus_envelope_clear(&e);
    if (n == BUS_INVALID) return luaL_error(L, "invalid topic '%s'", e.topic);
    if (n < 0) return luaL_error(L, "bus_publish failed");
    lua_pushinteger(L, n);
    return 1;
}

static int l_subscribe(lua_State *L) {
    int rc = bus_subscribe(checkbus(L), luaL_checkstring(L, 2), luaL_checkstring(L, 3));
    if (rc == BUS_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_pushfail(L);
    lua_pushstring(L, rc == BUS_UNKNOWN ? "unknown" : rc == BUS_INVALID ? "invalid pattern" : "error");
    return 2;
}

static int l_unsubscribe(lua_State *L) {
    lua_pushboolean(L, bus_unsubscribe(checkbus(L), luaL_checkstring(L, 2), luaL_checkstring(L, 3)) == BUS_OK);
    return 1;
}

static int l_take(lua_State *L) {
    struct bus_envelope *e;
    int rc = bus_take(checkbus(L), luaL_checkstring(L, 2), &e);
    if (rc == BUS_OK) {
        bus_lua_push_envelope(L, e);
        bus_envelope_free(e);
        return 1;
    }
    luaL_pushfail(L);
    lua_pushstring(L, rc == BUS_UNKNOWN ? "unknown" : "empty");
    return 2;
}

static int l_depth(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)bus_depth(checkbus(L), luaL_checkstring(L, 2)));
    return 1;
}

static int l_directory(lua_State *L) {
    push_json(L, bus_directory(checkbus(L)));
    return 1;
}

static int l_stats(lua_State *L) {
    push_json(L, bus_stats_json(checkbus(L)));
    return 1;
}

static int l_seen(lua_State *L) {
    int rc = bus_seen(checkbus(L), luaL_checkstring(L, 2), luaL_checkstring(L, 3));
    if (rc < 0) {
        luaL_pushfail(L);
        lua_pushstring(L, rc == BUS_UNKNOWN ? "unknown" : "invalid id");
        return 2;
    }
    lua_pushboolean(L, rc);
    return 1;
}

static int l_wakeups(lua_State *L) {
    checkbus(L);
    lua_pushinteger(L, (lua_Integer)atomic_load(&((struct lbus *)lua_touserdata(L, 1))->wakeups));
    return 1;
}

static int l_topic_match(lua_State *L) {
    lua_pushboolean(L, bus_topic_match(luaL_checkstring(L, 1), luaL_checkstring(L, 2)));
    return 1;
}

static int l_from_json(lua_State *L) {
    char err[256];
    struct bus_envelope *e = bus_envelope_from_json(luaL_checkstring(L, 1), err, sizeof err);
    if (!e) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    bus_lua_push_envelope(L, e);
    bus_envelope_free(e);
    return 1;
}

static int l_to_json(lua_State *L) {
    struct bus_envelope e;
    bus_lua_check_envelope(L, 1, &e);
    char *s = bus_envelope_to_json(&e);
    bus_envelope_clear(&e);
    if (!s) return luaL_error(L, "out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int l_refuse_busy(lua_State *L) {
    struct bus_envelope e, out;
    bus_lua_check_envelope(L, 1, &e);
    int rc = bus_refuse_busy(&e, &out);
    bus_envelope_clear(&e);
    if (rc != BUS_OK) return luaL_error(L, "bus_refuse_busy failed");
    bus_lua_push_envelope(L, &out);
    bus_envelope_clear(&out);
    return 1;
}

static int l_selftest(lua_State *L) {
    char err[256];
    lua_Integer t = luaL_checkinteger(L, 1), m = luaL_checkinteger(L, 2);
    luaL_argcheck(L, t >= 1 && t <= 64, 1, "threads must be 1..64");
    luaL_argcheck(L, m >= 1 && m <= 10000000, 2, "messages out of range");
    if (bus_selftest_threads((int)t, (int)m, err, sizeof err) != BUS_OK) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_bench_roundtrips(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 1, 1, "n must be >= 1");
    double s = bus_bench_roundtrips((long)n);
    if (s < 0) return luaL_error(L, "benchmark failed");
    lua_pushnumber(L, s);
    return 1;
}

static int l_bench_publish(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1), subs = luaL_optinteger(L, 2, 10);
    luaL_argcheck(L, n >= 1, 1, "n must be >= 1");
    luaL_argcheck(L, subs >= 1 && subs <= 256, 2, "subscribers must be 1..256");
    double s = bus_bench_publish((long)n, (int)subs);
    if (s < 0) return luaL_error(L, "benchmark failed");
    lua_pushnumber(L, s);
    return 1;
}

void bus_lua_register(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"register", l_register},   {"unregister", l_unregister}, {"send", l_send},   {"publish", l_publish},
        {"subscribe", l_subscribe}, {"unsubscribe", l_unsubscribe}, {"take", l_take}, {"depth", l_depth},
        {"directory", l_directory}, {"stats", l_stats},           {"seen", l_seen},   {"wakeups", l_wakeups},
        {"close", l_gc},            {NULL, NULL},
    };
    static const luaL_Reg fns[] = {
        {"bus_new", l_bus_new},
        {"bus_topic_match", l_topic_match},
        {"bus_envelope_from_json", l_from_json},
        {"bus_envelope_to_json", l_to_json},
        {"bus_refuse_busy", l_refuse_busy},
        {"bus_selftest_threads", l_selftest},
        {"bus_bench_roundtrips", l_bench_roundtrips},
        {"bus_bench_publish", l_bench_publish},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, BUS_MT)) { /* stack: core, mt */
        luaL_newlib(L, methods);        /* stack: core, mt, methods */
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1); /* stack: core */
    luaL_setfuncs(L, fns, 0);
}
