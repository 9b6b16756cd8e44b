/* api — what every REST handler shares: the request pipeline hooks (bearer-token check, one
 * database transaction per request bound to the user by row-level security, commit or rollback
 * at the end), and the validation helpers that turn bad input into a 400 naming the field.
 * Uses http, auth, db and app. */
#ifndef ORRERY_API_H
#define ORRERY_API_H

#include <jansson.h>
#include <libpq-fe.h>

#include "app.h"
#include "auth.h"
#include "http.h"
#include "store.h"

/* Per-request state (http_local). */
struct api_ctx {
    struct app *app;
    int authenticated;
    struct auth_claims claims;     /* from the verified token */
    char role[AUTH_ROLE_MAX];      /* from the database, not the token: a demotion counts at once */
    PGconn *db;                    /* checked out for this request, inside a transaction */
    int in_tx;
    int failed;                    /* force ROLLBACK whatever the status */
    void *work;                    /* a handler's data for its deferred part (owned, work_free) */
    void (*work_free)(void *);
};

/* Hooks for http_options.hooks. */
int api_authenticate(struct http_req *req);
int api_begin(struct http_req *req);
void api_end(struct http_req *req);

/* The request's context, created on first use. NULL only when out of memory. */
struct api_ctx *api_ctx(struct http_req *req);

/* Opens the request's transaction for a public route (register, login, refresh): user_id may be
 * NULL, ctx is the orrery.ctx setting ("auth", "admin") or NULL. On failure sets 503 and returns
 * NULL. The end hook commits or rolls back. */
PGconn *api_tx(struct http_req *req, const char *user_id, const char *ctx);
/* Ends the request's transaction now (COMMIT unless it failed) and gives the connection back, for a
 * handler about to wait (on an agent) without holding a database connection. 0, or -1 with a 503
 * set when the commit failed. The end hook then has nothing left to do. */
int api_release(struct http_req *req);
/* Sets orrery.ctx for the rest of the transaction. Returns 0 or -1. */
int api_tx_set_ctx(struct http_req *req, const char *ctx);

/* Runs a statement on the request's connection. On failure logs it, marks the transaction failed,
 * sets a 503 (connection lost) or 500 response, and returns NULL; otherwise the result (caller
 * PQclear()s). */
PGresult *api_exec(struct http_req *req, const char *sql, int n, const char *const *params);
/* SQLSTATE of a failed statement, or "". */
const char *api_sqlstate(const PGresult *res);

/* ---- Validation: each sets a 400 naming the field and returns -1 on bad input ---- */

/* obj may only hold the keys listed (NULL-terminated). */
int api_only_keys(struct http_req *req, json_t *obj, const char *const *allowed);
/* A string field of min..max characters (UTF-8 code points). Absent: *out = NULL, an error only
 * when required. */
int api_string(struct http_req *req, json_t *obj, const char *field, int required, size_t min, size_t max,
               const char **out);
/* Sets 400 {"code":"invalid_field","details":{"field":field}} with message. */
void api_bad_field(struct http_req *req, const char *field, const char *message);

/* store_email_normalize, setting a 400 for field on bad input. */
int api_email(struct http_req *req, const char *field, const char *in, char *out, size_t outlen);
/* 1 for a canonical lower-case UUID string. */
int api_is_uuid(const char *s);

/* The user row as the API shows it, from columns id, email, name, timezone, role, preferences,
 * created_at, updated_at at row r. New reference. */
json_t *api_user_json(const PGresult *res, int row);
#define API_USER_COLUMNS \
    "id, email, name, timezone, role, preferences::text, " \
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), " \
    "to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

/* ---- Store calls ---- */

/* The store context of an authenticated request: its transaction, acting as its user. */
struct store_ctx api_store(struct http_req *req);
/* Sets the error response of a failed store call (details.field when the error names one). */
void api_store_error(struct http_req *req, const struct store_err *err);

/* ---- Versions: ETag and If-Match ---- */

/* Answers obj (ownership taken) with status and its "version" member as a strong ETag ("3"). */
void api_json_versioned(struct http_req *req, int status, json_t *obj);
/* The same for a row just created at <collection>/<its "id">, which is also sent as Location. */
void api_json_created(struct http_req *req, const char *collection, json_t *obj);
/* The If-Match precondition: NULL when there is none (no header, or "*", which any existing row
 * matches); else m holds the versions named ("3", W/"3", lists of them; a tag that is not all
 * digits, or unterminated, can never match, and nothing after something that is not an entity
 * tag counts). */
const struct store_match *api_if_match(struct http_req *req, struct store_match *m);
/* The same with strong comparison: weak tags (W/"3") are read but can never match. */
const struct store_match *api_if_match_strong(struct http_req *req, struct store_match *m);

/* ---- Query strings ---- */

/* An integer query parameter in [min, max] (absent: def). 0, or -1 with a 400 naming it. */
int api_query_int(struct http_req *req, const char *name, long def, long min, long max, long *out);
/* Opaque pagination cursors: a JSON object sealed with the server's key (tamper-proof). */
char *api_cursor_encode(struct http_req *req, json_t *position);
/* The `cursor` query parameter: *out = NULL when absent, the object when valid; -1 with a 400
 * naming "cursor" when it is not one of ours. The caller json_decref()s *out. */
int api_cursor_decode(struct http_req *req, json_t **out);


#endif
