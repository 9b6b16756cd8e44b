/* store — see store.h: the helpers every store_<area>.c shares. */
#include "store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"

int store_fail(struct store_err *err, int status, const char *code, const char *field, const char *fmt, ...) {
    err->status = status;
    snprintf(err->code, sizeof err->code, "%s", code);
    snprintf(err->field, sizeof err->field, "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return -1;
}

int store_match_ok(const struct store_match *m, long long version) {
    if (!m) return 1;
    for (int i = 0; i < m->n && i < STORE_MATCH_MAX; i++)
        if (m->versions[i] == version) return 1;
    return 0;
}

PGresult *store_exec(const struct store_ctx *ctx, struct store_err *err, const char *sql, int n,
                     const char *const *params) {
    PGresult *r = db_exec(ctx->db, sql, n, params);
    if (db_ok(r)) return r;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    log_error("store: statement failed (%s): %s", state ? state : "", r ? PQresultErrorMessage(r) : "no result");
    if (PQstatus(ctx->db) != CONNECTION_OK)
        store_fail(err, 503, "unavailable", NULL, "the database is unavailable; try again");
    else
        store_fail(err, 500, "internal", NULL, "internal error");
    PQclear(r);
    return NULL;
}

int store_activity(const struct store_ctx *ctx, struct store_err *err, const char *action, const char *object_type,
                   const char *object_id, json_t *diff) {
    char *d = diff ? json_dumps(diff, JSON_COMPACT) : NULL;
    const char *p[7] = {ctx->user_id, ctx->actor_type, ctx->actor_id, action, object_type, object_id, d ? d : "{}"};
    PGresult *r = store_exec(ctx, err,
                             "INSERT INTO activity_log (user_id, actor_type, actor_id, action, object_type, object_id, diff) "
                             "VALUES ($1::uuid, $2, $3, $4, $5, $6, $7::jsonb)",
                             7, p);
    free(d);
    if (!r) return -1;
    PQclear(r);
    return 0;
}

static int digits(const char *s, int n) {
    for (int i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

int store_time_valid(const char *s, int *is_date) {
    size_t n = s ? strlen(s) : 0;
    *is_date = 0;
    if (n < 10 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' || !digits(s + 8, 2)) return 0;
    int mon = (s[5] - '0') * 10 + (s[6] - '0'), day = (s[8] - '0') * 10 + (s[9] - '0');
    if (mon < 1 || mon > 12 || day < 1 || day > 31) return 0;
    if (n == 10) {
        *is_date = 1;
        return 1;
    }
    const char *t = s + 10;
    if ((*t != 'T' && *t != 't') || strlen(t) < 7 || !digits(t + 1, 2) || t[3] != ':' || !digits(t + 4, 2)) return 0;
    int hh = (t[1] - '0') * 10 + (t[2] - '0'), mm = (t[4] - '0') * 10 + (t[5] - '0');
    if (hh > 23 || mm > 59) return 0;
    t += 6;
    if (*t == ':') {
        if (!digits(t + 1, 2) || (t[1] - '0') * 10 + (t[2] - '0') > 60) return 0;
        t += 3;
        if (*t == '.') {
            int k = 0;
            for (t++; *t >= '0' && *t <= '9'; t++) k++;
            if (k < 1 || k > 9) return 0;
        }
    }
    if ((*t == 'Z' || *t == 'z') && t[1] == '\0') return 1;
    if ((*t == '+' || *t == '-') && strlen(t) == 6 && digits(t + 1, 2) && t[3] == ':' && digits(t + 4, 2))
        return (t[1] - '0') * 10 + (t[2] - '0') <= 23 && (t[4] - '0') * 10 + (t[5] - '0') <= 59;
    return 0;
}

int store_is_uuid(const char *s) {
    if (!s || strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return 0;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return 0;
        }
    }
    return 1;
}
