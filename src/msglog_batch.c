/* msglog_batch — a batch of the message log's queue as SQL (see msglog_internal.h): the items
 * become one JSON array, written in one transaction, in one round trip (libpq pipeline): INSERT
 * ... SELECT FROM jsonb_to_recordset, then the handled marks as one UPDATE. A batch that a
 * statement refuses is written again row by row, so one bad row costs itself, not its
 * neighbours; a batch that keeps losing its connection is given up after ATTEMPTS_MAX tries.
 * Runs on the writer thread only. Uses db, jansson, libpq, log. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "msglog_internal.h"

/* "id|receiver" with the id lower-cased: the key a row and its handled marks share. */
static void row_key(char out[104], const char *id, const char *receiver) {
    size_t i = 0;
    for (; id[i] && i < 36; i++) out[i] = (char)(id[i] >= 'A' && id[i] <= 'F' ? id[i] - 'A' + 'a' : id[i]);
    out[i++] = '|';
    snprintf(out + i, 104 - i, "%s", receiver);
}

/* ---- Writing a batch ---- */

/* One batch as the statements take it. */
struct batch {
    json_t *rows;    /* [{id, receiver, ..., content (JSON text), created_at, state}] */
    json_t *index;   /* row key -> position in rows */
    json_t *marks;   /* [{id, receiver}] for the UPDATE: marks whose record is not in this batch */
    json_t *users;   /* user id -> true: rows to insert only if the user still exists */
    json_t *used;    /* carried marks this batch resolves (removed once it is written) */
};

static json_t *str(const char *s) { return json_string(s); } /* NULL for invalid UTF-8 */

static json_t *row_json(const struct item *it, const char *state) {
    const struct bus_envelope *e = &it->env;
    double at = e->created_at;
    if (!isfinite(at) || at <= 0 || at > 1e11) { /* to_timestamp must accept it: out of range means now */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        at = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    }
    json_t *o = json_object();
    if (!o) return NULL;
    json_t *content = json_null();
    if (e->content) {
        /* Validated here, kept as text: PostgreSQL parses it (numbers exact) as jsonb. */
        json_t *v = json_loads(e->content, JSON_DECODE_ANY | JSON_DECODE_INT_AS_REAL, NULL);
        json_decref(v);
        content = v ? str(e->content) : NULL;
    }
    const char *names[] = {"id", "receiver", "performative", "sender", "topic", "conversation_id",
                           "reply_with", "in_reply_to"};
    const char *vals[] = {e->id, e->receiver, e->performative, e->sender, e->topic, e->conversation_id,
                          e->reply_with, e->in_reply_to};
    /* json_object_set_new takes its value even when it fails; a NULL value makes it fail. */
    int ok = json_object_set_new(o, "content", content) == 0;
    for (size_t i = 0; ok && i < sizeof names / sizeof names[0]; i++)
        ok = json_object_set_new(o, names[i], str(vals[i])) == 0;
    ok = ok && json_object_set_new(o, "user_id", e->user_id[0] ? json_string(e->user_id) : json_null()) == 0 &&
         json_object_set_new(o, "created_at", json_real(at)) == 0 &&
         json_object_set_new(o, "state", json_string(state)) == 0;
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static void batch_free(struct batch *b) {
    json_decref(b->rows);
    json_decref(b->index);
    json_decref(b->marks);
    json_decref(b->users);
    json_decref(b->used);
}

/* Turns items into b (items stay the caller's). A pending record whose handled mark is in the
 * batch (before or after it) or carried from an earlier batch is inserted as 'handled'. */
static int batch_build(struct msglog *ml, const struct item *items, struct batch *b, unsigned long *rejected) {
    b->rows = json_array();
    b->index = json_object();
    b->marks = json_array();
    b->users = json_object();
    b->used = json_object();
    json_t *mark_keys = json_object();
    if (!b->rows || !b->index || !b->marks || !b->users || !b->used || !mark_keys) {
        json_decref(mark_keys);
        return -1;
    }
    char key[104];
    for (const struct item *it = items; it; it = it->next) {
        row_key(key, it->env.id, it->env.receiver);
        json_t *at = json_object_get(b->index, key);
        json_t *row = at ? json_array_get(b->rows, (size_t)json_integer_value(at)) : NULL;
        const char *state = row ? json_string_value(json_object_get(row, "state")) : NULL;
        if (it->kind == ITEM_HANDLED) {
            if (state && !strcmp(state, "pending")) {
                json_object_set_new(row, "state", json_string("handled"));
            } else if (!json_object_get(mark_keys, key)) {
                json_object_set_new(mark_keys, key, json_true());
                json_array_append_new(b->marks,
                                      json_pack("{s:s, s:s}", "id", it->env.id, "receiver", it->env.receiver));
            }
            continue;
        }
        const char *want = it->kind == ITEM_PENDING ? "pending" : "trace";
        if (it->kind == ITEM_PENDING && (json_object_get(mark_keys, key) || json_object_get(ml->carried, key))) {
            want = "handled";
            if (json_object_get(ml->carried, key)) json_object_set_new(b->used, key, json_true());
        }
        if (row) { /* the same delivery twice: the first row stands, a pending one outranks a trace */
            if (!strcmp(state, "trace") && strcmp(want, "trace")) json_object_set_new(row, "state", json_string(want));
            continue;
        }
        json_t *o = row_json(it, want);
        if (!o) {
            (*rejected)++;
            log_warn("msglog: envelope %s for '%s' not recorded: invalid UTF-8 or content not JSON", it->env.id,
                     it->env.receiver);
            continue;
        }
        json_object_set_new(b->index, key, json_integer((json_int_t)json_array_size(b->rows)));
        json_array_append_new(b->rows, o);
        if (it->env.user_id[0]) json_object_set_new(b->users, it->env.user_id, json_true());
    }
    json_decref(mark_keys);
    return 0;
}

enum { WR_OK = 0, WR_REFUSED = 1, WR_LOST = 2 };

static const char SQL_USERS[] =
    /* Read as 'admin' (users are not 'system' rows): which of the batch's users still exist, so a
     * user deleted meanwhile loses their rows instead of failing everyone's batch. */
    "SELECT set_config('orrery.msglog_users', coalesce((SELECT string_agg(u.id::text, ',') FROM users u "
    "WHERE u.id IN (SELECT value::uuid FROM jsonb_array_elements_text($1::jsonb))), ''), true)";

static const char SQL_INSERT[] =
    "INSERT INTO agent_messages (id, receiver, performative, sender, topic, conversation_id, reply_with, "
    "in_reply_to, user_id, content, created_at, instance, state) "
    "SELECT x.id, x.receiver, x.performative, x.sender, x.topic, x.conversation_id, x.reply_with, x.in_reply_to, "
    "x.user_id, x.content::jsonb, to_timestamp(x.created_at), $2::uuid, x.state "
    "FROM ROWS FROM (jsonb_to_recordset($1::jsonb) AS (id uuid, receiver text, performative text, sender text, "
    "topic text, conversation_id text, reply_with text, in_reply_to text, user_id uuid, content text, "
    "created_at double precision, state text)) WITH ORDINALITY AS x(id, receiver, performative, sender, topic, "
    "conversation_id, reply_with, in_reply_to, user_id, content, created_at, state, n) "
    "WHERE x.user_id IS NULL "
    "OR x.user_id = ANY (string_to_array(current_setting('orrery.msglog_users', true), ',')::uuid[]) "
    "ORDER BY x.n "
    "ON CONFLICT (id, receiver) DO NOTHING";

/* Marks whose row does not exist (yet) come back, to be carried to later batches. */
static const char SQL_HANDLED[] =
    "WITH h AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS h(id uuid, receiver text)), "
    "u AS (UPDATE agent_messages m SET state = 'handled' FROM h WHERE m.id = h.id AND m.receiver = h.receiver "
    "AND m.state IN ('pending', 'redelivered') RETURNING m.id) "
    "SELECT h.id::text, h.receiver FROM h "
    "WHERE NOT EXISTS (SELECT 1 FROM agent_messages m WHERE m.id = h.id AND m.receiver = h.receiver)";

/* One transaction: rows (JSON array text or NULL), users (JSON array text or NULL), marks (JSON
 * array text or NULL). Unmatched marks go to ml->carried. WR_OK, WR_REFUSED (a statement failed on
 * a live connection: sqlstate/msg say why) or WR_LOST (the connection is gone). */
static int write_tx(struct msglog *ml, const char *rows, const char *users, const char *marks, char *why,
                    size_t whylen) {
    struct db_stmt st[6];
    int n = 0, handled_at = -1;
    const char *pu[1] = {users}, *pr[2] = {rows, ml->instance}, *pm[1] = {marks};
    if (users) {
        st[n++] = (struct db_stmt){"SELECT set_config('orrery.ctx', 'admin', true)", 0, NULL};
        st[n++] = (struct db_stmt){SQL_USERS, 1, pu};
        st[n++] = (struct db_stmt){"SELECT set_config('orrery.ctx', 'system', true)", 0, NULL};
    }
    if (rows) st[n++] = (struct db_stmt){SQL_INSERT, 2, pr};
    if (marks) {
        handled_at = n;
        st[n++] = (struct db_stmt){SQL_HANDLED, 1, pm};
    }
    if (!n) return WR_OK;
    PGresult *res[6];
    int failed = msglog_run_tx(ml->conn, st, n, res);
    int rc = WR_OK;
    if (failed >= 0) {
        PGresult *bad = failed < n ? res[failed] : NULL;
        const char *m = bad ? PQresultErrorMessage(bad) : "";
        char msg[320];
        db_one_line(msg, sizeof msg, *m ? m : PQerrorMessage(ml->conn));
        snprintf(why, whylen, "%s%s%s", bad ? msglog_sqlstate(bad) : "", bad ? ": " : "", msg);
        rc = PQstatus(ml->conn) == CONNECTION_OK ? WR_REFUSED : WR_LOST;
    } else if (handled_at >= 0) {
        long long expiry = msglog_mono_ms() + CARRY_TTL_MS;
        char key[104];
        for (int i = 0; i < PQntuples(res[handled_at]); i++) {
            if (json_object_size(ml->carried) >= CARRY_MAX) break;
            row_key(key, PQgetvalue(res[handled_at], i, 0), PQgetvalue(res[handled_at], i, 1));
            json_object_set_new(ml->carried, key, json_integer(expiry));
        }
    }
    for (int i = 0; i < n; i++) PQclear(res[i]);
    return rc;
}

static char *dump(json_t *v) { return json_dumps(v, JSON_COMPACT); }

/* Runs one transaction, reconnecting when the connection is lost; *attempts counts the losses.
 * WR_OK, WR_REFUSED, or WR_LOST when it gave up (too many losses, or told to quit). */
static int write_retrying(struct msglog *ml, const char *rows, const char *users, const char *marks, int *attempts,
                          char *why, size_t whylen) {
    for (;;) {
        if (msglog_ensure_connected(ml, 0) != 0) {
            snprintf(why, whylen, "shutting down without a connection");
            return WR_LOST;
        }
        int rc = write_tx(ml, rows, users, marks, why, whylen);
        if (rc != WR_LOST) return rc;
        log_warn("msglog: connection lost while writing (%s)", why);
        if (++*attempts >= ATTEMPTS_MAX || msglog_quitting(ml, 0)) return WR_LOST;
    }
}

/* Writes the items: the whole batch in one transaction; if a statement refuses it, row by row
 * (the marks last), so only the rows at fault are lost. Returns the records written, or -1 when
 * the batch was given up. */
long msglog_write_batch(struct msglog *ml, const struct item *items) {
    struct batch b;
    unsigned long rejected = 0;
    long written = -1;
    int attempts = 0;
    char why[512] = "out of memory", *rows = NULL, *users = NULL, *marks = NULL;
    memset(&b, 0, sizeof b);
    if (json_object_size(ml->carried)) msglog_expire_carried(ml); /* also under steady traffic */
    if (batch_build(ml, items, &b, &rejected) != 0) goto done;
    size_t nrows = json_array_size(b.rows), nmarks = json_array_size(b.marks);
    if (json_object_size(b.users)) {
        json_t *ids = json_array();
        const char *k;
        json_t *v;
        json_object_foreach(b.users, k, v) json_array_append_new(ids, json_string(k));
        users = dump(ids);
        json_decref(ids);
        if (!users) goto done;
    }
    if ((nrows && !(rows = dump(b.rows))) || (nmarks && !(marks = dump(b.marks)))) goto done;

    int rc = write_retrying(ml, rows, users, marks, &attempts, why, sizeof why);
    if (rc == WR_OK) written = (long)nrows;
    if (rc == WR_REFUSED) {
        log_warn("msglog: a batch of %zu rows was refused (%s); writing it row by row", nrows, why);
        written = 0;
        for (size_t i = 0; i < nrows && rc != WR_LOST; i++) {
            json_t *row = json_array_get(b.rows, i), *uid = json_object_get(row, "user_id");
            json_t *one = json_pack("[O]", row), *ids = json_is_string(uid) ? json_pack("[O]", uid) : NULL;
            char *r1 = one ? dump(one) : NULL, *u1 = ids ? dump(ids) : NULL;
            json_decref(one);
            json_decref(ids);
            rc = r1 && (!ids || u1) ? write_retrying(ml, r1, u1, NULL, &attempts, why, sizeof why) : WR_REFUSED;
            if (rc == WR_OK) {
                written++;
            } else if (rc == WR_REFUSED) {
                rejected++;
                log_warn("msglog: envelope %s for '%s' refused by the database: %s",
                         json_string_value(json_object_get(row, "id")),
                         json_string_value(json_object_get(row, "receiver")), why);
            }
            free(r1);
            free(u1);
        }
        if (rc != WR_LOST && marks) {
            rc = write_retrying(ml, NULL, NULL, marks, &attempts, why, sizeof why);
            if (rc == WR_REFUSED) log_warn("msglog: %zu handled marks refused by the database: %s", nmarks, why);
        }
        if (rc == WR_LOST) written = -1;
    }
    if (written >= 0) {
        const char *k;
        json_t *v;
        json_object_foreach(b.used, k, v) json_object_del(ml->carried, k);
    }
done:
    if (written < 0)
        log_warn("msglog: gave up a batch of %zu records and marks after %d tries: %s", json_array_size(b.rows) +
                 json_array_size(b.marks), attempts, why);
    free(rows);
    free(users);
    free(marks);
    batch_free(&b);
    if (rejected) {
        pthread_mutex_lock(&ml->mu);
        ml->st.rejected += rejected;
        pthread_mutex_unlock(&ml->mu);
    }
    return written;
}

/* Forgets carried marks whose record never came. */
void msglog_expire_carried(struct msglog *ml) {
    long long now = msglog_mono_ms();
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(ml->carried, tmp, k, v) {
        if (json_integer_value(v) <= now) json_object_del(ml->carried, k);
    }
}

