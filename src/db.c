/* db — the libpq connection pool (see db.h for what it promises).
 * A slot array guarded by one mutex; a condition variable (on CLOCK_MONOTONIC, so a wall-clock
 * jump cannot stretch or cut a wait) wakes acquirers when a slot is given back. Connecting can
 * take up to connect_timeout seconds, so it always happens outside the mutex: the acquirer marks
 * the slot in use first, then connects, then stores the connection. */
#include "db.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "lua_core.h"

#include <lauxlib.h>

struct db_slot {
    PGconn *conn;  /* NULL until connected, or after a broken connection was dropped (owned) */
    int in_use;    /* checked out, or being connected by an acquirer */
};

struct db_pool {
    char *url;               /* owned; contains the password, so it is never logged */
    char *options;           /* libpq `options`: the per-session timeouts (owned) */
    int size;
    int timeout_ms;
    pthread_mutex_t mu;
    pthread_cond_t freed;    /* signalled when a slot becomes free */
    struct db_slot *slots;   /* size entries (owned) */
    unsigned long acquired;
    unsigned long timeouts;
    unsigned long failures;
};

/* ---- Helpers ---- */

void db_one_line(char *dst, size_t dstlen, const char *msg) {
    if (!dstlen) return;
    if (!msg || !*msg) msg = "unknown error";
    size_t n = 0;
    int space = 0;
    for (const char *p = msg; *p && n + 1 < dstlen; p++) {
        if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < dstlen) dst[n++] = ' ';
        space = 0;
        dst[n++] = *p;
    }
    dst[n] = '\0';
}

static void deadline_after(struct timespec *ts, int ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* An idle connection has nothing to read. If the socket is readable, the server spoke first:
 * almost always the FATAL "terminating connection" it sends when shutting down or restarting,
 * followed by EOF. Reading it lets libpq mark the connection bad, so a restart costs a
 * reconnect here instead of a failed request. One poll() per acquire, no round trip. */
int db_looks_alive(PGconn *conn) {
    if (!conn || PQstatus(conn) != CONNECTION_OK) return 0;
    for (int i = 0; i < 4; i++) {
        struct pollfd pfd = { .fd = PQsocket(conn), .events = POLLIN };
        if (pfd.fd < 0) return 0;
        int r = poll(&pfd, 1, 0);
        if (r == 0) return 1;
        if (r < 0) return errno == EINTR;
        if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK) return 0;
    }
    return PQstatus(conn) == CONNECTION_OK;
}

/* PostgreSQL NOTICEs would otherwise go to stderr as plain text, breaking the JSON log. */
static void notice_to_log(void *arg, const char *message) {
    (void)arg;
    char msg[512];
    db_one_line(msg, sizeof msg, message);
    log_debug("db: %s", msg);
}

/* Connects one session. Returns the connection (caller owns it), or NULL with err filled.
 * Runs without the pool mutex: it can block for up to connect_timeout seconds. */
static PGconn *connect_one(struct db_pool *pool, char *err, size_t errlen) {
    /* expand_dbname: the URL is split into its parameters; the keywords after it win. */
    const char *keys[] = { "dbname", "connect_timeout", "application_name", "options", NULL };
    const char *vals[] = { pool->url, "3", "orrery", pool->options, NULL };
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn && PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(conn, notice_to_log, NULL);
        return conn;
    }

    char msg[512];
    /* libpq's message names host and port but never the password; the URL itself is not logged. */
    db_one_line(msg, sizeof msg, conn ? PQerrorMessage(conn) : "out of memory");
    log_warn("db: cannot connect to the database: %s", msg);
    snprintf(err, errlen, "database unavailable: %s", msg);
    PQfinish(conn);
    return NULL;
}

/* ---- Pool ---- */

struct db_pool *db_pool_new(const char *url, int size, int timeout_ms) {
    if (!url || !*url || size < 1 || timeout_ms < 1) return NULL;

    struct db_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pthread_condattr_t ca;
    int have_ca = 0, have_mu = 0, have_cv = 0;

    pool->size = size;
    pool->timeout_ms = timeout_ms;
    pool->url = strdup(url);
    pool->slots = calloc((size_t)size, sizeof *pool->slots);
    if (asprintf(&pool->options, "-c statement_timeout=%d -c idle_in_transaction_session_timeout=%d",
                 timeout_ms, timeout_ms) < 0)
        pool->options = NULL;
    if (!pool->url || !pool->slots || !pool->options) goto fail;

    if (pthread_condattr_init(&ca) != 0) goto fail;
    have_ca = 1;
    if (pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0) goto fail;
    if (pthread_cond_init(&pool->freed, &ca) != 0) goto fail;
    have_cv = 1;
    if (pthread_mutex_init(&pool->mu, NULL) != 0) goto fail;
    have_mu = 1;
    pthread_condattr_destroy(&ca);
    return pool;

fail:
    if (have_ca) pthread_condattr_destroy(&ca);
    if (have_cv) pthread_cond_destroy(&pool->freed);
    if (have_mu) pthread_mutex_destroy(&pool->mu);
    free(pool->options);
    free(pool->slots);
    free(pool->url);
    free(pool);
    return NULL;
}

void db_pool_free(struct db_pool *pool) {
    if (!pool) return;
    for (int i = 0; i < pool->size; i++) {
        if (pool->slots[i].in_use) log_error("db: pool freed with a connection still checked out");
        PQfinish(pool->slots[i].conn);
    }
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->freed);
    free(pool->options);
    free(pool->slots);
    free(pool->url);
    free(pool);
}

/* Picks a free slot under the mutex, preferring one that already holds a connection so that
 * the pool does not open a new session while an idle one is available. Returns -1 if all busy. */
static int pick_slot(struct db_pool *pool) {
    int empty = -1;
    for (int i = 0; i < pool->size; i++) {
        if (pool->slots[i].in_use) continue;
        if (pool->slots[i].conn) return i;
        if (empty < 0) empty = i;
    }
    return empty;
}

PGconn *db_acquire(struct db_pool *pool, char *err, size_t errlen) {
    if (!pool) {
        snprintf(err, errlen, "no database pool");
        return NULL;
    }
    struct timespec deadline;
    deadline_after(&deadline, pool->timeout_ms);

    pthread_mutex_lock(&pool->mu);
    int i;
    while ((i = pick_slot(pool)) < 0) {
        /* Any error from timedwait (ETIMEDOUT, or EINVAL that would otherwise spin) ends the wait. */
        if (pthread_cond_timedwait(&pool->freed, &pool->mu, &deadline) != 0 && (i = pick_slot(pool)) < 0) {
            pool->timeouts++;
            pthread_mutex_unlock(&pool->mu);
            snprintf(err, errlen, "no database connection free within %d ms (pool of %d)", pool->timeout_ms,
                     pool->size);
            return NULL;
        }
        if (i >= 0) break;
    }
    struct db_slot *slot = &pool->slots[i];
    slot->in_use = 1;
    /* The slot is ours now; its connection is checked and (re)made without the mutex. */
    PGconn *conn = slot->conn;
    slot->conn = NULL;
    pthread_mutex_unlock(&pool->mu);

    if (conn && !db_looks_alive(conn)) {
        log_warn("db: dropping a broken idle connection");
        PQfinish(conn);
        conn = NULL;
    }
    if (!conn) conn = connect_one(pool, err, errlen);

    pthread_mutex_lock(&pool->mu);
    if (conn) {
        slot->conn = conn;
        pool->acquired++;
    } else {
        slot->in_use = 0;
        pool->failures++;
        pthread_cond_signal(&pool->freed);
    }
    pthread_mutex_unlock(&pool->mu);
    return conn;
}

void db_release(struct db_pool *pool, PGconn *conn) {
    if (!pool || !conn) return;
    /* A broken session, or one left inside a transaction (an error path that skipped ROLLBACK),
     * must not be handed to the next request: close it and let a later acquire reconnect. */
    int drop = PQstatus(conn) != CONNECTION_OK || PQtransactionStatus(conn) != PQTRANS_IDLE;

    pthread_mutex_lock(&pool->mu);
    int found = 0;
    for (int i = 0; i < pool->size; i++) {
        struct db_slot *slot = &pool->slots[i];
        if (slot->conn != conn || !slot->in_use) continue;
        if (drop) slot->conn = NULL;
        slot->in_use = 0;
        found = 1;
        break;
    }
    if (found) pthread_cond_signal(&pool->freed);
    pthread_mutex_unlock(&pool->mu);

    if (!found) {
        log_error("db: release of a connection that is not checked out of this pool");
        return;
    }
    if (drop) PQfinish(conn);  /* outside the mutex: it writes a Terminate message */
}

/* ---- Statements ---- */

PGresult *db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params) {
    PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    /* A server restart shows up here as a failed statement on a dead session. libpq has marked it
     * CONNECTION_BAD by now, so db_release will drop it and the next acquire reconnects. */
    if (!db_ok(res) && conn && PQstatus(conn) == CONNECTION_BAD) {
        char msg[512];
        db_one_line(msg, sizeof msg, PQerrorMessage(conn));
        log_warn("db: connection lost: %s", msg);
    }
    return res;
}

int db_exec_batch(PGconn *conn, const struct db_stmt *stmts, int n, PGresult **results) {
    for (int i = 0; i < n; i++) results[i] = NULL;
    if (!PQenterPipelineMode(conn)) {
        /* Not idle (should not happen): fall back to one round trip per statement. */
        for (int i = 0; i < n; i++) {
            results[i] = db_exec(conn, stmts[i].sql, stmts[i].nparams, stmts[i].params);
            if (!db_ok(results[i])) return i;
        }
        return -1;
    }
    int sent = 0;
    for (; sent < n; sent++)
        if (!PQsendQueryParams(conn, stmts[sent].sql, stmts[sent].nparams, NULL, stmts[sent].params, NULL, NULL, 0))
            break;
    int synced = PQpipelineSync(conn);
    int failed = sent < n ? sent : -1;
    /* Each statement's results end with a NULL; the sync point ends the batch. */
    for (int i = 0; i < sent; i++) {
        PGresult *r;
        while ((r = PQgetResult(conn)) != NULL) {
            if (!results[i]) results[i] = r;
            else PQclear(r);
        }
        if (!db_ok(results[i]) && (failed < 0 || i < failed)) failed = i;
    }
    /* A few NULLs may come before the sync point; a lost connection or failed sync ends it. */
    for (int guard = 0; synced && guard < 64; guard++) {
        PGresult *r = PQgetResult(conn);
        if (!r) {
            if (PQstatus(conn) != CONNECTION_OK) break;
            continue;
        }
        ExecStatusType st = PQresultStatus(r);
        PQclear(r);
        if (st == PGRES_PIPELINE_SYNC) break;
    }
    PQexitPipelineMode(conn);
    if (failed >= 0 && PQstatus(conn) == CONNECTION_BAD) {
        char msg[512];
        db_one_line(msg, sizeof msg, PQerrorMessage(conn));
        log_warn("db: connection lost: %s", msg);
    }
    return failed;
}

int db_ok(const PGresult *res) {
    if (!res) return 0;
    ExecStatusType st = PQresultStatus(res);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

void db_pool_stats(struct db_pool *pool, struct db_stats *out) {
    memset(out, 0, sizeof *out);
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    out->size = pool->size;
    for (int i = 0; i < pool->size; i++) {
        if (pool->slots[i].in_use) out->in_use++;
        if (pool->slots[i].conn) out->connected++;
    }
    out->acquired = pool->acquired;
    out->timeouts = pool->timeouts;
    out->failures = pool->failures;
    pthread_mutex_unlock(&pool->mu);
}

/* ---- orrery.core binding: what a pooled session looks like, for specs ---- */

/* core.db_session(url, timeout_ms [, sql]) -> {statement_timeout=..., idle_in_transaction_session_timeout=...,
 * application_name=..., sqlstate=<of sql, "" when it succeeded>} | nil, err. Opens a one-connection
 * pool exactly as the server does, so specs see the session settings it gets. */
static int l_db_session(lua_State *L) {
    const char *url = luaL_checkstring(L, 1);
    int timeout = (int)luaL_checkinteger(L, 2);
    const char *sql = luaL_optstring(L, 3, NULL);
    struct db_pool *pool = db_pool_new(url, 1, timeout);
    char err[256];
    PGconn *conn = pool ? db_acquire(pool, err, sizeof err) : NULL;
    if (!conn) {
        db_pool_free(pool);
        lua_pushnil(L);
        lua_pushstring(L, pool ? err : "bad arguments");
        return 2;
    }
    PGresult *r = db_exec(conn,
                          "SELECT current_setting('statement_timeout'), "
                          "current_setting('idle_in_transaction_session_timeout'), current_setting('application_name')",
                          0, NULL);
    lua_createtable(L, 0, 4);
    if (db_ok(r)) {
        lua_pushstring(L, PQgetvalue(r, 0, 0));
        lua_setfield(L, -2, "statement_timeout");
        lua_pushstring(L, PQgetvalue(r, 0, 1));
        lua_setfield(L, -2, "idle_in_transaction_session_timeout");
        lua_pushstring(L, PQgetvalue(r, 0, 2));
        lua_setfield(L, -2, "application_name");
    }
    PQclear(r);
    if (sql) {
        r = db_exec(conn, sql, 0, NULL);
        const char *st = db_ok(r) ? "" : PQresultErrorField(r, PG_DIAG_SQLSTATE);
        lua_pushstring(L, st ? st : "?");
        lua_setfield(L, -2, "sqlstate");
        PQclear(r);
    }
    db_release(pool, conn);
    db_pool_free(pool);
    return 1;
}

void db_lua_register(lua_State *L) {
    lua_pushcfunction(L, l_db_session);
    lua_setfield(L, -2, "db_session");
}
