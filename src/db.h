/* db — a fixed-size pool of libpq connections shared by the HTTP workers.
 * Connections are made lazily and remade after the server went away, so Orrery starts and keeps
 * serving while PostgreSQL is down (requests needing the database then fail with 503) and
 * recovers by itself when it is back. Every query is parameterized (PQexecParams).
 * Uses libpq and log. */
#ifndef ORRERY_DB_H
#define ORRERY_DB_H

#include <libpq-fe.h>
#include <stddef.h>

struct db_pool;

struct db_stats {
    int size;                  /* configured connections */
    int in_use;                /* checked out right now */
    int connected;             /* open connections (in use or idle) */
    unsigned long acquired;    /* successful acquires since start */
    unsigned long timeouts;    /* acquires that gave up waiting for a free connection */
    unsigned long failures;    /* connection attempts that failed */
};

/* Creates a pool of `size` connections to url; nothing connects yet. timeout_ms bounds both the
 * wait for a free connection and each statement (statement_timeout), and sets
 * idle_in_transaction_session_timeout. Returns NULL on bad arguments. Caller owns the pool. */
struct db_pool *db_pool_new(const char *url, int size, int timeout_ms);
/* Closes every connection. Callers must have released theirs. Accepts NULL. */
void db_pool_free(struct db_pool *pool);

/* Checks out a connected connection, waiting at most timeout_ms for one to be free.
 * Returns NULL with a reason in err when none is free in time or the server cannot be reached.
 * The caller must give it back with db_release. */
PGconn *db_acquire(struct db_pool *pool, char *err, size_t errlen);
/* Returns a connection. A broken one (or one left inside a transaction) is closed and will be
 * reconnected by a later acquire. */
void db_release(struct db_pool *pool, PGconn *conn);

/* Runs one parameterized statement (text parameters, text results). Returns the result, which
 * the caller PQclear()s; NULL only when libpq could not allocate one. */
PGresult *db_exec(PGconn *conn, const char *sql, int nparams, const char *const *params);

/* One statement of a batch. */
struct db_stmt {
    const char *sql;
    int nparams;
    const char *const *params;
};

/* Sends n statements in one round trip (libpq pipeline mode) and collects their results into
 * results[0..n-1] (each to be PQclear()ed; NULL where none came). Statements after a failed one do
 * not run (their result is PGRES_PIPELINE_ABORTED). Returns the index of the first statement that
 * failed, or -1 when all succeeded. */
int db_exec_batch(PGconn *conn, const struct db_stmt *stmts, int n, PGresult **results);

/* Whether an idle connection still looks usable, without a round trip: if its socket is readable
 * the server spoke first (almost always the FATAL of a shutdown), which is read so libpq marks the
 * connection bad. One poll(). */
int db_looks_alive(PGconn *conn);

/* Copies a libpq message (several lines, tab-indented, newline-terminated) as one log-friendly
 * line into dst: every run of whitespace becomes one space; NULL or "" gives "unknown error". */
void db_one_line(char *dst, size_t dstlen, const char *msg);

/* True when res is a success (PGRES_COMMAND_OK or PGRES_TUPLES_OK). */
int db_ok(const PGresult *res);

void db_pool_stats(struct db_pool *pool, struct db_stats *out);

#endif
