/* store_tasks — see store_tasks.h. Every statement is parameterized and filters on
 * orrery_uid() besides row-level security; the only SQL chosen at run time is one of the fixed
 * list statements below, picked from a whitelist of sort names. */
#include "store_tasks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "rrule.h"

#define TITLE_MAX 500
#define NOTES_MAX 100000
#define LABEL_MAX 50
#define LABELS_MAX 20
#define RECURRENCE_MAX 500
#define QUERY_TEXT_MAX 500
#define LIST_LIMIT_DEFAULT 50
#define LIST_LIMIT_MAX 200

/* ---- SQL fragments ---- */

#define UTC_MS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
#define UTC_US(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#define USER_TZ "(SELECT u.timezone FROM users u WHERE u.id = orrery_uid())"

/* The columns task_json() reads, in the order of the C_* indexes; the last two are exact sort keys
 * for cursors. */
#define TASK_COLUMNS                                                                                      \
    "t.id, t.parent_id, t.title, t.notes, t.status, t.priority, "                                         \
    "CASE WHEN t.due_date IS NOT NULL THEN to_char(t.due_date, 'YYYY-MM-DD') ELSE " UTC_MS("t.due_at")    \
    " END, array_to_json(t.labels)::text, t.recurrence, t.version, " UTC_MS("t.created_at") ", "        \
    UTC_MS("t.updated_at") ", " UTC_MS("t.completed_at") ", " UTC_US("t.created_at") ", " UTC_US("t.due_at")
enum {
    C_ID, C_PARENT, C_TITLE, C_NOTES, C_STATUS, C_PRIORITY, C_DUE, C_LABELS, C_RECURRENCE, C_VERSION,
    C_CREATED, C_UPDATED, C_COMPLETED, C_CREATED_US, C_DUE_US, C_NCOLS
};

/* Labels from a JSON array parameter: lower-cased by PostgreSQL (as the table's CHECK does, so
 * both agree whatever the letters), de-duplicated, in the order first given. */
#define LABELS_FROM(param)                                                                                \
    "COALESCE((SELECT array_agg(l ORDER BY o) FROM (SELECT lower(e) AS l, min(o) AS o "                  \
    "FROM jsonb_array_elements_text(" param "::jsonb) WITH ORDINALITY AS x(e, o) GROUP BY lower(e)) s), " \
    "'{}')"

/* Local wall-clock time of the due date in the user's zone, as civil_parse reads it. */
#define DUE_LOCAL                                                                                         \
    "to_char(COALESCE(t.due_date::timestamp, t.due_at AT TIME ZONE " USER_TZ "), "                       \
    "'YYYY-MM-DD\"T\"HH24:MI:SS')"

/* The fields a client sets, in the order the activity diff lists them. */
static const char *const FIELDS[] = {"title", "notes", "status", "priority", "due_at",
                                     "labels", "recurrence", "parent_id", NULL};

/* ---- Small helpers ---- */

static int blank(const char *s) {
    for (; *s; s++)
        if (!strchr(" \t\r\n\v\f", *s)) return 0;
    return 1;
}

static int has_control(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

/* A UUID in any case, copied lower-case into out[37]. */
static int uuid_norm(const char *s, char out[37]) {
    if (!s || strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        char ch = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (ch != '-') return 0;
        } else if (ch >= 'A' && ch <= 'F') {
            ch = (char)(ch - 'A' + 'a');
        } else if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'))) {
            return 0;
        }
        out[i] = ch;
    }
    out[36] = '\0';
    return 1;
}

static int days_in_month(int y, int mo) {
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return mo == 2 && leap ? 29 : days[mo - 1];
}

/* An RFC 3339 timestamp with offset or a date that PostgreSQL will read as written: a real
 * calendar day (store_time_valid lets 2026-02-30 through), years 1900..9999, offsets PostgreSQL
 * accepts. Sets *is_date. */
static int time_ok(const char *s, int *is_date) {
    if (!store_time_valid(s, is_date)) return 0;
    int y = atoi(s), mo = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    if (y < 1900 || y > 9999 || d > days_in_month(y, mo)) return 0;
    size_t n = strlen(s);
    if (!*is_date && (s[n - 6] == '+' || s[n - 6] == '-') && (s[n - 5] - '0') * 10 + (s[n - 4] - '0') > 15) return 0;
    return 1;
}

/* A failed statement: a broken table constraint or a value PostgreSQL refused becomes a 400 naming
 * the field (the C checks should have caught it first); anything else a 500 (503 when the
 * connection is gone) with the detail only in the log. */
static PGresult *run(const struct store_ctx *ctx, struct store_err *err, const char *field, const char *sql, int n,
                     const char *const *params) {
    PGresult *r = db_exec(ctx->db, sql, n, params);
    if (db_ok(r)) return r;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *cons = r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
    int connected = PQstatus(ctx->db) == CONNECTION_OK;
    static const struct { const char *constraint, *field; } map[] = {
        {"tasks_title_valid", "title"},         {"tasks_notes_length", "notes"},
        {"tasks_status_valid", "status"},       {"tasks_priority_range", "priority"},
        {"tasks_labels_count", "labels"},       {"tasks_labels_valid", "labels"},
        {"tasks_recurrence_length", "recurrence"}, {"tasks_parent_fk", "parent_id"},
        {"tasks_parent_not_self", "parent_id"},
    };
    const char *bad = NULL;
    if (connected && state && cons && (!strcmp(state, "23514") || !strcmp(state, "23503")))
        for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
            if (!strcmp(cons, map[i].constraint)) bad = map[i].field;
    if (connected && state && !strncmp(state, "22", 2) && field) bad = field;
    if (bad) {
        log_info("store_tasks: refused by the database (%s %s) for %s", state, cons ? cons : "", bad);
        store_fail(err, 400, "invalid_field", bad, "%s is not valid", bad);
    } else {
        log_error("store_tasks: statement failed (%s): %s", state ? state : "",
                  r ? PQresultErrorMessage(r) : "no result");
        if (!connected) store_fail(err, 503, "unavailable", NULL, "the database is unavailable; try again");
        else store_fail(err, 500, "internal", NULL, "internal error");
    }
    PQclear(r);
    return NULL;
}

static json_t *str_or_null(const PGresult *r, int i, int c) {
    return PQgetisnull(r, i, c) ? json_null() : json_string(PQgetvalue(r, i, c));
}

static json_t *task_json(const PGresult *r, int i) {
    json_t *labels = json_loads(PQgetvalue(r, i, C_LABELS), 0, NULL);
    if (!json_is_array(labels)) {
        json_decref(labels);
        labels = json_array();
    }
    json_t *t = json_object();
    json_object_set_new(t, "id", json_string(PQgetvalue(r, i, C_ID)));
    json_object_set_new(t, "parent_id", str_or_null(r, i, C_PARENT));
    json_object_set_new(t, "title", json_string(PQgetvalue(r, i, C_TITLE)));
    json_object_set_new(t, "notes", json_string(PQgetvalue(r, i, C_NOTES)));
    json_object_set_new(t, "status", json_string(PQgetvalue(r, i, C_STATUS)));
    json_object_set_new(t, "priority", json_integer(atoi(PQgetvalue(r, i, C_PRIORITY))));
    json_object_set_new(t, "due_at", str_or_null(r, i, C_DUE));
    json_object_set_new(t, "labels", labels);
    json_object_set_new(t, "recurrence", str_or_null(r, i, C_RECURRENCE));
    json_object_set_new(t, "version", json_integer(strtoll(PQgetvalue(r, i, C_VERSION), NULL, 10)));
    json_object_set_new(t, "created_at", json_string(PQgetvalue(r, i, C_CREATED)));
    json_object_set_new(t, "updated_at", json_string(PQgetvalue(r, i, C_UPDATED)));
    json_object_set_new(t, "completed_at", str_or_null(r, i, C_COMPLETED));
    return t;
}

static int not_found(struct store_err *err) { return store_fail(err, 404, "not_found", NULL, "no such task"); }

/* ---- Input ---- */

/* A task body, checked: pointers borrow from the JSON (or the buffers here). has_* says the key
 * was sent; a sent null leaves the value NULL (clear). */
struct task_input {
    int has_title, has_notes, has_status, has_priority, has_due, has_labels, has_recurrence, has_parent;
    const char *title, *notes, *status, *recurrence, *parent_id;
    const char *due_ts, *due_date;  /* at most one set */
    char priority[2];
    char parent[37];
    char *labels;                   /* JSON array text, owned */
};

/* A string of min..max characters without NUL; null only when nullable (then *out = NULL). */
static int text_field(json_t *v, const char *field, size_t min, size_t max, int nullable, const char **out,
                      struct store_err *err) {
    *out = NULL;
    if (json_is_null(v) && nullable) return 0;
    if (!json_is_string(v)) return store_fail(err, 400, "invalid_field", field, "%s must be a string", field);
    const char *s = json_string_value(v);
    if (strlen(s) != json_string_length(v))
        return store_fail(err, 400, "invalid_field", field, "%s must not contain NUL characters", field);
    size_t n = store_utf8_chars(s);
    if (n < min || n > max)
        return store_fail(err, 400, "invalid_field", field, "%s must be %zu to %zu characters long", field, min, max);
    *out = s;
    return 0;
}

static int parse_priority(json_t *v, char out[2], struct store_err *err) {
    long long p = 0;
    if (json_is_integer(v)) {
        p = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if ((s[0] == 'p' || s[0] == 'P') && s[1] >= '1' && s[1] <= '4' && !s[2] && json_string_length(v) == 2)
            p = s[1] - '0';
    }
    if (p < 1 || p > 4) return store_bad_field(err, "priority", "priority must be 1 (highest) to 4, or \"p1\" to \"p4\"");
    out[0] = (char)('0' + p);
    out[1] = '\0';
    return 0;
}

static int parse_labels(json_t *v, char **out, struct store_err *err) {
    *out = NULL;
    if (json_is_null(v)) v = NULL;
    else if (!json_is_array(v)) return store_bad_field(err, "labels", "labels must be an array of strings");
    if (json_array_size(v) > LABELS_MAX) return store_bad_field(err, "labels", "labels must hold at most 20 labels");
    size_t i;
    json_t *l;
    json_array_foreach(v, i, l) {
        const char *s;
        if (text_field(l, "labels", 1, LABEL_MAX, 0, &s, err))
            return store_bad_field(err, "labels", "each label must be a string of 1 to 50 characters");
        if (has_control(s) || blank(s))
            return store_bad_field(err, "labels", "labels must not be blank or hold control characters");
    }
    *out = v ? json_dumps(v, JSON_COMPACT) : strdup("[]");
    if (!*out) return store_fail(err, 500, "internal", NULL, "internal error");
    return 0;
}

static void input_free(struct task_input *t) { free(t->labels); }

/* Checks body against the rules of every field (creating: title required). Unknown keys are refused. */
static int parse_input(json_t *in, int creating, struct task_input *t, struct store_err *err) {
    memset(t, 0, sizeof *t);
    if (!json_is_object(in)) return store_bad_field(err, "body", "the body must be a JSON object");
    const char *k;
    json_t *v;
    json_object_foreach(in, k, v) {
        int known = 0;
        for (const char *const *f = FIELDS; *f; f++)
            if (!strcmp(*f, k)) known = 1;
        if (!known) return store_fail(err, 400, "invalid_field", k, "unknown field '%.60s'", k);
    }
    if ((v = json_object_get(in, "title"))) {
        t->has_title = 1;
        if (text_field(v, "title", 1, TITLE_MAX, 0, &t->title, err)) return -1;
        if (blank(t->title)) return store_bad_field(err, "title", "title must not be blank");
    } else if (creating) {
        return store_bad_field(err, "title", "title is required");
    }
    if ((v = json_object_get(in, "notes"))) {
        t->has_notes = 1;
        if (text_field(v, "notes", 0, NOTES_MAX, 1, &t->notes, err)) return -1;
        if (!t->notes) t->notes = "";
    }
    if ((v = json_object_get(in, "status"))) {
        t->has_status = 1;
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        if (strcmp(s, "open") && strcmp(s, "in_progress") && strcmp(s, "done") && strcmp(s, "cancelled"))
            return store_bad_field(err, "status", "status must be open, in_progress, done or cancelled");
        t->status = s;
    }
    if ((v = json_object_get(in, "priority"))) {
        t->has_priority = 1;
        if (parse_priority(v, t->priority, err)) return -1;
    }
    if ((v = json_object_get(in, "due_at"))) {
        const char *s;
        int is_date;
        t->has_due = 1;
        if (text_field(v, "due_at", 1, 64, 1, &s, err) || (s && !time_ok(s, &is_date)))
            return store_bad_field(err, "due_at", "due_at must be an RFC 3339 time with offset (2026-03-01T09:30:00+01:00) "
                                      "or a date (2026-03-01)");
        if (s && is_date) t->due_date = s;
        else t->due_ts = s;
    }
    if ((v = json_object_get(in, "labels"))) {
        t->has_labels = 1;
        if (parse_labels(v, &t->labels, err)) return -1;
    }
    if ((v = json_object_get(in, "recurrence"))) {
        t->has_recurrence = 1;
        if (text_field(v, "recurrence", 1, RECURRENCE_MAX, 1, &t->recurrence, err)) return -1;
        struct rrule rr;
        char why[160] = "";
        if (t->recurrence && rrule_parse(t->recurrence, &rr, why, sizeof why) != 0)
            return store_fail(err, 400, "invalid_field", "recurrence", "recurrence is not a valid RRULE: %s",
                              why[0] ? why : "unsupported rule");
    }
    if ((v = json_object_get(in, "parent_id"))) {
        t->has_parent = 1;
        if (!json_is_null(v)) {
            if (!json_is_string(v) || !uuid_norm(json_string_value(v), t->parent))
                return store_bad_field(err, "parent_id", "parent_id must be the id of one of your tasks, or null");
            t->parent_id = t->parent;
        }
    }
    return 0;
}

/* ---- Create, get ---- */

json_t *store_task_create(const struct store_ctx *ctx, json_t *in, struct store_err *err) {
    struct task_input t;
    json_t *task = NULL;
    if (parse_input(in, 1, &t, err)) goto done;
    if (t.parent_id) {
        const char *p[1] = {t.parent_id};
        PGresult *r = run(ctx, err, NULL, "SELECT 1 FROM tasks WHERE id = $1::uuid AND user_id = orrery_uid()", 1, p);
        if (!r) goto done;
        int found = PQntuples(r) == 1;
        PQclear(r);
        if (!found) {
            store_bad_field(err, "parent_id", "parent_id must be the id of one of your tasks");
            goto done;
        }
    }
    const char *p[9] = {t.parent_id, t.title, t.notes, t.status, t.has_priority ? t.priority : NULL,
                        t.due_ts, t.due_date, t.labels, t.recurrence};
    PGresult *r = run(ctx, err, "due_at",
                      "INSERT INTO tasks AS t (user_id, parent_id, title, notes, status, priority, due_at, due_date, "
                      "labels, recurrence, completed_at) "
                      "SELECT u.id, $1::uuid, $2::text, COALESCE($3::text, ''), COALESCE($4::text, 'open'), "
                      "COALESCE($5::smallint, 4), "
                      "COALESCE($6::timestamptz, $7::date::timestamp AT TIME ZONE u.timezone), $7::date, "
                      LABELS_FROM("$8") ", $9::text, CASE WHEN $4::text = 'done' THEN now() END "
                      "FROM users u WHERE u.id = orrery_uid() RETURNING " TASK_COLUMNS,
                      9, p);
    if (!r) goto done;
    if (PQntuples(r) != 1) {
        PQclear(r);
        store_fail(err, 500, "internal", NULL, "internal error");
        goto done;
    }
    task = task_json(r, 0);
    PQclear(r);
    json_t *diff = json_deep_copy(task);
    int rc = store_activity(ctx, err, "create", "task", json_string_value(json_object_get(task, "id")), diff);
    json_decref(diff);
    if (rc) {
        json_decref(task);
        task = NULL;
    }
done:
    input_free(&t);
    return task;
}

json_t *store_task_get(const struct store_ctx *ctx, const char *id, struct store_err *err) {
    char uid[37];
    if (!uuid_norm(id, uid)) {
        not_found(err);
        return NULL;
    }
    const char *p[1] = {uid};
    PGresult *r = run(ctx, err, NULL,
                      "SELECT " TASK_COLUMNS " FROM tasks t WHERE t.id = $1::uuid AND t.user_id = orrery_uid()", 1, p);
    if (!r) return NULL;
    json_t *task = PQntuples(r) == 1 ? task_json(r, 0) : NULL;
    PQclear(r);
    if (!task) not_found(err);
    return task;
}

/* ---- Update ---- */

/* parent must be one of the user's tasks and neither id nor one of its descendants. The caller
 * holds the user's tree lock, so no concurrent change can close a cycle behind this check. */
static int check_parent(const struct store_ctx *ctx, const char *id, const char *parent, struct store_err *err) {
    if (!strcmp(id, parent)) return store_bad_field(err, "parent_id", "a task cannot be its own parent");
    const char *p[2] = {id, parent};
    PGresult *r = run(ctx, err, NULL,
                      "WITH RECURSIVE anc(id) AS ("
                      " SELECT id FROM tasks WHERE id = $2::uuid AND user_id = orrery_uid()"
                      " UNION SELECT t.parent_id FROM tasks t JOIN anc a ON t.id = a.id"
                      " WHERE t.parent_id IS NOT NULL AND t.user_id = orrery_uid()) "
                      "SELECT EXISTS (SELECT 1 FROM anc WHERE id = $2::uuid), "
                      "EXISTS (SELECT 1 FROM anc WHERE id = $1::uuid)",
                      2, p);
    if (!r) return -1;
    int found = !strcmp(PQgetvalue(r, 0, 0), "t"), cycle = !strcmp(PQgetvalue(r, 0, 1), "t");
    PQclear(r);
    if (!found) return store_bad_field(err, "parent_id", "parent_id must be the id of one of your tasks");
    if (cycle) return store_bad_field(err, "parent_id", "parent_id would make the task its own ancestor");
    return 0;
}

/* The next occurrence of the recurring task just completed (row 0 of u: TASK_COLUMNS, then the
 * series start, the local due time, and whether the due date is a date). Returns the new task,
 * json_null() when the series has ended, or NULL with err. */
static json_t *create_next(const struct store_ctx *ctx, const char *id, const PGresult *u, struct store_err *err) {
    const char *rule = PQgetvalue(u, 0, C_RECURRENCE), *due_local = PQgetvalue(u, 0, C_NCOLS + 1);
    const char *start_text = PQgetisnull(u, 0, C_NCOLS) ? due_local : PQgetvalue(u, 0, C_NCOLS);
    int date_only = !strcmp(PQgetvalue(u, 0, C_NCOLS + 2), "t");
    struct rrule rr;
    struct civil start, after, next;
    char why[160] = "";
    if (rrule_parse(rule, &rr, why, sizeof why) != 0 || civil_parse(start_text, &start) != 0 ||
        civil_parse(due_local, &after) != 0) {
        log_warn("store_tasks: task %s: cannot compute the next occurrence of '%s' from %s: %s", id, rule, due_local,
                 why);
        return json_null();
    }
    if (!rrule_next(&rr, start, after, &next) || next.y > 9999) return json_null();
    if (date_only) next.h = next.mi = next.s = 0;
    char local[20], date[11];
    civil_format(next, local);
    snprintf(date, sizeof date, "%.10s", local);
    const char *p[4] = {id, start_text, local, date_only ? date : NULL};
    PGresult *r = run(ctx, err, NULL,
                      "INSERT INTO tasks AS t (user_id, parent_id, title, notes, priority, labels, recurrence, "
                      "recurrence_start, due_at, due_date) "
                      "SELECT p.user_id, p.parent_id, p.title, p.notes, p.priority, p.labels, p.recurrence, "
                      "$2::timestamp, "
                      "$3::timestamp AT TIME ZONE u.timezone, $4::date "
                      "FROM tasks p JOIN users u ON u.id = p.user_id "
                      "WHERE p.id = $1::uuid AND p.user_id = orrery_uid() "
                      "RETURNING " TASK_COLUMNS,
                      4, p);
    if (!r) return NULL;
    if (PQntuples(r) != 1) {
        PQclear(r);
        store_fail(err, 500, "internal", NULL, "internal error");
        return NULL;
    }
    json_t *task = task_json(r, 0);
    PQclear(r);
    const char *next_id = json_string_value(json_object_get(task, "id"));
    const char *q[2] = {id, next_id};
    r = run(ctx, err, NULL, "UPDATE tasks SET next_id = $2::uuid WHERE id = $1::uuid AND user_id = orrery_uid()", 2, q);
    if (!r) {
        json_decref(task);
        return NULL;
    }
    PQclear(r);
    json_t *diff = json_deep_copy(task);
    json_object_set_new(diff, "recurrence_of", json_string(id));
    int rc = store_activity(ctx, err, "create", "task", next_id, diff);
    json_decref(diff);
    if (rc) {
        json_decref(task);
        return NULL;
    }
    return task;
}

json_t *store_task_update(const struct store_ctx *ctx, const char *id, json_t *in,
                          const struct store_match *match, struct store_err *err) {
    struct task_input t;
    json_t *old = NULL, *task = NULL;
    PGresult *r = NULL;
    char uid[37];
    if (!uuid_norm(id, uid)) {
        not_found(err);
        return NULL;
    }
    if (parse_input(in, 0, &t, err)) goto done;
    if (json_object_size(in) == 0) {
        store_bad_field(err, "body", "nothing to change: send at least one field");
        goto done;
    }
    if (t.parent_id) {
        /* Parent changes of one user run one at a time (taken before any row lock, so waits
         * cannot cross): two moves at once could otherwise each pass the cycle check. */
        r = run(ctx, err, NULL,
                "SELECT pg_advisory_xact_lock(hashtext('orrery.tasks.tree'), hashtext(orrery_uid()::text))", 0, NULL);
        if (!r) goto done;
        PQclear(r);
    }
    const char *p1[1] = {uid};
    r = run(ctx, err, NULL,
            "SELECT " TASK_COLUMNS ", t.next_id IS NULL FROM tasks t "
            "WHERE t.id = $1::uuid AND t.user_id = orrery_uid() FOR NO KEY UPDATE",
            1, p1);
    if (!r) goto done;
    if (PQntuples(r) != 1) {
        not_found(err);
        goto done;
    }
    old = task_json(r, 0);
    int no_next_yet = !strcmp(PQgetvalue(r, 0, C_NCOLS), "t");
    PQclear(r);
    r = NULL;
    if (!store_match_ok(match, json_integer_value(json_object_get(old, "version")))) {
        store_fail(err, 412, "precondition_failed", NULL,
                   "the task was changed since you read it (version %lld): read it again",
                   (long long)json_integer_value(json_object_get(old, "version")));
        goto done;
    }
    if (t.parent_id && check_parent(ctx, uid, t.parent_id, err)) goto done;

    const char *was = json_string_value(json_object_get(old, "status"));
    const char *now_status = t.status ? t.status : was;
    int completing = strcmp(was, "done") && !strcmp(now_status, "done");
    const char *completed = completing ? "set" : (!strcmp(was, "done") && strcmp(now_status, "done")) ? "clear" : "";
    const char *p[14] = {uid,
                         t.title,
                         t.has_notes ? t.notes : NULL,
                         t.status,
                         t.has_priority ? t.priority : NULL,
                         t.has_due ? "t" : "f",
                         t.due_ts,
                         t.due_date,
                         t.labels,
                         t.has_recurrence ? "t" : "f",
                         t.recurrence,
                         t.has_parent ? "t" : "f",
                         t.parent_id,
                         completed};
    /* A new due date or rule starts the series afresh: recurrence_start goes back to NULL. */
    r = run(ctx, err, "due_at",
            "UPDATE tasks t SET title = COALESCE($2::text, t.title), notes = COALESCE($3::text, t.notes), "
            "status = COALESCE($4::text, t.status), priority = COALESCE($5::smallint, t.priority), "
            "due_at = CASE WHEN $6::bool THEN COALESCE($7::timestamptz, $8::date::timestamp AT TIME ZONE " USER_TZ ") "
            "ELSE t.due_at END, "
            "due_date = CASE WHEN $6::bool THEN $8::date ELSE t.due_date END, "
            "labels = CASE WHEN $9::jsonb IS NULL THEN t.labels ELSE " LABELS_FROM("$9") " END, "
            "recurrence = CASE WHEN $10::bool THEN $11::text ELSE t.recurrence END, "
            "recurrence_start = CASE WHEN $6::bool OR $10::bool THEN NULL ELSE t.recurrence_start END, "
            "parent_id = CASE WHEN $12::bool THEN $13::uuid ELSE t.parent_id END, "
            "completed_at = CASE $14::text WHEN 'set' THEN now() WHEN 'clear' THEN NULL ELSE t.completed_at END, "
            "version = t.version + 1, updated_at = now() "
            "WHERE t.id = $1::uuid AND t.user_id = orrery_uid() "
            "RETURNING " TASK_COLUMNS ", to_char(t.recurrence_start, 'YYYY-MM-DD\"T\"HH24:MI:SS'), " DUE_LOCAL
            ", t.due_date IS NOT NULL",
            14, p);
    if (!r) goto done;
    if (PQntuples(r) != 1) {
        not_found(err);
        goto done;
    }
    task = task_json(r, 0);
    json_t *diff = json_object();
    for (const char *const *f = FIELDS; *f; f++) {
        json_t *a = json_object_get(old, *f), *b = json_object_get(task, *f);
        if (!json_equal(a, b)) json_object_set_new(diff, *f, json_pack("{s:O, s:O}", "from", a, "to", b));
    }
    int rc = store_activity(ctx, err, "update", "task", uid, diff);
    json_decref(diff);
    if (rc) goto fail;
    if (completing && no_next_yet && !PQgetisnull(r, 0, C_RECURRENCE) && !PQgetisnull(r, 0, C_NCOLS + 1)) {
        json_t *next = create_next(ctx, uid, r, err);
        if (!next) goto fail;
        if (json_is_null(next)) json_decref(next);
        else json_object_set_new(task, "next", next);
    }
    goto done;
fail:
    json_decref(task);
    task = NULL;
done:
    PQclear(r);
    json_decref(old);
    input_free(&t);
    return task;
}

/* ---- Delete ---- */

int store_task_delete(const struct store_ctx *ctx, const char *id, const struct store_match *match,
                      struct store_err *err) {
    char uid[37];
    if (!uuid_norm(id, uid)) return not_found(err);
    const char *p[1] = {uid};
    PGresult *r = run(ctx, err, NULL,
                      "SELECT t.title, t.version, (WITH RECURSIVE sub(id) AS ("
                      " SELECT c.id FROM tasks c WHERE c.parent_id = t.id AND c.user_id = orrery_uid()"
                      " UNION SELECT c.id FROM tasks c JOIN sub s ON c.parent_id = s.id WHERE c.user_id = orrery_uid())"
                      " SELECT count(*) FROM sub) "
                      "FROM tasks t WHERE t.id = $1::uuid AND t.user_id = orrery_uid() FOR UPDATE",
                      1, p);
    if (!r) return -1;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return not_found(err);
    }
    long long version = strtoll(PQgetvalue(r, 0, 1), NULL, 10), subtasks = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
    json_t *diff = json_pack("{s:s}", "title", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (subtasks > 0) json_object_set_new(diff, "subtasks_deleted", json_integer(subtasks));
    int rc = -1;
    if (!store_match_ok(match, version)) {
        store_fail(err, 412, "precondition_failed", NULL,
                   "the task was changed since you read it (version %lld): read it again", version);
        goto done;
    }
    /* Sub-tasks go with it (ON DELETE CASCADE). */
    r = run(ctx, err, NULL, "DELETE FROM tasks WHERE id = $1::uuid AND user_id = orrery_uid()", 1, p);
    if (!r) goto done;
    PQclear(r);
    rc = store_activity(ctx, err, "delete", "task", uid, diff);
done:
    json_decref(diff);
    return rc;
}

/* ---- List ---- */

/* Filters are $1..$9; the keyset condition of each sort order follows ($10 = id of the last row
 * seen, $11 = its created_at, $12 = its sort key), then the limit. */
#define LIST_BASE                                                                                         \
    "WITH b AS (SELECT COALESCE($3::timestamptz, $4::date::timestamp AT TIME ZONE u.timezone) AS before, " \
    "COALESCE($5::timestamptz, $6::date::timestamp AT TIME ZONE u.timezone) AS after "                   \
    "FROM users u WHERE u.id = orrery_uid()) "                                                            \
    "SELECT " TASK_COLUMNS " FROM tasks t, b WHERE t.user_id = orrery_uid() "                             \
    "AND ($1::text IS NULL OR t.status = $1) "                                                            \
    "AND ($2::text IS NULL OR t.labels @> ARRAY[lower($2)]) "                                             \
    "AND (b.before IS NULL OR t.due_at < b.before) AND (b.after IS NULL OR t.due_at >= b.after) "        \
    "AND ($7::text IS NULL OR t.search @@ websearch_to_tsquery('simple', $7)) "                           \
    "AND ($8::uuid IS NULL OR t.parent_id = $8::uuid) AND (NOT $9::bool OR t.parent_id IS NULL) "

static const struct {
    const char *name;
    int keyed;       /* the cursor carries a sort key besides created_at and id */
    const char *sql;
} SORTS[] = {
    {"created_at", 0,
     LIST_BASE "AND ($10::uuid IS NULL OR (t.created_at, t.id) > ($11::timestamptz, $10::uuid)) "
               "ORDER BY t.created_at, t.id LIMIT $12"},
    {"priority", 1,
     LIST_BASE "AND ($10::uuid IS NULL OR "
               "(t.priority, t.created_at, t.id) > ($12::smallint, $11::timestamptz, $10::uuid)) "
               "ORDER BY t.priority, t.created_at, t.id LIMIT $13"},
    {"due_at", 1,
     LIST_BASE "AND ($10::uuid IS NULL OR CASE WHEN $12::timestamptz IS NULL "
               "THEN t.due_at IS NULL AND (t.created_at, t.id) > ($11::timestamptz, $10::uuid) "
               "ELSE t.due_at IS NULL OR "
               "(t.due_at, t.created_at, t.id) > ($12::timestamptz, $11::timestamptz, $10::uuid) END) "
               "ORDER BY t.due_at NULLS LAST, t.created_at, t.id LIMIT $13"},
};

/* A query value that must be a string (absent: *out = NULL). */
static int query_string(json_t *q, const char *key, size_t max, const char **out, struct store_err *err) {
    json_t *v = json_object_get(q, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (text_field(v, key, 1, max, 0, out, err)) return -1;
    return 0;
}

/* A due bound: a timestamp goes to ts, a date to date. */
static int query_time(json_t *q, const char *key, const char **ts, const char **date, struct store_err *err) {
    const char *s;
    int is_date;
    *ts = *date = NULL;
    if (query_string(q, key, 64, &s, err)) return -1;
    if (!s) return 0;
    if (!time_ok(s, &is_date))
        return store_fail(err, 400, "invalid_field", key,
                          "%s must be an RFC 3339 time with offset or a date (2026-03-01)", key);
    if (is_date) *date = s;
    else *ts = s;
    return 0;
}

json_t *store_tasks_list(const struct store_ctx *ctx, json_t *query, struct store_err *err) {
    static const char *const keys[] = {"status", "label", "due_before", "due_after", "q",
                                       "parent_id", "sort", "limit", "cursor", NULL};
    const char *status, *label, *before_ts, *before_date, *after_ts, *after_date, *q, *parent, *sort;
    char parent_buf[37], created[40] = "", key[40] = "", last_id[37] = "", lim[24];
    if (!json_is_object(query)) query = NULL;
    const char *k;
    json_t *v;
    json_object_foreach(query, k, v) {
        int known = 0;
        for (const char *const *a = keys; *a; a++)
            if (!strcmp(*a, k)) known = 1;
        if (!known) {
            store_fail(err, 400, "invalid_field", k, "unknown parameter '%.60s'", k);
            return NULL;
        }
    }
    if (query_string(query, "status", 20, &status, err) || query_string(query, "label", LABEL_MAX, &label, err) ||
        query_time(query, "due_before", &before_ts, &before_date, err) ||
        query_time(query, "due_after", &after_ts, &after_date, err) ||
        query_string(query, "parent_id", 36, &parent, err) || query_string(query, "sort", 20, &sort, err))
        return NULL;
    json_t *qv = json_object_get(query, "q");
    q = NULL;
    if (qv && !json_is_null(qv) && text_field(qv, "q", 0, QUERY_TEXT_MAX, 0, &q, err)) return NULL;
    if (q && blank(q)) q = NULL; /* nothing to search for: no filter */
    if (status && strcmp(status, "open") && strcmp(status, "in_progress") && strcmp(status, "done") &&
        strcmp(status, "cancelled")) {
        store_bad_field(err, "status", "status must be open, in_progress, done or cancelled");
        return NULL;
    }
    int top_level = parent && !strcmp(parent, "null");
    if (parent && !top_level) {
        if (!uuid_norm(parent, parent_buf)) {
            store_bad_field(err, "parent_id", "parent_id must be a task id, or null for top-level tasks");
            return NULL;
        }
        parent = parent_buf;
    } else {
        parent = NULL;
    }
    size_t s = 0;
    if (sort) {
        while (s < sizeof SORTS / sizeof SORTS[0] && strcmp(SORTS[s].name, sort)) s++;
        if (s == sizeof SORTS / sizeof SORTS[0]) {
            store_bad_field(err, "sort", "sort must be created_at, due_at or priority");
            return NULL;
        }
    }
    long long limit = LIST_LIMIT_DEFAULT;
    json_t *lv = json_object_get(query, "limit");
    if (lv && !json_is_null(lv)) {
        if (!json_is_integer(lv) || json_integer_value(lv) < 1 || json_integer_value(lv) > LIST_LIMIT_MAX) {
            store_bad_field(err, "limit", "limit must be a whole number from 1 to 200");
            return NULL;
        }
        limit = json_integer_value(lv);
    }
    json_t *cur = json_object_get(query, "cursor");
    int have_key = 0;
    if (cur && !json_is_null(cur)) {
        json_t *cs = json_object_get(cur, "s"), *ci = json_object_get(cur, "i"), *cc = json_object_get(cur, "c"),
               *ck = json_object_get(cur, "k");
        int dummy;
        int ok = json_is_object(cur) && json_is_string(cs) && !strcmp(json_string_value(cs), SORTS[s].name) &&
                 json_is_string(ci) && uuid_norm(json_string_value(ci), last_id) && json_is_string(cc) &&
                 store_time_valid(json_string_value(cc), &dummy) && strlen(json_string_value(cc)) < sizeof created;
        if (ok && SORTS[s].keyed) {
            if (!strcmp(SORTS[s].name, "priority"))
                ok = json_is_integer(ck) && json_integer_value(ck) >= 1 && json_integer_value(ck) <= 4;
            else
                ok = json_is_null(ck) || (json_is_string(ck) && store_time_valid(json_string_value(ck), &dummy) &&
                                          strlen(json_string_value(ck)) < sizeof key);
        }
        if (!ok) {
            store_bad_field(err, "cursor", "cursor is not valid for this list: pass back the next_cursor of a previous page");
            return NULL;
        }
        snprintf(created, sizeof created, "%s", json_string_value(cc));
        if (json_is_integer(ck)) snprintf(key, sizeof key, "%lld", (long long)json_integer_value(ck));
        else if (json_is_string(ck)) snprintf(key, sizeof key, "%s", json_string_value(ck));
        have_key = key[0] != '\0';
    }
    snprintf(lim, sizeof lim, "%lld", limit + 1); /* one more tells whether there is a next page */
    const char *p[13] = {status, label, before_ts, before_date, after_ts, after_date, q, parent, top_level ? "t" : "f"};
    int n = 9;
    p[n++] = last_id[0] ? last_id : NULL;
    p[n++] = last_id[0] ? created : NULL;
    if (SORTS[s].keyed) p[n++] = have_key ? key : NULL;
    p[n++] = lim;
    PGresult *r = run(ctx, err, NULL, SORTS[s].sql, n, p);
    if (!r) return NULL;
    int rows = PQntuples(r), shown = rows > limit ? (int)limit : rows;
    json_t *items = json_array();
    for (int i = 0; i < shown; i++) json_array_append_new(items, task_json(r, i));
    json_t *next = json_null();
    if (rows > limit) {
        int i = shown - 1;
        json_decref(next);
        next = json_pack("{s:s, s:s, s:s}", "s", SORTS[s].name, "i", PQgetvalue(r, i, C_ID), "c",
                         PQgetvalue(r, i, C_CREATED_US));
        if (!strcmp(SORTS[s].name, "priority"))
            json_object_set_new(next, "k", json_integer(atoi(PQgetvalue(r, i, C_PRIORITY))));
        else if (SORTS[s].keyed)
            json_object_set_new(next, "k", str_or_null(r, i, C_DUE_US));
    }
    PQclear(r);
    return json_pack("{s:o, s:o}", "items", items, "next", next);
}
