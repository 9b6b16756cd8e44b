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

#include "agents_host.h"
#include "api.h"
#include "bus.h"
#include "app.h"
#include "auth.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "ratelimit.h"
#include "routes.h"
#include "workpool.h"

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

/* The signing key: ORRERY_JWT_SECRET, or in development a random one for this process only
 * (tokens then die with it; `make run` keeps one in .data/jwt-secret instead). Production without
 * a secret never gets here: config_load refuses it. */
static int setup_keys(struct app *app) {
    const struct config *cfg = app->cfg;
    size_t len;
    if (cfg->jwt_secret) {
        len = strlen(cfg->jwt_secret);
        if (len > sizeof app->secret) len = sizeof app->secret;
        memcpy(app->secret, cfg->jwt_secret, len);
    } else {
        len = 32;
        char hex[AUTH_JTI_LEN + 1];
        for (size_t i = 0; i < len; i += 16) {
            if (auth_random_hex(hex) != 0) return -1;
            memcpy(app->secret + i, hex, 16);
        }
        log_warn("ORRERY_JWT_SECRET is not set: using a random key for this process; tokens will not "
                 "survive a restart (make run keeps one in .data/jwt-secret)");
    }
    app->keys = (struct auth_keys){
        .secret = app->secret,
        .secret_len = len,
        .issuer = "orrery",
        .audience = "orrery-api",
        .access_ttl_s = cfg->access_ttl_s,
        .skew_s = 60,
    };
    return 0;
}

/* Creates the admin named by ORRERY_ADMIN_EMAIL / ORRERY_ADMIN_PASSWORD when no account has that
 * email. Runs before serving; a database that is down only delays it to the next start. */
static void ensure_admin(struct app *app) {
    const struct config *cfg = app->cfg;
    if (!cfg->admin_email) return;
    char err[256], hash[AUTH_HASH_MAX], email[256];
    if (store_email_normalize(cfg->admin_email, email, sizeof email) != 0) {
        log_error("admin account: ORRERY_ADMIN_EMAIL is not a valid address");
        return;
    }
    PGconn *conn = db_acquire(app->db, err, sizeof err);
    if (!conn) {
        log_error("admin account: %s", err);
        return;
    }
    if (auth_password_hash(cfg->admin_password, strlen(cfg->admin_password), hash) != 0) {
        db_release(app->db, conn);
        log_error("admin account: cannot hash the password");
        return;
    }
    const char *steps[] = {"BEGIN", "SELECT set_config('orrery.ctx', 'auth', true)"};
    int ok = 1;
    for (size_t i = 0; ok && i < 2; i++) {
        PGresult *r = db_exec(conn, steps[i], 0, NULL);
        ok = db_ok(r);
        PQclear(r);
    }
    const char *p[2] = {email, hash};
    PGresult *r = ok ? db_exec(conn,
                               "INSERT INTO users (email, password_hash, name, role) "
                               "VALUES (lower($1), $2, 'Administrator', 'admin') ON CONFLICT (email) DO NOTHING",
                               2, p)
                     : NULL;
    ok = ok && db_ok(r);
    if (ok && strcmp(PQcmdTuples(r), "1") == 0) log_info("admin account created for %s", email);
    if (!ok) log_error("admin account: %s", r ? PQresultErrorMessage(r) : PQerrorMessage(conn));
    PQclear(r);
    PQclear(db_exec(conn, ok ? "COMMIT" : "ROLLBACK", 0, NULL));
    db_release(app->db, conn);
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
    app.work = workpool_new(cfg->auth_workers, 256);
    app.rate_ip = ratelimit_new(cfg->auth_rate_ip, 60);
    app.rate_account = ratelimit_new(cfg->auth_rate_account, 15 * 60);
    if (!app.work || !app.rate_ip || !app.rate_account || setup_keys(&app) != 0) {
        log_error("serve: cannot set up authentication");
        goto done;
    }
    ensure_admin(&app);
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
        .hooks = {.authenticate = api_authenticate, .begin = api_begin, .end = api_end},
        .work = app.work,
    };
    if (cfg->instance_id)
        snprintf(app.instance, sizeof app.instance, "%s", cfg->instance_id);
    else if (bus_uuid4(app.instance) != BUS_OK)
        app.instance[0] = '\0';
    if (!app.instance[0] || agents_host_start(&app, err, sizeof err) != 0) {
        log_error("serve: agents: %s", err);
        goto done;
    }
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
    /* Finish the jobs of suspended requests (they resume their connections) before the daemon goes;
     * requests waiting on an agent are answered when the runtime stops. */
    workpool_free(app.work);
    app.work = NULL;
    agents_host_stop(&app);
    http_stop(app.http);
    app.http = NULL;
    log_info("stopped");
    rc = 0;
done:
    workpool_free(app.work);
    agents_host_stop(&app);
    http_stop(app.http);
    ratelimit_free(app.rate_ip);
    ratelimit_free(app.rate_account);
    metrics_free();
    router_free(router);
    db_pool_free(app.db);
    migrate_set_free(&app.migrations);
    memset(app.secret, 0, sizeof app.secret);
    return rc;
}
