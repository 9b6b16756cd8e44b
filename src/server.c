/* server — see server.h. Signals are blocked in every thread and taken synchronously by the
 * main thread with sigwait, so shutdown runs as ordinary code, not in a signal handler:
 * stop accepting, let in-flight requests finish within ORRERY_SHUTDOWN_TIMEOUT (a second
 * signal cuts that short), then close connections and the pool. */
#include "server.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "routes.h"

static double now_mono(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Waits for in-flight requests to finish. Returns how many were still running at the end. */
static int drain(struct http_server *http, int timeout_s, const sigset_t *sigs) {
    double deadline = now_mono() + timeout_s;
    struct timespec tick = {0, 20 * 1000000L};
    while (http_inflight(http) > 0 && now_mono() < deadline) {
        int sig = sigtimedwait(sigs, NULL, &tick);
        if (sig > 0) {
            log_warn("second signal (%s): not waiting for in-flight requests", strsignal(sig));
            break;
        }
    }
    return http_inflight(http);
}

int server_run(const struct config *cfg) {
    struct app app;
    memset(&app, 0, sizeof app);
    app.cfg = cfg;
    app.started = time(NULL);
    struct router *router = NULL;
    int rc = 1;
    char err[1024];

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    /* Before any thread starts, so all of them inherit the mask. */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (migrate_load(cfg->migrations_dir, &app.migrations, err, sizeof err) != 0) {
        log_error("serve: migrations: %s", err);
        goto done;
    }
    app.db = db_pool_new(cfg->database_url, cfg->db_pool, cfg->db_timeout_ms);
    if (!app.db) {
        log_error("serve: cannot create the database pool");
        goto done;
    }
    size_t nroutes;
    const struct route *routes = routes_table(cfg->env == ENV_TEST, &nroutes);
    router = router_new(routes, nroutes, err, sizeof err);
    if (!router || metrics_init(routes, nroutes) != 0) {
        log_error("serve: routes: %s", router ? "out of memory" : err);
        goto done;
    }
    struct http_options opt = {
        .host = cfg->listen_host,
        .port = cfg->listen_port,
        .workers = cfg->workers,
        .max_connections = cfg->max_connections,
        .max_connections_per_ip = cfg->max_connections_per_ip,
        .conn_timeout_s = cfg->conn_timeout_s,
        .max_body = cfg->max_body,
    };
    app.http = http_start(&opt, router, &app, err, sizeof err);
    if (!app.http) {
        log_error("serve: %s", err);
        goto done;
    }
    int port = http_port(app.http);
    const char *fmt = strchr(cfg->listen_host, ':') ? "http://[%s]:%d" : "http://%s:%d";
    char url[128];
    snprintf(url, sizeof url, fmt, cfg->listen_host, port);
    json_t *where = json_pack("{s:s, s:i, s:i, s:s}", "url", url, "port", port, "workers", cfg->workers, "env",
                              config_env_name(cfg->env));
    log_fields(LOG_INFO, where, "listening on %s", url);
    json_decref(where);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
        if (errno != EINTR) break;
    }
    log_info("received %s: shutting down (waiting up to %ds for %d in-flight requests)", strsignal(sig),
             cfg->shutdown_timeout_s, http_inflight(app.http));
    http_quiesce(app.http);
    int left = drain(app.http, cfg->shutdown_timeout_s, &sigs);
    if (left > 0) log_warn("shutdown: %d requests still running were cut off", left);
    http_stop(app.http);
    app.http = NULL;
    log_info("stopped");
    rc = 0;
done:
    http_stop(app.http);
    metrics_free();
    router_free(router);
    db_pool_free(app.db);
    migrate_set_free(&app.migrations);
    return rc;
}
