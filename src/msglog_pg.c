/* msglog_pg — the message log's PostgreSQL side (see msglog_internal.h): its sessions, the
 * advisory lock that is a process's liveness and the agent_instances row that names it,
 * reconnecting with backoff, and the redelivery claims. Uses db (pipelines), libpq, log. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "msglog_internal.h"

#define CLAIM_CHUNK "1000"     /* rows claimed per redelivery transaction */
#define REGISTER_WAITS 20      /* 100 ms waits for a previous run's session to go */
#define CLAIM_CHUNK_N 1000

/* ---- Helpers ---- */

const char *msglog_sqlstate(const PGresult *r) {
    const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

static void notice_to_log(void *arg, const char *message) {
    (void)arg;
    char msg[512];
    db_one_line(msg, sizeof msg, message);
    log_debug("msglog: %s", msg);
}

static long long random_key(void) {
    unsigned long long k = 0;
    if (getrandom(&k, sizeof k, 0) != (ssize_t)sizeof k) k = (unsigned long long)msglog_mono_ms() * 2654435761ULL;
    return (long long)k;
}

/* ---- The connection: lock, registration, transactions ---- */

PGconn *msglog_pg_connect(const char *url, char *err, size_t errlen) {
    /* expand_dbname: the URL is split into its parameters; the keywords after it win. */
    /* Keepalives both ways: this side notices a vanished server, and the server drops the session
     * (and with it the lock: this process's liveness) of a host that vanished within ~25 s
     * instead of the kernel's two hours. Ignored on Unix sockets, where a crash closes at once. */
    const char *keys[] = {"dbname", "connect_timeout", "application_name", "options", "keepalives_idle",
                          "keepalives_interval", "keepalives_count", NULL};
    const char *vals[] = {url, "3", "orrery-msglog",
                          "-c statement_timeout=10000 -c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 "
                          "-c tcp_keepalives_count=3",
                          "10", "5", "3", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn && PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(conn, notice_to_log, NULL);
        return conn;
    }
    char msg[384];
    db_one_line(msg, sizeof msg, conn ? PQerrorMessage(conn) : "out of memory");
    snprintf(err, errlen, "database unavailable: %s", msg);
    PQfinish(conn);
    return NULL;
}

/* Runs stmts inside BEGIN; set_config('orrery.ctx','system',true); ...; COMMIT in one round
 * trip. results[i] is stmts[i]'s result (caller clears; may be NULL). Returns -1 when all
 * succeeded, else the index of the failed statement (n = the COMMIT) after rolling back. */
int msglog_run_tx(PGconn *conn, const struct db_stmt *stmts, int n, PGresult **results) {
    struct db_stmt all[12];
    PGresult *res[12];
    if (n > 9) { /* a programming error: the callers run at most 5 */
        for (int i = 0; i < n; i++) results[i] = NULL;
        return 0;
    }
    all[0] = (struct db_stmt){"BEGIN", 0, NULL};
    all[1] = (struct db_stmt){"SELECT set_config('orrery.ctx', 'system', true)", 0, NULL};
    for (int i = 0; i < n; i++) all[i + 2] = stmts[i];
    all[n + 2] = (struct db_stmt){"COMMIT", 0, NULL};
    int failed = db_exec_batch(conn, all, n + 3, res);
    for (int i = 0; i < n; i++) results[i] = res[i + 2];
    PQclear(res[0]);
    PQclear(res[1]);
    PQclear(res[n + 2]);
    if (failed >= 0 && PQstatus(conn) == CONNECTION_OK && PQtransactionStatus(conn) != PQTRANS_IDLE)
        PQclear(PQexec(conn, "ROLLBACK"));
    if (failed < 0) return -1;
    return failed < 2 ? 0 : failed - 2;
}

/* Takes the session advisory lock on a lock key and registers the instance with it, on conn.
 * first: a new run (a new key; refuse an instance id whose process is alive; started_at = now);
 * else a reconnect (the same key when it is free, and the row put back if it was removed).
 * 0, or -1 with err. */
int msglog_register(struct msglog *ml, PGconn *conn, int first, char *err, size_t errlen) {
    char key[24];
    int waits = 0;
    for (int attempt = 0; attempt < 8; attempt++) {
        if (first || attempt > 0) ml->lock_key = random_key();
        snprintf(key, sizeof key, "%lld", ml->lock_key);
        const char *kp[1] = {key};
        PGresult *r = PQexecParams(conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, kp, NULL, NULL, 0);
        int locked = db_ok(r) && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
        if (!db_ok(r)) {
            char msg[256];
            db_one_line(msg, sizeof msg, PQresultErrorMessage(r));
            snprintf(err, errlen, "cannot take the instance lock: %s", msg);
            PQclear(r);
            return -1;
        }
        PQclear(r);
        if (!locked) continue; /* held by another session: draw another key */
        const char *p[4] = {ml->instance, key, ml->hostname, first ? "t" : "f"};
        struct db_stmt st = {
            "INSERT INTO agent_instances AS a (id, lock_key, hostname) SELECT $1::uuid, $2::bigint, $3 "
            "WHERE $4::boolean IS NOT TRUE OR NOT EXISTS (SELECT 1 FROM agent_instances i WHERE i.id = $1::uuid AND "
            MSGLOG_ALIVE("i") ") "
            "ON CONFLICT (id) DO UPDATE SET lock_key = EXCLUDED.lock_key, hostname = EXCLUDED.hostname, "
            "started_at = CASE WHEN $4::boolean THEN now() ELSE a.started_at END "
            "RETURNING to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
            4, p};
        PGresult *res;
        int failed = msglog_run_tx(conn, &st, 1, &res);
        if (failed < 0 && PQntuples(res) == 1) {
            if (first) snprintf(ml->started, sizeof ml->started, "%s", PQgetvalue(res, 0, 0));
            PQclear(res);
            return 0;
        }
        int taken = failed < 0, collision = !strcmp(msglog_sqlstate(res), "23505");
        char msg[256];
        db_one_line(msg, sizeof msg, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        PQclear(res);
        PQclear(PQexecParams(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, kp, NULL, NULL, 0));
        if (taken) {
            /* A session whose client just went away (a crash, then a quick restart) still holds its
             * locks until its backend has exited: a few milliseconds, so wait a little first. */
            if (++waits <= REGISTER_WAITS) {
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
                attempt--;
                continue;
            }
            snprintf(err, errlen, "instance %s is already running (its lock is held)", ml->instance);
            return -1;
        }
        if (!collision) {
            snprintf(err, errlen, "cannot register the instance: %s", msg);
            return -1;
        }
    }
    snprintf(err, errlen, "no free lock key after 8 tries");
    return -1;
}

/* ---- Reconnecting ---- */

/* Should the writer give up waiting (for a connection, or on a batch)? When idle (no batch in
 * hand), as soon as it is told to stop; with a batch, at the shutdown deadline. */
int msglog_quitting(struct msglog *ml, int idle) {
    pthread_mutex_lock(&ml->mu);
    int q = ml->abandon || (ml->stop && (idle || msglog_mono_ms() >= ml->stop_deadline));
    pthread_mutex_unlock(&ml->mu);
    return q;
}

/* Makes sure the writer has a live, registered connection, retrying with backoff. 0, or -1 when
 * the writer is told to quit first. */
int msglog_ensure_connected(struct msglog *ml, int idle) {
    if (ml->conn && PQstatus(ml->conn) == CONNECTION_OK) return 0;
    PQfinish(ml->conn);
    ml->conn = NULL;
    int backoff = BACKOFF_MIN_MS;
    for (;;) {
        if (msglog_quitting(ml, idle)) return -1;
        char err[512];
        PGconn *conn = msglog_pg_connect(ml->url, err, sizeof err);
        if (conn && msglog_register(ml, conn, 0, err, sizeof err) == 0) {
            ml->conn = conn;
            pthread_mutex_lock(&ml->mu);
            ml->st.reconnects++;
            pthread_mutex_unlock(&ml->mu);
            log_info("msglog: reconnected; instance %s holds its lock again", ml->instance);
            return 0;
        }
        PQfinish(conn);
        log_warn("msglog: %s; retrying in %d ms", err, backoff);
        pthread_mutex_lock(&ml->mu);
        long long until = msglog_mono_ms() + backoff;
        long long wake_at = ml->stop && ml->stop_deadline < until ? ml->stop_deadline : until;
        while (!ml->abandon && !(ml->stop && (idle || msglog_mono_ms() >= ml->stop_deadline)) &&
               msglog_mono_ms() < until)
            if (msglog_wait_until(&ml->wake, &ml->mu, wake_at) == ETIMEDOUT) break;
        pthread_mutex_unlock(&ml->mu);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/* ---- Redelivery ---- */

/* Claims (exactly once: the rows are locked FOR UPDATE SKIP LOCKED, and a row another claimer
 * changed first no longer says 'pending') the oldest CLAIM_CHUNK pending rows of processes that
 * are not alive. This process is alive, but its rows recorded before this run registered are
 * its previous run's. */
static const char SQL_CLAIM[] =
    "WITH live AS (SELECT i.id FROM agent_instances i WHERE i.id <> $1::uuid AND " MSGLOG_ALIVE("i") "), "
    "todo AS (SELECT m.id, m.receiver FROM agent_messages m WHERE m.state = 'pending' "
    "AND m.instance NOT IN (SELECT id FROM live) "
    "AND (m.instance <> $1::uuid OR m.recorded_at < ($2::timestamp AT TIME ZONE 'UTC')) "
    "ORDER BY m.created_at, m.seq LIMIT $3::int FOR UPDATE OF m SKIP LOCKED), "
    "claimed AS (UPDATE agent_messages m SET state = 'redelivered', instance = $1::uuid FROM todo "
    "WHERE m.id = todo.id AND m.receiver = todo.receiver AND m.state = 'pending' "
    "RETURNING m.id, m.receiver, m.performative, m.sender, m.topic, m.conversation_id, m.reply_with, "
    "m.in_reply_to, m.user_id, m.content, m.created_at, m.seq) "
    "SELECT id::text, receiver, performative, sender, topic, conversation_id, reply_with, in_reply_to, "
    "coalesce(user_id::text, ''), content::text, extract(epoch FROM created_at)::float8 "
    "FROM claimed ORDER BY created_at, seq";

/* Dead processes whose pending rows are all claimed: nothing refers to them any more. */
static const char SQL_FORGET[] =
    "DELETE FROM agent_instances i WHERE i.id <> $1::uuid AND NOT " MSGLOG_ALIVE("i") " "
    "AND NOT EXISTS (SELECT 1 FROM agent_messages m WHERE m.instance = i.id AND m.state = 'pending')";

/* Row r of a claim as a new envelope, or NULL when a value does not fit (a row not written by
 * msglog) or memory runs out. */
static struct bus_envelope *row_envelope(const PGresult *res, int r) {
    struct bus_envelope *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    char *dst[] = {e->id, e->receiver, e->performative, e->sender, e->topic, e->conversation_id,
                   e->reply_with, e->in_reply_to, e->user_id};
    size_t size[] = {sizeof e->id, sizeof e->receiver, sizeof e->performative, sizeof e->sender, sizeof e->topic,
                     sizeof e->conversation_id, sizeof e->reply_with, sizeof e->in_reply_to, sizeof e->user_id};
    for (int c = 0; c < 9; c++) {
        const char *v = PQgetvalue(res, r, c);
        if (strlen(v) >= size[c]) {
            free(e);
            return NULL;
        }
        memcpy(dst[c], v, strlen(v) + 1);
    }
    if (!PQgetisnull(res, r, 9) && !(e->content = strdup(PQgetvalue(res, r, 9)))) {
        free(e);
        return NULL;
    }
    e->created_at = strtod(PQgetvalue(res, r, 10), NULL);
    return e;
}

int msglog_redeliver(struct msglog *ml, void (*fn)(void *ud, struct bus_envelope *env), void *ud, char *err,
                     size_t errlen) {
    if (!ml || !fn) {
        snprintf(err, errlen, "msglog_redeliver: no log or no callback");
        return -1;
    }
    PGconn *conn = msglog_pg_connect(ml->url, err, errlen);
    if (!conn) return -1;
    int total = 0;
    for (;;) {
        const char *p[3] = {ml->instance, ml->started, CLAIM_CHUNK};
        struct db_stmt st = {SQL_CLAIM, 3, p};
        PGresult *res;
        if (msglog_run_tx(conn, &st, 1, &res) >= 0) {
            char msg[384];
            db_one_line(msg, sizeof msg, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
            snprintf(err, errlen, "claiming pending messages failed: %s", msg);
            PQclear(res);
            PQfinish(conn);
            return -1;
        }
        int n = PQntuples(res);
        for (int r = 0; r < n; r++) {
            struct bus_envelope *e = row_envelope(res, r);
            if (!e) {
                log_warn("msglog: pending message %s for '%s' cannot be redelivered (a value does not fit)",
                         PQgetvalue(res, r, 0), PQgetvalue(res, r, 1));
                continue;
            }
            fn(ud, e);
            total++;
        }
        PQclear(res);
        if (n < CLAIM_CHUNK_N) break;
    }
    const char *p[1] = {ml->instance};
    struct db_stmt st = {SQL_FORGET, 1, p};
    PGresult *res;
    if (msglog_run_tx(conn, &st, 1, &res) >= 0)
        log_warn("msglog: could not remove dead instances: %s", msglog_sqlstate(res));
    PQclear(res);
    PQfinish(conn);
    if (total) log_info("msglog: %d pending messages of stopped processes redelivered", total);
    return total;
}

