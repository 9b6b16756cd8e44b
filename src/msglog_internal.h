/* msglog_internal — what the message log's files share (not for other units): the queue item,
 * the log itself, and the calls between msglog.c (queue, writer thread, life cycle, Lua
 * binding), msglog_pg.c (sessions, the instance lock and registration, redelivery claims) and
 * msglog_batch.c (a batch as SQL, written with retries). Uses bus, db, jansson, libpq. */
#ifndef ORRERY_MSGLOG_INTERNAL_H
#define ORRERY_MSGLOG_INTERNAL_H

#include <pthread.h>
#include <stddef.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "bus.h"
#include "db.h"
#include "msglog.h"

#define BATCH_MAX 500          /* items per transaction */
#define ATTEMPTS_MAX 5         /* tries of a batch whose connection keeps failing */
#define CARRY_MAX 4096         /* handled marks kept waiting for their record */
#define CARRY_TTL_MS 60000
#define IDLE_CHECK_MS 1000     /* how often an idle writer looks at its connection */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

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

/* The instance i is alive: some session of this database holds the advisory lock
 * pg_try_advisory_lock(i.lock_key) took. PostgreSQL shows an int8 key as classid = its high 32
 * bits, objid = its low 32 bits, objsubid = 1 (two int4 keys show objsubid = 2). */
#define MSGLOG_ALIVE(i)                                                                                        \
    "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "  \
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "                \
    "AND l.classid = ((" i ".lock_key >> 32) & 4294967295)::oid AND l.objid = (" i ".lock_key & 4294967295)::oid)"

/* ---- msglog.c ---- */

/* Monotonic clock, milliseconds. */
long long msglog_mono_ms(void);
/* pthread_cond_timedwait until deadline (monotonic ms; the conditions use CLOCK_MONOTONIC). */
int msglog_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, long long deadline);

/* ---- msglog_pg.c ---- */

/* SQLSTATE of a failed result, or "". */
const char *msglog_sqlstate(const PGresult *r);
/* A session of its own (keepalives, statement_timeout, application_name orrery-msglog); caller
 * PQfinish()es. NULL with err when the server cannot be reached. */
PGconn *msglog_pg_connect(const char *url, char *err, size_t errlen);
/* BEGIN; set_config('orrery.ctx','system',true); stmts (n <= 9); COMMIT in one round trip.
 * results[i] for stmts[i] (caller clears; may be NULL). -1 when all succeeded, else the index of
 * the failed statement (n = the COMMIT), rolled back. */
int msglog_run_tx(PGconn *conn, const struct db_stmt *stmts, int n, PGresult **results);
/* Takes the instance lock and registers ml->instance on conn (first: a new run). 0, or -1 with err. */
int msglog_register(struct msglog *ml, PGconn *conn, int first, char *err, size_t errlen);
/* Should the writer give up (idle: as soon as it is told to stop; holding a batch: at the
 * shutdown deadline)? Takes ml->mu. */
int msglog_quitting(struct msglog *ml, int idle);
/* Writer thread: makes ml->conn live and registered, retrying with backoff. 0, or -1 when told
 * to quit first (idle: on stop; holding a batch: at the shutdown deadline). */
int msglog_ensure_connected(struct msglog *ml, int idle);

/* ---- msglog_batch.c (writer thread) ---- */

/* Writes items (still the caller's) as one transaction, or row by row when a statement refuses
 * it. The records written, or -1 when the batch was given up. */
long msglog_write_batch(struct msglog *ml, const struct item *items);
/* Forgets carried handled marks whose record never came. */
void msglog_expire_carried(struct msglog *ml);

#endif
