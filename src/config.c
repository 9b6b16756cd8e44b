/* config — see config.h. Parses with strict helpers: a number is all digits within its range,
 * a listen address is HOST:PORT with a numeric host, anything else is refused by name. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <lauxlib.h>
#include <lua.h>

#include "log.h"
#include "store.h"
#include "lua_core.h"

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

/* Reads an integer in [min, max]; unset or empty keeps *out. */
static int get_int(config_getenv_fn get, void *ud, const char *name, long min, long max, long *out,
                   char *err, size_t errlen) {
    const char *s = get(name, ud);
    if (!s || !*s) return 0;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '+' || s[0] == ' ')
        return fail(err, errlen, "%s: expected a whole number, got '%.40s'", name, s);
    if (v < min || v > max)
        return fail(err, errlen, "%s: %ld is out of range (%ld to %ld)", name, v, min, max);
    *out = v;
    return 0;
}

static int get_str(config_getenv_fn get, void *ud, const char *name, const char *def, char **out) {
    const char *s = get(name, ud);
    if (!s || !*s) s = def;
    *out = s ? strdup(s) : NULL;
    return (s && !*out) ? -1 : 0;
}

static int parse_listen(const char *s, struct config *cfg, char *err, size_t errlen) {
    const char *name = "ORRERY_LISTEN";
    const char *colon = strrchr(s, ':');
    if (!colon) return fail(err, errlen, "%s: expected HOST:PORT, got '%.60s'", name, s);
    size_t hostlen = (size_t)(colon - s);
    const char *host = s;
    if (hostlen >= 2 && host[0] == '[' && host[hostlen - 1] == ']') { host++; hostlen -= 2; }
    if (hostlen == 0 || hostlen >= sizeof cfg->listen_host)
        return fail(err, errlen, "%s: expected HOST:PORT, got '%.60s'", name, s);
    memcpy(cfg->listen_host, host, hostlen);
    cfg->listen_host[hostlen] = '\0';
    if (!strcmp(cfg->listen_host, "localhost")) strcpy(cfg->listen_host, "127.0.0.1");
    unsigned char buf[16];
    if (inet_pton(AF_INET, cfg->listen_host, buf) != 1 && inet_pton(AF_INET6, cfg->listen_host, buf) != 1)
        return fail(err, errlen, "%s: '%s' is not a numeric IP address", name, cfg->listen_host);
    const char *p = colon + 1;
    char *end = NULL;
    errno = 0;
    long port = strtol(p, &end, 10);
    if (!*p || errno || *end != '\0' || *p == '-' || *p == '+' || port > 65535)
        return fail(err, errlen, "%s: invalid port '%.20s' (expected 0 to 65535)", name, p);
    cfg->listen_port = (int)port;
    return 0;
}

const char *config_env_name(enum config_env env) {
    switch (env) {
    case ENV_PRODUCTION: return "production";
    case ENV_TEST: return "test";
    default: return "development";
    }
}

void config_free(struct config *cfg) {
    if (!cfg) return;
    free(cfg->database_url);
    free(cfg->migration_database_url);
    free(cfg->jwt_secret);
    free(cfg->admin_email);
    free(cfg->admin_password);
    free(cfg->llm_base_url);
    free(cfg->llm_api_key);
    free(cfg->llm_model);
    free(cfg->agents_dir);
    free(cfg->lib_dir);
    free(cfg->fetch_allow);
    free(cfg->instance_id);
    free(cfg->ui_dir);
    free(cfg->migrations_dir);
    memset(cfg, 0, sizeof *cfg);
}

int config_load(struct config *cfg, config_getenv_fn get, void *ud, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    const char *s;

    s = get("ORRERY_LISTEN", ud);
    if (parse_listen(s && *s ? s : "127.0.0.1:8080", cfg, err, errlen)) goto fail;

    s = get("ORRERY_ENV", ud);
    if (!s || !*s || !strcmp(s, "development")) cfg->env = ENV_DEVELOPMENT;
    else if (!strcmp(s, "production")) cfg->env = ENV_PRODUCTION;
    else if (!strcmp(s, "test")) cfg->env = ENV_TEST;
    else { fail(err, errlen, "ORRERY_ENV: expected development, production or test, got '%.40s'", s); goto fail; }

    s = get("ORRERY_LOG_LEVEL", ud);
    cfg->log_level = LOG_INFO;
    if (s && *s && (cfg->log_level = log_level_parse(s)) < 0) {
        fail(err, errlen, "ORRERY_LOG_LEVEL: expected debug, info, warn or error, got '%.40s'", s);
        goto fail;
    }

    long v;
    v = 10;        if (get_int(get, ud, "ORRERY_DB_POOL", 1, 1000, &v, err, errlen)) goto fail;
    cfg->db_pool = (int)v;
    v = 5000;      if (get_int(get, ud, "ORRERY_DB_TIMEOUT_MS", 10, 600000, &v, err, errlen)) goto fail;
    cfg->db_timeout_ms = (int)v;
    v = 0;         if (get_int(get, ud, "ORRERY_WORKERS", 0, 256, &v, err, errlen)) goto fail;
    cfg->workers = (int)v;
    if (cfg->workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->workers = n > 0 ? (int)(n > 64 ? 64 : n) : 2;
    }
    /* 3 MiB: a 1 MiB note survives JSON escaping of every character into two bytes. */
    v = 3145728;   if (get_int(get, ud, "ORRERY_MAX_BODY_BYTES", 1, 1073741824L, &v, err, errlen)) goto fail;
    cfg->max_body = (size_t)v;
    v = 1024;      if (get_int(get, ud, "ORRERY_MAX_CONNECTIONS", 1, 1000000, &v, err, errlen)) goto fail;
    cfg->max_connections = (int)v;
    v = 64;        if (get_int(get, ud, "ORRERY_MAX_CONNECTIONS_PER_IP", 0, 1000000, &v, err, errlen)) goto fail;
    cfg->max_connections_per_ip = (int)v;
    v = 30;        if (get_int(get, ud, "ORRERY_CONNECTION_TIMEOUT", 1, 3600, &v, err, errlen)) goto fail;
    cfg->conn_timeout_s = (int)v;
    v = 900;       if (get_int(get, ud, "ORRERY_ACCESS_TOKEN_TTL", 30, 86400, &v, err, errlen)) goto fail;
    cfg->access_ttl_s = (int)v;
    v = 30 * 86400; if (get_int(get, ud, "ORRERY_REFRESH_TOKEN_TTL", 60, 365 * 86400, &v, err, errlen)) goto fail;
    cfg->refresh_ttl_s = (int)v;
    v = 20;        if (get_int(get, ud, "ORRERY_AUTH_RATE_PER_IP", 1, 1000000, &v, err, errlen)) goto fail;
    cfg->auth_rate_ip = (int)v;
    v = 10;        if (get_int(get, ud, "ORRERY_AUTH_RATE_PER_ACCOUNT", 1, 1000000, &v, err, errlen)) goto fail;
    cfg->auth_rate_account = (int)v;
    v = 2;         if (get_int(get, ud, "ORRERY_AUTH_WORKERS", 1, 64, &v, err, errlen)) goto fail;
    cfg->auth_workers = (int)v;
    v = 10;        if (get_int(get, ud, "ORRERY_SHUTDOWN_TIMEOUT", 0, 3600, &v, err, errlen)) goto fail;
    cfg->shutdown_timeout_s = (int)v;
    v = 0;         if (get_int(get, ud, "ORRERY_AGENT_WORKERS", 0, 256, &v, err, errlen)) goto fail;
    cfg->agent_workers = (int)v;
    if (cfg->agent_workers == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        cfg->agent_workers = n > 0 ? (int)(n > 64 ? 64 : n) : 2;
    }
    v = 4096;      if (get_int(get, ud, "ORRERY_AGENT_MAILBOX", 1, 10000000, &v, err, errlen)) goto fail;
    cfg->agent_mailbox = (int)v;
    v = 64;        if (get_int(get, ud, "ORRERY_AGENT_MEMORY_MB", 1, 65536, &v, err, errlen)) goto fail;
    cfg->agent_memory_mb = (int)v;
    v = 100000000; if (get_int(get, ud, "ORRERY_AGENT_INSTRUCTIONS", 1000, 100000000000L, &v, err, errlen)) goto fail;
    cfg->agent_instructions = v;
    v = 5000;      if (get_int(get, ud, "ORRERY_AGENT_SLICE_MS", 1, 600000, &v, err, errlen)) goto fail;
    cfg->agent_slice_ms = (int)v;
    v = 300;       if (get_int(get, ud, "ORRERY_AGENT_TIMEOUT", 1, 86400, &v, err, errlen)) goto fail;
    cfg->agent_timeout_s = (int)v;
    v = 10000;     if (get_int(get, ud, "ORRERY_AGENT_MAX_RUNS", 1, 1000000, &v, err, errlen)) goto fail;
    cfg->agent_max_runs = (int)v;
    v = 2;         if (get_int(get, ud, "ORRERY_AGENT_DB_CONNECTIONS", 1, 100, &v, err, errlen)) goto fail;
    cfg->agent_db_connections = (int)v;
    v = 0;         if (get_int(get, ud, "ORRERY_FETCH_ALLOW_PRIVATE", 0, 1, &v, err, errlen)) goto fail;
    cfg->fetch_allow_private = (int)v;
    v = cfg->env == ENV_DEVELOPMENT; if (get_int(get, ud, "ORRERY_AGENTS_WATCH", 0, 1, &v, err, errlen)) goto fail;
    cfg->agents_watch = (int)v;

    if (get_str(get, ud, "DATABASE_URL", "postgresql://orrery_app@127.0.0.1:54329/orrery", &cfg->database_url) ||
        get_str(get, ud, "ORRERY_MIGRATION_DATABASE_URL", cfg->database_url, &cfg->migration_database_url) ||
        get_str(get, ud, "ORRERY_JWT_SECRET", NULL, &cfg->jwt_secret) ||
        get_str(get, ud, "ORRERY_ADMIN_EMAIL", NULL, &cfg->admin_email) ||
        get_str(get, ud, "ORRERY_ADMIN_PASSWORD", NULL, &cfg->admin_password) ||
        get_str(get, ud, "ORRERY_LLM_BASE_URL", "https://api.openai.com/v1", &cfg->llm_base_url) ||
        get_str(get, ud, "ORRERY_LLM_API_KEY", get("OPENAI_API_KEY", ud), &cfg->llm_api_key) ||
        get_str(get, ud, "ORRERY_LLM_MODEL", "gpt-4o-mini", &cfg->llm_model) ||
        get_str(get, ud, "ORRERY_AGENTS_DIR", "agents", &cfg->agents_dir) ||
        get_str(get, ud, "ORRERY_LIB_DIR", "lib", &cfg->lib_dir) ||
        get_str(get, ud, "ORRERY_FETCH_ALLOW", NULL, &cfg->fetch_allow) ||
        get_str(get, ud, "ORRERY_INSTANCE_ID", NULL, &cfg->instance_id) ||
        get_str(get, ud, "ORRERY_UI_DIR", NULL, &cfg->ui_dir) ||
        get_str(get, ud, "ORRERY_MIGRATIONS_DIR", "migrations", &cfg->migrations_dir)) {
        fail(err, errlen, "out of memory");
        goto fail;
    }
    if (cfg->instance_id && !store_is_uuid(cfg->instance_id)) {
        fail(err, errlen, "ORRERY_INSTANCE_ID: expected a UUID (or unset), got '%.40s'", cfg->instance_id);
        goto fail;
    }
    if (strncmp(cfg->database_url, "postgresql://", 13) && strncmp(cfg->database_url, "postgres://", 11)) {
        fail(err, errlen, "DATABASE_URL: expected a postgresql:// URI");
        goto fail;
    }
    if (strncmp(cfg->migration_database_url, "postgresql://", 13) &&
        strncmp(cfg->migration_database_url, "postgres://", 11)) {
        fail(err, errlen, "ORRERY_MIGRATION_DATABASE_URL: expected a postgresql:// URI");
        goto fail;
    }
    if (cfg->jwt_secret && strlen(cfg->jwt_secret) < 32) {
        fail(err, errlen, "ORRERY_JWT_SECRET: must be at least 32 bytes (got %zu)", strlen(cfg->jwt_secret));
        goto fail;
    }
    if (!cfg->jwt_secret && cfg->env == ENV_PRODUCTION) {
        fail(err, errlen, "ORRERY_JWT_SECRET: required in production (at least 32 random bytes)");
        goto fail;
    }
    if ((cfg->admin_email == NULL) != (cfg->admin_password == NULL)) {
        fail(err, errlen, "%s: set ORRERY_ADMIN_EMAIL and ORRERY_ADMIN_PASSWORD together",
             cfg->admin_email ? "ORRERY_ADMIN_PASSWORD" : "ORRERY_ADMIN_EMAIL");
        goto fail;
    }
    if (strncmp(cfg->llm_base_url, "http://", 7) && strncmp(cfg->llm_base_url, "https://", 8)) {
        fail(err, errlen, "ORRERY_LLM_BASE_URL: expected an http:// or https:// URL");
        goto fail;
    }
    return 0;
fail:
    config_free(cfg);
    return -1;
}

/* ---- orrery.core binding: core.config_check{ENV = "value", ...} ---- */

static const char *table_get(const char *name, void *ud) {
    lua_State *L = ud;
    lua_getfield(L, 1, name);
    /* The string stays alive: it is also referenced by the table at index 1. */
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return s;
}

/* Returns a table of the parsed values, or nil, "message". Secrets are reported as set/unset. */
static int l_config_check(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    struct config cfg;
    char err[512];
    if (config_load(&cfg, table_get, L, err, sizeof err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_createtable(L, 0, 16);
    lua_pushstring(L, cfg.listen_host); lua_setfield(L, -2, "listen_host");
    lua_pushinteger(L, cfg.listen_port); lua_setfield(L, -2, "listen_port");
    lua_pushstring(L, config_env_name(cfg.env)); lua_setfield(L, -2, "env");
    lua_pushstring(L, log_level_name(cfg.log_level)); lua_setfield(L, -2, "log_level");
    lua_pushinteger(L, cfg.db_pool); lua_setfield(L, -2, "db_pool");
    lua_pushinteger(L, cfg.db_timeout_ms); lua_setfield(L, -2, "db_timeout_ms");
    lua_pushinteger(L, cfg.workers); lua_setfield(L, -2, "workers");
    lua_pushinteger(L, (lua_Integer)cfg.max_body); lua_setfield(L, -2, "max_body");
    lua_pushinteger(L, cfg.max_connections); lua_setfield(L, -2, "max_connections");
    lua_pushinteger(L, cfg.max_connections_per_ip); lua_setfield(L, -2, "max_connections_per_ip");
    lua_pushinteger(L, cfg.conn_timeout_s); lua_setfield(L, -2, "connection_timeout");
    lua_pushinteger(L, cfg.shutdown_timeout_s); lua_setfield(L, -2, "shutdown_timeout");
    lua_pushinteger(L, cfg.agent_workers); lua_setfield(L, -2, "agent_workers");
    lua_pushinteger(L, cfg.agent_mailbox); lua_setfield(L, -2, "agent_mailbox");
    lua_pushinteger(L, cfg.agent_memory_mb); lua_setfield(L, -2, "agent_memory_mb");
    lua_pushinteger(L, (lua_Integer)cfg.agent_instructions); lua_setfield(L, -2, "agent_instructions");
    lua_pushinteger(L, cfg.agent_slice_ms); lua_setfield(L, -2, "agent_slice_ms");
    lua_pushinteger(L, cfg.agent_timeout_s); lua_setfield(L, -2, "agent_timeout");
    lua_pushinteger(L, cfg.agent_max_runs); lua_setfield(L, -2, "agent_max_runs");
    lua_pushinteger(L, cfg.agents_watch); lua_setfield(L, -2, "agents_watch");
    lua_pushstring(L, cfg.migrations_dir); lua_setfield(L, -2, "migrations_dir");
    lua_pushstring(L, cfg.llm_base_url); lua_setfield(L, -2, "llm_base_url");
    lua_pushboolean(L, cfg.llm_api_key != NULL); lua_setfield(L, -2, "llm_api_key_set");
    lua_pushboolean(L, cfg.jwt_secret != NULL); lua_setfield(L, -2, "jwt_secret_set");
    lua_pushinteger(L, cfg.access_ttl_s); lua_setfield(L, -2, "access_ttl");
    lua_pushinteger(L, cfg.refresh_ttl_s); lua_setfield(L, -2, "refresh_ttl");
    config_free(&cfg);
    return 1;
}

void config_lua_register(lua_State *L) {
    lua_pushcfunction(L, l_config_check);
    lua_setfield(L, -2, "config_check");
}
