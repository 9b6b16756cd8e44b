/* migrate — Flyway-compatible SQL migrations (see migrate.h for what it promises).
 * The history table is Flyway's own flyway_schema_history, so a database migrated by Orrery can be
 * taken over by Flyway and the other way round: same names, same version ordering, same checksum.
 * Each migration runs in its own transaction together with its history row, so a failure leaves
 * neither a half-applied schema nor a record of it. Concurrent migrators (replicas starting at
 * once) serialize on a session-level advisory lock; the one that waited then finds nothing to do. */
#include "migrate.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <zlib.h>

#include "db.h"
#include "log.h"
#include "lua_core.h"

/* "orrery" in ASCII, as a bigint: the advisory lock every migrator takes. A constant, not input,
 * so it is written into the SQL. */
#define MIGRATE_LOCK_KEY "122537336205945"

/* Flyway's column limits: a name that does not fit could not be recorded. */
#define MAX_VERSION_LEN 50
#define MAX_DESCRIPTION_LEN 200
#define MAX_SCRIPT_LEN 1000
/* A migration is a schema change, not a data dump; the cap keeps a stray file from eating memory. */
#define MAX_FILE_BYTES (16u << 20)

/* ---- Checksum ---- */

/* Flyway reads the file line by line (java.io.BufferedReader: \n, \r\n and \r all end a line) and
 * feeds each line's bytes without its terminator to one CRC32. That is the CRC32 of the file with
 * every CR and LF byte removed, which is what this computes without splitting into lines. */
int32_t migrate_checksum(const char *data, size_t len) {
    const unsigned char *p = (const unsigned char *)data;
    const unsigned char *end = p + len;
    uLong crc = crc32(0L, Z_NULL, 0);

    if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF) p += 3;  /* UTF-8 BOM */
    while (p < end) {
        const unsigned char *q = p;
        while (q < end && *q != '\n' && *q != '\r') q++;
        /* Chunks fit uInt: files are capped far below 4 GiB by migrate_load. */
        if (q > p) crc = crc32(crc, p, (uInt)(q - p));
        p = q < end ? q + 1 : q;
    }
    /* Java's (int) cast of the unsigned value: wrap into the signed range without relying on
     * implementation-defined conversion. */
    uint32_t u = (uint32_t)crc;
    return u <= INT32_MAX ? (int32_t)u : (int32_t)((int64_t)u - 4294967296LL);
}

/* ---- Names and versions ---- */

/* One numeric part of a version: [*start, *start + *len) with leading zeros dropped, so "007"
 * compares like "7" and parts longer than any integer type still compare correctly. Returns where
 * the next part begins. */
static const char *version_part(const char *s, const char **start, size_t *len) {
    const char *e = s;
    while (*e && *e != '.' && *e != '_') e++;
    while (s < e && *s == '0') s++;
    *start = s;
    *len = (size_t)(e - s);
    return *e ? e + 1 : e;
}

int migrate_version_cmp(const char *a, const char *b) {
    /* Missing trailing parts count as 0, as in Flyway: "1" == "1.0". */
    while (*a || *b) {
        const char *pa, *pb;
        size_t la, lb;
        a = version_part(a, &pa, &la);
        b = version_part(b, &pb, &lb);
        if (la != lb) return la < lb ? -1 : 1;
        int c = memcmp(pa, pb, la);
        if (c) return c < 0 ? -1 : 1;
    }
    return 0;
}

/* Digits separated by single dots or underscores, as Flyway accepts. */
static int version_valid(const char *v, size_t len) {
    if (len == 0) return 0;
    int digits = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] >= '0' && v[i] <= '9') {
            digits++;
        } else if ((v[i] == '.' || v[i] == '_') && digits > 0) {
            digits = 0;
        } else {
            return 0;
        }
    }
    return digits > 0;
}

/* migrate_parse_name with the reason for a refusal. On success *version and *description are
 * malloc'd and owned by the caller. */
static int parse_name(const char *filename, char **version, char **description, char *err, size_t errlen) {
    size_t n = strlen(filename);
    *version = *description = NULL;
    if (n < 4 || filename[0] != 'V' || strcmp(filename + n - 4, ".sql") != 0) {
        snprintf(err, errlen, "'%s': expected V<version>__<description>.sql", filename);
        return -1;
    }
    const char *sep = strstr(filename + 1, "__");
    if (!sep || sep > filename + n - 4) {
        snprintf(err, errlen, "'%s': expected V<version>__<description>.sql (missing '__')", filename);
        return -1;
    }
    size_t vlen = (size_t)(sep - (filename + 1));
    const char *desc = sep + 2;
    size_t dlen = (size_t)(filename + n - 4 - desc);
    if (!version_valid(filename + 1, vlen)) {
        snprintf(err, errlen, "'%s': the version must be numbers separated by dots, as in V1__ or V2.1__",
                 filename);
        return -1;
    }
    if (vlen > MAX_VERSION_LEN || dlen > MAX_DESCRIPTION_LEN || n > MAX_SCRIPT_LEN) {
        snprintf(err, errlen, "'%s': name too long for flyway_schema_history (version %d, description %d, "
                 "file name %d characters at most)", filename, MAX_VERSION_LEN, MAX_DESCRIPTION_LEN,
                 MAX_SCRIPT_LEN);
        return -1;
    }

    *version = strndup(filename + 1, vlen);
    *description = strndup(desc, dlen);
    if (!*version || !*description) {
        free(*version);
        free(*description);
        *version = *description = NULL;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* Flyway's normal forms: V1_1 is version 1.1, and underscores in a description are spaces. */
    for (char *p = *version; *p; p++)
        if (*p == '_') *p = '.';
    for (char *p = *description; *p; p++)
        if (*p == '_') *p = ' ';
    return 0;
}

int migrate_parse_name(const char *filename, char **version, char **description) {
    char err[256];
    return parse_name(filename, version, description, err, sizeof err);
}

/* ---- Loading ---- */

static void migration_free(struct migration *m) {
    free(m->version);
    free(m->description);
    free(m->script);
    free(m->sql);
}

void migrate_set_free(struct migration_set *set) {
    if (!set) return;
    for (size_t i = 0; i < set->count; i++) migration_free(&set->items[i]);
    free(set->items);
    set->items = NULL;
    set->count = 0;
}

static int by_version(const void *a, const void *b) {
    const struct migration *x = a, *y = b;
    int c = migrate_version_cmp(x->version, y->version);
    return c ? c : strcmp(x->script, y->script);
}

/* Reads path into a NUL-terminated malloc'd buffer (*out, caller owns). */
static int read_file(const char *path, const char *name, char **out, char *err, size_t errlen) {
    int rc = -1;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    struct stat st;

    if (!f || fstat(fileno(f), &st) != 0) {
        snprintf(err, errlen, "%s: cannot read: %s", name, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", name);
        goto done;
    }
    if ((uintmax_t)st.st_size > MAX_FILE_BYTES) {
        snprintf(err, errlen, "%s: larger than %u MiB", name, MAX_FILE_BYTES >> 20);
        goto done;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size + 1);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", name);
        goto done;
    }
    if (fread(buf, 1, size, f) != size) {
        snprintf(err, errlen, "%s: cannot read: %s", name, ferror(f) ? strerror(errno) : "file changed");
        goto done;
    }
    buf[size] = '\0';
    /* PQexec takes a C string: a NUL byte would silently cut the script short. */
    if (memchr(buf, '\0', size)) {
        snprintf(err, errlen, "%s: contains a NUL byte", name);
        goto done;
    }
    *out = buf;
    buf = NULL;
    rc = 0;
done:
    if (f) fclose(f);
    free(buf);
    return rc;
}

int migrate_load(const char *dir, struct migration_set *set, char *err, size_t errlen) {
    int rc = -1;
    size_t cap = 0;
    char *path = NULL;
    DIR *d = opendir(dir);

    set->items = NULL;
    set->count = 0;
    if (!d) {
        snprintf(err, errlen, "cannot open migrations directory '%s': %s", dir, strerror(errno));
        goto done;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        size_t n = strlen(name);
        /* Other files (README, Flyway's R__/U__ scripts) are not versioned migrations: skipped. */
        if (name[0] != 'V' || n < 4 || strcmp(name + n - 4, ".sql") != 0) continue;

        if (set->count == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct migration *items = realloc(set->items, ncap * sizeof *items);
            if (!items) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
            set->items = items;
            cap = ncap;
        }
        struct migration *m = &set->items[set->count];
        memset(m, 0, sizeof *m);
        if (parse_name(name, &m->version, &m->description, err, errlen) != 0) goto done;
        set->count++;  /* counted now so that migrate_set_free releases what is filled so far */
        free(path);
        if (asprintf(&path, "%s/%s", dir, name) < 0) {
            path = NULL;
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        m->script = strdup(name);
        if (!m->script) {
            snprintf(err, errlen, "out of memory");
            goto done;
        }
        if (read_file(path, name, &m->sql, err, errlen) != 0) goto done;
        m->checksum = migrate_checksum(m->sql, strlen(m->sql));
    }

    if (set->count) qsort(set->items, set->count, sizeof *set->items, by_version);
    for (size_t i = 1; i < set->count; i++) {
        if (migrate_version_cmp(set->items[i - 1].version, set->items[i].version) == 0) {
            snprintf(err, errlen, "two migrations with version %s: %s and %s", set->items[i].version,
                     set->items[i - 1].script, set->items[i].script);
            goto done;
        }
    }
    rc = 0;
done:
    if (d) closedir(d);
    free(path);
    if (rc != 0) migrate_set_free(set);
    return rc;
}

/* ---- History ---- */

static const char history_select[] =
    "SELECT version, script, checksum, success, type FROM flyway_schema_history "
    "WHERE version IS NOT NULL ORDER BY installed_rank";
enum { H_VERSION, H_SCRIPT, H_CHECKSUM, H_SUCCESS, H_TYPE };

/* "what: message" from a failed result (or the connection when there is no result). */
static void pg_error(char *err, size_t errlen, const char *what, PGconn *conn, const PGresult *res) {
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!msg) msg = PQerrorMessage(conn);
    snprintf(err, errlen, "%s: %s", what, msg && *msg ? msg : "unknown error");
    size_t n = strlen(err);
    while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' ')) err[--n] = '\0';
}

static const struct migration *find_version(const struct migration_set *set, const char *version, size_t *idx) {
    for (size_t i = 0; i < set->count; i++) {
        if (migrate_version_cmp(set->items[i].version, version) == 0) {
            *idx = i;
            return &set->items[i];
        }
    }
    return NULL;
}

/* Matches the history rows (hist, from history_select) against the files. Sets is_done[i] for every
 * file that is applied or covered by a Flyway baseline, and *latest to the highest version recorded
 * (a pointer into hist, or NULL). Refuses a failed row and a changed checksum; with strict, also an
 * applied version whose file is gone (a replica running older code tolerates newer rows). */
static int reconcile(const PGresult *hist, const struct migration_set *set, unsigned char *is_done,
                     const char **latest, int strict, char *err, size_t errlen) {
    *latest = NULL;
    for (int r = 0; r < PQntuples(hist); r++) {
        const char *version = PQgetvalue(hist, r, H_VERSION);
        const char *script = PQgetvalue(hist, r, H_SCRIPT);
        const char *type = PQgetvalue(hist, r, H_TYPE);

        if (strcmp(PQgetvalue(hist, r, H_SUCCESS), "t") != 0) {
            snprintf(err, errlen, "flyway_schema_history records a failed migration: %s (version %s); repair the "
                     "database by hand and delete that row before migrating again", script, version);
            return -1;
        }
        if (!*latest || migrate_version_cmp(version, *latest) > 0) *latest = version;

        if (!strcmp(type, "BASELINE")) {
            /* Flyway's baseline: everything up to it counts as applied, without checksums. */
            for (size_t i = 0; i < set->count; i++)
                if (migrate_version_cmp(set->items[i].version, version) <= 0) is_done[i] = 1;
            continue;
        }
        size_t i;
        const struct migration *m = find_version(set, version, &i);
        if (!m) {
            if (strict) {
                snprintf(err, errlen, "%s (version %s) is recorded as applied but its file is missing from the "
                         "migrations directory", script, version);
                return -1;
            }
            continue;
        }
        if (PQgetisnull(hist, r, H_CHECKSUM) ||
            strtoll(PQgetvalue(hist, r, H_CHECKSUM), NULL, 10) != (long long)m->checksum) {
            snprintf(err, errlen, "%s: checksum mismatch: applied %s, file now %" PRId32 "; an applied "
                     "migration must not change, add a new one instead", m->script,
                     PQgetisnull(hist, r, H_CHECKSUM) ? "none" : PQgetvalue(hist, r, H_CHECKSUM), m->checksum);
            return -1;
        }
        is_done[i] = 1;
    }
    return 0;
}

/* Creates flyway_schema_history as Flyway would, unless it exists. Checking first rather than
 * CREATE ... IF NOT EXISTS keeps the "already exists, skipping" notice out of every run. */
static int ensure_history(PGconn *conn, char *err, size_t errlen) {
    static const char *const create[] = {
        "BEGIN",
        "CREATE TABLE flyway_schema_history ("
        " installed_rank INT NOT NULL,"
        " version VARCHAR(50),"
        " description VARCHAR(200) NOT NULL,"
        " type VARCHAR(20) NOT NULL,"
        " script VARCHAR(1000) NOT NULL,"
        " checksum INT,"
        " installed_by VARCHAR(100) NOT NULL,"
        " installed_on TIMESTAMP NOT NULL DEFAULT now(),"
        " execution_time INT NOT NULL,"
        " success BOOLEAN NOT NULL,"
        " CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank))",
        "CREATE INDEX flyway_schema_history_s_idx ON flyway_schema_history (success)",
        "COMMIT",
    };
    int rc = -1;
    PGresult *res = db_exec(conn, "SELECT to_regclass('flyway_schema_history') IS NULL", 0, NULL);
    if (!db_ok(res)) {
        pg_error(err, errlen, "flyway_schema_history", conn, res);
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        rc = 0;
        goto done;
    }
    for (size_t i = 0; i < sizeof create / sizeof create[0]; i++) {
        PQclear(res);
        res = db_exec(conn, create[i], 0, NULL);
        if (!db_ok(res)) {
            pg_error(err, errlen, "creating flyway_schema_history", conn, res);
            goto done;  /* migrate_apply rolls back what is open */
        }
    }
    rc = 0;
done:
    PQclear(res);
    return rc;
}

/* ---- Applying ---- */

/* Server notices (e.g. RAISE NOTICE in a script) go to the log with the script they came from,
 * instead of libpq's default raw lines on stderr. */
static void on_notice(void *arg, const PGresult *res) {
    const char *script = *(const char *const *)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    int level = sev && strcmp(sev, "WARNING") == 0 ? LOG_WARN : LOG_INFO;
    log_fields(level, NULL, "migrate: %s: %s: %s", script ? script : "flyway_schema_history", sev ? sev : "NOTICE",
               msg ? msg : "");
}

static long elapsed_ms(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (long)(t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* The 1-based line of a 1-based character position (PostgreSQL counts characters, not bytes). */
static int line_of(const char *sql, long pos) {
    int line = 1;
    long chars = 0;
    for (const unsigned char *p = (const unsigned char *)sql; *p; p++) {
        if ((*p & 0xC0) != 0x80 && ++chars >= pos) break;
        if (*p == '\n') line++;
    }
    return line;
}

/* After a COPY in a script, libpq waits for data that a migration cannot supply: end the COPY so
 * the connection is usable for the ROLLBACK. */
static void abandon_copy(PGconn *conn, PGresult *res) {
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COPY_IN) {
        PQputCopyEnd(conn, "COPY FROM STDIN is not supported in migrations");
    } else if (st == PGRES_COPY_OUT) {
        char *buf;
        while (PQgetCopyData(conn, &buf, 0) > 0) PQfreemem(buf);
    } else {
        return;
    }
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL) PQclear(r);
}

/* Runs one pending migration and records it, in one transaction. Returns 0, or -1 with err (the
 * transaction is left for the caller to roll back). */
static int apply_one(PGconn *conn, const struct migration *m, char *err, size_t errlen) {
    int rc = -1;
    PGresult *res = db_exec(conn, "BEGIN", 0, NULL);
    if (!db_ok(res)) {
        pg_error(err, errlen, m->script, conn, res);
        goto done;
    }
    PQclear(res);

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* The one statement that is not parameterized: a migration file is a multi-statement script
     * written by us and shipped with the binary, and only the simple-query protocol (PQexec) runs
     * several statements in one call. Nothing from a request ever reaches it. */
    res = PQexec(conn, m->sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
            abandon_copy(conn, res);
            snprintf(err, errlen, "%s: COPY to or from the client is not supported in migrations", m->script);
            goto done;
        }
        const char *pos = res ? PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION) : NULL;
        const char *detail = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL) : NULL;
        char what[1100];
        if (pos)
            snprintf(what, sizeof what, "%s: line %d", m->script, line_of(m->sql, strtol(pos, NULL, 10)));
        else
            snprintf(what, sizeof what, "%s", m->script);
        pg_error(err, errlen, what, conn, res);
        if (detail) {
            size_t n = strlen(err);
            snprintf(err + n, errlen - n, " (%s)", detail);
        }
        goto done;
    }
    long ms = elapsed_ms(&t0);
    PQclear(res);
    res = NULL;
    /* A script that commits or rolls back on its own breaks the one-transaction promise: part of it
     * may now be committed without a history row. Say so rather than record a half-truth. */
    if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
        snprintf(err, errlen, "%s: the script ended the migration's transaction (COMMIT or ROLLBACK inside a "
                 "migration is not supported); check the database by hand", m->script);
        goto done;
    }

    char checksum[16], exec_ms[24];
    snprintf(checksum, sizeof checksum, "%" PRId32, m->checksum);
    snprintf(exec_ms, sizeof exec_ms, "%ld", ms > 2147483647L ? 2147483647L : ms);
    const char *params[] = { m->version, m->description, m->script, checksum, exec_ms };
    res = db_exec(conn,
                  "INSERT INTO flyway_schema_history (installed_rank, version, description, type, script, checksum,"
                  " installed_by, execution_time, success)"
                  " SELECT coalesce(max(installed_rank), 0) + 1, $1, $2, 'SQL', $3, $4::int, current_user, $5::int,"
                  " true FROM flyway_schema_history",
                  5, params);
    if (!db_ok(res)) {
        pg_error(err, errlen, m->script, conn, res);
        goto done;
    }
    PQclear(res);
    res = db_exec(conn, "COMMIT", 0, NULL);
    if (!db_ok(res)) {
        pg_error(err, errlen, m->script, conn, res);
        goto done;
    }
    log_info("migrate: applied %s in %ld ms", m->script, ms);
    rc = 0;
done:
    PQclear(res);
    return rc;
}

int migrate_apply(PGconn *conn, const struct migration_set *set, char *err, size_t errlen) {
    int rc = -1, applied = 0, locked = 0;
    PGresult *res = NULL, *hist = NULL;
    unsigned char *is_done = NULL;
    const char *current = NULL;  /* script whose notices are being logged */
    PQnoticeReceiver prev_notice = NULL;

    if (!conn || PQstatus(conn) != CONNECTION_OK) {
        snprintf(err, errlen, "not connected to the database");
        return -1;
    }
    if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
        snprintf(err, errlen, "the connection is inside a transaction");
        return -1;
    }
    /* libpq cannot report the previous receiver's argument; the default receiver (all our callers
     * use) ignores it, so restoring the function alone is enough. */
    prev_notice = PQsetNoticeReceiver(conn, on_notice, &current);

    /* Try first so that a waiting process can say why it is waiting. */
    res = db_exec(conn, "SELECT pg_try_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL);
    if (!db_ok(res)) {
        pg_error(err, errlen, "taking the migration lock", conn, res);
        goto done;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        log_info("migrate: another process is migrating; waiting for it to finish");
        PQclear(res);
        res = db_exec(conn, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL);
        if (!db_ok(res)) {
            pg_error(err, errlen, "waiting for the migration lock", conn, res);
            goto done;
        }
    }
    locked = 1;
    PQclear(res);
    res = NULL;

    if (ensure_history(conn, err, errlen) != 0) goto done;
    hist = db_exec(conn, history_select, 0, NULL);
    if (!db_ok(hist)) {
        pg_error(err, errlen, "reading flyway_schema_history", conn, hist);
        goto done;
    }
    is_done = calloc(set->count + 1, 1);
    if (!is_done) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    const char *latest;
    if (reconcile(hist, set, is_done, &latest, 1, err, errlen) != 0) goto done;

    /* Out of order: a lower version arriving after a higher one was applied (say, from a branch
     * merged late) would run against a schema it was not written for. Refuse before running any. */
    for (size_t i = 0; i < set->count; i++) {
        if (!is_done[i] && latest && migrate_version_cmp(set->items[i].version, latest) < 0) {
            snprintf(err, errlen, "%s is pending but version %s is already applied; migrations must not be "
                     "added out of order (give it a version above %s)", set->items[i].script, latest, latest);
            goto done;
        }
    }

    for (size_t i = 0; i < set->count; i++) {
        if (is_done[i]) continue;
        current = set->items[i].script;
        if (apply_one(conn, &set->items[i], err, errlen) != 0) goto done;
        current = NULL;
        applied++;
    }
    rc = applied;
done:
    PQclear(res);
    res = NULL;
    if (PQtransactionStatus(conn) == PQTRANS_INTRANS || PQtransactionStatus(conn) == PQTRANS_INERROR) {
        res = db_exec(conn, "ROLLBACK", 0, NULL);
        PQclear(res);
    }
    if (locked) {
        /* Session locks outlive transactions: release explicitly, or a pooled connection would keep
         * every other migrator waiting. */
        res = db_exec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0, NULL);
        PQclear(res);
    }
    PQsetNoticeReceiver(conn, prev_notice, NULL);
    PQclear(hist);
    free(is_done);
    return rc;
}

int migrate_check_current(PGconn *conn, const struct migration_set *set, char *err, size_t errlen) {
    int rc = -1;
    unsigned char *is_done = NULL;
    const char *latest;
    PGresult *hist = db_exec(conn, history_select, 0, NULL);

    if (!db_ok(hist)) {
        const char *state = hist ? PQresultErrorField(hist, PG_DIAG_SQLSTATE) : NULL;
        if (state && !strcmp(state, "42P01")) {  /* undefined_table: never migrated */
            rc = set->count ? 1 : 0;
            goto done;
        }
        pg_error(err, errlen, "reading flyway_schema_history", conn, hist);
        goto done;
    }
    is_done = calloc(set->count + 1, 1);
    if (!is_done) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    /* Not strict: during a rolling deploy an older replica sees rows its files do not know. */
    if (reconcile(hist, set, is_done, &latest, 0, err, errlen) != 0) goto done;
    rc = 0;
    for (size_t i = 0; i < set->count; i++)
        if (!is_done[i]) rc = 1;
done:
    PQclear(hist);
    free(is_done);
    return rc;
}

/* ---- Lua bindings (orrery.core) ---- */

static int l_migrate_checksum(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, migrate_checksum(s, len));
    return 1;
}

/* Returns version, description, or nil and the reason. */
static int l_migrate_parse_name(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    char *version, *description, err[512];
    if (parse_name(name, &version, &description, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushstring(L, version);
    lua_pushstring(L, description);
    free(version);
    free(description);
    return 2;
}

/* Returns -1, 0 or 1; a malformed version is a caller bug and raises. */
static int l_migrate_version_cmp(lua_State *L) {
    size_t la, lb;
    const char *a = luaL_checklstring(L, 1, &la);
    const char *b = luaL_checklstring(L, 2, &lb);
    luaL_argcheck(L, version_valid(a, la), 1, "expected a version such as \"1\" or \"2.1\"");
    luaL_argcheck(L, version_valid(b, lb), 2, "expected a version such as \"1\" or \"2.1\"");
    lua_pushinteger(L, migrate_version_cmp(a, b));
    return 1;
}

void migrate_lua_register(lua_State *L) {
    static const luaL_Reg fns[] = {
        { "migrate_checksum", l_migrate_checksum },
        { "migrate_parse_name", l_migrate_parse_name },
        { "migrate_version_cmp", l_migrate_version_cmp },
        { NULL, NULL },
    };
    /* stack: core */
    luaL_setfuncs(L, fns, 0);
}
