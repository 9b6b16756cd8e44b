/* router — matches METHOD + path against a table of routes with path parameters
 * ("/api/tasks/{id}"). A path that exists under other methods gives 405 with the Allow list;
 * no path gives 404. Literal segments win over parameters ("/api/events/conflicts" beats
 * "/api/events/{id}"). HEAD is served by GET routes. Used by http; no I/O. */
#ifndef ORRERY_ROUTER_H
#define ORRERY_ROUTER_H

#include <stddef.h>

struct http_req;
typedef void (*route_handler)(struct http_req *req);

enum route_flags {
    ROUTE_JSON_BODY = 1 << 0,  /* the handler reads a JSON body: content type and syntax checked first */
    ROUTE_PUBLIC    = 1 << 1,  /* no bearer token needed (health, auth) */
};

struct route {
    const char *method;     /* "GET", "POST", ... */
    const char *pattern;    /* "/api/tasks/{id}" */
    route_handler handler;
    unsigned flags;
};

#define ROUTER_MAX_PARAMS 4
#define ROUTER_MAX_PARAM_LEN 256

struct route_param {
    char name[32];
    char value[ROUTER_MAX_PARAM_LEN];
};

struct route_match {
    const struct route *route;  /* NULL unless status == 0 */
    int index;                  /* position of route in the table, -1 if none */
    int status;                 /* 0 matched, 404, 405 */
    char allow[96];             /* for 405: "GET, HEAD, POST" */
    int nparams;
    struct route_param params[ROUTER_MAX_PARAMS];
};

struct router;

/* Compiles the table (borrowed: it must outlive the router). Returns NULL with err for a bad
 * pattern (no leading '/', unbalanced braces, too many parameters). Caller owns the router. */
struct router *router_new(const struct route *routes, size_t count, char *err, size_t errlen);
void router_free(struct router *r);
/* Matches; fills *m completely. path is the decoded path without the query string. */
void router_match(const struct router *r, const char *method, const char *path, struct route_match *m);
/* The value of parameter name, or NULL. Borrowed from m. */
const char *route_param(const struct route_match *m, const char *name);
size_t router_count(const struct router *r);

#endif
