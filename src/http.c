/* http — see http.h.
 *
 * libmicrohttpd calls the access handler several times per request: once when the headers are
 * in (we set up the request, check headers, route, and refuse early what can be refused from
 * headers alone), once per chunk of upload (we append, within the size limit), and once more
 * with no data (we run the handler and queue its response). Queuing only on that last call
 * keeps keep-alive connections open on libmicrohttpd 0.9.75; an early refusal closes the
 * connection, which is what we want for a client sending what we will not read. */
#include "http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "log.h"
#include "metrics.h"
#include "workpool.h"

#define MAX_RESP_HEADERS 8

struct http_server {
    struct MHD_Daemon *daemon;
    const struct router *router;
    void *app;
    size_t max_body;
    int bare;
    int port;
    atomic_int inflight;
    struct http_hooks hooks;
    struct workpool *work;
};

struct resp_header {
    char *name;
    char *value;
};

struct http_req {
    struct http_server *server;
    struct MHD_Connection *conn;
    const char *method;          /* borrowed from libmicrohttpd for the request's life */
    const char *path;
    char request_id[72];
    struct timespec started;
    struct route_match match;
    int refused;                 /* an early error response is queued: discard the upload */
    int has_body;
    int too_large;               /* the body outgrew max_body while uploading */
    size_t discarded;            /* bytes dropped after that */
    char *body;                  /* upload (owned) */
    size_t body_len, body_cap;
    json_t *json;                /* parsed body (owned) */
    /* response */
    int status;
    char *resp;                  /* owned until handed to libmicrohttpd */
    size_t resp_len;
    const char *resp_type;
    struct resp_header headers[MAX_RESP_HEADERS];
    int nheaders;
    /* application state */
    void *local;
    void (*local_free)(void *);
    void (*deferred)(struct http_req *req); /* set while the work runs on the pool */
    atomic_int deferred_done;
    char client_ip[64];
};

/* ---- Request ids ---- */

static _Thread_local uint64_t rng_state;

static uint64_t rng_next(void) {
    if (rng_state == 0) {
        if (getrandom(&rng_state, sizeof rng_state, 0) != sizeof rng_state || rng_state == 0)
            rng_state = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&rng_state;
    }
    /* splitmix64: request ids need to be unique, not secret. */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static int request_id_ok(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
              c == '_' || c == '.' || c == ':'))
            return 0;
        if (n >= 64) return 0;
    }
    return n > 0;
}

static void assign_request_id(struct http_req *req) {
    const char *given = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "X-Request-Id");
    if (given && request_id_ok(given)) {
        snprintf(req->request_id, sizeof req->request_id, "%s", given);
    } else {
        static const char hex[] = "0123456789abcdef";
        uint64_t a = rng_next(), b = rng_next();
        for (int i = 0; i < 16; i++) {
            req->request_id[i] = hex[(a >> (60 - 4 * i)) & 15];
            req->request_id[16 + i] = hex[(b >> (60 - 4 * i)) & 15];
        }
        req->request_id[32] = '\0';
    }
}

/* ---- Responses ---- */

void http_add_header(struct http_req *req, const char *name, const char *value) {
    if (req->nheaders == MAX_RESP_HEADERS) {
        log_error("http: too many response headers, dropped %s", name);
        return;
    }
    struct resp_header *h = &req->headers[req->nheaders];
    h->name = strdup(name);
    h->value = strdup(value);
    if (!h->name || !h->value) {
        free(h->name);
        free(h->value);
        return;
    }
    req->nheaders++;
}

static void set_body(struct http_req *req, int status, const char *type, char *body, size_t len) {
    free(req->resp);
    req->status = status;
    req->resp = body;
    req->resp_len = len;
    req->resp_type = type;
}

void http_json(struct http_req *req, int status, json_t *body) {
    char *s = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(body);
    if (!s) {
        static const char fallback[] = "{\"error\":{\"code\":\"internal\",\"message\":\"internal error\"}}";
        set_body(req, 500, "application/json", strdup(fallback), sizeof fallback - 1);
        return;
    }
    set_body(req, status, "application/json", s, strlen(s));
}

void http_error(struct http_req *req, int status, const char *code, const char *message, json_t *details) {
    json_t *err = json_pack("{s:s, s:s}", "code", code, "message", message);
    if (err && details) json_object_set(err, "details", details);
    json_decref(details);
    http_json(req, status, json_pack("{s:o}", "error", err ? err : json_object()));
}

void http_text(struct http_req *req, int status, const char *content_type, const char *body, size_t len) {
    char *copy = malloc(len ? len : 1);
    if (!copy) {
        http_error(req, 500, "internal", "internal error", NULL);
        return;
    }
    memcpy(copy, body, len);
    set_body(req, status, content_type, copy, len);
}

static enum MHD_Result queue(struct http_req *req) {
    if (!req->resp) http_error(req, 500, "internal", "internal error", NULL);
    if (!req->resp) return MHD_NO;
    struct MHD_Response *r = MHD_create_response_from_buffer(req->resp_len, req->resp, MHD_RESPMEM_MUST_FREE);
    if (!r) return MHD_NO;
    req->resp = NULL; /* libmicrohttpd frees it now */
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, req->resp_type);
    MHD_add_response_header(r, "X-Request-Id", req->request_id);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    for (int i = 0; i < req->nheaders; i++) MHD_add_response_header(r, req->headers[i].name, req->headers[i].value);
    enum MHD_Result ret = MHD_queue_response(req->conn, (unsigned)req->status, r);
    MHD_destroy_response(r);
    return ret;
}

/* Queues an error response right away (before the upload is read). */
static enum MHD_Result refuse(struct http_req *req, int status, const char *code, const char *message,
                              json_t *details) {
    req->refused = 1;
    http_error(req, status, code, message, details);
    return queue(req);
}

/* ---- Accessors for handlers ---- */

void *http_app(const struct http_req *req) { return req->server->app; }
const char *http_method(const struct http_req *req) { return req->method; }
const char *http_path(const struct http_req *req) { return req->path; }
const char *http_request_id(const struct http_req *req) { return req->request_id; }
const char *http_param(const struct http_req *req, const char *name) { return route_param(&req->match, name); }
json_t *http_body_json(const struct http_req *req) { return req->json; }

const char *http_query(const struct http_req *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_header(const struct http_req *req, const char *name) {
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

static void fill_client_ip(struct http_req *req);

/* Worked out on first use: most requests never ask. */
const char *http_client_ip(const struct http_req *req) {
    struct http_req *r = (struct http_req *)req;
    if (!r->client_ip[0]) fill_client_ip(r);
    return r->client_ip;
}
int http_status(const struct http_req *req) { return req->status; }
void *http_local(const struct http_req *req) { return req->local; }

void http_set_local(struct http_req *req, void *local, void (*free_fn)(void *)) {
    if (req->local && req->local_free) req->local_free(req->local);
    req->local = local;
    req->local_free = free_fn;
}

static void fill_client_ip(struct http_req *req) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    req->client_ip[0] = '\0';
    if (!ci || !ci->client_addr) return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, req->client_ip, sizeof req->client_ip);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, req->client_ip, sizeof req->client_ip);
}

/* ---- Deferred work ---- */

static void run_deferred(void *arg) {
    struct http_req *req = arg;
    log_set_request_id(req->request_id);
    req->deferred(req);
    if (req->server->hooks.end) req->server->hooks.end(req);
    log_set_request_id(NULL);
    atomic_store(&req->deferred_done, 1);
    /* After this call libmicrohttpd may run the access handler (and free req) on another thread. */
    MHD_resume_connection(req->conn);
}

int http_defer(struct http_req *req, void (*fn)(struct http_req *req)) {
    if (!req->server->work) return -1;
    req->deferred = fn;
    MHD_suspend_connection(req->conn);
    if (workpool_submit(req->server->work, run_deferred, req) != 0) {
        MHD_resume_connection(req->conn);
        req->deferred = NULL;
        return -1;
    }
    return 0;
}

/* http_suspend's marker in req->deferred: the response comes from http_finish. */
static void finished_elsewhere(struct http_req *req) {
    (void)req;
}

void http_suspend(struct http_req *req) {
    req->deferred = finished_elsewhere;
    MHD_suspend_connection(req->conn);
}

void http_finish(struct http_req *req) {
    log_set_request_id(req->request_id);
    if (req->server->hooks.end) req->server->hooks.end(req);
    log_set_request_id(NULL);
    atomic_store(&req->deferred_done, 1);
    /* After this call libmicrohttpd may run the access handler (and free req) on another thread. */
    MHD_resume_connection(req->conn);
}

/* ---- Middleware ---- */

static int has_control_bytes(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) return 1;
    return 0;
}

struct header_check {
    const char *bad_name;
};

/* With lengths: a NUL inside a name or value would hide what follows it from every C-string
 * lookup (an Authorization value "token\0junk" would be checked as "token"). */
static enum MHD_Result check_header(void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
                                    const char *value, size_t value_size) {
    (void)kind;
    struct header_check *hc = cls;
    if ((key && (strlen(key) != key_size || has_control_bytes(key))) ||
        (value && (strlen(value) != value_size || has_control_bytes(value)))) {
        hc->bad_name = key ? key : "";
        return MHD_NO;
    }
    return MHD_YES;
}

static int is_json_type(const char *ct) {
    if (!ct) return 0;
    while (*ct == ' ') ct++;
    static const char want[] = "application/json";
    if (strncasecmp(ct, want, sizeof want - 1) != 0) return 0;
    char next = ct[sizeof want - 1];
    return next == '\0' || next == ';' || next == ' ';
}

/* Everything that can be decided from the request line and headers. Returns MHD_YES to go on
 * reading, or the result of queueing an early refusal. */
static enum MHD_Result on_headers(struct http_req *req) {
    struct header_check hc = {0};
    MHD_get_connection_values_n(req->conn, MHD_HEADER_KIND, check_header, &hc);
    if (hc.bad_name)
        return refuse(req, 400, "bad_header", "a header contains control characters",
                      json_pack("{s:s}", "header", has_control_bytes(hc.bad_name) ? "(name)" : hc.bad_name));
    if (has_control_bytes(req->path))
        return refuse(req, 400, "bad_request", "the path contains control characters", NULL);

    router_match(req->server->router, req->method, req->path, &req->match);
    if (req->match.status == 404) return refuse(req, 404, "not_found", "no such route", NULL);
    if (req->match.status == 405) {
        http_add_header(req, "Allow", req->match.allow);
        return refuse(req, 405, "method_not_allowed", "method not allowed on this route",
                      json_pack("{s:s}", "allow", req->match.allow));
    }

    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = http_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    unsigned long long len = 0;
    if (cl) {
        char *end = NULL;
        len = strtoull(cl, &end, 10);
        if (end == cl || *end) return refuse(req, 400, "bad_request", "invalid Content-Length", NULL);
    }
    req->has_body = len > 0 || (te && strcasecmp(te, "identity") != 0);
    if (len > req->server->max_body)
        return refuse(req, 413, "payload_too_large", "request body is too large",
                      json_pack("{s:I}", "max_bytes", (json_int_t)req->server->max_body));
    if (req->has_body && !is_json_type(http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE)))
        return refuse(req, 415, "unsupported_media_type", "request bodies must be application/json",
                      json_pack("{s:s}", "content_type", "application/json"));
    if (!(req->match.route->flags & ROUTE_PUBLIC) && req->server->hooks.authenticate &&
        req->server->hooks.authenticate(req) != 0) {
        req->refused = 1;
        return queue(req);
    }
    return MHD_YES;
}

static enum MHD_Result on_upload(struct http_req *req, const char *data, size_t size) {
    if (req->refused) return MHD_YES; /* an early refusal is queued: discard what still comes */
    size_t max = req->server->max_body;
    if (req->too_large || size > max - req->body_len) {
        /* libmicrohttpd 0.9.75 cannot queue a response mid-upload (only after the headers or after
         * the whole body), so a chunked body that outgrows the limit is read and dropped, and 413
         * goes out at the end. Past twice the limit the client is not worth waiting for. */
        req->too_large = 1;
        req->discarded += size;
        return req->discarded > 2 * max + 65536 ? MHD_NO : MHD_YES;
    }
    if (req->body_len + size > req->body_cap) {
        size_t cap = req->body_cap ? req->body_cap : 4096;
        while (cap < req->body_len + size) cap *= 2;
        if (cap > max) cap = max;
        char *nb = realloc(req->body, cap);
        if (!nb) {
            req->too_large = 1; /* answered like an oversized body rather than dropped */
            return MHD_YES;
        }
        req->body = nb;
        req->body_cap = cap;
    }
    memcpy(req->body + req->body_len, data, size);
    req->body_len += size;
    return MHD_YES;
}

/* Parses the body of a ROUTE_JSON_BODY route. Returns 0, or -1 with the error response set. */
static int parse_json_body(struct http_req *req) {
    if (req->body_len == 0) {
        http_error(req, 400, "invalid_json", "a JSON object body is required", json_pack("{s:s}", "field", "body"));
        return -1;
    }
    json_error_t e;
    req->json = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &e);
    if (!req->json) {
        char msg[256];
        snprintf(msg, sizeof msg, "request body is not valid JSON: %s", e.text);
        http_error(req, 400, "invalid_json", msg,
                   json_pack("{s:i, s:i, s:i}", "line", e.line, "column", e.column, "position", e.position));
        return -1;
    }
    if (!json_is_object(req->json)) {
        http_error(req, 400, "invalid_json", "the request body must be a JSON object",
                   json_pack("{s:s}", "field", "body"));
        return -1;
    }
    return 0;
}

static enum MHD_Result on_complete_upload(struct http_req *req) {
    const struct route *route = req->match.route;
    const struct http_hooks *hooks = &req->server->hooks;
    if (req->deferred) /* called again after the pool resumed us */
        return atomic_load(&req->deferred_done) ? queue(req) : MHD_YES;
    if (req->too_large) {
        http_error(req, 413, "payload_too_large", "request body is too large",
                   json_pack("{s:I}", "max_bytes", (json_int_t)req->server->max_body));
        return queue(req);
    }
    if ((route->flags & ROUTE_JSON_BODY) && parse_json_body(req) != 0) return queue(req);
    if (!(route->flags & ROUTE_PUBLIC) && hooks->begin && hooks->begin(req) != 0) return queue(req);
    route->handler(req);
    if (req->deferred) return MHD_YES; /* the pool finishes it, then resumes the connection */
    if (hooks->end) hooks->end(req);
    return queue(req);
}

/* ---- libmicrohttpd callbacks ---- */

static enum MHD_Result bare_handler(struct http_req *req) {
    static const char hello[] = "{\"status\":\"ok\"}";
    req->status = 200;
    req->resp = strdup(hello);
    req->resp_len = sizeof hello - 1;
    req->resp_type = "application/json";
    return queue(req);
}

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **req_cls) {
    (void)version;
    struct http_server *s = cls;
    struct http_req *req = *req_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req) return MHD_NO;
        *req_cls = req;
        req->server = s;
        req->conn = conn;
        req->method = method;
        req->path = url;
        req->match.index = -1;
        clock_gettime(CLOCK_MONOTONIC, &req->started);
        atomic_fetch_add(&s->inflight, 1);
        if (s->bare) return MHD_YES;
        atomic_init(&req->deferred_done, 0);
        assign_request_id(req);
        log_set_request_id(req->request_id);
        enum MHD_Result r = on_headers(req);
        log_set_request_id(NULL);
        return r;
    }
    if (s->bare) return *upload_data_size ? (*upload_data_size = 0, MHD_YES) : bare_handler(req);

    log_set_request_id(req->request_id);
    enum MHD_Result r = MHD_YES;
    if (*upload_data_size) {
        r = on_upload(req, upload_data, *upload_data_size);
        *upload_data_size = 0;
    } else if (!req->refused) {
        r = on_complete_upload(req);
    }
    log_set_request_id(NULL);
    return r;
}

static double elapsed_since(const struct timespec *t0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe) {
    (void)conn;
    struct http_server *s = cls;
    struct http_req *req = *req_cls;
    if (!req) return;
    *req_cls = NULL;
    if (!s->bare) {
        double secs = elapsed_since(&req->started);
        int status = req->status ? req->status : 499; /* the client went away before an answer */
        metrics_record(req->match.index, status, secs);
        if (log_get_level() <= LOG_INFO) {
            log_set_request_id(req->request_id);
            json_t *f = json_pack("{s:s, s:s, s:i, s:f, s:s}", "method", req->method, "path", req->path,
                                  "status", status, "duration_ms", secs * 1000.0, "route",
                                  req->match.route ? req->match.route->pattern : "");
            if (f && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
                json_object_set_new(f, "terminated", json_integer((json_int_t)toe));
            log_fields(LOG_INFO, f, "request");
            json_decref(f);
            log_set_request_id(NULL);
        }
    }
    for (int i = 0; i < req->nheaders; i++) {
        free(req->headers[i].name);
        free(req->headers[i].value);
    }
    if (req->local && req->local_free) req->local_free(req->local);
    free(req->body);
    free(req->resp);
    json_decref(req->json);
    atomic_fetch_sub(&s->inflight, 1);
    free(req);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    log_warn("libmicrohttpd: %s", msg);
}

/* ---- Server ---- */

struct http_server *http_start(const struct http_options *opt, const struct router *router, void *app,
                               char *err, size_t errlen) {
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    unsigned int flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, opt->host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)opt->port);
    } else if (inet_pton(AF_INET6, opt->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)opt->port);
        flags |= MHD_USE_IPv6;
    } else {
        snprintf(err, errlen, "invalid listen address '%s'", opt->host);
        return NULL;
    }

    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->router = router;
    s->app = app;
    s->max_body = opt->max_body;
    s->bare = opt->bare;
    s->hooks = opt->hooks;
    s->work = opt->work;
    atomic_init(&s->inflight, 0);

    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, s,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, /* first, or MHD logs the options before it itself */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)(opt->workers > 0 ? opt->workers : 1),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)opt->max_connections,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)opt->max_connections_per_ip,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)opt->conn_timeout_s,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned int)1024,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, s,
        MHD_OPTION_END);
    if (!s->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use or not available)", opt->host, opt->port);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : opt->port;
    return s;
}

int http_port(const struct http_server *s) { return s->port; }

void http_quiesce(struct http_server *s) {
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET) close(fd);
}

int http_inflight(const struct http_server *s) { return atomic_load(&s->inflight); }

void http_stop(struct http_server *s) {
    if (!s) return;
    MHD_stop_daemon(s->daemon);
    free(s);
}
