/* api_me — the caller's own account (GET/PATCH/DELETE /api/me) and the admin's role changes
 * (PATCH /api/users/{id}). Every statement runs in the request's transaction with the caller as
 * orrery.user_id, so row-level security confines it to the caller's row unless an admin action
 * says otherwise. Uses api, auth and http. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "log.h"
#include "routes.h"

#define PREFERENCES_MAX 65536

/* Answers the one user row of r (consumed; NULL = the error is already set), or 404. */
static void respond_user(struct http_req *req, PGresult *r) {
    if (!r) return;
    if (PQntuples(r) == 1) http_json(req, 200, api_user_json(r, 0));
    else http_error(req, 404, "not_found", "no such account", NULL);
    PQclear(r);
}

void api_me_get(struct http_req *req) {
    respond_user(req, api_exec(req, "SELECT " API_USER_COLUMNS " FROM users WHERE id = orrery_uid()", 0, NULL));
}

void api_me_patch(struct http_req *req) {
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"name", "timezone", "preferences", NULL};
    const char *name, *tz;
    if (api_only_keys(req, body, allowed) || api_string(req, body, "name", 0, 0, 200, &name) ||
        api_string(req, body, "timezone", 0, 1, 64, &tz))
        return;
    if (json_object_size(body) == 0) {
        api_bad_field(req, "body", "nothing to change: send name, timezone or preferences");
        return;
    }
    char *prefs = NULL;
    json_t *pv = json_object_get(body, "preferences");
    if (pv) {
        if (!json_is_object(pv)) {
            api_bad_field(req, "preferences", "preferences must be a JSON object");
            return;
        }
        prefs = json_dumps(pv, JSON_COMPACT);
        if (!prefs || strlen(prefs) > PREFERENCES_MAX) {
            free(prefs);
            api_bad_field(req, "preferences", "preferences must be at most 64 KiB of JSON");
            return;
        }
    }
    if (tz && !store_timezone_valid(api_ctx(req)->db, tz)) {
        free(prefs);
        api_bad_field(req, "timezone", "timezone must be an IANA time zone name such as Europe/Berlin");
        return;
    }
    /* Absent fields keep their value: NULL parameters fall back to the column. */
    const char *p[3] = {name, tz, prefs};
    PGresult *r = api_exec(req,
                           "UPDATE users SET name = COALESCE($1, name), timezone = COALESCE($2, timezone), "
                           "preferences = COALESCE($3::jsonb, preferences), updated_at = now() "
                           "WHERE id = orrery_uid() RETURNING " API_USER_COLUMNS,
                           3, p);
    free(prefs);
    respond_user(req, r);
}

/* ---- DELETE /api/me {password}: the password is checked on the work pool ---- */

struct delete_job {
    char *password; /* owned, wiped on free */
    size_t len;
};

static void delete_job_free(void *p) {
    struct delete_job *j = p;
    if (!j) return;
    if (j->password) {
        memset(j->password, 0, j->len);
        free(j->password);
    }
    free(j);
}

static void delete_me_job(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    struct delete_job *j = c->work;
    PGresult *r = api_exec(req, "SELECT password_hash FROM users WHERE id = orrery_uid()", 0, NULL);
    if (!r) return;
    int ok = PQntuples(r) == 1 && auth_password_verify(PQgetvalue(r, 0, 0), j->password, j->len);
    PQclear(r);
    if (!ok) {
        api_bad_field(req, "password", "the password is incorrect");
        return;
    }
    /* ON DELETE CASCADE takes everything the account owns with it. */
    r = api_exec(req, "DELETE FROM users WHERE id = orrery_uid()", 0, NULL);
    if (!r) return;
    PQclear(r);
    log_info("auth: account %s deleted", c->claims.sub);
    http_text(req, 204, "application/json", "", 0);
}

void api_me_delete(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"password", NULL};
    const char *password;
    if (api_only_keys(req, body, allowed) || api_string(req, body, "password", 1, 1, 1024, &password)) return;
    struct delete_job *j = calloc(1, sizeof *j);
    if (!j || !(j->password = strdup(password))) {
        delete_job_free(j);
        http_error(req, 500, "internal", "internal error", NULL);
        return;
    }
    j->len = strlen(password);
    c->work = j;
    c->work_free = delete_job_free;
    if (http_defer(req, delete_me_job) != 0) {
        http_add_header(req, "Retry-After", "1");
        http_error(req, 503, "busy", "the server is busy; try again", NULL);
    }
}

/* ---- PATCH /api/users/{id} {role}: admins only ---- */

void api_users_patch(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    if (strcmp(c->role, "admin") != 0) {
        http_error(req, 403, "forbidden", "only an admin can change accounts", NULL);
        return;
    }
    const char *id = http_param(req, "id");
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"role", NULL};
    const char *role;
    if (api_only_keys(req, body, allowed) || api_string(req, body, "role", 1, 1, 16, &role)) return;
    if (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0) {
        api_bad_field(req, "role", "role must be 'user' or 'admin'");
        return;
    }
    if (!api_is_uuid(id)) {
        http_error(req, 404, "not_found", "no such user", NULL);
        return;
    }
    if (api_tx_set_ctx(req, "admin") != 0) return;
    const char *p[2] = {id, role};
    PGresult *r = api_exec(req,
                           "UPDATE users SET role = $2, updated_at = now() WHERE id = $1::uuid RETURNING " API_USER_COLUMNS,
                           2, p);
    if (!r) return;
    if (PQntuples(r) != 1) {
        PQclear(r);
        http_error(req, 404, "not_found", "no such user", NULL);
        return;
    }
    log_info("auth: admin %s set role of %s to %s", c->claims.sub, id, role);
    http_json(req, 200, api_user_json(r, 0));
    PQclear(r);
}
