/* agents_host — see agents_host.h. */
#include "agents_host.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agents.h"
#include "aio.h"
#include "log.h"

#define AGENT_FILE_MAX (1 << 20)

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
    int n = agents_host_load_dir(app, cfg->agents_dir);
    log_info("agents: %d loaded from %s (%d workers)", n, cfg->agents_dir, ac.workers);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads path whole (at most AGENT_FILE_MAX bytes). Malloc'd, NULL with err. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open");
        return NULL;
    }
    char *buf = malloc(AGENT_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, AGENT_FILE_MAX + 1, f) : 0;
    fclose(f);
    if (!buf || n > AGENT_FILE_MAX) {
        snprintf(err, errlen, buf ? "larger than %d bytes" : "out of memory", AGENT_FILE_MAX);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

int agents_host_load_dir(struct app *app, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) {
        log_warn("agents: cannot open the agents directory %s", dir);
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".lua") != 0 || e->d_name[0] == '.') continue;
        if (n == cap) {
            char **more = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
            if (!more) break;
            names = more;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, by_name);
    int loaded = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1024], chunk[1100], err[1024], name[BUS_NAME_MAX + 1];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(chunk, sizeof chunk, "@%s", path);
        size_t len;
        char *src = read_file(path, &len, err, sizeof err);
        if (src && agents_load(app->agents, chunk, src, len, 0, name, err, sizeof err) == 0) {
            log_info("agents: loaded '%s' from %s", name, path);
            loaded++;
        } else {
            json_t *f = json_pack("{s:s}", "file", path);
            log_fields(LOG_ERROR, f, "agents: %s: %s (skipped)", path, err);
            json_decref(f);
        }
        free(src);
        free(names[i]);
    }
    free(names);
    return loaded;
}

void agents_host_stop(struct app *app) {
    agents_stop(app->agents); /* no handler runs now: the I/O loop can go */
    aio_free(app->aio);
    app->aio = NULL;
    agents_free(app->agents);
    app->agents = NULL;
}
