/* agents_store — see agents_store.h. load_mu is held across every load the store makes, so a
 * reload reads the database and swaps the runtime as one step: two reloads of a name cannot apply
 * out of order. mu guards what the store knows per agent, briefly, so the API's readers never wait
 * behind a compile or a database read. Database reads run in their own short transaction as
 * 'system'. */
#include "agents_store.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "agents.h"
#include "log.h"

#define AGENT_FILE_MAX (1 << 20)
#define SYNC_RETRY_SECONDS 5

enum origin { ORIGIN_NONE, ORIGIN_FILE, ORIGIN_DB };

/* What the store knows of one agent name. */
struct entry {
    struct entry *next;
    char name[BUS_NAME_MAX + 1];
    enum origin origin; /* where the running source came from */
    char file[1024];    /* ORIGIN_FILE: its path */
    long version;       /* ORIGIN_DB: the version running */
    char checksum[65];  /* ORIGIN_DB: its checksum */
    int in_db;          /* the database has an active version: files of this name no longer apply */
    char *source;       /* what runs (owned) */
    size_t len;
};

/* A file of the agents directory as last seen. */
struct seen {
    struct seen *next;
    char *path; /* owned */
    struct timespec mtime;
    off_t size;
    ino_t ino;
    int present; /* found by the current scan */
};

struct agents_store {
    struct app *app;
    pthread_mutex_t load_mu; /* files, synced, and every load: loads happen one at a time */
    pthread_mutex_t mu;      /* entries (held briefly: readers never wait for a load) */
    struct entry *entries;
    struct seen *files;
    int synced; /* the database was read once */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    int stop;
};

/* ---- Entries (mu held; changed only with load_mu held too) ---- */

static struct entry *entry_find(struct agents_store *s, const char *name) {
    for (struct entry *e = s->entries; e; e = e->next)
        if (strcmp(e->name, name) == 0) return e;
    return NULL;
}

static struct entry *entry_get(struct agents_store *s, const char *name) {
    struct entry *e = entry_find(s, name);
    if (e) return e;
    if (!(e = calloc(1, sizeof *e))) return NULL;
    snprintf(e->name, sizeof e->name, "%s", name);
    e->next = s->entries;
    s->entries = e;
    return e;
}

/* Records what now runs under e. The source copy is best effort (only shown by the API). */
static void entry_set(struct entry *e, enum origin origin, const char *file, long version, const char *checksum,
                      const char *src, size_t len) {
    e->origin = origin;
    snprintf(e->file, sizeof e->file, "%s", file ? file : "");
    e->version = version;
    snprintf(e->checksum, sizeof e->checksum, "%s", checksum ? checksum : "");
    free(e->source);
    e->source = malloc(len + 1);
    e->len = e->source ? len : 0;
    if (e->source) {
        memcpy(e->source, src, len);
        e->source[len] = '\0';
    }
}

int agents_store_error_line(const char *chunkname, const char *err) {
    if (!err) return 0;
    const char *p = NULL;
    /* Lua prints "=name" chunks as "name" and "@path" as "path" (shortened when long). */
    if (chunkname && (chunkname[0] == '=' || chunkname[0] == '@')) {
        size_t n = strlen(chunkname + 1);
        if (strncmp(err, chunkname + 1, n) == 0 && err[n] == ':') p = err + n;
    }
    for (const char *q = p ? p : strchr(err, ':'); q; q = p ? NULL : strchr(q + 1, ':')) {
        const char *d = q + 1;
        long line = 0;
        while (*d >= '0' && *d <= '9' && line < 100000000) line = line * 10 + (*d++ - '0');
        if (d > q + 1 && *d == ':') return (int)line;
    }
    return 0;
}

/* Logs a source that did not load: where (a file's path, or "name version N"), the error and its
 * line, and what happens now. fields (may be NULL) is taken. */
static void log_load_error(json_t *fields, const char *where, const char *chunk, const char *err, const char *what) {
    int line = agents_store_error_line(chunk, err);
    if (!fields) fields = json_object();
    if (fields && line > 0) json_object_set_new(fields, "line", json_integer(line));
    log_fields(LOG_ERROR, fields, "agents: %s: %s (%s)", where, err, what);
    json_decref(fields);
}

/* ---- Files ---- */

/* Reads path whole (at most AGENT_FILE_MAX bytes). Malloc'd, NULL with err. */
static char *read_file(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
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

/* Loads one file (load_mu held). When the database may override its agent (check_first), the file is
 * compiled in a scratch state first to learn its name. 1 loaded, 0 ignored (the database
 * overrides it), -1 failed (logged; what ran before keeps running). */
static int load_file(struct agents_store *s, const char *path, int check_first) {
    struct agents *rt = s->app->agents;
    char err[1024], chunk[1100], name[BUS_NAME_MAX + 1];
    snprintf(chunk, sizeof chunk, "@%s", path);
    const char *what = check_first ? "the running version is kept" : "skipped";
    size_t len = 0;
    char *src = read_file(path, &len, err, sizeof err);
    if (!src) {
        log_load_error(json_pack("{s:s}", "file", path), path, chunk, err, what);
        return -1;
    }
    if (check_first) {
        struct agents_info info;
        if (agents_check(rt, chunk, src, len, &info, err, sizeof err) != 0) {
            log_load_error(json_pack("{s:s}", "file", path), path, chunk, err, what);
            free(src);
            return -1;
        }
        pthread_mutex_lock(&s->mu);
        struct entry *e = entry_find(s, info.name);
        int overridden = e && e->in_db;
        pthread_mutex_unlock(&s->mu);
        if (overridden)
            log_info("agents: %s changed, but '%s' runs its database version: file ignored", path, info.name);
        agents_info_clear(&info);
        if (overridden) {
            free(src);
            return 0;
        }
    }
    if (agents_load(rt, chunk, src, len, 0, name, err, sizeof err) != 0) {
        log_load_error(json_pack("{s:s}", "file", path), path, chunk, err, what);
        free(src);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    struct entry *e = entry_get(s, name);
    if (e) entry_set(e, ORIGIN_FILE, path, 0, NULL, src, len);
    pthread_mutex_unlock(&s->mu);
    json_t *f = json_pack("{s:s, s:s}", "agent", name, "file", path);
    log_fields(LOG_INFO, f, "agents: loaded '%s' from %s", name, path);
    json_decref(f);
    free(src);
    return 1;
}

static struct seen *seen_find(struct agents_store *s, const char *path) {
    for (struct seen *f = s->files; f; f = f->next)
        if (strcmp(f->path, path) == 0) return f;
    return NULL;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads the *.lua files of dir that are new or changed since the last scan (every file on the
 * first), in name order (load_mu held). Returns how many loaded. */
static int scan(struct agents_store *s, const char *dir, int check_first) {
    DIR *d = opendir(dir);
    if (!d) {
        if (!check_first) log_warn("agents: cannot open the agents directory %s", dir);
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".lua") != 0 || de->d_name[0] == '.') continue;
        if (n == cap) {
            char **more = realloc(names, (cap = cap ? cap * 2 : 16) * sizeof *names);
            if (!more) break;
            names = more;
        }
        if (!(names[n] = strdup(de->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, by_name);
    for (struct seen *f = s->files; f; f = f->next) f->present = 0;
    int loaded = 0;
    for (size_t i = 0; i < n; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        free(names[i]);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        struct seen *f = seen_find(s, path);
        if (f) {
            f->present = 1;
            if (f->mtime.tv_sec == st.st_mtim.tv_sec && f->mtime.tv_nsec == st.st_mtim.tv_nsec &&
                f->size == st.st_size && f->ino == st.st_ino)
                continue;
        } else {
            if (!(f = calloc(1, sizeof *f)) || !(f->path = strdup(path))) {
                free(f);
                continue;
            }
            f->present = 1;
            f->next = s->files;
            s->files = f;
        }
        /* Recorded before reading: a write that lands after the read changes mtime again. */
        f->mtime = st.st_mtim;
        f->size = st.st_size;
        f->ino = st.st_ino;
        if (load_file(s, path, check_first) > 0) loaded++;
    }
    free(names);
    for (struct seen **p = &s->files; *p;) {
        struct seen *f = *p;
        if (f->present || strncmp(f->path, dir, strlen(dir)) != 0) {
            p = &f->next;
            continue;
        }
        log_info("agents: %s was removed; its agent keeps running until the server restarts", f->path);
        *p = f->next;
        free(f->path);
        free(f);
    }
    return loaded;
}

/* ---- Database ---- */

/* Runs one read in its own transaction as 'system' on a pooled connection. The result, or NULL
 * (logged). */
static PGresult *db_read(struct app *app, const char *sql, int n, const char *const *params) {
    char err[256];
    PGconn *conn = db_acquire(app->db, err, sizeof err);
    if (!conn) {
        log_warn("agents: cannot read the database versions: %s", err);
        return NULL;
    }
    struct db_stmt batch[4] = {
        {"BEGIN READ ONLY", 0, NULL},
        {"SELECT set_config('orrery.ctx', 'system', true)", 0, NULL},
        {sql, n, params},
        {"COMMIT", 0, NULL},
    };
    PGresult *res[4] = {0};
    int failed = db_exec_batch(conn, batch, 4, res);
    if (failed >= 0)
        log_warn("agents: cannot read the database versions: %s",
                 res[failed] ? PQresultErrorMessage(res[failed]) : PQerrorMessage(conn));
    PGresult *out = failed < 0 ? res[2] : NULL;
    for (int i = 0; i < 4; i++)
        if (i != 2 || !out) PQclear(res[i]);
    db_release(app->db, conn);
    return out;
}

static json_t *version_fields(const char *name, long version) {
    return json_pack("{s:s, s:I}", "agent", name, "version", (json_int_t)version);
}

/* Loads one active database version unless it already runs (load_mu held). 1, 0 or -1 as
 * agents_store_reload. */
static int apply_version(struct agents_store *s, const char *name, long version, const char *src, size_t len,
                         const char *checksum) {
    pthread_mutex_lock(&s->mu);
    struct entry *e = entry_get(s, name);
    int running = e && e->origin == ORIGIN_DB && e->version == version && strcmp(e->checksum, checksum) == 0;
    if (e) e->in_db = 1;
    pthread_mutex_unlock(&s->mu);
    if (!e) return -1;
    if (running) return 0;
    struct agents *rt = s->app->agents;
    char chunk[96], err[1024], loaded[BUS_NAME_MAX + 1], where[128];
    snprintf(chunk, sizeof chunk, "=%s@v%ld", name, version);
    snprintf(where, sizeof where, "'%s' version %ld", name, version);
    /* Checked first: a row written by hand could declare another name and replace that agent. */
    struct agents_info info;
    if (agents_check(rt, chunk, src, len, &info, err, sizeof err) != 0) {
        log_load_error(version_fields(name, version), where, chunk, err, "not loaded");
        return -1;
    }
    int same = strcmp(info.name, name) == 0;
    agents_info_clear(&info);
    if (!same) {
        log_load_error(version_fields(name, version), where, chunk, "name: the source declares another agent", "not loaded");
        return -1;
    }
    if (agents_load(rt, chunk, src, len, version, loaded, err, sizeof err) != 0) {
        log_load_error(version_fields(name, version), where, chunk, err, "not loaded");
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    entry_set(e, ORIGIN_DB, NULL, version, checksum, src, len);
    pthread_mutex_unlock(&s->mu);
    json_t *f = version_fields(name, version);
    log_fields(LOG_INFO, f, "agents: loaded '%s' version %ld from the database", name, version);
    json_decref(f);
    return 1;
}

int agents_store_sync(struct app *app) {
    struct agents_store *s = app->agents_store;
    if (!s) return -1;
    pthread_mutex_lock(&s->load_mu);
    PGresult *r = db_read(app, "SELECT name, version, source, checksum FROM agents WHERE active ORDER BY name", 0, NULL);
    int rc = r ? 0 : -1;
    if (r) {
        for (int i = 0; i < PQntuples(r); i++)
            apply_version(s, PQgetvalue(r, i, 0), strtol(PQgetvalue(r, i, 1), NULL, 10), PQgetvalue(r, i, 2),
                          (size_t)PQgetlength(r, i, 2), PQgetvalue(r, i, 3));
        s->synced = 1;
    }
    pthread_mutex_unlock(&s->load_mu);
    PQclear(r);
    return rc;
}

int agents_store_reload(struct app *app, const char *name) {
    struct agents_store *s = app->agents_store;
    if (!s || !name) return -1;
    pthread_mutex_lock(&s->load_mu);
    const char *p[1] = {name};
    PGresult *r = db_read(app, "SELECT version, source, checksum FROM agents WHERE name = $1 AND active", 1, p);
    int rc = r ? 0 : -1;
    if (r && PQntuples(r) == 1)
        rc = apply_version(s, name, strtol(PQgetvalue(r, 0, 0), NULL, 10), PQgetvalue(r, 0, 1),
                           (size_t)PQgetlength(r, 0, 1), PQgetvalue(r, 0, 2));
    pthread_mutex_unlock(&s->load_mu);
    PQclear(r);
    return rc;
}

/* ---- Queries ---- */

json_t *agents_store_origin(struct app *app, const char *name) {
    struct agents_store *s = app->agents_store;
    if (!s) return NULL;
    json_t *o = NULL;
    pthread_mutex_lock(&s->mu);
    struct entry *e = entry_find(s, name);
    if (e && e->origin == ORIGIN_FILE) o = json_pack("{s:s, s:s}", "origin", "file", "file", e->file);
    else if (e && e->origin == ORIGIN_DB) o = json_pack("{s:s, s:I}", "origin", "database", "version", (json_int_t)e->version);
    pthread_mutex_unlock(&s->mu);
    return o;
}

char *agents_store_source(struct app *app, const char *name, size_t *len) {
    struct agents_store *s = app->agents_store;
    if (!s) return NULL;
    char *out = NULL;
    pthread_mutex_lock(&s->mu);
    struct entry *e = entry_find(s, name);
    if (e && e->source && (out = malloc(e->len + 1))) {
        memcpy(out, e->source, e->len + 1);
        *len = e->len;
    }
    pthread_mutex_unlock(&s->mu);
    return out;
}

/* ---- Life ---- */

int agents_store_load_dir(struct app *app, const char *dir) {
    struct agents_store *s = app->agents_store;
    if (!s) return 0;
    pthread_mutex_lock(&s->load_mu);
    int n = scan(s, dir, 0);
    pthread_mutex_unlock(&s->load_mu);
    return n;
}

/* Sleeps up to seconds; 1 when asked to stop. */
static int wait_stop(struct agents_store *s, int seconds) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&s->stop_mu);
    while (!s->stop && pthread_cond_timedwait(&s->stop_cv, &s->stop_mu, &until) == 0) {
    }
    int stop = s->stop;
    pthread_mutex_unlock(&s->stop_mu);
    return stop;
}

/* Polls the agents directory once a second (when watching) and retries the database until it
 * was read once. */
static void *poller(void *arg) {
    struct agents_store *s = arg;
    const struct config *cfg = s->app->cfg;
    int since_sync = 0;
    while (!wait_stop(s, 1)) {
        if (cfg->agents_watch) {
            pthread_mutex_lock(&s->load_mu);
            scan(s, cfg->agents_dir, 1);
            pthread_mutex_unlock(&s->load_mu);
        }
        pthread_mutex_lock(&s->load_mu);
        int synced = s->synced;
        pthread_mutex_unlock(&s->load_mu);
        if (!synced && ++since_sync >= SYNC_RETRY_SECONDS) {
            since_sync = 0;
            if (agents_store_sync(s->app) == 0) log_info("agents: database versions loaded");
        }
        if (synced && !cfg->agents_watch) break; /* nothing left to do */
    }
    return NULL;
}

int agents_store_start(struct app *app) {
    struct agents_store *s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->app = app;
    pthread_mutex_init(&s->load_mu, NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->stop_mu, NULL);
    pthread_cond_init(&s->stop_cv, NULL);
    app->agents_store = s;
    const struct config *cfg = app->cfg;
    int files = agents_store_load_dir(app, cfg->agents_dir);
    log_info("agents: %d loaded from %s", files, cfg->agents_dir);
    if (agents_store_sync(app) != 0) log_warn("agents: database versions not loaded yet; retrying every %d s", SYNC_RETRY_SECONDS);
    pthread_mutex_lock(&s->load_mu);
    int need_thread = cfg->agents_watch || !s->synced;
    pthread_mutex_unlock(&s->load_mu);
    if (need_thread) {
        if (pthread_create(&s->thread, NULL, poller, s) == 0) s->thread_started = 1;
        else log_error("agents: cannot start the thread that watches %s", cfg->agents_dir);
    }
    if (cfg->agents_watch) log_info("agents: watching %s for changes", cfg->agents_dir);
    return 0;
}

void agents_store_stop(struct app *app) {
    struct agents_store *s = app ? app->agents_store : NULL;
    if (!s) return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->stop_mu);
        s->stop = 1;
        pthread_cond_broadcast(&s->stop_cv);
        pthread_mutex_unlock(&s->stop_mu);
        pthread_join(s->thread, NULL);
    }
    while (s->entries) {
        struct entry *e = s->entries;
        s->entries = e->next;
        free(e->source);
        free(e);
    }
    while (s->files) {
        struct seen *f = s->files;
        s->files = f->next;
        free(f->path);
        free(f);
    }
    pthread_cond_destroy(&s->stop_cv);
    pthread_mutex_destroy(&s->stop_mu);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->load_mu);
    free(s);
    app->agents_store = NULL;
}
