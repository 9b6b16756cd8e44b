/* server — `orrery serve`: wires config, log, db pool, migrations check, metrics and the HTTP
 * daemon together, and shuts down gracefully on SIGTERM/SIGINT. Uses http, router, routes, db,
 * migrate, metrics and log. */
#ifndef ORRERY_SERVER_H
#define ORRERY_SERVER_H

#include "config.h"

/* Serves until SIGTERM/SIGINT. Returns the process exit code. */
int server_run(const struct config *cfg);

#endif
