/* main — the `orrery` command: serve | migrate | run FILE.lua | check FILE.lua | version.
 * Parses the subcommand, loads the configuration where the subcommand needs it, and hands over
 * to server, migrate or lua_host. Usage errors exit 2, configuration errors exit 1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "config.h"
#include "log.h"
#include "lua_host.h"
#include "migrate.h"
#include "server.h"
#include "version.h"

static const char usage_text[] =
    "usage: orrery <command> [args]\n"
    "\n"
    "commands:\n"
    "  serve            serve the API and UI (ORRERY_LISTEN, default 127.0.0.1:8080)\n"
    "  migrate          apply pending database migrations (DATABASE_URL)\n"
    "  run FILE.lua     run a Lua script with the orrery module\n"
    "  check FILE.lua   compile a Lua script without running it\n"
    "  version          print the version\n"
    "\n"
    "options:\n"
    "  -h, --help       this help\n"
    "  -V, --version    print the version\n"
    "\n"
    "Configuration comes from environment variables; see README.md.\n";

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "orrery: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s", usage_text);
    return 2;
}

static const char *env_get(const char *name, void *ud) {
    (void)ud;
    return getenv(name);
}

static int load_config(struct config *cfg) {
    char err[512];
    if (config_load(cfg, env_get, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "orrery: configuration error: %s\n", err);
        return -1;
    }
    log_set_level(cfg->log_level);
    return 0;
}

static int cmd_migrate(void) {
    struct config cfg;
    if (load_config(&cfg) != 0) return 1;
    struct migration_set set = {0};
    char err[1024];
    int rc = 1;
    PGconn *conn = NULL;

    if (migrate_load(cfg.migrations_dir, &set, err, sizeof err) != 0) {
        log_error("migrate: %s", err);
        goto done;
    }
    conn = PQconnectdb(cfg.migration_database_url);
    if (PQstatus(conn) != CONNECTION_OK) {
        /* libpq's message names host and port, never the password. */
        log_error("migrate: cannot connect to the database: %s", PQerrorMessage(conn));
        goto done;
    }
    int applied = migrate_apply(conn, &set, err, sizeof err);
    if (applied < 0) {
        log_error("migrate: %s", err);
        goto done;
    }
    const char *at = set.count ? set.items[set.count - 1].version : "none";
    log_info("migrate: %d applied, schema at version %s", applied, at);
    rc = 0;
done:
    PQfinish(conn);
    migrate_set_free(&set);
    config_free(&cfg);
    return rc;
}

static int cmd_serve(void) {
    struct config cfg;
    if (load_config(&cfg) != 0) return 1;
    int rc = server_run(&cfg);
    config_free(&cfg);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage_error("%s", "missing command");
    const char *cmd = argv[1];

    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        if (argc > 2) return usage_error("unexpected argument '%s'", argv[2]);
        printf("orrery %s\n", ORRERY_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "serve") || !strcmp(cmd, "migrate")) {
        if (argc > 2) {
            if (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help")) { fputs(usage_text, stdout); return 0; }
            return usage_error(argv[2][0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", argv[2]);
        }
        return cmd[0] == 's' ? cmd_serve() : cmd_migrate();
    }
    if (!strcmp(cmd, "run") || !strcmp(cmd, "check")) {
        if (argc < 3) return usage_error("'%s' needs a FILE.lua", cmd);
        if (argv[2][0] == '-' && argv[2][1] != '\0') return usage_error("unknown option '%s'", argv[2]);
        if (cmd[0] == 'c') {
            if (argc > 3) return usage_error("unexpected argument '%s'", argv[3]);
            return lua_host_check_file(argv[2]);
        }
        /* run: logs from the script honour ORRERY_LOG_LEVEL, nothing else is configured. */
        int level = log_level_parse(getenv("ORRERY_LOG_LEVEL") ? getenv("ORRERY_LOG_LEVEL") : "info");
        if (level < 0) {
            fprintf(stderr, "orrery: configuration error: ORRERY_LOG_LEVEL: expected debug, info, warn or error\n");
            return 1;
        }
        log_set_level(level);
        return lua_host_run_file(argv[2], argc - 2, argv + 2);
    }
    if (cmd[0] == '-') return usage_error("unknown option '%s'", cmd);
    return usage_error("unknown command '%s'", cmd);
}
