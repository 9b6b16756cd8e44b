/* app — what every handler can reach: the configuration, the database pool, the migrations the
 * binary was started with. Owned by server.c for the life of `orrery serve`. */
#ifndef ORRERY_APP_H
#define ORRERY_APP_H

#include <time.h>

#include "config.h"
#include "db.h"
#include "migrate.h"

struct http_server;

struct app {
    const struct config *cfg;
    struct db_pool *db;
    struct migration_set migrations;
    struct http_server *http;
    time_t started;
};

#endif
