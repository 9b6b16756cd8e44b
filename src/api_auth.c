/* api_auth — accounts and tokens: register, login, refresh (rotation with reuse detection),
 * logout. Password hashing runs on the work pool (http_defer), never on an HTTP worker.
 * Unknown email and wrong password get the same answer after the same work. Uses api, auth,
 * ratelimit and http. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api.h"
#include "log.h"
#include "ratelimit.h"
#include "routes.h"

#define PASSWORD_MIN 10
#define PASSWORD_MAX 1024

/* What a deferred job needs, copied out of the request body before the connection suspends. */
struct auth_job {
    char email[256];
    char *password; /* owned, wiped on free */
    size_t password_len;
    char name[801]; /* 200 characters of up to 4 bytes */
    char timezone[65];
};

static void job_free(void *p) {
    struct auth_job *j = p;
    if (!j) return;
    if (j->password) {
        memset(j->password, 0, j->password_len); /* do not leave it in freed memory */
        free(j->password);
    }
    free(j);
}

static struct auth_job *job_new(struct http_req *req, const char *password) {
    struct api_ctx *c = api_ctx(req);
    struct auth_job *j = calloc(1, sizeof *j);
    if (!c || !j || !(j->password = strdup(password))) {
        job_free(j);
        http_error(req, 500, "internal", "internal error", NULL);
        return NULL;
    }
    j->password_len = strlen(password);
    c->work = j;
    c->work_free = job_free;
    return j;
}

static struct auth_job *job_get(struct http_req *req) { return ((struct api_ctx *)http_local(req))->work; }

static int defer_or_busy(struct http_req *req, void (*fn)(struct http_req *)) {
    if (http_defer(req, fn) == 0) return 0;
    http_add_header(req, "Retry-After", "1");
    http_error(req, 503, "busy", "too many sign-ins in progress; try again", NULL);
    return -1;
}

/* 429 with Retry-After when key is over its limit (cost 0 only looks). */
static int rate_limited(struct http_req *req, struct ratelimit *rl, const char *key, int cost) {
    int retry = 1;
    if (ratelimit_hit(rl, key, cost, (long)time(NULL), &retry)) return 0;
    char h[16];
    snprintf(h, sizeof h, "%d", retry);
    http_add_header(req, "Retry-After", h);
    http_error(req, 429, "rate_limited", "too many attempts; try again later", json_pack("{s:i}", "retry_after", retry));
    return 1;
}

static int password_ok(struct http_req *req, json_t *body, const char **out) {
    return api_string(req, body, "password", 1, PASSWORD_MIN, PASSWORD_MAX, out);
}

/* Issues an access token and a refresh token of family (a new family when NULL) for user_id, on
 * the request's transaction, and sets the response: status, {user, access_token, ...}. */
static void respond_with_tokens(struct http_req *req, int status, json_t *user, const char *user_id,
                                const char *role, const char *family) {
    struct api_ctx *c = api_ctx(req);
    char refresh[AUTH_REFRESH_LEN + 1], hash[AUTH_SHA256_HEX + 1], ttl[24];
    if (auth_refresh_new(refresh) != 0) goto fail;
    auth_sha256_hex(refresh, strlen(refresh), hash);
    snprintf(ttl, sizeof ttl, "%d", c->app->cfg->refresh_ttl_s);
    const char *p[4] = {user_id, family ? family : "", hash, ttl};
    PGresult *r = api_exec(req,
                           "INSERT INTO refresh_tokens (user_id, family_id, token_hash, expires_at) "
                           "VALUES ($1::uuid, COALESCE(NULLIF($2, '')::uuid, gen_random_uuid()), $3, "
                           "now() + make_interval(secs => $4::int))",
                           4, p);
    if (!r) {
        json_decref(user);
        return;
    }
    PQclear(r);
    char *access = auth_token_issue(&c->app->keys, user_id, role, (int64_t)time(NULL), NULL);
    if (!access) goto fail;
    json_t *body = json_pack("{s:s, s:s, s:s, s:i, s:i}", "access_token", access, "refresh_token", refresh,
                             "token_type", "Bearer", "expires_in", c->app->cfg->access_ttl_s, "refresh_expires_in",
                             c->app->cfg->refresh_ttl_s);
    free(access);
    if (body && user) json_object_set_new(body, "user", user);
    else json_decref(user);
    http_json(req, status, body);
    return;
fail:
    json_decref(user);
    c->failed = 1;
    http_error(req, 500, "internal", "internal error", NULL);
}

/* ---- POST /api/auth/register ---- */

static void register_job(struct http_req *req) {
    struct auth_job *j = job_get(req);
    char hash[AUTH_HASH_MAX];
    if (auth_password_hash(j->password, j->password_len, hash) != 0) {
        http_error(req, 500, "internal", "internal error", NULL);
        return;
    }
    PGconn *db = api_tx(req, NULL, "auth");
    if (!db) return;
    if (!store_timezone_valid(db, j->timezone)) {
        api_bad_field(req, "timezone", "timezone must be an IANA time zone name such as Europe/Berlin");
        return;
    }
    const char *p[4] = {j->email, hash, j->name, j->timezone};
    PGresult *r = api_exec(req,
                           "INSERT INTO users (email, password_hash, name, timezone) VALUES (lower($1), $2, $3, $4) "
                           "ON CONFLICT (email) DO NOTHING RETURNING " API_USER_COLUMNS,
                           4, p);
    if (!r) return;
    if (PQntuples(r) == 0) {
        PQclear(r);
        http_error(req, 409, "email_taken", "an account with this email already exists",
                   json_pack("{s:s}", "field", "email"));
        return;
    }
    json_t *user = api_user_json(r, 0);
    char id[AUTH_UUID_LEN + 1];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    log_info("auth: account created for user %s", id);
    respond_with_tokens(req, 201, user, id, "user", NULL);
}

void api_auth_register(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"email", "password", "name", "timezone", NULL};
    const char *email, *password, *name, *tz;
    char norm[256];
    if (!c || api_only_keys(req, body, allowed) || api_string(req, body, "email", 1, 3, 254, &email) ||
        api_email(req, "email", email, norm, sizeof norm) || password_ok(req, body, &password) ||
        api_string(req, body, "name", 0, 0, 200, &name) || api_string(req, body, "timezone", 0, 1, 64, &tz))
        return;
    if (rate_limited(req, c->app->rate_ip, http_client_ip(req), 1)) return;
    struct auth_job *j = job_new(req, password);
    if (!j) return;
    snprintf(j->email, sizeof j->email, "%s", norm);
    snprintf(j->name, sizeof j->name, "%s", name ? name : "");
    snprintf(j->timezone, sizeof j->timezone, "%s", tz ? tz : "UTC");
    defer_or_busy(req, register_job);
}

/* ---- POST /api/auth/login ---- */

static void login_job(struct http_req *req) {
    struct auth_job *j = job_get(req);
    struct api_ctx *c = api_ctx(req);
    PGconn *db = api_tx(req, NULL, "auth");
    if (!db) return;
    const char *p[1] = {j->email};
    PGresult *r = api_exec(req, "SELECT " API_USER_COLUMNS ", password_hash FROM users WHERE email = lower($1)", 1, p);
    if (!r) return;
    int ok;
    if (PQntuples(r) == 1) {
        ok = auth_password_verify(PQgetvalue(r, 0, 8), j->password, j->password_len);
    } else {
        auth_password_dummy_verify(j->password, j->password_len); /* same time as a real check */
        ok = 0;
    }
    if (!ok) {
        PQclear(r);
        char key[300];
        snprintf(key, sizeof key, "login:%s", j->email);
        ratelimit_hit(c->app->rate_account, key, 1, (long)time(NULL), NULL);
        http_add_header(req, "WWW-Authenticate", "Bearer realm=\"orrery\"");
        http_error(req, 401, "invalid_credentials", "email or password is incorrect", NULL);
        return;
    }
    json_t *user = api_user_json(r, 0);
    char id[AUTH_UUID_LEN + 1], role[AUTH_ROLE_MAX];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    snprintf(role, sizeof role, "%s", PQgetvalue(r, 0, 4));
    PQclear(r);
    respond_with_tokens(req, 200, user, id, role, NULL);
}

void api_auth_login(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"email", "password", NULL};
    const char *email, *password;
    char norm[256], key[300];
    if (!c || api_only_keys(req, body, allowed) || api_string(req, body, "email", 1, 1, 320, &email) ||
        api_string(req, body, "password", 1, 1, PASSWORD_MAX, &password))
        return;
    if (api_email(req, "email", email, norm, sizeof norm) != 0) return;
    if (rate_limited(req, c->app->rate_ip, http_client_ip(req), 1)) return;
    snprintf(key, sizeof key, "login:%s", norm);
    if (rate_limited(req, c->app->rate_account, key, 0)) return;
    struct auth_job *j = job_new(req, password);
    if (!j) return;
    snprintf(j->email, sizeof j->email, "%s", norm);
    defer_or_busy(req, login_job);
}

/* ---- POST /api/auth/refresh ---- */

static int refresh_token_shape_ok(const char *t) {
    if (!t || strlen(t) != AUTH_REFRESH_LEN) return 0;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
              *p == '_'))
            return 0;
    return 1;
}

void api_auth_refresh(struct http_req *req) {
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"refresh_token", NULL};
    const char *token;
    if (api_only_keys(req, body, allowed) || api_string(req, body, "refresh_token", 1, 1, 512, &token)) return;
    if (!refresh_token_shape_ok(token)) {
        http_error(req, 401, "invalid_token", "the refresh token is invalid or expired", NULL);
        return;
    }
    char hash[AUTH_SHA256_HEX + 1];
    auth_sha256_hex(token, strlen(token), hash);
    if (!api_tx(req, NULL, "auth")) return;
    const char *p[1] = {hash};
    /* FOR UPDATE: two refreshes racing with one token serialize; the second sees it rotated. */
    PGresult *r = api_exec(req,
                           "SELECT t.id, t.user_id, t.family_id, t.rotated_at IS NOT NULL, t.revoked_at IS NOT NULL, "
                           "t.expires_at <= now(), u.role FROM refresh_tokens t JOIN users u ON u.id = t.user_id "
                           "WHERE t.token_hash = $1 FOR UPDATE OF t",
                           1, p);
    if (!r) return;
    if (PQntuples(r) != 1) {
        PQclear(r);
        http_error(req, 401, "invalid_token", "the refresh token is invalid or expired", NULL);
        return;
    }
    char id[AUTH_UUID_LEN + 1], user[AUTH_UUID_LEN + 1], family[AUTH_UUID_LEN + 1], role[AUTH_ROLE_MAX];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, 0, 0));
    snprintf(user, sizeof user, "%s", PQgetvalue(r, 0, 1));
    snprintf(family, sizeof family, "%s", PQgetvalue(r, 0, 2));
    snprintf(role, sizeof role, "%s", PQgetvalue(r, 0, 6));
    int rotated = PQgetvalue(r, 0, 3)[0] == 't', revoked = PQgetvalue(r, 0, 4)[0] == 't';
    int expired = PQgetvalue(r, 0, 5)[0] == 't';
    PQclear(r);
    if (rotated && !revoked) {
        /* A rotated token came back: someone holds a copy. End every session of this login. */
        const char *fp[1] = {family};
        r = api_exec(req, "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1::uuid AND revoked_at IS NULL",
                     1, fp);
        if (!r) return;
        PQclear(r);
        log_warn("auth: refresh token reused for user %s: token family revoked", user);
        /* Commit the revocation even though the answer is an error. */
        r = api_exec(req, "COMMIT", 0, NULL);
        if (r) {
            PQclear(r);
            api_ctx(req)->in_tx = 0;
        }
        http_error(req, 401, "invalid_token", "the refresh token is invalid or expired", NULL);
        return;
    }
    if (revoked || rotated || expired) {
        http_error(req, 401, "invalid_token", "the refresh token is invalid or expired", NULL);
        return;
    }
    const char *ip[1] = {id};
    r = api_exec(req, "UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1::uuid", 1, ip);
    if (!r) return;
    PQclear(r);
    respond_with_tokens(req, 200, NULL, user, role, family);
}

/* ---- POST /api/auth/logout (authenticated) ---- */

void api_auth_logout(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"refresh_token", NULL};
    const char *token = NULL;
    if (body && (api_only_keys(req, body, allowed) || api_string(req, body, "refresh_token", 0, 1, 512, &token)))
        return;
    if (token) {
        char hash[AUTH_SHA256_HEX + 1];
        auth_sha256_hex(token, strlen(token), hash);
        const char *p[1] = {hash};
        /* RLS limits this to the caller's own tokens, and so does the WHERE. */
        PGresult *r = api_exec(req,
                               "UPDATE refresh_tokens SET revoked_at = now() "
                               "WHERE token_hash = $1 AND user_id = orrery_uid() AND revoked_at IS NULL",
                               1, p);
        if (!r) return;
        PQclear(r);
    }
    char exp[24];
    snprintf(exp, sizeof exp, "%lld", (long long)c->claims.exp);
    const char *p[3] = {c->claims.jti, c->claims.sub, exp};
    PGresult *r = api_exec(req,
                           "INSERT INTO revoked_access_tokens (jti, user_id, expires_at) "
                           "VALUES ($1, $2::uuid, to_timestamp($3::bigint)) ON CONFLICT (jti) DO NOTHING",
                           3, p);
    if (!r) return;
    PQclear(r);
    r = api_exec(req, "DELETE FROM revoked_access_tokens WHERE user_id = $1::uuid AND expires_at < now() - interval '1 hour'",
                 1, p + 1);
    if (!r) return;
    PQclear(r);
    http_text(req, 204, "application/json", "", 0);
}
