/* http — the HTTP front: a libmicrohttpd daemon (epoll, internal thread pool) whose access
 * handler runs the middleware (request id, header sanity, body size and content type, JSON
 * parsing), routes through router, calls the handler and queues its response. Handlers build
 * responses with http_json / http_error; they never see libmicrohttpd. Also owns connection
 * limits, per-IP caps, idle timeouts and quiescing for graceful shutdown.
 * Uses router, metrics and log; libmicrohttpd and jansson. */
#ifndef ORRERY_HTTP_H
#define ORRERY_HTTP_H

#include <jansson.h>
#include <stddef.h>

#include "router.h"

struct http_server;
struct http_req;
struct workpool;

/* What the application plugs into the request pipeline (all may be NULL). */
struct http_hooks {
    /* Non-public routes, as soon as the headers are in (before the body is read): verify the
     * credentials. Return 0 to go on, or set an error response (http_error) and return -1. */
    int (*authenticate)(struct http_req *req);
    /* Non-public routes, after the body is parsed, before the handler: open the request's unit of
     * work. Return 0, or set an error response and return -1. */
    int (*begin)(struct http_req *req);
    /* Every route, once the handler's work is done (also after deferred work), before the response
     * is queued: close the unit of work (commit when the status is below 400). */
    void (*end)(struct http_req *req);
};

struct http_options {
    const char *host;          /* numeric IPv4 or IPv6 address */
    int port;                  /* 0 = any free port (see http_port) */
    int workers;               /* thread pool size */
    int max_connections;
    int max_connections_per_ip;/* 0 = unlimited */
    int conn_timeout_s;        /* idle connection timeout */
    size_t max_body;           /* bytes; larger bodies get 413 */
    int bare;                  /* benchmark ceiling: answer every request with a static body,
                                  skipping router and middleware */
    struct http_hooks hooks;
    struct workpool *work;     /* where http_defer runs jobs (borrowed; may be NULL) */
};

/* Starts serving. router and app are borrowed and must outlive the server. Returns NULL with
 * err when the daemon cannot start (port taken, bad address). Caller owns the server. */
struct http_server *http_start(const struct http_options *opt, const struct router *router, void *app,
                               char *err, size_t errlen);
int http_port(const struct http_server *s);
/* Stops accepting new connections; requests in flight go on. */
void http_quiesce(struct http_server *s);
/* Requests accepted and not yet completed. */
int http_inflight(const struct http_server *s);
/* Closes every connection and frees the server. Accepts NULL. */
void http_stop(struct http_server *s);

/* ---- For handlers ---- */

void *http_app(const struct http_req *req);
const char *http_method(const struct http_req *req);
const char *http_path(const struct http_req *req);
const char *http_request_id(const struct http_req *req);
/* A path parameter of the matched route ("id" of /api/tasks/{id}), or NULL. */
const char *http_param(const struct http_req *req, const char *name);
/* A query-string argument, or NULL. */
const char *http_query(const struct http_req *req, const char *name);
/* A request header (case-insensitive), or NULL. */
const char *http_header(const struct http_req *req, const char *name);
/* The peer's address as text ("127.0.0.1", "::1"); "" when unknown. */
const char *http_client_ip(const struct http_req *req);
/* The response status set so far (0 = none yet). */
int http_status(const struct http_req *req);

/* One pointer of application state per request (the auth context, the unit of work), freed with
 * free_fn (may be NULL) when the request completes. */
void http_set_local(struct http_req *req, void *local, void (*free_fn)(void *));
void *http_local(const struct http_req *req);

/* From a handler: finish this request on the work pool instead of this HTTP worker. The
 * connection is suspended (no thread waits for it); fn runs on a pool thread and sets the response;
 * then the `end` hook runs there and the connection resumes. Returns 0, or -1 when the pool is
 * full (the handler should answer 503 itself). */
int http_defer(struct http_req *req, void (*fn)(struct http_req *req));
/* From a handler: the response will be set later, from any thread, followed by http_finish(req).
 * The connection is suspended meanwhile: no thread waits for it. For work that completes by
 * callback (an agent's reply). */
void http_suspend(struct http_req *req);
/* Completes a suspended request: runs the `end` hook and resumes the connection. Exactly once, after
 * the response is set; req must not be touched afterwards. */
void http_finish(struct http_req *req);
/* The parsed JSON body of a ROUTE_JSON_BODY route (borrowed), or NULL. */
json_t *http_body_json(const struct http_req *req);

/* Sets the response to body (a JSON value; takes ownership). */
void http_json(struct http_req *req, int status, json_t *body);
/* Sets the error response {"error":{"code","message","details"}}; takes ownership of details
 * (may be NULL). */
void http_error(struct http_req *req, int status, const char *code, const char *message, json_t *details);
/* Sets a non-JSON response; body is copied. */
void http_text(struct http_req *req, int status, const char *content_type, const char *body, size_t len);
/* Adds a response header (copied). */
void http_add_header(struct http_req *req, const char *name, const char *value);

#endif
