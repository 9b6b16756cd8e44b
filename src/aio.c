/* aio — see aio.h. One thread runs the loop:
 *   curl_multi_poll(curl's sockets + every libpq socket) -> curl_multi_perform -> finished
 *   transfers -> new transfers and queries (handed over under the mutex; curl_multi_wakeup wakes
 *   the poll) -> each database connection's state machine:
 *     DOWN --PQconnectStartParams--> CONNECTING --PQconnectPoll ok--> IDLE --job--> BUSY --sync--> IDLE
 *   A BUSY connection has sent, in pipeline mode, set_config('orrery.user_id', $1, true), the
 *   query and a sync: one implicit transaction, so the user setting ends with it and an error rolls
 *   it all back. Results are read as they arrive (PQconsumeInput, PQisBusy, PQgetResult), never
 *   waited for. A connection that breaks fails its job and is remade after a second. */
#include "aio.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "log.h"
#include "version.h"

#define DEFAULT_CONNS 2
#define DEFAULT_TIMEOUT_MS 5000
#define DEFAULT_MAX_ROWS 10000
#define DEFAULT_FETCH_MAX ((size_t)8 << 20)
#define DEFAULT_FETCH_TIMEOUT 30.0
#define RECONNECT_SECONDS 1.0
#define MAX_HEADERS 100

enum pg_state { PG_DOWN, PG_CONNECTING, PG_IDLE, PG_BUSY };

struct job {
    struct job *next;
    char *user_id, *sql;
    int nparams;
    char **params;
    void (*done)(void *ud, struct aio_result *r);
    void *ud;
    double queued;
};

struct pgc {
    PGconn *conn;
    enum pg_state state;
    PostgresPollingStatusType poll; /* while CONNECTING: what PQconnectPoll waits for */
    int want_write;                 /* BUSY: PQflush has more to send */
    double retry_at;
    struct job *job;
    PGresult *main;                 /* the query's result */
    int step;                       /* results ended so far (a NULL after each query) */
    char error[256];
};

struct xfer {
    struct xfer *next;                  /* in to_add, then in active */
    struct xfer *prev_active, *next_active;
    CURL *easy;
    struct curl_slist *headers;
    struct aio_response *resp;
    size_t cap, body_cap;
    int too_large, refused;
    char errbuf[CURL_ERROR_SIZE];
    void (*done)(void *ud, struct aio_response *r);
    void *ud;
    const struct aio *aio;
};

struct aio {
    struct aio_config cfg;
    char *db_url, *allow;
    CURLM *multi;
    pthread_t thread;
    int started;
    pthread_mutex_t mu; /* below */
    struct job *q_head, *q_tail;
    struct xfer *to_add;
    int stopping;
    struct xfer *active; /* loop thread only: added to the multi handle */
    /* loop thread only */
    struct pgc *conns;
    int nconns;
    int running;
};

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Queries ---- */

static void job_free(struct job *j) {
    if (!j) return;
    for (int i = 0; i < j->nparams; i++) free(j->params[i]);
    free(j->params);
    free(j->user_id);
    free(j->sql);
    free(j);
}

static void job_fail(struct job *j, const char *error) {
    struct aio_result r = {NULL, ""};
    snprintf(r.error, sizeof r.error, "%s", error);
    j->done(j->ud, &r);
    job_free(j);
}

int aio_query(struct aio *aio, const char *user_id, const char *sql, int nparams, const char *const *params,
              void (*done)(void *ud, struct aio_result *r), void *ud) {
    struct job *j = calloc(1, sizeof *j);
    if (!j) return -1;
    j->user_id = strdup(user_id ? user_id : "");
    j->sql = strdup(sql);
    j->params = calloc((size_t)(nparams > 0 ? nparams : 1), sizeof *j->params);
    j->nparams = nparams;
    int ok = j->user_id && j->sql && j->params;
    for (int i = 0; ok && i < nparams; i++)
        if (params[i] && !(j->params[i] = strdup(params[i]))) ok = 0;
    if (!ok) {
        job_free(j);
        return -1;
    }
    j->done = done;
    j->ud = ud;
    j->queued = now_mono();
    pthread_mutex_lock(&aio->mu);
    int stopping = aio->stopping;
    if (!stopping) {
        if (aio->q_tail)
            aio->q_tail->next = j;
        else
            aio->q_head = j;
        aio->q_tail = j;
    }
    pthread_mutex_unlock(&aio->mu);
    if (stopping) {
        job_fail(j, "stopped");
        return 0;
    }
    curl_multi_wakeup(aio->multi);
    return 0;
}

static void pg_close(struct pgc *c, const char *why) {
    if (c->job) job_fail(c->job, why);
    c->job = NULL;
    PQclear(c->main);
    c->main = NULL;
    if (c->conn) PQfinish(c->conn);
    c->conn = NULL;
    c->state = PG_DOWN;
    c->retry_at = now_mono() + RECONNECT_SECONDS;
}

static void pg_connect(struct aio *aio, struct pgc *c) {
    char options[64];
    snprintf(options, sizeof options, "-c statement_timeout=%d", aio->cfg.db_timeout_ms);
    const char *keys[] = {"dbname", "options", "application_name", "connect_timeout", NULL};
    const char *vals[] = {aio->db_url, options, "orrery-agents", "5", NULL};
    c->conn = PQconnectStartParams(keys, vals, 1);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        pg_close(c, "database unavailable");
        return;
    }
    c->state = PG_CONNECTING;
    c->poll = PGRES_POLLING_WRITING;
    c->retry_at = now_mono() + 10; /* a connect that hangs this long is given up */
}

static void pg_connect_step(struct pgc *c) {
    c->poll = PQconnectPoll(c->conn);
    if (c->poll == PGRES_POLLING_FAILED) {
        log_warn("aio: cannot connect to the database: %s", PQerrorMessage(c->conn));
        pg_close(c, "database unavailable");
    } else if (c->poll == PGRES_POLLING_OK) {
        if (PQsetnonblocking(c->conn, 1) != 0 || PQenterPipelineMode(c->conn) != 1) {
            pg_close(c, "database unavailable");
            return;
        }
        c->state = PG_IDLE;
    }
}

static void pg_start(struct pgc *c, struct job *j) {
    c->job = j;
    c->step = 0;
    c->error[0] = '\0';
    const char *uid[1] = {j->user_id};
    if (!PQsendQueryParams(c->conn, "SELECT set_config('orrery.user_id', $1, true)", 1, NULL, uid, NULL, NULL, 0) ||
        !PQsendQueryParams(c->conn, j->sql, j->nparams, NULL, (const char *const *)j->params, NULL, NULL, 0) ||
        !PQpipelineSync(c->conn)) {
        snprintf(c->error, sizeof c->error, "%s", PQerrorMessage(c->conn));
        pg_close(c, c->error[0] ? c->error : "database error");
        return;
    }
    c->state = PG_BUSY;
    int f = PQflush(c->conn);
    if (f < 0) pg_close(c, "database connection lost");
    c->want_write = f == 1;
}

static void pg_finish_job(struct aio *aio, struct pgc *c) {
    struct job *j = c->job;
    c->job = NULL;
    c->state = PG_IDLE;
    struct aio_result r = {NULL, ""};
    if (c->error[0]) {
        snprintf(r.error, sizeof r.error, "%s", c->error);
        PQclear(c->main);
    } else if (c->main && (size_t)PQntuples(c->main) > aio->cfg.db_max_rows) {
        snprintf(r.error, sizeof r.error, "the result has more than %zu rows", aio->cfg.db_max_rows);
        PQclear(c->main);
    } else {
        r.res = c->main;
    }
    c->main = NULL;
    j->done(j->ud, &r);
    job_free(j);
}

/* Reads what has arrived. */
static void pg_read(struct aio *aio, struct pgc *c) {
    if (!PQconsumeInput(c->conn)) {
        pg_close(c, "database connection lost");
        return;
    }
    while (c->state == PG_BUSY && !PQisBusy(c->conn)) {
        PGresult *res = PQgetResult(c->conn);
        if (!res) {
            c->step++;
            continue;
        }
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            pg_finish_job(aio, c);
            return;
        }
        if (st == PGRES_FATAL_ERROR && !c->error[0]) {
            const char *msg = PQresultErrorMessage(res);
            snprintf(c->error, sizeof c->error, "%.*s", (int)strcspn(msg, "\n"), msg);
        }
        if (c->step == 1 && (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) && !c->main)
            c->main = res;
        else
            PQclear(res);
    }
    if (PQstatus(c->conn) == CONNECTION_BAD) pg_close(c, "database connection lost");
}

/* ---- HTTP ---- */

void aio_response_free(struct aio_response *r) {
    if (!r) return;
    for (int i = 0; i < r->n_headers; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->body);
    free(r);
}

static size_t on_body(char *ptr, size_t size, size_t n, void *ud) {
    struct xfer *x = ud;
    size_t len = size * n;
    struct aio_response *r = x->resp;
    if (r->body_len + len > x->cap) {
        x->too_large = 1;
        return 0; /* aborts the transfer: a body over the cap is never buffered */
    }
    if (r->body_len + len + 1 > x->body_cap) {
        size_t cap = x->body_cap ? x->body_cap : 4096;
        while (cap < r->body_len + len + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) return 0;
        r->body = b;
        x->body_cap = cap;
    }
    memcpy(r->body + r->body_len, ptr, len);
    r->body_len += len;
    r->body[r->body_len] = '\0';
    return len;
}

static size_t on_header(char *ptr, size_t size, size_t n, void *ud) {
    struct xfer *x = ud;
    size_t len = size * n;
    struct aio_response *r = x->resp;
    if (len >= 5 && strncmp(ptr, "HTTP/", 5) == 0) { /* a new response (100 Continue): start over */
        for (int i = 0; i < r->n_headers; i++) {
            free(r->headers[i].name);
            free(r->headers[i].value);
        }
        r->n_headers = 0;
        return len;
    }
    const char *colon = memchr(ptr, ':', len);
    if (!colon || r->n_headers >= MAX_HEADERS) return len;
    if (r->n_headers % 16 == 0) {
        struct aio_header *h = realloc(r->headers, (size_t)(r->n_headers + 16) * sizeof *h);
        if (!h) return 0;
        r->headers = h;
    }
    size_t nlen = (size_t)(colon - ptr);
    const char *v = colon + 1, *end = ptr + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    char *name = strndup(ptr, nlen), *value = strndup(v, (size_t)(end - v));
    if (!name || !value) {
        free(name);
        free(value);
        return 0;
    }
    for (char *p = name; *p; p++) *p = (char)tolower((unsigned char)*p);
    r->headers[r->n_headers].name = name;
    r->headers[r->n_headers].value = value;
    r->n_headers++;
    return len;
}

static int private_address(const struct sockaddr *sa) {
    if (sa->sa_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        return (a >> 24) == 10 || (a >> 24) == 127 || (a >> 24) == 0 || (a >> 16) == 0xa9fe /* 169.254 */ ||
               (a >> 20) == 0xac1 /* 172.16/12 */ || (a >> 16) == 0xc0a8 /* 192.168 */ ||
               (a >> 22) == 0x191 /* 100.64/10 */ || a == 0xffffffffu;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a) || IN6_IS_ADDR_LINKLOCAL(a) ||
            (a->s6_addr[0] & 0xfe) == 0xfc /* fc00::/7 */)
            return 1;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            struct sockaddr_in v4 = {.sin_family = AF_INET};
            memcpy(&v4.sin_addr, a->s6_addr + 12, 4);
            return private_address((const struct sockaddr *)&v4);
        }
        return 0;
    }
    return 1; /* anything else (unix sockets) */
}

/* Checks every address curl is about to connect to (after DNS, so a name that resolves to a
 * private address is caught too). */
static curl_socket_t on_open(void *ud, curlsocktype purpose, struct curl_sockaddr *addr) {
    struct xfer *x = ud;
    (void)purpose;
    if (!x->aio->cfg.fetch_allow_private && private_address(&addr->addr)) {
        x->refused = 1;
        return CURL_SOCKET_BAD;
    }
    return socket(addr->family, addr->socktype, addr->protocol);
}

/* Whether host matches the allow list ("a.com,.b.org"): exact names, or suffixes starting with ".". */
static int host_allowed(const char *allow, const char *host) {
    if (!allow || !*allow) return 1;
    size_t hl = strlen(host);
    const char *p = allow;
    while (*p) {
        size_t n = strcspn(p, ",");
        while (n > 0 && p[0] == ' ') p++, n--;
        if (n > 0 && p[0] == '.' && hl >= n && strncasecmp(host + hl - n, p, n) == 0) return 1;
        if (n == hl && strncasecmp(host, p, n) == 0) return 1;
        p += n;
        if (*p == ',') p++;
    }
    return 0;
}

static void xfer_free(struct xfer *x) {
    if (!x) return;
    if (x->easy) curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    aio_response_free(x->resp);
    free(x);
}

int aio_fetch(struct aio *aio, const struct aio_fetch *req, void (*done)(void *ud, struct aio_response *r), void *ud,
              char *err, size_t errlen) {
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL;
    int bad = !u || curl_url_set(u, CURLUPART_URL, req->url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
              curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK;
    int rc = -1;
    if (bad) {
        snprintf(err, errlen, "url: not a valid URL");
    } else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(err, errlen, "url: only http and https are allowed");
    } else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        snprintf(err, errlen, "url: not a valid URL");
    } else if (!host_allowed(aio->allow, host)) {
        snprintf(err, errlen, "url: host '%.100s' is not in ORRERY_FETCH_ALLOW", host);
    } else {
        rc = 0;
    }
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    if (rc) return -1;

    const char *method = req->method && *req->method ? req->method : "GET";
    static const char *const methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", NULL};
    int known = 0;
    for (int i = 0; methods[i]; i++) known |= strcmp(methods[i], method) == 0;
    if (!known) {
        snprintf(err, errlen, "method: one of GET, POST, PUT, PATCH, DELETE, HEAD");
        return -1;
    }
    struct xfer *x = calloc(1, sizeof *x);
    if (!x || !(x->resp = calloc(1, sizeof *x->resp)) || !(x->easy = curl_easy_init())) {
        xfer_free(x);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < req->n_headers; i++) {
        const char *n = req->headers[i].name, *v = req->headers[i].value;
        if (strpbrk(n, "\r\n:") || strpbrk(v, "\r\n") || !*n) {
            xfer_free(x);
            snprintf(err, errlen, "headers: invalid header '%.60s'", n);
            return -1;
        }
        char line[8300];
        snprintf(line, sizeof line, "%.255s: %.8000s", n, v);
        struct curl_slist *l = curl_slist_append(x->headers, line);
        if (!l) {
            xfer_free(x);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        x->headers = l;
    }
    double max = aio->cfg.fetch_timeout;
    double t = req->timeout > 0 && req->timeout < max ? req->timeout : max;
    x->cap = aio->cfg.fetch_max_bytes;
    x->done = done;
    x->ud = ud;
    x->aio = aio;
    CURL *e = x->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(t * 1000));
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(t * 1000 < 10000 ? t * 1000 : 10000));
    curl_easy_setopt(e, CURLOPT_USERAGENT, "orrery/" ORRERY_VERSION);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
    curl_easy_setopt(e, CURLOPT_PRIVATE, x);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)x->cap);
    if (x->headers) curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
    if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    if (req->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body);
        if (strcmp(method, "GET") == 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "GET");
    }
    pthread_mutex_lock(&aio->mu);
    int stopping = aio->stopping;
    if (!stopping) {
        x->next = aio->to_add;
        aio->to_add = x;
    }
    pthread_mutex_unlock(&aio->mu);
    if (stopping) {
        xfer_free(x);
        snprintf(err, errlen, "stopped");
        return -1;
    }
    curl_multi_wakeup(aio->multi);
    return 0;
}

static void xfer_done(struct aio *aio, struct xfer *x, CURLcode code) {
    curl_multi_remove_handle(aio->multi, x->easy);
    if (x->prev_active)
        x->prev_active->next_active = x->next_active;
    else if (aio->active == x)
        aio->active = x->next_active;
    if (x->next_active) x->next_active->prev_active = x->prev_active;
    struct aio_response *r = x->resp;
    x->resp = NULL;
    if (code == CURLE_OK) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r->status);
        if (!r->body && !(r->body = strdup(""))) snprintf(r->error, sizeof r->error, "out of memory");
    } else {
        r->status = 0;
        if (x->too_large || code == CURLE_FILESIZE_EXCEEDED)
            snprintf(r->error, sizeof r->error, "too_large: the response is over %zu bytes", x->cap);
        else if (x->refused)
            snprintf(r->error, sizeof r->error, "refused: the host resolves to a private address");
        else if (code == CURLE_OPERATION_TIMEDOUT)
            snprintf(r->error, sizeof r->error, "timeout");
        else
            snprintf(r->error, sizeof r->error, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(code));
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
    }
    x->done(x->ud, r);
    xfer_free(x);
}

/* ---- The loop ---- */

static void *loop_main(void *arg) {
    struct aio *aio = arg;
    struct curl_waitfd *wfd = calloc((size_t)aio->nconns + 1, sizeof *wfd);
    int *which = calloc((size_t)aio->nconns + 1, sizeof *which);
    if (!wfd || !which) {
        log_error("aio: out of memory: the I/O loop does not run");
        free(wfd);
        free(which);
        return NULL;
    }
    for (;;) {
        /* New work. */
        pthread_mutex_lock(&aio->mu);
        int stopping = aio->stopping;
        struct xfer *add = aio->to_add;
        aio->to_add = NULL;
        pthread_mutex_unlock(&aio->mu);
        while (add) {
            struct xfer *next = add->next;
            if (curl_multi_add_handle(aio->multi, add->easy) != CURLM_OK) {
                xfer_done(aio, add, CURLE_OUT_OF_MEMORY);
            } else {
                add->prev_active = NULL;
                add->next_active = aio->active;
                if (aio->active) aio->active->prev_active = add;
                aio->active = add;
            }
            add = next;
        }
        if (stopping) break;

        /* Database connections. */
        double now = now_mono();
        for (int i = 0; i < aio->nconns; i++) {
            struct pgc *c = &aio->conns[i];
            if (c->state == PG_DOWN && aio->db_url && now >= c->retry_at) {
                pthread_mutex_lock(&aio->mu);
                int waiting = aio->q_head != NULL;
                pthread_mutex_unlock(&aio->mu);
                if (waiting || i == 0) pg_connect(aio, c);
            } else if (c->state == PG_CONNECTING && now >= c->retry_at) {
                pg_close(c, "database unavailable");
            }
            if (c->state == PG_IDLE) {
                pthread_mutex_lock(&aio->mu);
                struct job *j = aio->q_head;
                if (j) {
                    aio->q_head = j->next;
                    if (!aio->q_head) aio->q_tail = NULL;
                    j->next = NULL;
                }
                pthread_mutex_unlock(&aio->mu);
                if (j) pg_start(c, j);
            }
        }
        /* Queries that found no connection in time fail instead of waiting forever. */
        pthread_mutex_lock(&aio->mu);
        struct job *expired = NULL;
        double limit = aio->cfg.db_timeout_ms / 1000.0;
        while (aio->q_head && (now - aio->q_head->queued > limit || !aio->db_url)) {
            struct job *j = aio->q_head;
            aio->q_head = j->next;
            if (!aio->q_head) aio->q_tail = NULL;
            j->next = expired;
            expired = j;
        }
        pthread_mutex_unlock(&aio->mu);
        while (expired) {
            struct job *next = expired->next;
            job_fail(expired, aio->db_url ? "database unavailable" : "no database");
            expired = next;
        }

        int n = 0;
        int pending_connect = 0;
        for (int i = 0; i < aio->nconns; i++) {
            struct pgc *c = &aio->conns[i];
            if (!c->conn || c->state == PG_DOWN || c->state == PG_IDLE) {
                pending_connect |= c->state == PG_DOWN && aio->db_url != NULL;
                continue;
            }
            int fd = PQsocket(c->conn);
            if (fd < 0) continue;
            short ev = 0;
            if (c->state == PG_CONNECTING)
                ev = c->poll == PGRES_POLLING_READING ? CURL_WAIT_POLLIN : CURL_WAIT_POLLOUT;
            else
                ev = (short)(CURL_WAIT_POLLIN | (c->want_write ? CURL_WAIT_POLLOUT : 0));
            wfd[n] = (struct curl_waitfd){.fd = fd, .events = ev};
            which[n++] = i;
        }
        pthread_mutex_lock(&aio->mu);
        int queued = aio->q_head != NULL;
        pthread_mutex_unlock(&aio->mu);
        int timeout = (queued && pending_connect) ? 100 : 1000;
        int nw = n;
        curl_multi_poll(aio->multi, wfd, (unsigned)nw, timeout, NULL);
        curl_multi_perform(aio->multi, &aio->running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(aio->multi, &left))) {
            if (m->msg != CURLMSG_DONE) continue;
            struct xfer *x;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            xfer_done(aio, x, m->data.result);
        }
        for (int i = 0; i < nw; i++) {
            struct pgc *c = &aio->conns[which[i]];
            short rev = wfd[i].revents;
            if (!rev) continue;
            if (c->state == PG_CONNECTING) {
                pg_connect_step(c);
            } else if (c->state == PG_BUSY) {
                if (c->want_write && (rev & CURL_WAIT_POLLOUT)) {
                    int f = PQflush(c->conn);
                    if (f < 0) {
                        pg_close(c, "database connection lost");
                        continue;
                    }
                    c->want_write = f == 1;
                }
                if (rev & CURL_WAIT_POLLIN) pg_read(aio, c); /* a hang-up reads as readable too */
            }
        }
        /* Idle connections can be told the server went away: notice it on the next job instead. */
    }
    free(wfd);
    free(which);
    return NULL;
}

struct aio *aio_new(const struct aio_config *cfg, char *err, size_t errlen) {
    struct aio *aio = calloc(1, sizeof *aio);
    if (!aio) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    aio->cfg = *cfg;
    if (aio->cfg.db_connections <= 0) aio->cfg.db_connections = DEFAULT_CONNS;
    if (aio->cfg.db_timeout_ms <= 0) aio->cfg.db_timeout_ms = DEFAULT_TIMEOUT_MS;
    if (aio->cfg.db_max_rows == 0) aio->cfg.db_max_rows = DEFAULT_MAX_ROWS;
    if (aio->cfg.fetch_max_bytes == 0) aio->cfg.fetch_max_bytes = DEFAULT_FETCH_MAX;
    if (aio->cfg.fetch_timeout <= 0) aio->cfg.fetch_timeout = DEFAULT_FETCH_TIMEOUT;
    aio->db_url = cfg->db_url ? strdup(cfg->db_url) : NULL;
    aio->allow = strdup(cfg->fetch_allow ? cfg->fetch_allow : "");
    aio->nconns = aio->cfg.db_connections;
    aio->conns = calloc((size_t)aio->nconns, sizeof *aio->conns);
    pthread_mutex_init(&aio->mu, NULL);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    aio->multi = curl_multi_init();
    if ((cfg->db_url && !aio->db_url) || !aio->allow || !aio->conns || !aio->multi) {
        snprintf(err, errlen, "out of memory");
        aio_free(aio);
        return NULL;
    }
    for (int i = 0; i < aio->nconns; i++) aio->conns[i].state = PG_DOWN;
    if (pthread_create(&aio->thread, NULL, loop_main, aio) != 0) {
        snprintf(err, errlen, "cannot start the I/O thread");
        aio_free(aio);
        return NULL;
    }
    aio->started = 1;
    return aio;
}

void aio_free(struct aio *aio) {
    if (!aio) return;
    pthread_mutex_lock(&aio->mu);
    aio->stopping = 1;
    pthread_mutex_unlock(&aio->mu);
    if (aio->multi) curl_multi_wakeup(aio->multi);
    if (aio->started) pthread_join(aio->thread, NULL);
    /* What is left is answered "stopped". */
    for (int i = 0; aio->conns && i < aio->nconns; i++) pg_close(&aio->conns[i], "stopped");
    while (aio->q_head) {
        struct job *j = aio->q_head;
        aio->q_head = j->next;
        job_fail(j, "stopped");
    }
    while (aio->to_add) {
        struct xfer *x = aio->to_add;
        aio->to_add = x->next;
        struct aio_response *r = x->resp;
        x->resp = NULL;
        snprintf(r->error, sizeof r->error, "stopped");
        x->done(x->ud, r);
        xfer_free(x);
    }
    if (aio->multi) {
        while (aio->active) {
            struct xfer *x = aio->active;
            aio->active = x->next_active;
            curl_multi_remove_handle(aio->multi, x->easy);
            struct aio_response *r = x->resp;
            x->resp = NULL;
            snprintf(r->error, sizeof r->error, "stopped");
            x->done(x->ud, r);
            xfer_free(x);
        }
        curl_multi_cleanup(aio->multi);
    }
    free(aio->conns);
    free(aio->db_url);
    free(aio->allow);
    pthread_mutex_destroy(&aio->mu);
    free(aio);
}
