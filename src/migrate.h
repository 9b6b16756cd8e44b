/* migrate — applies migrations/V<n>__<desc>.sql in version order, each in its own transaction,
 * recording them in a Flyway-compatible flyway_schema_history table. Refuses to run when an
 * applied file's checksum changed or a recorded migration failed; two processes running it at
 * once serialize on a PostgreSQL advisory lock. Uses db (libpq), zlib (crc32) and log. */
#ifndef ORRERY_MIGRATE_H
#define ORRERY_MIGRATE_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

struct migration {
    char *version;      /* "1", "2.1" (owned) */
    char *description;  /* "init" from V1__init.sql, underscores as spaces (owned) */
    char *script;       /* file name, "V1__init.sql" (owned) */
    char *sql;          /* file contents (owned) */
    int32_t checksum;   /* Flyway's CRC32 over the file's lines */
};

struct migration_set {
    struct migration *items;  /* sorted by version (owned) */
    size_t count;
};

/* Flyway's checksum: CRC32 of each line's bytes without line terminators (\n, \r\n, \r),
 * a leading UTF-8 BOM dropped; returned as Flyway stores it (signed 32-bit). */
int32_t migrate_checksum(const char *data, size_t len);

/* Parses "V<version>__<description>.sql". Returns 0 and fills the owned strings, or -1. */
int migrate_parse_name(const char *filename, char **version, char **description);

/* Compares two Flyway versions ("1.10" > "1.9"); <0, 0, >0. */
int migrate_version_cmp(const char *a, const char *b);

/* Reads every V*.sql file of dir. Returns 0, or -1 with err (bad name, duplicate version,
 * unreadable file). Free with migrate_set_free. */
int migrate_load(const char *dir, struct migration_set *set, char *err, size_t errlen);
void migrate_set_free(struct migration_set *set);

/* Applies what is pending on conn. Returns the number applied (>= 0), or -1 with err. */
int migrate_apply(PGconn *conn, const struct migration_set *set, char *err, size_t errlen);

/* For /readyz: 0 when every migration of set is applied successfully with the same checksum,
 * 1 when some are pending, -1 with err on a mismatch or a query error. */
int migrate_check_current(PGconn *conn, const struct migration_set *set, char *err, size_t errlen);

#endif
