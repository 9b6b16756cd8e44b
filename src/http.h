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
