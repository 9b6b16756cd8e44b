/* replica — see replica.h. The queue is a singly linked FIFO guarded by r->mu: producers append at
 * the tail, only the replica thread removes, and always from the head, so the thread may read the
 * first items it collected without the lock while it sends them. The thread's PGconn is its own
 * and never shared. */
#include "replica.h"

#include <errno.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"

#define BATCH_MAX 64             /* items per transaction */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 5000
/* Every statement is short; a stuck one must not hold the thread (nor a transaction open). */
#define SESSION_OPTIONS "-c statement_timeout=10000 -c idle_in_transaction_session_timeout=10000"

enum { ITEM_PUBLISH, ITEM_AGENT };

struct item {
    struct item *next;
    int kind;
    struct bus_envelope *env;    /* ITEM_PUBLISH (owned) */
    char name[BUS_NAME_MAX + 1]; /* ITEM_AGENT */
    long version;
    size_t bytes;                /* what it counts against REPLICA_QUEUE_BYTES */
    int rejected;                /* PostgreSQL refused it (thread only): dropped with the next batch */
};

struct replica {
    char *url;                   /* owned; holds the password, so it is never logged */
    char instance[37];
    struct replica_handlers h;
    int efd;                     /* eventfd: written when something is queued, and to stop */
    pthread_t thread;

    pthread_mutex_t mu;          /* guards the queue, stopping, stop_at_ms and stats */
    struct item *head, *tail;
    size_t bytes;
    int stopping;
    int64_t stop_at_ms;          /* monotonic end of the final flush */
    struct replica_stats stats;  /* stats.queued is the queue's length */

    PGconn *conn;                /* the thread's only; NULL while disconnected */
    int64_t invalid_logged_ms;   /* thread only: last "ignored payload" log line */
};

/* ---- Helpers ---- */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* 1 when s is a UUID in its 8-4-4-4-12 text form. */
static int uuid_valid(const char *s) {
    if (!s || strlen(s) != 36) return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-') return 0;
        } else if (!is_hex(s[i])) {
            return 0;
        }
    }
    return 1;
}

/* Agent names as the bus takes them: 1..63 of [a-z0-9_-]. */
static int name_valid(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > BUS_NAME_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-')) return 0;
    return 1;
}

static void wake(struct replica *r) {
    uint64_t one = 1;
    /* EAGAIN means the counter is already non-zero: the thread wakes anyway. */
    if (write(r->efd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_error("replica: eventfd write: %s", strerror(errno));
}

static void drain_wake(struct replica *r) {
    uint64_t v;
    while (read(r->efd, &v, sizeof v) > 0) {}
}

static int stopping(struct replica *r) {
    pthread_mutex_lock(&r->mu);
    int s = r->stopping;
    pthread_mutex_unlock(&r->mu);
    return s;
}

/* The deadline an operation may run to: its own, or the final flush's once replica_free was called. */
static int64_t bounded(struct replica *r, int64_t deadline) {
    pthread_mutex_lock(&r->mu);
    if (r->stopping && r->stop_at_ms < deadline) deadline = r->stop_at_ms;
    pthread_mutex_unlock(&r->mu);
    return deadline;
}

/* Logs a libpq failure; the message (several lines) goes in a field, where JSON escapes it. */
static void log_pg(int level, const char *what, PGconn *conn) {
    const char *msg = conn ? PQerrorMessage(conn) : "out of memory";
    json_t *f = json_pack("{s:s}", "error", msg && *msg ? msg : "unknown error");
    log_fields(level, f, "replica: %s", what);
    json_decref(f);
}

static void notice_to_log(void *arg, const char *message) {
    (void)arg;
    json_t *f = json_pack("{s:s}", "notice", message ? message : "");
    log_fields(LOG_DEBUG, f, "replica: notice");
    json_decref(f);
}

static void count(struct replica *r, unsigned long *field, unsigned long n) {
    pthread_mutex_lock(&r->mu);
    *field += n;
    pthread_mutex_unlock(&r->mu);
}

/* ---- Queue ---- */

static int enqueue(struct replica *r, struct item *it) {
    pthread_mutex_lock(&r->mu);
    if (r->stats.queued >= REPLICA_QUEUE_MAX || r->bytes + it->bytes > REPLICA_QUEUE_BYTES) {
        r->stats.dropped++;
        pthread_mutex_unlock(&r->mu);
        bus_envelope_free(it->env);
        free(it);
        return -1;
    }
    if (r->tail) r->tail->next = it;
    else r->head = it;
    r->tail = it;
    r->stats.queued++;
    r->bytes += it->bytes;
    pthread_mutex_unlock(&r->mu);
    wake(r);
    return 0;
}

/* Removes the first n items (those the thread collected), counting them as sent or dropped. */
static void dequeue(struct replica *r, int n) {
    struct item *done = NULL;
    unsigned long sent = 0, dropped = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < n && r->head; i++) {
        struct item *it = r->head;
        r->head = it->next;
        if (!r->head) r->tail = NULL;
        r->stats.queued--;
        r->bytes -= it->bytes;
        if (it->rejected) dropped++;
        else sent++;
        it->next = done;
        done = it;
    }
    r->stats.sent += sent;
    r->stats.dropped += dropped;
    pthread_mutex_unlock(&r->mu);
    while (done) {
        struct item *next = done->next;
        bus_envelope_free(done->env);
        free(done);
        done = next;
    }
}

/* Drops everything queued (counted), at shutdown. */
static void drop_all(struct replica *r) {
    pthread_mutex_lock(&r->mu);
    int n = 0;
    for (struct item *it = r->head; it; it = it->next, n++) it->rejected = 1;
    pthread_mutex_unlock(&r->mu);
    dequeue(r, n);
}

int replica_publish(struct replica *r, const struct bus_envelope *env) {
    if (!r || !env || bus_envelope_validate(env, NULL, 0) != BUS_OK) return -1;
    struct item *it = calloc(1, sizeof *it);
    if (!it || !(it->env = bus_envelope_copy(env)) || bus_envelope_fill(it->env) != BUS_OK) {
        if (it) bus_envelope_free(it->env);
        free(it);
        count(r, &r->stats.dropped, 1);
        return -1;
    }
    it->kind = ITEM_PUBLISH;
    it->bytes = sizeof *it + sizeof *it->env + (env->content ? strlen(env->content) : 0);
    return enqueue(r, it);
}

int replica_agent_changed(struct replica *r, const char *name, long version) {
    if (!r || !name_valid(name)) return -1;
    struct item *it = calloc(1, sizeof *it);
    if (!it) {
        count(r, &r->stats.dropped, 1);
        return -1;
    }
    it->kind = ITEM_AGENT;
    memcpy(it->name, name, strlen(name) + 1);
    it->version = version;
    it->bytes = sizeof *it;
    return enqueue(r, it);
}

/* ---- Connection ---- */

static void set_connected(struct replica *r, int on) {
    pthread_mutex_lock(&r->mu);
    r->stats.connected = on;
    pthread_mutex_unlock(&r->mu);
}

/* Connects without blocking past deadline (nor past the final flush's), then LISTENs.
 * 0 (r->conn set) or -1. loud: log a failure as a warning (later ones of a streak are debug). */
static int pg_connect(struct replica *r, int64_t deadline, int loud) {
    /* expand_dbname: the URL is split into its parameters; the keywords after it win. Keepalives
     * and tcp_user_timeout notice a peer that vanished, which an idle listener would never learn. */
    const char *keys[] = {"dbname",          "application_name",    "options",          "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
                          NULL};
    const char *vals[] = {r->url, "orrery-replica", SESSION_OPTIONS, "1", "30", "10", "3", "20000", NULL};
    PGconn *c = PQconnectStartParams(keys, vals, 1);
    const char *why = "cannot connect";
    if (!c || PQstatus(c) == CONNECTION_BAD) goto fail;
    /* libpq's asynchronous connect: wait for what PQconnectPoll asked for, starting as if WRITING. */
    PostgresPollingStatusType st = PGRES_POLLING_WRITING;
    while (st != PGRES_POLLING_OK) {
        if (st == PGRES_POLLING_FAILED || PQsocket(c) < 0) goto fail;
        int64_t left = bounded(r, deadline) - now_ms();
        if (left <= 0) {
            why = "cannot connect in time";
            goto fail;
        }
        struct pollfd p[2] = {{PQsocket(c), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, 0}, {r->efd, POLLIN, 0}};
        int n = poll(p, 2, (int)left);
        if (n < 0 && errno != EINTR) goto fail;
        if (n > 0 && p[1].revents) drain_wake(r); /* queued items wait; stopping shortens the deadline */
        if (n > 0 && p[0].revents) st = PQconnectPoll(c);
    }
    PQsetNoticeProcessor(c, notice_to_log, NULL);
    /* Fixed channel names, no parameters: LISTEN takes an identifier, not a value. */
    static const char *const listens[] = {"LISTEN " REPLICA_CHANNEL_BUS, "LISTEN " REPLICA_CHANNEL_AGENTS};
    for (size_t i = 0; i < sizeof listens / sizeof listens[0]; i++) {
        PGresult *res = db_exec(c, listens[i], 0, NULL);
        int ok = db_ok(res);
        PQclear(res);
        if (!ok) {
            why = "LISTEN failed";
            goto fail;
        }
    }
    r->conn = c;
    set_connected(r, 1);
    return 0;
fail:
    log_pg(loud ? LOG_WARN : LOG_DEBUG, why, c);
    PQfinish(c);
    return -1;
}

static void drop_conn(struct replica *r, const char *why) {
    if (!r->conn) return;
    log_pg(LOG_WARN, why, r->conn);
    PQfinish(r->conn);
    r->conn = NULL;
    set_connected(r, 0);
}

/* After a failed batch on a live connection: leave no transaction open. -1 if that fails too. */
static int rollback_if_needed(PGconn *c) {
    if (PQstatus(c) != CONNECTION_OK) return -1;
    if (PQtransactionStatus(c) == PQTRANS_IDLE) return 0;
    PGresult *res = db_exec(c, "ROLLBACK", 0, NULL);
    int ok = db_ok(res);
    PQclear(res);
    return ok && PQtransactionStatus(c) == PQTRANS_IDLE ? 0 : -1;
}

/* ---- Sending ---- */

static const char SQL_BEGIN[] = "BEGIN";
static const char SQL_COMMIT[] = "COMMIT";
static const char SQL_SYSTEM[] = "SELECT set_config('orrery.ctx', 'system', true)";
static const char SQL_NOTIFY[] = "SELECT pg_notify($1, $2)";
/* The publication row (receiver ''); the runtime's message log may have written it already. */
static const char SQL_INSERT[] =
    "INSERT INTO agent_messages (id, receiver, performative, sender, topic, conversation_id, reply_with,"
    " in_reply_to, user_id, content, created_at, instance)"
    " VALUES ($1::uuid, '', $2, $3, $4, $5, $6, $7, NULLIF($8, '')::uuid, $9::jsonb,"
    " to_timestamp($10::double precision), $11::uuid)"
    " ON CONFLICT (id, receiver) DO NOTHING";

/* One item made ready to send: its notification payload and, for a large envelope, its row. */
struct prep {
    char *payload;      /* malloc'd; NULL when the item is skipped */
    const char *channel;
    int large;
    char created[48];
    const char *row[11];
    const char *notify[2];
};

/* Builds p for it. -1 when it cannot be sent at all (logged; the caller drops it). */
static int prepare(struct replica *r, struct item *it, struct prep *p) {
    memset(p, 0, sizeof *p);
    if (it->kind == ITEM_AGENT) {
        json_t *o = json_pack("{s:s,s:s,s:I}", "i", r->instance, "agent", it->name, "v", (json_int_t)it->version);
        p->payload = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        p->channel = REPLICA_CHANNEL_AGENTS;
    } else {
        const struct bus_envelope *e = it->env;
        char *json = bus_envelope_to_json(e);
        if (!json) {
            log_warn("replica: envelope %s not sent: its content is not JSON", e->id);
            return -1;
        }
        /* r->instance is a checked UUID and json is jansson's output: the concatenation is JSON. */
        if (asprintf(&p->payload, "{\"i\":\"%s\",\"e\":%s}", r->instance, json) < 0) p->payload = NULL;
        free(json);
        p->channel = REPLICA_CHANNEL_BUS;
        if (p->payload && strlen(p->payload) > REPLICA_INLINE_MAX) {
            free(p->payload);
            p->payload = NULL;
            if (!uuid_valid(e->id)) {
                log_warn("replica: large envelope not sent: its id is not a UUID");
                return -1;
            }
            if (asprintf(&p->payload, "{\"i\":\"%s\",\"id\":\"%s\"}", r->instance, e->id) < 0) p->payload = NULL;
            p->large = 1;
            snprintf(p->created, sizeof p->created, "%.6f", e->created_at);
            const char *row[11] = {e->id,          e->performative, e->sender,  e->topic,   e->conversation_id,
                                   e->reply_with,  e->in_reply_to,  e->user_id, e->content, p->created,
                                   r->instance};
            memcpy(p->row, row, sizeof row);
        }
    }
    if (!p->payload) {
        log_error("replica: out of memory");
        return -1;
    }
    p->notify[0] = p->channel;
    p->notify[1] = p->payload;
    return 0;
}

/* Sends the prepared items in one transaction: BEGIN, the 'system' context if a row is written,
 * per item [INSERT] + pg_notify, COMMIT; one round trip (db_exec_batch), one commit.
 * 0 when committed; 1 when PostgreSQL refused item *bad (nothing committed, connection fine);
 * -1 when the connection failed (whether it committed is unknown). */
static int send_batch(struct replica *r, struct prep *p, int n, int *bad) {
    struct db_stmt st[3 + 2 * BATCH_MAX];
    int owner[3 + 2 * BATCH_MAX], ns = 0, any_large = 0, any = 0;
    for (int i = 0; i < n; i++) {
        any_large |= p[i].payload && p[i].large;
        any |= p[i].payload != NULL;
    }
    if (!any) return 0;
    owner[ns] = -1;
    st[ns++] = (struct db_stmt){SQL_BEGIN, 0, NULL};
    if (any_large) {
        owner[ns] = -1;
        st[ns++] = (struct db_stmt){SQL_SYSTEM, 0, NULL};
    }
    for (int i = 0; i < n; i++) {
        if (!p[i].payload) continue;
        if (p[i].large) {
            owner[ns] = i;
            st[ns++] = (struct db_stmt){SQL_INSERT, 11, p[i].row};
        }
        owner[ns] = i;
        st[ns++] = (struct db_stmt){SQL_NOTIFY, 2, p[i].notify};
    }
    owner[ns] = -1;
    st[ns++] = (struct db_stmt){SQL_COMMIT, 0, NULL};

    PGresult *res[3 + 2 * BATCH_MAX];
    int failed = db_exec_batch(r->conn, st, ns, res);
    int rc = 0;
    if (failed >= 0) {
        if (rollback_if_needed(r->conn) < 0 || owner[failed] < 0) {
            rc = -1; /* lost, or BEGIN/COMMIT itself failed: retry the whole batch after reconnecting */
        } else {
            *bad = owner[failed];
            const char *msg = res[failed] ? PQresultErrorMessage(res[failed]) : "";
            json_t *f = json_pack("{s:s,s:s}", "channel", p[*bad].channel, "error", msg ? msg : "");
            log_fields(LOG_WARN, f, "replica: PostgreSQL refused an item; dropped");
            json_decref(f);
            rc = 1;
        }
    }
    for (int i = 0; i < ns; i++) PQclear(res[i]);
    return rc;
}

/* Sends everything queued, BATCH_MAX items per transaction. 0 when the queue is empty, -1 when the
 * connection failed (the unsent items stay queued, in order). */
static int send_queued(struct replica *r) {
    for (;;) {
        struct item *items[BATCH_MAX];
        int n = 0;
        pthread_mutex_lock(&r->mu);
        for (struct item *it = r->head; it && n < BATCH_MAX; it = it->next) items[n++] = it;
        pthread_mutex_unlock(&r->mu);
        if (n == 0) return 0;

        struct prep p[BATCH_MAX];
        for (int i = 0; i < n; i++) {
            if (items[i]->rejected || prepare(r, items[i], &p[i]) < 0) {
                memset(&p[i], 0, sizeof p[i]);
                items[i]->rejected = 1;
            }
        }
        int bad = -1, rc = send_batch(r, p, n, &bad);
        for (int i = 0; i < n; i++) free(p[i].payload);
        if (rc < 0) return -1;
        if (rc == 1) {
            items[bad]->rejected = 1; /* the rest goes again, without it */
            continue;
        }
        dequeue(r, n);
    }
}

/* ---- Receiving ---- */

/* Counts a payload that was ignored and logs it, at most once a second (a flood of garbage must not
 * become a flood of log lines). */
static void invalid(struct replica *r, const char *channel, const char *why, const char *payload) {
    count(r, &r->stats.invalid, 1);
    int64_t now = now_ms();
    if (r->invalid_logged_ms && now - r->invalid_logged_ms < 1000) return;
    r->invalid_logged_ms = now;
    size_t len = strlen(payload);
    json_t *f =
        json_pack("{s:s,s:s,s:s%}", "channel", channel, "reason", why, "payload", payload, len > 200 ? 200 : len);
    if (!f) f = json_pack("{s:s,s:s}", "channel", channel, "reason", why); /* payload not UTF-8 */
    log_fields(LOG_WARN, f, "replica: ignored a notification");
    json_decref(f);
}

/* Copies a column into a fixed field. 0, or -1 when it does not fit. */
static int copy_field(char *dst, size_t size, const char *src) {
    size_t n = strlen(src);
    if (n >= size) return -1;
    memcpy(dst, src, n + 1);
    return 0;
}

static const char SQL_FETCH[] =
    "SELECT performative, sender, topic, conversation_id, reply_with, in_reply_to, coalesce(user_id::text, ''),"
    " content::text, extract(epoch FROM created_at)::float8"
    " FROM agent_messages WHERE id = $1::uuid AND receiver = ''";

/* Reads the publication row of a large envelope (in a 'system' transaction, one round trip).
 * 0 with *out set (caller frees), 0 with *out NULL and *why set when it is missing or unreadable,
 * -1 when the connection failed. */
static int fetch(struct replica *r, const char *id, struct bus_envelope **out, const char **why) {
    *out = NULL;
    const char *params[] = {id};
    const struct db_stmt st[] = {
        {SQL_BEGIN, 0, NULL}, {SQL_SYSTEM, 0, NULL}, {SQL_FETCH, 1, params}, {SQL_COMMIT, 0, NULL}};
    PGresult *res[4];
    int failed = db_exec_batch(r->conn, st, 4, res);
    int rc = 0;
    if (failed >= 0) {
        if (rollback_if_needed(r->conn) < 0) rc = -1;
        else *why = "the row could not be read";
        goto done;
    }
    PGresult *q = res[2];
    if (PQntuples(q) != 1 || PQnfields(q) != 9) {
        *why = "no such row";
        goto done;
    }
    struct bus_envelope *e = calloc(1, sizeof *e);
    if (!e) {
        *why = "out of memory";
        goto done;
    }
    /* The row is data like any other: every length and the content are checked again. */
    const struct {
        char *dst;
        size_t size;
    } cols[] = {{e->performative, sizeof e->performative}, {e->sender, sizeof e->sender},
                {e->topic, sizeof e->topic},               {e->conversation_id, sizeof e->conversation_id},
                {e->reply_with, sizeof e->reply_with},     {e->in_reply_to, sizeof e->in_reply_to},
                {e->user_id, sizeof e->user_id}};
    int bad = copy_field(e->id, sizeof e->id, id);
    for (int i = 0; i < 7 && !bad; i++) bad = copy_field(cols[i].dst, cols[i].size, PQgetvalue(q, 0, i));
    bad = bad || !bus_performative_valid(e->performative);
    e->created_at = strtod(PQgetvalue(q, 0, 8), NULL);
    if (!bad && !PQgetisnull(q, 0, 7)) {
        /* jsonb prints with spaces; the bus carries compact JSON text. */
        json_t *v = json_loads(PQgetvalue(q, 0, 7), JSON_DECODE_ANY, NULL);
        e->content = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER) : NULL;
        json_decref(v);
        bad = e->content == NULL;
    }
    if (bad) {
        bus_envelope_free(e);
        *why = "the row is not a valid envelope";
        goto done;
    }
    *out = e;
done:
    for (int i = 0; i < 4; i++) PQclear(res[i]);
    return rc;
}

/* Handles one notification. -1 only when the connection failed while fetching. */
static int handle(struct replica *r, const char *channel, const char *payload) {
    json_error_t je;
    json_t *root = json_loads(payload, JSON_REJECT_DUPLICATES, &je);
    json_t *from = json_object_get(root, "i");
    int rc = 0;
    if (!json_is_object(root) || !json_is_string(from) || json_object_size(root) > 3) {
        invalid(r, channel, "not a replica payload", payload);
        goto done;
    }
    if (strcmp(json_string_value(from), r->instance) == 0) goto done; /* our own, back from PostgreSQL */

    if (strcmp(channel, REPLICA_CHANNEL_BUS) == 0) {
        json_t *e = json_object_get(root, "e"), *id = json_object_get(root, "id");
        struct bus_envelope *env = NULL;
        char err[256];
        if (json_object_size(root) != 2) {
            invalid(r, channel, "unexpected keys", payload);
        } else if (json_is_object(e)) {
            char *text = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
            env = text ? bus_envelope_from_json(text, err, sizeof err) : NULL;
            free(text);
            if (!env) invalid(r, channel, err, payload);
        } else if (json_is_string(id) && uuid_valid(json_string_value(id))) {
            const char *why = "";
            if (fetch(r, json_string_value(id), &env, &why) < 0) {
                rc = -1;
            } else if (!env) {
                invalid(r, channel, why, payload);
            } else {
                count(r, &r->stats.fetched, 1);
            }
        } else {
            invalid(r, channel, "neither an envelope nor an envelope id", payload);
        }
        if (env) {
            if (r->h.on_publish) r->h.on_publish(r->h.ud, env);
            else bus_envelope_free(env);
            count(r, &r->stats.received, 1);
        }
    } else if (strcmp(channel, REPLICA_CHANNEL_AGENTS) == 0) {
        json_t *name = json_object_get(root, "agent"), *v = json_object_get(root, "v");
        if (json_object_size(root) != 3 || !json_is_string(name) || !name_valid(json_string_value(name)) ||
            !json_is_integer(v)) {
            invalid(r, channel, "not an agent change", payload);
        } else {
            if (r->h.on_agent) r->h.on_agent(r->h.ud, json_string_value(name), (long)json_integer_value(v));
            count(r, &r->stats.received, 1);
        }
    } else {
        invalid(r, channel, "unknown channel", payload);
    }
done:
    json_decref(root);
    return rc;
}

/* Reads what arrived and handles each notification (PQconsumeInput before every PQnotifies, as
 * libpq asks). Stops delivering once replica_free was called. 0, or -1 when the connection failed. */
static int receive(struct replica *r) {
    for (;;) {
        if (!PQconsumeInput(r->conn)) return -1;
        PGnotify *n = PQnotifies(r->conn);
        if (!n) break;
        int rc = stopping(r) ? 0 : handle(r, n->relname, n->extra ? n->extra : "");
        PQfreemem(n);
        if (rc < 0) return -1;
    }
    return PQstatus(r->conn) == CONNECTION_OK ? 0 : -1;
}

/* ---- The thread ---- */

/* Waits ms (the reconnect backoff), or less when replica_free is called. */
static void backoff_wait(struct replica *r, int ms) {
    int64_t until = now_ms() + ms;
    for (int64_t left = ms; left > 0 && !stopping(r); left = until - now_ms()) {
        struct pollfd p = {r->efd, POLLIN, 0};
        if (poll(&p, 1, (int)left) > 0) drain_wake(r);
    }
}

/* replica_free was called: sends what is queued until the flush deadline, then gives up on the rest. */
static void flush(struct replica *r) {
    int loud = 1;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        int64_t left = r->stop_at_ms - now_ms();
        unsigned long queued = r->stats.queued;
        pthread_mutex_unlock(&r->mu);
        if (!queued) return;
        if (left <= 0) {
            log_warn("replica: %lu queued item(s) not sent before shutdown", queued);
            drop_all(r);
            return;
        }
        if (!r->conn && pg_connect(r, now_ms() + left, loud) < 0) {
            loud = 0;
            struct pollfd p = {r->efd, POLLIN, 0};
            poll(&p, 1, left < BACKOFF_MIN_MS ? (int)left : BACKOFF_MIN_MS);
            drain_wake(r);
            continue;
        }
        if (send_queued(r) < 0) drop_conn(r, "connection lost while sending");
    }
}

static void *run(void *arg) {
    struct replica *r = arg;
    int backoff = BACKOFF_MIN_MS, failures = 0, had_conn = 0, send_failures = 0;
    while (!stopping(r)) {
        if (!r->conn) {
            if (pg_connect(r, now_ms() + CONNECT_TIMEOUT_MS, failures == 0) < 0) {
                failures++;
                backoff_wait(r, backoff);
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
            if (had_conn) {
                count(r, &r->stats.reconnects, 1);
                log_info("replica: reconnected and listening again");
                if (r->h.on_resync) r->h.on_resync(r->h.ud);
            } else {
                log_info("replica: listening on " REPLICA_CHANNEL_BUS " and " REPLICA_CHANNEL_AGENTS);
            }
            had_conn = 1;
            failures = 0;
            backoff = BACKOFF_MIN_MS;
            /* pg_connect drained the eventfd, perhaps of replica_free's wake-up: look at `stopping`
             * again before anything can block. (Every drain is followed by that check.) */
            continue;
        }
        if (send_queued(r) < 0) {
            drop_conn(r, "connection lost while sending");
            /* The first failure reconnects at once (fewer missed notifications); one that repeats on
             * fresh connections (a COMMIT PostgreSQL keeps refusing) must not spin. */
            if (++send_failures > 1)
                backoff_wait(r, send_failures > 6 ? BACKOFF_MAX_MS : BACKOFF_MIN_MS << (send_failures - 2));
            continue;
        }
        send_failures = 0;
        if (receive(r) < 0) {
            drop_conn(r, "connection lost");
            continue;
        }
        /* Sleep until PostgreSQL sends something or a producer queues something. */
        struct pollfd p[2] = {{PQsocket(r->conn), POLLIN, 0}, {r->efd, POLLIN, 0}};
        if (poll(p, 2, -1) < 0 && errno != EINTR) {
            log_error("replica: poll: %s", strerror(errno));
            drop_conn(r, "poll failed");
            backoff_wait(r, BACKOFF_MIN_MS);
            continue;
        }
        if (p[1].revents) drain_wake(r);
    }
    flush(r);
    if (r->conn) {
        PQfinish(r->conn);
        r->conn = NULL;
        set_connected(r, 0);
    }
    return NULL;
}

/* ---- Lifecycle ---- */

struct replica *replica_new(const char *url, const char *instance_uuid, const struct replica_handlers *h, char *err,
                            size_t errlen) {
    if (!url || !*url || !uuid_valid(instance_uuid)) {
        snprintf(err, errlen, "replica: a database URL and an instance UUID are required");
        return NULL;
    }
    struct replica *r = calloc(1, sizeof *r);
    if (!r || !(r->url = strdup(url))) {
        free(r);
        snprintf(err, errlen, "replica: out of memory");
        return NULL;
    }
    memcpy(r->instance, instance_uuid, sizeof r->instance);
    if (h) r->h = *h;
    r->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->efd < 0) {
        snprintf(err, errlen, "replica: eventfd: %s", strerror(errno));
        free(r->url);
        free(r);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    int e = pthread_create(&r->thread, NULL, run, r);
    if (e != 0) {
        snprintf(err, errlen, "replica: cannot start its thread: %s", strerror(e));
        pthread_mutex_destroy(&r->mu);
        close(r->efd);
        free(r->url);
        free(r);
        return NULL;
    }
    pthread_setname_np(r->thread, "orrery-replica"); /* visible in top -H and gdb; cosmetic */
    return r;
}

void replica_free(struct replica *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stopping = 1;
    r->stop_at_ms = now_ms() + REPLICA_FLUSH_MS;
    pthread_mutex_unlock(&r->mu);
    wake(r);
    pthread_join(r->thread, NULL);
    drop_all(r); /* empty already, unless a producer raced with replica_free */
    pthread_mutex_destroy(&r->mu);
    close(r->efd);
    free(r->url);
    free(r);
}

void replica_stats(struct replica *r, struct replica_stats *out) {
    memset(out, 0, sizeof *out);
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}
