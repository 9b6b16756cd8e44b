/* app — what every handler can reach: the configuration, the database pool, the migrations the
 * binary was started with. Owned by server.c for the life of `orrery serve`. */
#ifndef ORRERY_APP_H
#define ORRERY_APP_H

#include <time.h>

#include "auth.h"
#include "config.h"
#include "db.h"
#include "migrate.h"

struct agents;
struct aio;
struct agents_store;
struct http_server;
struct msglog;
struct replica;
struct ratelimit;
struct workpool;

struct app {
    const struct config *cfg;
    struct db_pool *db;
    struct migration_set migrations;
    struct http_server *http;
    struct workpool *work;          /* password hashing */
    struct auth_keys keys;          /* access tokens */
    unsigned char secret[256];      /* the key bytes keys.secret points at */
    struct ratelimit *rate_ip;      /* login/register attempts per client address per minute */
    struct ratelimit *rate_account; /* failed logins per account per 15 minutes */
    struct agents *agents;          /* the agent runtime (src/agents.h) */
    struct aio *aio;                /* the agents' database and HTTP I/O loop (src/aio.h) */
    struct agents_store *agents_store; /* where agent sources come from (src/agents_store.h) */
    /* Set by whoever tells the other replicas: called after this process stored and loaded a new
     * active version of an agent (PUT, rollback). May be NULL. */
    void (*on_agent_changed)(struct app *app, const char *name, long version);
    struct msglog *msglog;          /* records envelopes in agent_messages (src/msglog.h) */
    struct replica *replica;        /* LISTEN/NOTIFY fan-out to other replicas (src/replica.h) */
    char instance[37];              /* this process's id (UUID), for messages and replicas */
    time_t started;
};

#endif
