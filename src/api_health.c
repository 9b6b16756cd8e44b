/* api_health — liveness, readiness and metrics: the routes an orchestrator and Prometheus poll.
 * Uses app (db pool, migrations), metrics and http. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agents.h"
#include "app.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "migrate.h"
#include "routes.h"
#include "version.h"

/* The process is alive and serving HTTP; says nothing about dependencies on purpose. */
void api_healthz(struct http_req *req) {
    static const char ok[] = "{\"status\":\"ok\"}";
    http_text(req, 200, "application/json", ok, sizeof ok - 1);
}

/* Ready when the database answers and every migration this binary knows is applied. */
void api_readyz(struct http_req *req) {
    struct app *app = http_app(req);
    char err[512] = "";
    const char *db_state = "ok", *mig_state = "current";
    PGconn *conn = db_acquire(app->db, err, sizeof err);
    if (!conn) {
        db_state = "unavailable";
        mig_state = "unknown";
    } else {
        int rc = migrate_check_current(conn, &app->migrations, err, sizeof err);
        if (rc == 1) mig_state = "pending";
        else if (rc < 0) mig_state = PQstatus(conn) == CONNECTION_OK ? "mismatch" : "unknown";
        if (PQstatus(conn) != CONNECTION_OK) db_state = "unavailable";
        db_release(app->db, conn);
    }
    int ready = !strcmp(db_state, "ok") && !strcmp(mig_state, "current");
    if (!ready) log_warn("readyz: not ready (database %s, migrations %s): %s", db_state, mig_state, err);
    json_t *checks = json_pack("{s:s, s:s}", "database", db_state, "migrations", mig_state);
    /* Degraded agents are reported, not fatal: the rest of the service works without them. */
    if (app->agents) {
        json_t *degraded = json_array();
        json_t *all = agents_status(app->agents);
        size_t i;
        json_t *a;
        json_array_foreach(all, i, a) {
            if (strcmp(json_string_value(json_object_get(a, "status")), "running") != 0)
                json_array_append_new(degraded, json_pack("{s:O, s:O, s:O*}", "name", json_object_get(a, "name"),
                                                          "status", json_object_get(a, "status"), "last_error",
                                                          json_object_get(a, "last_error")));
        }
        json_object_set_new(checks, "agents", json_pack("{s:s, s:I, s:o}", "status",
                                                        json_array_size(degraded) ? "degraded" : "ok", "loaded",
                                                        (json_int_t)json_array_size(all), "degraded", degraded));
        json_decref(all);
    }
    if (ready) {
        http_json(req, 200, json_pack("{s:s, s:o}", "status", "ready", "checks", checks));
    } else {
        http_add_header(req, "Retry-After", "5");
        http_error(req, 503, "not_ready", "the service is not ready", json_pack("{s:o}", "checks", checks));
    }
}

void api_metrics(struct http_req *req) {
    struct app *app = http_app(req);
    struct metrics_buf b = {0};
    metrics_render_http(&b);
    struct db_stats st;
    db_pool_stats(app->db, &st);
    metrics_printf(&b,
                   "# HELP orrery_db_pool_connections Database pool connections by state.\n"
                   "# TYPE orrery_db_pool_connections gauge\n"
                   "orrery_db_pool_connections{state=\"size\"} %d\n"
                   "orrery_db_pool_connections{state=\"in_use\"} %d\n"
                   "orrery_db_pool_connections{state=\"open\"} %d\n"
                   "# HELP orrery_db_pool_acquire_total Pool checkouts by outcome.\n"
                   "# TYPE orrery_db_pool_acquire_total counter\n"
                   "orrery_db_pool_acquire_total{outcome=\"ok\"} %lu\n"
                   "orrery_db_pool_acquire_total{outcome=\"timeout\"} %lu\n"
                   "orrery_db_pool_acquire_total{outcome=\"connect_failed\"} %lu\n",
                   st.size, st.in_use, st.connected, st.acquired, st.timeouts, st.failures);
    metrics_printf(&b,
                   "# HELP orrery_http_inflight_requests Requests being served.\n"
                   "# TYPE orrery_http_inflight_requests gauge\n"
                   "orrery_http_inflight_requests %d\n"
                   "# HELP orrery_build_info Version of the running binary.\n"
                   "# TYPE orrery_build_info gauge\n"
                   "orrery_build_info{version=\"%s\"} 1\n"
                   "# HELP orrery_start_time_seconds Start time of the process.\n"
                   "# TYPE orrery_start_time_seconds gauge\n"
                   "orrery_start_time_seconds %lld\n",
                   http_inflight(app->http), ORRERY_VERSION, (long long)app->started);
    if (!b.data) {
        http_error(req, 500, "internal", "internal error", NULL);
        return;
    }
    http_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    free(b.data);
}
