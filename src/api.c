/* api — see api.h. */
#include "api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"

/* ---- Context ---- */

static void ctx_free(void *p) {
    struct api_ctx *c = p;
    if (!c) return;
    if (c->db) { /* the end hook did not run (should not happen): never return an open transaction */
        if (c->in_tx) PQclear(db_exec(c->db, "ROLLBACK", 0, NULL));
        db_release(c->app->db, c->db);
    }
    if (c->work && c->work_free) c->work_free(c->work);
    free(c);
}

struct api_ctx *api_ctx(struct http_req *req) {
    struct api_ctx *c = http_local(req);
    if (c) return c;
    c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->app = http_app(req);
    http_set_local(req, c, ctx_free);
    return c;
}

static void unauthorized(struct http_req *req, const char *error_param, const char *message) {
    char h[128];
    if (error_param) snprintf(h, sizeof h, "Bearer realm=\"orrery\", error=\"%s\"", error_param);
    else snprintf(h, sizeof h, "Bearer realm=\"orrery\"");
    http_add_header(req, "WWW-Authenticate", h);
    http_error(req, 401, "unauthorized", message, NULL);
}

static int tx_open(struct http_req *req, const struct db_stmt *batch, int n, PGresult **res);

/* ---- Pipeline hooks ---- */

int api_authenticate(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    if (!c) {
        http_error(req, 500, "internal", "internal error", NULL);
        return -1;
    }
    const char *h = http_header(req, "Authorization");
    if (!h || !*h) {
        unauthorized(req, NULL, "a bearer token is required");
        return -1;
    }
    if (strncasecmp(h, "Bearer ", 7) != 0) {
        unauthorized(req, "invalid_request", "expected 'Authorization: Bearer <token>'");
        return -1;
    }
    const char *token = h + 7;
    while (*token == ' ') token++;
    char why[96];
    if (auth_token_verify(&c->app->keys, token, (int64_t)time(NULL), &c->claims, why, sizeof why) != 0) {
        log_info("auth: token refused: %s", why); /* the reason, never the token */
        unauthorized(req, "invalid_token", "the token is invalid or expired");
        return -1;
    }
    c->authenticated = 1;
    return 0;
}

int api_begin(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    if (!c || !c->authenticated) {
        unauthorized(req, NULL, "a bearer token is required");
        return -1;
    }
    /* One round trip: open the transaction, name the user for row-level security, and check the
     * user still exists and this token was not revoked. */
    const char *who[2] = {c->claims.sub, ""};
    const char *check[2] = {c->claims.sub, c->claims.jti};
    struct db_stmt batch[3] = {
        {"BEGIN", 0, NULL},
        {"SELECT set_config('orrery.user_id', $1, true), set_config('orrery.ctx', $2, true)", 2, who},
        {"SELECT u.role, EXISTS (SELECT 1 FROM revoked_access_tokens t WHERE t.jti = $2) "
         "FROM users u WHERE u.id = $1::uuid", 2, check},
    };
    PGresult *res[3];
    if (tx_open(req, batch, 3, res) != 0) return -1;
    PGresult *r = res[2];
    int ok = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 1), "t") != 0;
    if (ok) snprintf(c->role, sizeof c->role, "%s", PQgetvalue(r, 0, 0));
    for (int i = 0; i < 3; i++) PQclear(res[i]);
    if (!ok) {
        c->failed = 1;
        unauthorized(req, "invalid_token", "the token is invalid or expired");
        return -1;
    }
    return 0;
}

void api_end(struct http_req *req) {
    struct api_ctx *c = http_local(req);
    if (!c || !c->db) return;
    if (c->in_tx) {
        int commit = !c->failed && http_status(req) > 0 && http_status(req) < 400;
        PGresult *r = db_exec(c->db, commit ? "COMMIT" : "ROLLBACK", 0, NULL);
        if (commit && !db_ok(r)) {
            log_error("api: commit failed: %s", PQresultErrorMessage(r));
            http_error(req, 503, "unavailable", "the change could not be saved; try again", NULL);
        }
        PQclear(r);
        c->in_tx = 0;
    }
    db_release(c->app->db, c->db);
    c->db = NULL;
}

int api_release(struct http_req *req) {
    struct api_ctx *c = http_local(req);
    if (!c || !c->db) return 0;
    int rc = 0;
    if (c->in_tx) {
        PGresult *r = db_exec(c->db, c->failed ? "ROLLBACK" : "COMMIT", 0, NULL);
        if (!c->failed && !db_ok(r)) {
            log_error("api: commit failed: %s", PQresultErrorMessage(r));
            http_error(req, 503, "unavailable", "the change could not be saved; try again", NULL);
            rc = -1;
        }
        PQclear(r);
        c->in_tx = 0;
    }
    db_release(c->app->db, c->db);
    c->db = NULL;
    return rc;
}

/* ---- Transactions ---- */

PGresult *api_exec(struct http_req *req, const char *sql, int n, const char *const *params) {
    struct api_ctx *c = http_local(req);
    PGresult *r = db_exec(c->db, sql, n, params);
    if (db_ok(r)) return r;
    c->failed = 1;
    int lost = PQstatus(c->db) != CONNECTION_OK;
    log_error("api: statement failed (%s): %s", api_sqlstate(r), r ? PQresultErrorMessage(r) : "no result");
    if (lost) http_error(req, 503, "unavailable", "the database is unavailable; try again", NULL);
    else http_error(req, 500, "internal", "internal error", NULL);
    PQclear(r);
    return NULL;
}

const char *api_sqlstate(const PGresult *res) {
    const char *s = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    return s ? s : "";
}

/* Checks out a connection and runs batch (which starts with BEGIN) in one round trip. Returns 0
 * with the results in res (caller clears them), or -1 with the error response set. */
static int tx_open(struct http_req *req, const struct db_stmt *batch, int n, PGresult **res) {
    struct api_ctx *c = api_ctx(req);
    if (!c) {
        http_error(req, 500, "internal", "internal error", NULL);
        return -1;
    }
    char err[256];
    c->db = db_acquire(c->app->db, err, sizeof err);
    if (!c->db) {
        http_add_header(req, "Retry-After", "1");
        http_error(req, 503, "unavailable", "the database is unavailable; try again", NULL);
        return -1;
    }
    int failed = db_exec_batch(c->db, batch, n, res);
    c->in_tx = PQtransactionStatus(c->db) != PQTRANS_IDLE;
    if (failed < 0) return 0;
    c->failed = 1;
    log_error("api: opening the transaction failed: %s", res[failed] ? PQresultErrorMessage(res[failed]) : "no result");
    if (PQstatus(c->db) != CONNECTION_OK) {
        http_add_header(req, "Retry-After", "1");
        http_error(req, 503, "unavailable", "the database is unavailable; try again", NULL);
    } else {
        http_error(req, 500, "internal", "internal error", NULL);
    }
    for (int i = 0; i < n; i++) PQclear(res[i]);
    return -1;
}

PGconn *api_tx(struct http_req *req, const char *user_id, const char *ctx) {
    /* set_config(..., true) is SET LOCAL: it ends with the transaction, so a pooled connection
     * never carries one request's user into the next. */
    const char *p[2] = {user_id ? user_id : "", ctx ? ctx : ""};
    struct db_stmt batch[2] = {
        {"BEGIN", 0, NULL},
        {"SELECT set_config('orrery.user_id', $1, true), set_config('orrery.ctx', $2, true)", 2, p},
    };
    PGresult *res[2];
    if (tx_open(req, batch, 2, res) != 0) return NULL;
    PQclear(res[0]);
    PQclear(res[1]);
    return api_ctx(req)->db;
}

int api_tx_set_ctx(struct http_req *req, const char *ctx) {
    const char *p[1] = {ctx};
    PGresult *r = api_exec(req, "SELECT set_config('orrery.ctx', $1, true)", 1, p);
    if (!r) return -1;
    PQclear(r);
    return 0;
}

/* ---- Validation ---- */

void api_bad_field(struct http_req *req, const char *field, const char *message) {
    http_error(req, 400, "invalid_field", message, json_pack("{s:s}", "field", field));
}

int api_only_keys(struct http_req *req, json_t *obj, const char *const *allowed) {
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (!strcmp(*a, k)) ok = 1;
        if (!ok) {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown field '%.60s'", k);
            api_bad_field(req, k, msg);
            return -1;
        }
    }
    return 0;
}

int api_string(struct http_req *req, json_t *obj, const char *field, int required, size_t min, size_t max,
               const char **out) {
    json_t *v = json_object_get(obj, field);
    char msg[160];
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (!required) return 0;
        snprintf(msg, sizeof msg, "%s is required", field);
        api_bad_field(req, field, msg);
        return -1;
    }
    if (!json_is_string(v)) {
        snprintf(msg, sizeof msg, "%s must be a string", field);
        api_bad_field(req, field, msg);
        return -1;
    }
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v)) { /* an embedded \u0000 */
        snprintf(msg, sizeof msg, "%s must not contain NUL characters", field);
        api_bad_field(req, field, msg);
        return -1;
    }
    size_t n = store_utf8_chars(s);
    if (n < min || n > max) {
        snprintf(msg, sizeof msg, "%s must be %zu to %zu characters long", field, min, max);
        api_bad_field(req, field, msg);
        return -1;
    }
    *out = s;
    return 0;
}

int api_email(struct http_req *req, const char *field, const char *in, char *out, size_t outlen) {
    if (store_email_normalize(in, out, outlen) == 0) return 0;
    api_bad_field(req, field, "email must be a valid address such as ana@example.com");
    return -1;
}

int api_is_uuid(const char *s) { return store_is_uuid(s); }

json_t *api_user_json(const PGresult *res, int row) {
    json_t *prefs = json_loads(PQgetvalue(res, row, 5), 0, NULL);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:s}", "id", PQgetvalue(res, row, 0), "email",
                     PQgetvalue(res, row, 1), "name", PQgetvalue(res, row, 2), "timezone", PQgetvalue(res, row, 3),
                     "role", PQgetvalue(res, row, 4), "preferences", prefs ? prefs : json_object(), "created_at",
                     PQgetvalue(res, row, 6), "updated_at", PQgetvalue(res, row, 7));
}


/* ---- Store calls ---- */

struct store_ctx api_store(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    return (struct store_ctx){.db = c->db, .user_id = c->claims.sub, .actor_type = "user", .actor_id = c->claims.sub};
}

void api_store_error(struct http_req *req, const struct store_err *err) {
    struct api_ctx *c = http_local(req);
    if (c && err->status >= 500) c->failed = 1;
    if (err->status == 503) http_add_header(req, "Retry-After", "1");
    http_error(req, err->status ? err->status : 500, err->code[0] ? err->code : "internal",
               err->message[0] ? err->message : "internal error",
               err->field[0] ? json_pack("{s:s}", "field", err->field) : NULL);
}

/* ---- Versions: ETag and If-Match ---- */

void api_json_versioned(struct http_req *req, int status, json_t *obj) {
    char tag[32];
    snprintf(tag, sizeof tag, "\"%lld\"", (long long)json_integer_value(json_object_get(obj, "version")));
    http_add_header(req, "ETag", tag);
    http_json(req, status, obj);
}

void api_json_created(struct http_req *req, const char *collection, json_t *obj) {
    char location[128];
    snprintf(location, sizeof location, "%s/%s", collection, json_string_value(json_object_get(obj, "id")));
    http_add_header(req, "Location", location);
    api_json_versioned(req, 201, obj);
}

static const struct store_match *if_match(struct http_req *req, struct store_match *m, int strong) {
    const char *s = http_header(req, "If-Match");
    if (!s) return NULL;
    while (*s == ' ' || *s == '\t') s++;
    if (s[0] == '*') {
        const char *e = s + 1;
        while (*e == ' ' || *e == '\t') e++;
        if (!*e) return NULL;
    }
    m->n = 0;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',') s++;
        if (!*s) break;
        int weak = s[0] == 'W' && s[1] == '/';
        if (weak) s += 2;
        if (*s != '"') break; /* not an entity tag: nothing after it counts */
        const char *start = ++s;
        while (*s && *s != '"') s++;
        if (!*s) break; /* unterminated */
        size_t len = (size_t)(s - start);
        int digits = len > 0 && len <= 18 && !(weak && strong);
        for (size_t i = 0; digits && i < len; i++)
            if (start[i] < '0' || start[i] > '9') digits = 0;
        if (digits && m->n < STORE_MATCH_MAX) m->versions[m->n++] = strtoll(start, NULL, 10);
        s++;
    }
    return m;
}

const struct store_match *api_if_match(struct http_req *req, struct store_match *m) { return if_match(req, m, 0); }

const struct store_match *api_if_match_strong(struct http_req *req, struct store_match *m) {
    return if_match(req, m, 1);
}

/* ---- Query strings ---- */

int api_query_int(struct http_req *req, const char *name, long def, long min, long max, long *out) {
    const char *s = http_query(req, name);
    *out = def;
    if (!s) return 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < min || v > max) {
        char msg[128];
        snprintf(msg, sizeof msg, "%s must be a whole number from %ld to %ld", name, min, max);
        api_bad_field(req, name, msg);
        return -1;
    }
    *out = v;
    return 0;
}

char *api_cursor_encode(struct http_req *req, json_t *position) {
    struct api_ctx *c = api_ctx(req);
    char *s = json_dumps(position, JSON_COMPACT | JSON_SORT_KEYS);
    char *sealed = s ? auth_seal(&c->app->keys, s, strlen(s)) : NULL;
    free(s);
    return sealed;
}

int api_cursor_decode(struct http_req *req, json_t **out) {
    struct api_ctx *c = api_ctx(req);
    const char *s = http_query(req, "cursor");
    *out = NULL;
    if (!s || !*s) return 0;
    char *data = auth_unseal(&c->app->keys, s, NULL);
    json_t *j = data ? json_loads(data, 0, NULL) : NULL;
    free(data);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        api_bad_field(req, "cursor", "cursor is not valid: pass back the next_cursor of a previous page");
        return -1;
    }
    *out = j;
    return 0;
}
