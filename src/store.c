/* store — see store.h: the helpers every store_<area>.c shares. */
#include "store.h"

#include <ctype.h>
#include <pthread.h>
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

int store_bad_field(struct store_err *err, const char *field, const char *message) {
    return store_fail(err, 400, "invalid_field", field, "%s", message);
}

size_t store_utf8_chars(const char *s) {
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) n++;
    return n;
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

/* ---- Emails and time zones ---- */

int store_email_normalize(const char *in, char *out, size_t outlen) {
    while (*in && isspace((unsigned char)*in)) in++;
    size_t n = strlen(in);
    while (n > 0 && isspace((unsigned char)in[n - 1])) n--;
    const char *at = NULL;
    int ok = n >= 3 && n <= 254 && n < outlen;
    for (size_t i = 0; ok && i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '"' || ch == ',' || ch == '<' || ch == '>') ok = 0;
        if (ch == '@') {
            if (at) ok = 0;
            at = in + i;
        }
        out[i] = (char)tolower(ch);
    }
    if (ok) ok = at && at > in && at < in + n - 1 && memchr(at, '.', (size_t)(in + n - at)) && in[n - 1] != '.';
    if (!ok) return -1;
    out[n] = '\0';
    return 0;
}

static pthread_mutex_t tz_mu = PTHREAD_MUTEX_INITIALIZER;
static char **tz_names; /* sorted; loaded once, kept for the process's life */
static size_t tz_count;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int store_timezone_valid(PGconn *conn, const char *name) {
    pthread_mutex_lock(&tz_mu);
    if (!tz_names) {
        /* pg_timezone_names reads the zone files on every query: read it once. */
        PGresult *r = db_exec(conn, "SELECT name FROM pg_timezone_names", 0, NULL);
        int n = db_ok(r) ? PQntuples(r) : 0;
        char **names = n > 0 ? calloc((size_t)n, sizeof *names) : NULL;
        size_t count = 0;
        for (int i = 0; names && i < n; i++) {
            names[count] = strdup(PQgetvalue(r, i, 0));
            if (names[count]) count++;
        }
        PQclear(r);
        if (names) {
            qsort(names, count, sizeof *names, cmp_str);
            tz_names = names;
            tz_count = count;
        }
    }
    int found = tz_names && bsearch(&name, tz_names, tz_count, sizeof *tz_names, cmp_str) != NULL;
    pthread_mutex_unlock(&tz_mu);
    return found;
}
