/* msglog — see msglog.h. One mutex guards the queue (a FIFO of owned items) and the counters;
 * callers only copy under it. The writer takes up to BATCH_MAX items once the oldest waited
 * flush_ms (or at once for a flush or shutdown), turns them into one JSON array and writes it in
 * one transaction, in one round trip (libpq pipeline): INSERT ... SELECT FROM jsonb_to_recordset,
 * then the handled marks as one UPDATE. A batch that a statement refuses is written again row by
 * row, so one bad row costs itself, not its neighbours; a batch that keeps losing its connection
 * is given up after ATTEMPTS_MAX tries. The connection, the lock key and the carried marks
 * belong to the writer thread while it runs. */
#include "msglog.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <lauxlib.h>
#include <libpq-fe.h>
#include <lua.h>

#include "bus_lua.h"
#include "db.h"
#include "log.h"
#include "lua_core.h"

#define BATCH_MAX 500          /* items per transaction */
#define ATTEMPTS_MAX 5         /* tries of a batch whose connection keeps failing */
#define CARRY_MAX 4096         /* handled marks kept waiting for their record */
#define CARRY_TTL_MS 60000
#define IDLE_CHECK_MS 1000     /* how often an idle writer looks at its connection */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CLAIM_CHUNK "1000"     /* rows claimed per redelivery transaction */
#define CLAIM_CHUNK_N 1000

enum { ITEM_TRACE, ITEM_PENDING, ITEM_HANDLED };

struct item {
    struct item *next;
    int kind;
    unsigned long seq;
    long long at_ms;          /* monotonic, when queued */
    struct bus_envelope env;  /* a copy (content owned); ITEM_HANDLED: only id and receiver */
};

struct msglog {
    char *url;                /* owned; holds the password, so it is never logged */
    char instance[37];
    char hostname[256];
    char started[40];         /* this run's registration, UTC "YYYY-MM-DD HH:MI:SS.US" (database clock) */
    long long lock_key;       /* the writer's while it runs */
    PGconn *conn;             /* the writer's while it runs (owned) */
    json_t *carried;          /* writer only: "id|receiver" -> expiry (monotonic ms) of unmatched marks */
    size_t queue_max;
    int flush_ms;
    pthread_t thread;

    pthread_mutex_t mu;       /* guards everything below */
    pthread_cond_t wake;      /* to the writer: items, a flush, stop */
    pthread_cond_t done;      /* to flushers: done_seq moved */
    struct item *head, *tail;
    size_t queued;
    unsigned long enq_seq;    /* seq of the last item queued */
    unsigned long done_seq;   /* every item up to it was written or given up */
    unsigned long flush_seq;  /* a flusher waits for this one: write without waiting flush_ms */
    unsigned long failed_lo, failed_hi; /* seq range of the last batch given up */
    int stop, abandon;
    long long stop_deadline;
    struct msglog_stats st;
};

/* ---- Small helpers ---- */

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits on cv until deadline (monotonic ms). Returns pthread_cond_timedwait's result. */
static int wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, long long deadline) {
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

/* "id|receiver" with the id lower-cased: the key a row and its handled marks share. */
static void row_key(char out[104], const char *id, const char *receiver) {
    size_t i = 0;
    for (; id[i] && i < 36; i++) out[i] = (char)(id[i] >= 'A' && id[i] <= 'F' ? id[i] - 'A' + 'a' : id[i]);
    out[i++] = '|';
    snprintf(out + i, 104 - i, "%s", receiver);
}

/* libpq's message (several lines, tab-indented) as one line for logs and err: every run of
 * whitespace becomes one space. */
static void one_line(char *dst, size_t len, const char *msg) {
    if (!len) return;
    if (!msg || !*msg) msg = "unknown error";
    size_t n = 0;
    int space = 0;
    for (const char *p = msg; *p && n + 1 < len; p++) {
        if (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t') {
            space = n > 0;
            continue;
        }
        if (space && n + 2 < len) dst[n++] = ' ';
        space = 0;
        dst[n++] = *p;
    }
    dst[n] = '\0';
}

static const char *sqlstate(const PGresult *r) {
    const char *s = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

static void notice_to_log(void *arg, const char *message) {
    (void)arg;
    char msg[512];
    one_line(msg, sizeof msg, message);
    log_debug("msglog: %s", msg);
}

static long long random_key(void) {
    unsigned long long k = 0;
    if (getrandom(&k, sizeof k, 0) != (ssize_t)sizeof k) k = (unsigned long long)mono_ms() * 2654435761ULL;
    return (long long)k;
}

/* ---- The connection: lock, registration, transactions ---- */

/* The instance i is alive: some session of this database holds the advisory lock
 * pg_try_advisory_lock(i.lock_key) took. PostgreSQL shows an int8 key as classid = its high 32
 * bits, objid = its low 32 bits, objsubid = 1 (two int4 keys show objsubid = 2). */
#define ALIVE(i)                                                                                        \
    "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "  \
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "                \
    "AND l.classid = ((" i ".lock_key >> 32) & 4294967295)::oid AND l.objid = (" i ".lock_key & 4294967295)::oid)"

static PGconn *pg_connect(const char *url, char *err, size_t errlen) {
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
    one_line(msg, sizeof msg, conn ? PQerrorMessage(conn) : "out of memory");
    snprintf(err, errlen, "database unavailable: %s", msg);
    PQfinish(conn);
    return NULL;
}

/* As in db.c: an idle connection has nothing to read; if the socket is readable the server spoke
 * first (almost always the FATAL of a shutdown). One poll(), no round trip. */
static int looks_alive(PGconn *conn) {
    if (!conn || PQstatus(conn) != CONNECTION_OK) return 0;
    for (int i = 0; i < 4; i++) {
        struct pollfd pfd = {.fd = PQsocket(conn), .events = POLLIN};
        if (pfd.fd < 0) return 0;
        int r = poll(&pfd, 1, 0);
        if (r == 0) return 1;
        if (r < 0) return errno == EINTR;
        if (!PQconsumeInput(conn) || PQstatus(conn) != CONNECTION_OK) return 0;
    }
    return PQstatus(conn) == CONNECTION_OK;
}

/* Runs stmts inside BEGIN; set_config('orrery.ctx','system',true); ...; COMMIT in one round
 * trip. results[i] is stmts[i]'s result (caller clears; may be NULL). Returns -1 when all
 * succeeded, else the index of the failed statement (n = the COMMIT) after rolling back. */
static int run_tx(PGconn *conn, const struct db_stmt *stmts, int n, PGresult **results) {
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
static int register_instance(struct msglog *ml, PGconn *conn, int first, char *err, size_t errlen) {
    char key[24];
    for (int attempt = 0; attempt < 8; attempt++) {
        if (first || attempt > 0) ml->lock_key = random_key();
        snprintf(key, sizeof key, "%lld", ml->lock_key);
        const char *kp[1] = {key};
        PGresult *r = PQexecParams(conn, "SELECT pg_try_advisory_lock($1::bigint)", 1, NULL, kp, NULL, NULL, 0);
        int locked = db_ok(r) && PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
        if (!db_ok(r)) {
            char msg[256];
            one_line(msg, sizeof msg, PQresultErrorMessage(r));
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
            ALIVE("i") ") "
            "ON CONFLICT (id) DO UPDATE SET lock_key = EXCLUDED.lock_key, hostname = EXCLUDED.hostname, "
            "started_at = CASE WHEN $4::boolean THEN now() ELSE a.started_at END "
            "RETURNING to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
            4, p};
        PGresult *res;
        int failed = run_tx(conn, &st, 1, &res);
        if (failed < 0 && PQntuples(res) == 1) {
            if (first) snprintf(ml->started, sizeof ml->started, "%s", PQgetvalue(res, 0, 0));
            PQclear(res);
            return 0;
        }
        int taken = failed < 0, collision = !strcmp(sqlstate(res), "23505");
        char msg[256];
        one_line(msg, sizeof msg, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
        PQclear(res);
        PQclear(PQexecParams(conn, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, kp, NULL, NULL, 0));
        if (taken) {
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
    it->at_ms = mono_ms();
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

/* ---- Writing a batch ---- */

/* One batch as the statements take it. */
struct batch {
    json_t *rows;    /* [{id, receiver, ..., content (JSON text), created_at, state}] */
    json_t *index;   /* row key -> position in rows */
    json_t *marks;   /* [{id, receiver}] for the UPDATE: marks whose record is not in this batch */
    json_t *users;   /* user id -> true: rows to insert only if the user still exists */
    json_t *used;    /* carried marks this batch resolves (removed once it is written) */
};

static json_t *str(const char *s) { return json_string(s); } /* NULL for invalid UTF-8 */

static json_t *row_json(const struct item *it, const char *state) {
    const struct bus_envelope *e = &it->env;
    double at = e->created_at;
    if (!isfinite(at) || at <= 0 || at > 1e11) { /* to_timestamp must accept it: out of range means now */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
    json_t *o = json_object();
    if (!o) return NULL;
    json_t *content = json_null();
    if (e->content) {
        /* Validated here, kept as text: PostgreSQL parses it (numbers exact) as jsonb. */
        json_t *v = json_loads(e->content, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
        json_decref(v);
        content = v ? str(e->content) : NULL;
    }
    const char *names[] = {"id", "receiver", "performative", "sender", "topic", "conversation_id",
                           "reply_with", "in_reply_to"};
    const char *vals[] = {e->id, e->receiver, e->performative, e->sender, e->topic, e->conversation_id,
                          e->reply_with, e->in_reply_to};
    /* json_object_set_new takes its value even when it fails; a NULL value makes it fail. */
    int ok = json_object_set_new(o, "content", content) == 0;
    for (size_t i = 0; ok && i < sizeof names / sizeof names[0]; i++)
        ok = json_object_set_new(o, names[i], str(vals[i])) == 0;
    ok = ok && json_object_set_new(o, "user_id", e->user_id[0] ? json_string(e->user_id) : json_null()) == 0 &&
         json_object_set_new(o, "created_at", json_real(at)) == 0 &&
         json_object_set_new(o, "state", json_string(state)) == 0;
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void batch_free(struct batch *b) {
    json_decref(b->rows);
    json_decref(b->index);
    json_decref(b->marks);
    json_decref(b->users);
    json_decref(b->used);
}

/* Turns items into b (items stay the caller's). A pending record whose handled mark is in the
 * batch (before or after it) or carried from an earlier batch is inserted as 'handled'. */
static int batch_build(struct msglog *ml, const struct item *items, struct batch *b, unsigned long *rejected) {
    b->rows = json_array();
    b->index = json_object();
    b->marks = json_array();
    b->users = json_object();
    b->used = json_object();
    json_t *mark_keys = json_object();
    if (!b->rows || !b->index || !b->marks || !b->users || !b->used || !mark_keys) {
        json_decref(mark_keys);
        return -1;
    }
    char key[104];
    for (const struct item *it = items; it; it = it->next) {
        row_key(key, it->env.id, it->env.receiver);
        json_t *at = json_object_get(b->index, key);
        json_t *row = at ? json_array_get(b->rows, (size_t)json_integer_value(at)) : NULL;
        const char *state = row ? json_string_value(json_object_get(row, "state")) : NULL;
        if (it->kind == ITEM_HANDLED) {
            if (state && !strcmp(state, "pending")) {
                json_object_set_new(row, "state", json_string("handled"));
            } else if (!json_object_get(mark_keys, key)) {
                json_object_set_new(mark_keys, key, json_true());
                json_array_append_new(b->marks, json_pack("{s:s, s:s}", "id", it->env.id, "receiver", it->env.receiver));
            }
            continue;
        }
        const char *want = it->kind == ITEM_PENDING ? "pending" : "trace";
        if (it->kind == ITEM_PENDING && (json_object_get(mark_keys, key) || json_object_get(ml->carried, key))) {
            want = "handled";
            if (json_object_get(ml->carried, key)) json_object_set_new(b->used, key, json_true());
        }
        if (row) { /* the same delivery twice: the first row stands, a pending one outranks a trace */
            if (!strcmp(state, "trace") && strcmp(want, "trace")) json_object_set_new(row, "state", json_string(want));
            continue;
        }
        json_t *o = row_json(it, want);
        if (!o) {
            (*rejected)++;
            log_warn("msglog: envelope %s for '%s' not recorded: invalid UTF-8 or content not JSON", it->env.id,
                     it->env.receiver);
            continue;
        }
        json_object_set_new(b->index, key, json_integer((json_int_t)json_array_size(b->rows)));
        json_array_append_new(b->rows, o);
        if (it->env.user_id[0]) json_object_set_new(b->users, it->env.user_id, json_true());
    }
    json_decref(mark_keys);
    return 0;
}

enum { WR_OK = 0, WR_REFUSED = 1, WR_LOST = 2 };

static const char SQL_USERS[] =
    /* Read as 'admin' (users are not 'system' rows): which of the batch's users still exist, so a
     * user deleted meanwhile loses their rows instead of failing everyone's batch. */
    "SELECT set_config('orrery.msglog_users', coalesce((SELECT string_agg(u.id::text, ',') FROM users u "
    "WHERE u.id IN (SELECT value::uuid FROM jsonb_array_elements_text($1::jsonb))), ''), true)";

static const char SQL_INSERT[] =
    "INSERT INTO agent_messages (id, receiver, performative, sender, topic, conversation_id, reply_with, "
    "in_reply_to, user_id, content, created_at, instance, state) "
    "SELECT x.id, x.receiver, x.performative, x.sender, x.topic, x.conversation_id, x.reply_with, x.in_reply_to, "
    "x.user_id, x.content::jsonb, to_timestamp(x.created_at), $2::uuid, x.state "
    "FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, receiver text, performative text, sender text, "
    "topic text, conversation_id text, reply_with text, in_reply_to text, user_id uuid, content text, "
    "created_at double precision, state text)) WITH ORDINALITY AS x(id, receiver, performative, sender, topic, "
    "conversation_id, reply_with, in_reply_to, user_id, content, created_at, state, n) "
    "WHERE x.user_id IS NULL OR x.user_id = ANY (string_to_array(current_setting('orrery.msglog_users', true), ',')::uuid[]) "
    "ORDER BY x.n "
    "ON CONFLICT (id, receiver) DO NOTHING";

/* Marks whose row does not exist (yet) come back, to be carried to later batches. */
static const char SQL_HANDLED[] =
    "WITH h AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS h(id uuid, receiver text)), "
    "u AS (UPDATE agent_messages m SET state = 'handled' FROM h WHERE m.id = h.id AND m.receiver = h.receiver "
    "AND m.state IN ('pending', 'redelivered') RETURNING m.id) "
    "SELECT h.id::text, h.receiver FROM h "
    "WHERE NOT EXISTS (SELECT 1 FROM agent_messages m WHERE m.id = h.id AND m.receiver = h.receiver)";

/* One transaction: rows (JSON array text or NULL), users (JSON array text or NULL), marks (JSON
 * array text or NULL). Unmatched marks go to ml->carried. WR_OK, WR_REFUSED (a statement failed on
 * a live connection: sqlstate/msg say why) or WR_LOST (the connection is gone). */
static int write_tx(struct msglog *ml, const char *rows, const char *users, const char *marks, char *why,
                    size_t whylen) {
    struct db_stmt st[6];
    int n = 0, handled_at = -1;
    const char *pu[1] = {users}, *pr[2] = {rows, ml->instance}, *pm[1] = {marks};
    if (users) {
        st[n++] = (struct db_stmt){"SELECT set_config('orrery.ctx', 'admin', true)", 0, NULL};
        st[n++] = (struct db_stmt){SQL_USERS, 1, pu};
        st[n++] = (struct db_stmt){"SELECT set_config('orrery.ctx', 'system', true)", 0, NULL};
    }
    if (rows) st[n++] = (struct db_stmt){SQL_INSERT, 2, pr};
    if (marks) {
        handled_at = n;
        st[n++] = (struct db_stmt){SQL_HANDLED, 1, pm};
    }
    if (!n) return WR_OK;
    PGresult *res[6];
    int failed = run_tx(ml->conn, st, n, res);
    int rc = WR_OK;
    if (failed >= 0) {
        PGresult *bad = failed < n ? res[failed] : NULL;
        const char *m = bad ? PQresultErrorMessage(bad) : "";
        char msg[320];
        one_line(msg, sizeof msg, *m ? m : PQerrorMessage(ml->conn));
        snprintf(why, whylen, "%s%s%s", bad ? sqlstate(bad) : "", bad ? ": " : "", msg);
        rc = PQstatus(ml->conn) == CONNECTION_OK ? WR_REFUSED : WR_LOST;
    } else if (handled_at >= 0) {
        long long expiry = mono_ms() + CARRY_TTL_MS;
        char key[104];
        for (int i = 0; i < PQntuples(res[handled_at]); i++) {
            if (json_object_size(ml->carried) >= CARRY_MAX) break;
            row_key(key, PQgetvalue(res[handled_at], i, 0), PQgetvalue(res[handled_at], i, 1));
            json_object_set_new(ml->carried, key, json_integer(expiry));
        }
    }
    for (int i = 0; i < n; i++) PQclear(res[i]);
    return rc;
}

/* Should the writer give up waiting (for a connection, or on a batch)? When idle (no batch in
 * hand), as soon as it is told to stop; with a batch, at the shutdown deadline. */
static int quitting(struct msglog *ml, int idle) {
    pthread_mutex_lock(&ml->mu);
    int q = ml->abandon || (ml->stop && (idle || mono_ms() >= ml->stop_deadline));
    pthread_mutex_unlock(&ml->mu);
    return q;
}

/* Makes sure the writer has a live, registered connection, retrying with backoff. 0, or -1 when
 * the writer is told to quit first. */
static int ensure_connected(struct msglog *ml, int idle) {
    if (ml->conn && PQstatus(ml->conn) == CONNECTION_OK) return 0;
    PQfinish(ml->conn);
    ml->conn = NULL;
    int backoff = BACKOFF_MIN_MS;
    for (;;) {
        if (quitting(ml, idle)) return -1;
        char err[512];
        PGconn *conn = pg_connect(ml->url, err, sizeof err);
        if (conn && register_instance(ml, conn, 0, err, sizeof err) == 0) {
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
        long long until = mono_ms() + backoff;
        while (!ml->abandon && !(ml->stop && (idle || mono_ms() >= ml->stop_deadline)) && mono_ms() < until)
            if (wait_until(&ml->wake, &ml->mu, ml->stop && ml->stop_deadline < until ? ml->stop_deadline : until) ==
                ETIMEDOUT)
                break;
        pthread_mutex_unlock(&ml->mu);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

static char *dump(json_t *v) { return json_dumps(v, JSON_COMPACT); }

/* Runs one transaction, reconnecting when the connection is lost; *attempts counts the losses.
 * WR_OK, WR_REFUSED, or WR_LOST when it gave up (too many losses, or told to quit). */
static int write_retrying(struct msglog *ml, const char *rows, const char *users, const char *marks, int *attempts,
                          char *why, size_t whylen) {
    for (;;) {
        if (ensure_connected(ml, 0) != 0) {
            snprintf(why, whylen, "shutting down without a connection");
            return WR_LOST;
        }
        int rc = write_tx(ml, rows, users, marks, why, whylen);
        if (rc != WR_LOST) return rc;
        log_warn("msglog: connection lost while writing (%s)", why);
        if (++*attempts >= ATTEMPTS_MAX || quitting(ml, 0)) return WR_LOST;
    }
}

/* Writes the items: the whole batch in one transaction; if a statement refuses it, row by row
 * (the marks last), so only the rows at fault are lost. Returns the records written, or -1 when
 * the batch was given up. */
static long write_batch(struct msglog *ml, const struct item *items) {
    struct batch b;
    unsigned long rejected = 0;
    long written = -1;
    int attempts = 0;
    char why[512] = "out of memory", *rows = NULL, *users = NULL, *marks = NULL;
    memset(&b, 0, sizeof b);
    if (batch_build(ml, items, &b, &rejected) != 0) goto done;
    size_t nrows = json_array_size(b.rows), nmarks = json_array_size(b.marks);
    if (json_object_size(b.users)) {
        json_t *ids = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(b.users, k, v) json_array_append_new(ids, json_string(k));
        users = dump(ids);
        json_decref(ids);
        if (!users) goto done;
    }
    if ((nrows && !(rows = dump(b.rows))) || (nmarks && !(marks = dump(b.marks)))) goto done;

    int rc = write_retrying(ml, rows, users, marks, &attempts, why, sizeof why);
    if (rc == WR_OK) written = (long)nrows;
    if (rc == WR_REFUSED) {
        log_warn("msglog: a batch of %zu rows was refused (%s); writing it row by row", nrows, why);
        written = 0;
        for (size_t i = 0; i < nrows && rc != WR_LOST; i++) {
            json_t *row = json_array_get(b.rows, i), *uid = json_object_get(row, "user_id");
            json_t *one = json_pack("[O]", row), *ids = json_is_string(uid) ? json_pack("[O]", uid) : NULL;
            char *r1 = one ? dump(one) : NULL, *u1 = ids ? dump(ids) : NULL;
            json_decref(one);
            json_decref(ids);
            rc = r1 && (!ids || u1) ? write_retrying(ml, r1, u1, NULL, &attempts, why, sizeof why) : WR_REFUSED;
            if (rc == WR_OK) {
                written++;
            } else if (rc == WR_REFUSED) {
                rejected++;
                log_warn("msglog: envelope %s for '%s' refused by the database: %s",
                         json_string_value(json_object_get(row, "id")),
                         json_string_value(json_object_get(row, "receiver")), why);
            }
            free(r1);
            free(u1);
        }
        if (rc != WR_LOST && marks) rc = write_retrying(ml, NULL, NULL, marks, &attempts, why, sizeof why);
        if (rc == WR_REFUSED) log_warn("msglog: %zu handled marks refused by the database: %s", nmarks, why);
        if (rc == WR_LOST) written = -1;
    }
    if (written >= 0) {
        const char *k;
        json_t *v;
        json_object_foreach(b.used, k, v) json_object_del(ml->carried, k);
    }
done:
    if (written < 0)
        log_warn("msglog: gave up a batch of %zu records and marks after %d tries: %s", json_array_size(b.rows) +
                 json_array_size(b.marks), attempts, why);
    free(rows);
    free(users);
    free(marks);
    batch_free(&b);
    if (rejected) {
        pthread_mutex_lock(&ml->mu);
        ml->st.rejected += rejected;
        pthread_mutex_unlock(&ml->mu);
    }
    return written;
}

/* Forgets carried marks whose record never came. */
static void expire_carried(struct msglog *ml) {
    long long now = mono_ms();
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(ml->carried, tmp, k, v) {
        if (json_integer_value(v) <= now) json_object_del(ml->carried, k);
    }
}

/* ---- The writer thread ---- */

static void *writer_main(void *arg) {
    struct msglog *ml = arg;
    pthread_mutex_lock(&ml->mu);
    for (;;) {
        if (ml->abandon || (ml->stop && mono_ms() >= ml->stop_deadline)) break;
        if (!ml->head) {
            if (ml->stop) break;
            if (wait_until(&ml->wake, &ml->mu, mono_ms() + IDLE_CHECK_MS) == ETIMEDOUT && !ml->head && !ml->stop) {
                /* Idle: notice a server that went away now, not at the next batch, so that the lock
                 * (this process's liveness) is back as soon as the server is. */
                pthread_mutex_unlock(&ml->mu);
                if (!looks_alive(ml->conn)) {
                    log_warn("msglog: the database connection was lost; reconnecting");
                    PQfinish(ml->conn);
                    ml->conn = NULL;
                    ensure_connected(ml, 1);
                }
                expire_carried(ml);
                pthread_mutex_lock(&ml->mu);
            }
            continue;
        }
        long long due = ml->head->at_ms + ml->flush_ms;
        while (!ml->stop && !ml->abandon && ml->flush_seq <= ml->done_seq && ml->queued < BATCH_MAX &&
               mono_ms() < due)
            wait_until(&ml->wake, &ml->mu, due);
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

        long written = write_batch(ml, first);
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
    if (!(ml->conn = pg_connect(url, err, errlen))) goto fail;
    if (register_instance(ml, ml->conn, 1, err, errlen) != 0) goto fail;
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
    ml->stop_deadline = mono_ms() + MSGLOG_SHUTDOWN_MS;
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
        if (run_tx(ml->conn, &st, 1, &r) >= 0) log_warn("msglog: could not remove instance %s", ml->instance);
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
    long long deadline = mono_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&ml->mu);
    unsigned long target = ml->enq_seq, from = ml->done_seq;
    if (ml->flush_seq < target) ml->flush_seq = target;
    pthread_cond_signal(&ml->wake);
    while (ml->done_seq < target && mono_ms() < deadline)
        if (wait_until(&ml->done, &ml->mu, deadline) == ETIMEDOUT) break;
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

/* ---- Redelivery ---- */

/* Claims (exactly once: the rows are locked FOR UPDATE SKIP LOCKED, and a row another claimer
 * changed first no longer says 'pending') the oldest CLAIM_CHUNK pending rows of processes that
 * are not alive. This process is alive, but its rows recorded before this run registered are
 * its previous run's. */
static const char SQL_CLAIM[] =
    "WITH live AS (SELECT i.id FROM agent_instances i WHERE i.id <> $1::uuid AND " ALIVE("i") "), "
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
    "DELETE FROM agent_instances i WHERE i.id <> $1::uuid AND NOT " ALIVE("i") " "
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
    PGconn *conn = pg_connect(ml->url, err, errlen);
    if (!conn) return -1;
    int total = 0;
    for (;;) {
        const char *p[3] = {ml->instance, ml->started, CLAIM_CHUNK};
        struct db_stmt st = {SQL_CLAIM, 3, p};
        PGresult *res;
        if (run_tx(conn, &st, 1, &res) >= 0) {
            char msg[384];
            one_line(msg, sizeof msg, res ? PQresultErrorMessage(res) : PQerrorMessage(conn));
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
    if (run_tx(conn, &st, 1, &res) >= 0) log_warn("msglog: could not remove dead instances: %s", sqlstate(res));
    PQclear(res);
    PQfinish(conn);
    if (total) log_info("msglog: %d pending messages of stopped processes redelivered", total);
    return total;
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
