/* aio — the I/O agents wait on, done by one event-loop thread so no agent worker ever blocks:
 * database queries on a few libpq connections in asynchronous pipeline mode, and outbound HTTP
 * requests on a libcurl multi handle, all driven by curl_multi_poll (the libpq sockets are its
 * extra descriptors; curl_multi_wakeup takes new work). Completion callbacks run on that thread
 * and must be quick (the runtime's agents_wait_complete). Uses libpq, libcurl, jansson, log. */
#ifndef ORRERY_AIO_H
#define ORRERY_AIO_H

#include <stddef.h>

#include <libpq-fe.h>

struct aio;

struct aio_config {
    const char *db_url;        /* NULL: no database (queries fail with "no database") */
    int db_connections;        /* 0 = 2 */
    int db_timeout_ms;         /* statement_timeout of each query (0 = 5000) */
    size_t db_max_rows;        /* 0 = 10000: bigger results fail */
    size_t fetch_max_bytes;    /* response body cap (0 = 8 MiB) */
    double fetch_timeout;      /* default and maximum seconds (0 = 30) */
    const char *fetch_allow;   /* comma-separated host names (exact, or ".example.com" for subdomains);
                                * NULL/empty = any host */
    int fetch_allow_private;   /* 1: loopback, private and link-local addresses are allowed */
};

struct aio *aio_new(const struct aio_config *cfg, char *err, size_t errlen);
/* Stops the loop; queued and running work completes with an error ("stopped"). Accepts NULL. */
void aio_free(struct aio *aio);

/* A query's outcome: res on success (owned by the callee: PQclear), else error (static or in buf). */
struct aio_result {
    PGresult *res;
    char error[256];
};
/* Runs sql with text params in one implicit transaction whose orrery.user_id is user_id (NULL or ""
 * = none: row-level security then shows no user's rows). done(ud, result) runs on the loop thread,
 * exactly once. 0, or -1 when out of memory (done not called). */
int aio_query(struct aio *aio, const char *user_id, const char *sql, int nparams, const char *const *params,
              void (*done)(void *ud, struct aio_result *r), void *ud);

struct aio_header {
    char *name, *value;
};

struct aio_fetch {
    const char *method;                 /* GET (default), POST, PUT, PATCH, DELETE, HEAD */
    const char *url;                    /* http:// or https:// */
    const struct aio_header *headers;   /* n_headers request headers */
    int n_headers;
    const char *body;
    size_t body_len;
    double timeout;                     /* seconds; 0 = the default; capped by the configured maximum */
};

struct aio_response {
    long status;                        /* 0 on failure */
    char *body;                         /* malloc'd, NUL-terminated */
    size_t body_len;
    struct aio_header *headers;         /* malloc'd names (lower case) and values */
    int n_headers;
    char error[256];                    /* failure: "timeout", "refused: ...", "too_large", ... */
};
void aio_response_free(struct aio_response *r);

/* Starts req (copied). done(ud, response) runs on the loop thread exactly once and owns response
 * (aio_response_free). 0, or -1 with err for a request refused before it starts (bad URL, scheme,
 * host not allowed) — done is then not called. */
int aio_fetch(struct aio *aio, const struct aio_fetch *req, void (*done)(void *ud, struct aio_response *r), void *ud,
              char *err, size_t errlen);

#endif
