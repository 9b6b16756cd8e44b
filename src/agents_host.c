/* agents_host — see agents_host.h. Where the sources come from (files, the database, the
 * watcher) is agents_store's business. */
#include "agents_host.h"

#include <stdio.h>

#include "agents.h"
#include "agents_store.h"
#include "aio.h"
#include "log.h"
#include "msglog.h"
#include "replica.h"

#define MSGLOG_QUEUE 200000
#define MSGLOG_FLUSH_MS 50

/* ---- Hooks: the runtime's envelopes go to the message log (and, later, to the replicas) ---- */

static void hook_record(void *ud, const struct bus_envelope *env, int pending) {
    struct app *app = ud;
    if (app->msglog) msglog_record(app->msglog, env, pending);
}

static void hook_handled(void *ud, const char *agent, const char *envelope_id) {
    struct app *app = ud;
    if (app->msglog) msglog_handled(app->msglog, agent, envelope_id);
}

static void hook_publish(void *ud, const struct bus_envelope *env) {
    struct app *app = ud;
    if (app->replica && replica_publish(app->replica, env) != 0)
        log_warn("agents: the replicas' queue is full: %s on '%s' stays on this replica", env->id, env->topic);
}

/* ---- From the other replicas ---- */

static void remote_publish(void *ud, struct bus_envelope *env) {
    struct app *app = ud;
    agents_deliver(app->agents, env, 1); /* local subscribers only: never published back */
    bus_envelope_free(env);
}

static void remote_agent(void *ud, const char *name, long version) {
    struct app *app = ud;
    if (agents_store_reload(app, name) < 0)
        log_warn("agents: another replica changed '%s' to version %ld, which did not load here", name, version);
}

/* Listening again after a lost connection: notifications may have been missed. */
static void remote_resync(void *ud) {
    struct app *app = ud;
    if (agents_store_sync(app) != 0) log_warn("agents: could not re-read agent versions after reconnecting");
}

static void tell_replicas(struct app *app, const char *name, long version) {
    if (app->replica) replica_agent_changed(app->replica, name, version);
}

/* A message a dead process had accepted but not handled: delivered here once. */
static void redeliver_one(void *ud, struct bus_envelope *env) {
    struct app *app = ud;
    int rc = agents_deliver(app->agents, env, 0);
    if (rc < 0)
        log_warn("agents: redelivered %s to '%s' failed (%s)", env->id, env->receiver,
                 rc == BUS_UNKNOWN ? "no such agent now" : rc == BUS_FULL ? "mailbox full" : "invalid");
    bus_envelope_free(env);
}

int agents_host_start(struct app *app, char *err, size_t errlen) {
    const struct config *cfg = app->cfg;
    struct agents_config ac = {
        .workers = cfg->agent_workers,
        .mailbox = (size_t)cfg->agent_mailbox,
        .limits = {.memory_bytes = (size_t)cfg->agent_memory_mb << 20,
                   .instructions = cfg->agent_instructions,
                   .seconds = cfg->agent_slice_ms / 1000.0},
        .run_timeout = cfg->agent_timeout_s,
        .max_runs = cfg->agent_max_runs,
        .lib_dir = cfg->lib_dir,
    };
    struct aio_config io = {
        .db_url = cfg->database_url,
        .db_connections = cfg->agent_db_connections,
        .db_timeout_ms = cfg->db_timeout_ms,
        .fetch_allow = cfg->fetch_allow,
        .fetch_allow_private = cfg->fetch_allow_private,
    };
    app->aio = aio_new(&io, err, errlen);
    if (!app->aio) return -1;
    ac.aio = app->aio;
    app->agents = agents_new(&ac, err, errlen);
    if (!app->agents) return -1;
    log_info("agents: runtime started (%d workers)", ac.workers);
    /* The message log needs the database at start; without it agents run unrecorded this time. */
    char why[512];
    app->msglog = msglog_new(cfg->database_url, app->instance, MSGLOG_QUEUE, MSGLOG_FLUSH_MS, why, sizeof why);
    if (!app->msglog)
        log_warn("agents: the message log is off for this run (%s): envelopes are not recorded or redelivered", why);
    struct replica_handlers rh = {.on_publish = remote_publish, .on_agent = remote_agent, .on_resync = remote_resync,
                                  .ud = app};
    app->replica = replica_new(cfg->database_url, app->instance, &rh, why, sizeof why);
    if (!app->replica) log_warn("agents: no fan-out to other replicas in this run (%s)", why);
    app->on_agent_changed = tell_replicas;
    struct agents_hooks hooks = {.record = hook_record, .handled = hook_handled, .publish = hook_publish, .ud = app};
    agents_set_hooks(app->agents, &hooks);
    if (agents_store_start(app) != 0) {
        snprintf(err, errlen, "out of memory");
        agents_host_stop(app);
        return -1;
    }
    if (app->msglog) {
        int n = msglog_redeliver(app->msglog, redeliver_one, app, why, sizeof why);
        if (n < 0)
            log_warn("agents: redelivery failed: %s", why);
        else if (n > 0)
            log_info("agents: redelivered %d messages accepted by processes that stopped before handling them", n);
    }
    return 0;
}

void agents_host_stop(struct app *app) {
    agents_stop(app->agents); /* no handler runs now: nothing publishes or waits on I/O any more */
    replica_free(app->replica); /* sends what is queued; no more calls from other replicas */
    app->replica = NULL;
    agents_store_stop(app);   /* no more loads */
    aio_free(app->aio);
    app->aio = NULL;
    msglog_free(app->msglog); /* writes what is queued */
    app->msglog = NULL;
    agents_free(app->agents);
    app->agents = NULL;
}
