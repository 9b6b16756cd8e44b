/* config — Orrery's configuration, read once from environment variables.
 * Every variable has a default that serves a laptop; an invalid value stops start-up with a
 * one-line error naming the variable. Used by main (all subcommands) and by orrery.core
 * (so specs can check the parser without starting a server). */
#ifndef ORRERY_CONFIG_H
#define ORRERY_CONFIG_H

#include <stddef.h>

enum config_env { ENV_DEVELOPMENT, ENV_PRODUCTION, ENV_TEST };

struct config {
    char listen_host[64];      /* ORRERY_LISTEN host part, numeric IPv4/IPv6 */
    int listen_port;           /* ORRERY_LISTEN port part; 0 = any free port */
    char *database_url;        /* DATABASE_URL (owned): the app role */
    char *migration_database_url; /* ORRERY_MIGRATION_DATABASE_URL (owned), default DATABASE_URL:
                                     the schema owner, for `orrery migrate` */
    int db_pool;               /* ORRERY_DB_POOL */
    int db_timeout_ms;         /* ORRERY_DB_TIMEOUT_MS: wait for a pooled connection, statement_timeout */
    enum config_env env;       /* ORRERY_ENV */
    char *jwt_secret;          /* ORRERY_JWT_SECRET (owned, may be NULL) */
    int access_ttl_s;          /* ORRERY_ACCESS_TOKEN_TTL: seconds, default 900 */
    int refresh_ttl_s;         /* ORRERY_REFRESH_TOKEN_TTL: seconds, default 30 days */
    int auth_rate_ip;          /* ORRERY_AUTH_RATE_PER_IP: login/register attempts per minute per IP */
    int auth_rate_account;     /* ORRERY_AUTH_RATE_PER_ACCOUNT: failed logins per 15 minutes per account */
    int auth_workers;          /* ORRERY_AUTH_WORKERS: threads hashing passwords, default 2 */
    char *admin_email;         /* ORRERY_ADMIN_EMAIL (owned, may be NULL) */
    char *admin_password;      /* ORRERY_ADMIN_PASSWORD (owned, may be NULL) */
    char *llm_base_url;        /* ORRERY_LLM_BASE_URL (owned) */
    char *llm_api_key;         /* ORRERY_LLM_API_KEY or OPENAI_API_KEY (owned, may be NULL) */
    char *llm_model;           /* ORRERY_LLM_MODEL (owned) */
    char *agents_dir;          /* ORRERY_AGENTS_DIR (owned) */
    char *lib_dir;             /* ORRERY_LIB_DIR (owned): Lua modules agents can require() */
    char *ui_dir;              /* ORRERY_UI_DIR (owned, may be NULL) */
    char *migrations_dir;      /* ORRERY_MIGRATIONS_DIR (owned) */
    int workers;               /* ORRERY_WORKERS: HTTP thread pool; 0 = number of cores */
    int log_level;             /* ORRERY_LOG_LEVEL: enum log_level from log.h */
    size_t max_body;           /* ORRERY_MAX_BODY_BYTES */
    int max_connections;       /* ORRERY_MAX_CONNECTIONS */
    int max_connections_per_ip;/* ORRERY_MAX_CONNECTIONS_PER_IP */
    int conn_timeout_s;        /* ORRERY_CONNECTION_TIMEOUT: idle / slow client seconds */
    int shutdown_timeout_s;    /* ORRERY_SHUTDOWN_TIMEOUT: how long in-flight requests may finish */
    int agent_workers;         /* ORRERY_AGENT_WORKERS: threads running agents; 0 = number of cores */
    int agent_mailbox;         /* ORRERY_AGENT_MAILBOX: envelopes an agent's mailbox holds */
    int agent_memory_mb;       /* ORRERY_AGENT_MEMORY_MB: memory cap of each agent's Lua state */
    long agent_instructions;   /* ORRERY_AGENT_INSTRUCTIONS: VM instructions per handler run */
    int agent_slice_ms;        /* ORRERY_AGENT_SLICE_MS: wall clock a handler may run between waits */
    int agent_timeout_s;       /* ORRERY_AGENT_TIMEOUT: a handler run's whole life, waits included */
    int agent_max_runs;        /* ORRERY_AGENT_MAX_RUNS: live handler runs per agent; more wait in the mailbox */
    int agent_db_connections;  /* ORRERY_AGENT_DB_CONNECTIONS: asynchronous connections for orrery.db */
    char *fetch_allow;         /* ORRERY_FETCH_ALLOW (owned, may be NULL): hosts orrery.http.fetch may reach */
    int fetch_allow_private;   /* ORRERY_FETCH_ALLOW_PRIVATE: 1 = loopback/private addresses allowed */
    char *instance_id;         /* ORRERY_INSTANCE_ID (owned, may be NULL = a new one per start): a UUID */
    int agents_watch;          /* ORRERY_AGENTS_WATCH: 1 = reload changed files in agents_dir (default
                                * on in development) */
};

/* Looks a variable up; the default is getenv. Specs pass their own to test the parser. */
typedef const char *(*config_getenv_fn)(const char *name, void *ud);

/* Fills *cfg from the environment. Returns 0, or -1 with a one-line message naming the
 * variable in err. On success the caller owns the strings: release with config_free. */
int config_load(struct config *cfg, config_getenv_fn get, void *ud, char *err, size_t errlen);
void config_free(struct config *cfg);
const char *config_env_name(enum config_env env);

#endif
