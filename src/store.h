/* store — the one place that validates and writes the user's data (src/store_<area>.c), shared by
 * the REST handlers and the Lua bindings of agents and workflows. A store call runs on a
 * connection already inside a transaction whose orrery.user_id is the acting user (row-level
 * security), never commits, and records what it changed in activity_log through store_activity.
 * Uses libpq and jansson. */
#ifndef ORRERY_STORE_H
#define ORRERY_STORE_H

#include <jansson.h>
#include <libpq-fe.h>

/* Who acts, on whose behalf, on which connection. */
struct store_ctx {
    PGconn *db;              /* inside a transaction, orrery.user_id = user_id */
    const char *user_id;     /* the owner of every row touched */
    const char *actor_type;  /* "user" (REST), "agent", "workflow", "system" */
    const char *actor_id;    /* the user's id, the agent's name, the workflow's id */
};

/* Why a store call failed, ready to become an HTTP error or a Lua `nil, err`. */
struct store_err {
    int status;              /* 400, 404, 409, 412, 500, 503 */
    char code[40];           /* "invalid_field", "not_found", "conflict", ... */
    char field[64];          /* the offending field for 400s, else "" */
    char message[256];
};

/* A precondition on the version of the row being changed (HTTP If-Match): it must be one of
 * versions[0..n) (n == 0: none can match). A NULL pointer where one is taken means no condition. */
#define STORE_MATCH_MAX 8
struct store_match {
    long long versions[STORE_MATCH_MAX];
    int n;
};

/* 1 when version satisfies m (always when m is NULL), else 0. */
int store_match_ok(const struct store_match *m, long long version);

/* Fills err and returns -1 (so callers can `return store_fail(...)`). */
int store_fail(struct store_err *err, int status, const char *code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* store_fail for a 400 invalid_field naming field, with message as it is. */
int store_bad_field(struct store_err *err, const char *field, const char *message);
/* Characters (code points) of a UTF-8 string: the unit of every length limit. */
size_t store_utf8_chars(const char *s);

/* Runs a parameterized statement on ctx->db. On failure fills err (503 when the connection is
 * gone, 500 otherwise, with the detail only in the log) and returns NULL; else the result
 * (caller PQclear()s). */
PGresult *store_exec(const struct store_ctx *ctx, struct store_err *err, const char *sql, int n,
                     const char *const *params);

/* Writes one activity_log row for a change: action "create" | "update" | "delete", the object's
 * type ("task") and id, and diff (a JSON object, borrowed; NULL = {}). Returns 0 or -1 with err. */
int store_activity(const struct store_ctx *ctx, struct store_err *err, const char *action, const char *object_type,
                   const char *object_id, json_t *diff);

/* Checks and normalizes an email (trim, ASCII lower-case) into out; 0 or -1. Non-ASCII letters
 * are lower-cased by PostgreSQL: every query on users.email wraps the value in lower(), the same
 * function the table's CHECK uses, so both agree whatever the collation. */
int store_email_normalize(const char *in, char *out, size_t outlen);

/* 1 when name is a time zone PostgreSQL knows (IANA names from pg_timezone_names, read once per
 * process on conn). */
int store_timezone_valid(PGconn *conn, const char *name);

/* 1 for a canonical lower-case UUID string (ids from URLs are checked before any query). */
int store_is_uuid(const char *s);

/* Checks an RFC 3339 timestamp with offset ("2026-03-01T09:30:00+01:00", "...Z", optional
 * fraction) or a date ("2026-03-01"). Returns 1 and sets *is_date, or 0. PostgreSQL then parses
 * it; this check keeps out what PostgreSQL would also accept ("now", "tomorrow", "epoch"). */
int store_time_valid(const char *s, int *is_date);

#endif
