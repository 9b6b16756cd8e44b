/* agents_host — see agents_host.h. Where the sources come from (files, the database, the
 * watcher) is agents_store's business. */
#include "agents_host.h"

#include <stdio.h>

#include "agents.h"
#include "agents_store.h"
#include "aio.h"
#include "log.h"

int agents_host_start(struct app *app, char *err, size_t errlen) {
    const struct config *cfg = app->cfg;
    struct agents_config ac = {
        .workers = cfg->agent_workers,
        .mailbox = (size_t)cfg->agent_mailbox,
        .limits = {.memory_bytes = (size_t)cfg->agent_memory_mb << 20,
                   .instructions = cfg->agent_instructions,
                   .seconds = cfg->agent_slice_ms / 1000.0},
        .run_timeout = cfg->agent_timeout_s,
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
    if (agents_store_start(app) != 0) {
        snprintf(err, errlen, "out of memory");
        agents_host_stop(app);
        return -1;
    }
    return 0;
}

int agents_host_load_dir(struct app *app, const char *dir) {
    return agents_store_load_dir(app, dir);
}

void agents_host_stop(struct app *app) {
    agents_store_stop(app);   /* no more loads */
    agents_stop(app->agents); /* no handler runs now: the I/O loop can go */
    aio_free(app->aio);
    app->aio = NULL;
    agents_free(app->agents);
    app->agents = NULL;
}
