/* agents_host — the agent runtime inside `orrery serve`: builds it from the configuration, loads
 * the agents through agents_store (every .lua file of agents/, sorted; a file that does not load is
 * reported with its file and line and skipped, the others run; then the database's versions), and
 * stops it before the HTTP daemon goes, so requests waiting on an agent are answered.
 * Uses agents, agents_store, config, log. */
#ifndef ORRERY_AGENTS_HOST_H
#define ORRERY_AGENTS_HOST_H

#include <stddef.h>

#include "app.h"

/* Starts app->agents. 0, or -1 with err (the runtime could not start; a bad agent file is not an
 * error). */
int agents_host_start(struct app *app, char *err, size_t errlen);
/* Stops the runtime (waiting requests get `failure` "stopped"). Accepts an app without one. */
void agents_host_stop(struct app *app);

#endif
