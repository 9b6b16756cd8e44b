/* agents_store — where the sources of `orrery serve`'s agents come from, and which one runs:
 * - files: every *.lua of agents/ (ORRERY_AGENTS_DIR), loaded at start; a file that does not load
 *   is logged with its file and line and skipped;
 * - the database: the active version of each name in table `agents` (migrations/V9), which
 *   overrides the file of the same name (an agent only in the database runs too);
 * - reloads by name, after a PUT or rollback here or a notification from another replica;
 * - in development (ORRERY_AGENTS_WATCH) a thread that polls agents/ once a second and reloads a
 *   new or changed file, unless the database overrides its agent; a file that does not load is
 *   logged with its file and line and the running version is kept.
 * The same thread retries reading the database when it was unreachable at start.
 * Loads are serialized here, so the last version read is the one that runs. Uses agents, db, log.
 * See docs/agents-admin.md. */
#ifndef ORRERY_AGENTS_STORE_H
#define ORRERY_AGENTS_STORE_H

#include <stddef.h>

#include <jansson.h>

#include "app.h"

#define AGENTS_SOURCE_MAX (256 * 1024) /* bytes of a version stored in the database */

/* Creates app->agents_store for app->agents (which must exist), loads the files of
 * cfg->agents_dir, then the active database versions, and starts the polling thread. 0, or -1
 * when out of memory (a bad file or an unreachable database is not an error). */
int agents_store_start(struct app *app);
/* Stops the thread and frees app->agents_store (before the runtime goes). Accepts an app without
 * one. */
void agents_store_stop(struct app *app);

/* Loads every *.lua file of dir (sorted by name) and remembers it for the watcher. Returns how
 * many loaded. */
int agents_store_load_dir(struct app *app, const char *dir);
/* Loads the active database version of every agent that does not run it yet. 0, or -1 when the
 * database could not be read (logged). */
int agents_store_sync(struct app *app);
/* Loads the active database version of name unless it already runs: 1 loaded, 0 nothing to do
 * (already running, or no version in the database), -1 when the database could not be read or
 * the version did not load (logged). For the replica's notifications and the admin API. */
int agents_store_reload(struct app *app, const char *name);

/* Where name's running source came from: {"origin": "file", "file": path} |
 * {"origin": "database", "version": n}; NULL when the store did not load it. New reference. */
json_t *agents_store_origin(struct app *app, const char *name);
/* A copy of the source name runs (malloc'd, NUL-terminated, *len its length), or NULL. */
char *agents_store_source(struct app *app, const char *name, size_t *len);

/* The line number in a load error ("chunk:LINE: message"), or 0 when it names none. chunkname is
 * the one given to agents_check / agents_load (may be NULL). */
int agents_store_error_line(const char *chunkname, const char *err);

#endif
