/* msglog — see msglog.h. This file: the queue, the writer thread, the life cycle and the
 * orrery.core binding. One mutex guards the queue (a FIFO of owned items) and the counters;
 * callers only copy under it. The writer takes up to BATCH_MAX items once the oldest waited
 * flush_ms (or at once for a flush or shutdown) and hands them to msglog_batch.c. The
 * connection, the lock key and the carried marks belong to the writer thread while it runs;
 * msglog_pg.c holds the PostgreSQL side (sessions, liveness, registration, redelivery). */
#include "msglog.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "bus_lua.h"
#include "log.h"
#include "lua_core.h"
#include "msglog_internal.h"

/* ---- Small helpers ---- */

long long msglog_mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on cv until deadline (monotonic ms). Returns pthread_cond_timedwait's result. */
int msglog_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, long long deadline) {
    struct timespec ts = {.tv_sec = (time_t)(deadline / 1000), .tv_nsec = (long)(deadline % 1000) * 1000000L};
    return pthread_cond_timedwait(cv, mu, &ts);
}

/* A UUID in its 8-4-4-4-12 hex form, either case (PostgreSQL's uuid stores it lower-case). */
static int is_uuid(const char *s) {
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return 0;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return 0;
        }
    }
    return s[36] == '\0';
}

/* An agent name as agent_messages.receiver accepts it: [a-z0-9_-], 1..63 (0 when empty_ok). */
static int is_name(const char *s, int empty_ok) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-') || n >= 63) return 0;
    }
    return n > 0 || empty_ok;
}

/* ---- The queue ---- */

static void free_items(struct item *it) {
    while (it) {
        struct item *next = it->next;
        free(it->env.content);
        free(it);
        it = next;
    }
}

/* Appends it (owned from now on), or frees it and counts a drop when the queue is full. */
static int enqueue(struct msglog *ml, struct item *it) {
    it->next = NULL;
    it->at_ms = msglog_mono_ms();
    pthread_mutex_lock(&ml->mu);
    if (ml->queued >= ml->queue_max || ml->stop) {
        ml->st.dropped++;
        pthread_mutex_unlock(&ml->mu);
        free(it->env.content);
        free(it);
        return -1;
    }
    it->seq = ++ml->enq_seq;
    if (ml->tail) ml->tail->next = it;
    else ml->head = it;
    ml->tail = it;
    ml->queued++;
    /* The writer only needs waking for the first item (it then sleeps until flush_ms) or a full batch. */
    if (ml->queued == 1 || ml->queued == BATCH_MAX) pthread_cond_signal(&ml->wake);
    pthread_mutex_unlock(&ml->mu);
    return 0;
}

static void count_rejected(struct msglog *ml) {
    pthread_mutex_lock(&ml->mu);
    ml->st.rejected++;
    pthread_mutex_unlock(&ml->mu);
}

int msglog_record(struct msglog *ml, const struct bus_envelope *env, int pending) {
    if (!ml || !env) return -1;
    if (bus_envelope_validate(env, NULL, 0) != BUS_OK || !is_uuid(env->id) || !is_name(env->receiver, !pending) ||
        (env->user_id[0] && !is_uuid(env->user_id))) {
        count_rejected(ml);
        return -1;
    }
    struct item *it = malloc(sizeof *it);
    if (!it) return -1;
    it->kind = pending ? ITEM_PENDING : ITEM_TRACE;
    it->env = *env;
    it->env.content = NULL;
    if (env->content && !(it->env.content = strdup(env->content))) {
        free(it);
        return -1;
    }
    return enqueue(ml, it);
}

int msglog_handled(struct msglog *ml, const char *agent, const char *envelope_id) {
    if (!ml || !agent || !envelope_id || !is_name(agent, 0) || strlen(envelope_id) != 36 || !is_uuid(envelope_id))
        return -1;
    struct item *it = calloc(1, sizeof *it);
    if (!it) return -1;
    it->kind = ITEM_HANDLED;
    memcpy(it->env.id, envelope_id, 37);
    snprintf(it->env.receiver, sizeof it->env.receiver, "%s", agent);
    return enqueue(ml, it);
}

/* ---- The writer thread ---- */

static void *writer_main(void *arg) {
    struct msglog *ml = arg;
    pthread_mutex_lock(&ml->mu);
    for (;;) {
        if (ml->abandon || (ml->stop && msglog_mono_ms() >= ml->stop_deadline)) break;
        if (!ml->head) {
            if (ml->stop) break;
            int timed_out = msglog_wait_until(&ml->wake, &ml->mu, msglog_mono_ms() + IDLE_CHECK_MS) == ETIMEDOUT;
            if (timed_out && !ml->head && !ml->stop) {
                /* Idle: notice a server that went away now, not at the next batch, so that the lock
                 * (this process's liveness) is back as soon as the server is. */
                pthread_mutex_unlock(&ml->mu);
                if (!db_looks_alive(ml->conn)) {
                    log_warn("msglog: the database connection was lost; reconnecting");
                    PQfinish(ml->conn);
                    ml->conn = NULL;
                    msglog_ensure_connected(ml, 1);
                }
                msglog_expire_carried(ml);
                pthread_mutex_lock(&ml->mu);
            }
            continue;
        }
        long long due = ml->head->at_ms + ml->flush_ms;
        while (!ml->stop && !ml->abandon && ml->flush_seq <= ml->done_seq && ml->queued < BATCH_MAX &&
               msglog_mono_ms() < due)
            msglog_wait_until(&ml->wake, &ml->mu, due);
        if (ml->abandon) break;
        struct item *first = ml->head, *last = first;
        size_t n = 1;
        while (n < BATCH_MAX && last->next) {
            last = last->next;
            n++;
        }
        ml->head = last->next;
        if (!ml->head) ml->tail = NULL;
        last->next = NULL;
        ml->queued -= n;
        unsigned long lo = first->seq, hi = last->seq;
        pthread_mutex_unlock(&ml->mu);

        long written = msglog_write_batch(ml, first);
        free_items(first);

        pthread_mutex_lock(&ml->mu);
        ml->done_seq = hi;
        if (written < 0) {
            ml->st.failed_batches++;
            ml->failed_lo = lo;
            ml->failed_hi = hi;
        } else {
            ml->st.written += (unsigned long)written;
        }
        pthread_cond_broadcast(&ml->done);
    }
    pthread_mutex_unlock(&ml->mu);
    return NULL;
}

/* ---- Life cycle ---- */

struct msglog *msglog_new(const char *url, const char *instance_uuid, size_t queue_max, int flush_ms, char *err,
                          size_t errlen) {
    if (!url || !*url || !instance_uuid || strlen(instance_uuid) != 36 || !is_uuid(instance_uuid) || queue_max < 1 ||
        flush_ms < 1) {
        snprintf(err, errlen, "msglog_new: need a URL, a UUID, queue_max >= 1 and flush_ms >= 1");
        return NULL;
    }
    struct msglog *ml = calloc(1, sizeof *ml);
    if (!ml) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    for (int i = 0; i < 37; i++) /* lower-case, as PostgreSQL returns it */
        ml->instance[i] = (char)(instance_uuid[i] >= 'A' && instance_uuid[i] <= 'F' ? instance_uuid[i] - 'A' + 'a'
                                                                                   : instance_uuid[i]);
    if (gethostname(ml->hostname, sizeof ml->hostname) != 0) ml->hostname[0] = '\0';
    ml->hostname[sizeof ml->hostname - 1] = '\0';
    ml->queue_max = queue_max;
    ml->flush_ms = flush_ms;
    ml->url = strdup(url);
    ml->carried = json_object();
    pthread_condattr_t ca;
    int have_ca = 0, have_mu = 0, have_wake = 0, have_done = 0;
    if (!ml->url || !ml->carried) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (pthread_condattr_init(&ca) != 0) goto fail_sys;
    have_ca = 1;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0) goto fail_sys;
    if (pthread_mutex_init(&ml->mu, NULL) != 0) goto fail_sys;
    have_mu = 1;
    if (pthread_cond_init(&ml->wake, &ca) != 0) goto fail_sys;
    have_wake = 1;
    if (pthread_cond_init(&ml->done, &ca) != 0) goto fail_sys;
    have_done = 1;
    if (!(ml->conn = msglog_pg_connect(url, err, errlen))) goto fail;
    if (msglog_register(ml, ml->conn, 1, err, errlen) != 0) goto fail;
    if (pthread_create(&ml->thread, NULL, writer_main, ml) != 0) goto fail_sys;
    pthread_condattr_destroy(&ca);
    log_info("msglog: instance %s registered (lock key %lld)", ml->instance, ml->lock_key);
    return ml;

fail_sys:
    snprintf(err, errlen, "msglog_new: cannot create threads or locks");
fail:
    if (have_ca) pthread_condattr_destroy(&ca);
    if (have_done) pthread_cond_destroy(&ml->done);
    if (have_wake) pthread_cond_destroy(&ml->wake);
    if (have_mu) pthread_mutex_destroy(&ml->mu);
    PQfinish(ml->conn); /* closing the session releases the lock, if taken */
    json_decref(ml->carried);
    free(ml->url);
    free(ml);
    return NULL;
}

/* Stops the writer (after it wrote what it can, unless abandoning) and frees everything. */
static void shut(struct msglog *ml, int abandon) {
    pthread_mutex_lock(&ml->mu);
    ml->stop = 1;
    ml->abandon = abandon;
    ml->stop_deadline = msglog_mono_ms() + MSGLOG_SHUTDOWN_MS;
    pthread_cond_broadcast(&ml->wake);
    pthread_mutex_unlock(&ml->mu);
    pthread_join(ml->thread, NULL);

    size_t left = ml->queued;
    free_items(ml->head);
    ml->head = ml->tail = NULL;
    ml->queued = 0;
    if (left && !abandon) log_warn("msglog: %zu records and marks not written at shutdown", left);
    if (!abandon && ml->conn && PQstatus(ml->conn) == CONNECTION_OK) {
        /* A clean exit leaves no instance behind; its pending rows (mailboxes not drained) stay
         * for the next start, which finds no live process for them. */
        char key[24];
        snprintf(key, sizeof key, "%lld", ml->lock_key);
        const char *p[2] = {ml->instance, key};
        struct db_stmt st = {"DELETE FROM agent_instances WHERE id = $1::uuid AND lock_key = $2::bigint", 2, p};
        PGresult *r;
        if (msglog_run_tx(ml->conn, &st, 1, &r) >= 0) log_warn("msglog: could not remove instance %s", ml->instance);
        PQclear(r);
    }
    PQfinish(ml->conn);
    pthread_cond_destroy(&ml->done);
    pthread_cond_destroy(&ml->wake);
    pthread_mutex_destroy(&ml->mu);
    json_decref(ml->carried);
    free(ml->url);
    free(ml);
}

void msglog_free(struct msglog *ml) {
    if (ml) shut(ml, 0);
}

void msglog_abandon(struct msglog *ml) {
    if (ml) shut(ml, 1);
}

int msglog_flush(struct msglog *ml, int timeout_ms) {
    if (!ml) return -1;
    long long deadline = msglog_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&ml->mu);
    unsigned long target = ml->enq_seq, from = ml->done_seq;
    if (ml->flush_seq < target) ml->flush_seq = target;
    pthread_cond_signal(&ml->wake);
    while (ml->done_seq < target && msglog_mono_ms() < deadline)
        if (msglog_wait_until(&ml->done, &ml->mu, deadline) == ETIMEDOUT) break;
    int rc = ml->done_seq >= target && !(ml->failed_hi > from && ml->failed_lo <= target) ? 0 : -1;
    pthread_mutex_unlock(&ml->mu);
    return rc;
}

void msglog_stats(struct msglog *ml, struct msglog_stats *out) {
    memset(out, 0, sizeof *out);
    if (!ml) return;
    pthread_mutex_lock(&ml->mu);
    *out = ml->st;
    out->queued = ml->queued;
    pthread_mutex_unlock(&ml->mu);
}

/* ---- orrery.core binding, for specs ---- */

#define MSGLOG_MT "orrery.msglog"

struct lmsglog {
    struct msglog *ml;
};

static struct msglog *checkml(lua_State *L) {
    struct lmsglog *u = luaL_checkudata(L, 1, MSGLOG_MT);
    if (!u->ml) luaL_error(L, "msglog is closed");
    return u->ml;
}

/* core.msglog_new(url, instance_uuid [, queue_max=1024 [, flush_ms=50]]) -> log | nil, err */
static int l_msglog_new(lua_State *L) {
    const char *url = luaL_checkstring(L, 1), *instance = luaL_checkstring(L, 2);
    lua_Integer qmax = luaL_optinteger(L, 3, 1024), flush = luaL_optinteger(L, 4, 50);
    luaL_argcheck(L, qmax >= 1 && qmax <= 10000000, 3, "queue_max must be 1..10000000");
    luaL_argcheck(L, flush >= 1 && flush <= 600000, 4, "flush_ms must be 1..600000");
    struct lmsglog *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->ml = NULL;
    luaL_setmetatable(L, MSGLOG_MT);
    char err[512];
    if (!(u->ml = msglog_new(url, instance, (size_t)qmax, (int)flush, err, sizeof err))) {
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

static int l_close(lua_State *L) {
    struct lmsglog *u = luaL_checkudata(L, 1, MSGLOG_MT);
    msglog_free(u->ml);
    u->ml = NULL;
    return 0;
}

static int l_abandon(lua_State *L) {
    struct lmsglog *u = luaL_checkudata(L, 1, MSGLOG_MT);
    msglog_abandon(u->ml);
    u->ml = NULL;
    return 0;
}

/* log:record(envelope_table, pending) -> true | false */
static int l_record(lua_State *L) {
    struct msglog *ml = checkml(L);
    struct bus_envelope e;
    bus_lua_check_envelope(L, 2, &e);
    int rc = msglog_record(ml, &e, lua_toboolean(L, 3));
    bus_envelope_clear(&e);
    lua_pushboolean(L, rc == 0);
    return 1;
}

static int l_handled(lua_State *L) {
    lua_pushboolean(L, msglog_handled(checkml(L), luaL_checkstring(L, 2), luaL_checkstring(L, 3)) == 0);
    return 1;
}

static int l_flush(lua_State *L) {
    lua_Integer ms = luaL_optinteger(L, 2, 5000);
    luaL_argcheck(L, ms >= 0 && ms <= 600000, 2, "timeout must be 0..600000 ms");
    lua_pushboolean(L, msglog_flush(checkml(L), (int)ms) == 0);
    return 1;
}

struct collected {
    struct bus_envelope **v;
    size_t n, cap;
};

static void collect(void *ud, struct bus_envelope *env) {
    struct collected *c = ud;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct bus_envelope **v = realloc(c->v, cap * sizeof *v);
        if (!v) {
            bus_envelope_free(env);
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = env;
}

/* log:redeliver() -> {envelope, ...} (in order) | nil, err */
static int l_redeliver(lua_State *L) {
    struct msglog *ml = checkml(L);
    struct collected c = {NULL, 0, 0};
    char err[512];
    int n = msglog_redeliver(ml, collect, &c, err, sizeof err);
    if (n < 0) {
        for (size_t i = 0; i < c.n; i++) bus_envelope_free(c.v[i]);
        free(c.v);
        luaL_pushfail(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_createtable(L, (int)c.n, 0); /* stack: list */
    for (size_t i = 0; i < c.n; i++) {
        bus_lua_push_envelope(L, c.v[i]); /* stack: list, env */
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        bus_envelope_free(c.v[i]);
    }
    free(c.v);
    return 1;
}

static int l_stats(lua_State *L) {
    struct msglog_stats s;
    msglog_stats(checkml(L), &s);
    lua_createtable(L, 0, 6);
    const char *names[] = {"written", "dropped", "failed_batches", "reconnects", "rejected", "queued"};
    lua_Integer vals[] = {(lua_Integer)s.written, (lua_Integer)s.dropped, (lua_Integer)s.failed_batches,
                          (lua_Integer)s.reconnects, (lua_Integer)s.rejected, (lua_Integer)s.queued};
    for (int i = 0; i < 6; i++) {
        lua_pushinteger(L, vals[i]);
        lua_setfield(L, -2, names[i]);
    }
    return 1;
}

void msglog_lua_register(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"record", l_record},       {"handled", l_handled}, {"flush", l_flush},     {"redeliver", l_redeliver},
        {"stats", l_stats},         {"close", l_close},     {"abandon", l_abandon}, {NULL, NULL},
    };
    if (luaL_newmetatable(L, MSGLOG_MT)) { /* stack: core, mt */
        luaL_newlib(L, methods);           /* stack: core, mt, methods */
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1); /* stack: core */
    lua_pushcfunction(L, l_msglog_new);
    lua_setfield(L, -2, "msglog_new");
}
