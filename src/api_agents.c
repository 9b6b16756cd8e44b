/* api_agents — the admin API of the agent runtime: GET /api/agents (status of every agent),
 * GET/PUT /api/agents/{name} (one agent with its versions; install a new version),
 * POST /api/agents/{name}/rollback (make the previous version active) and
 * POST /api/agents/{name}/messages (send the agent a message as the admin and answer with its
 * reply). Everything here is for admins only (403 otherwise). A PUT is compiled and checked in a
 * scratch state before anything is stored; the store (agents_store) then loads what the database
 * says is active, and app->on_agent_changed tells the other replicas. A message waits for its
 * reply without a thread or a database connection (api_release, http_suspend, http_finish).
 * Uses api, agents, agents_store, bus. See docs/agents-admin.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agents.h"
#include "agents_store.h"
#include "api.h"
#include "bus.h"
#include "log.h"
#include "routes.h"

#define MESSAGE_TIMEOUT_DEFAULT 30.0
#define MESSAGE_TIMEOUT_MAX 300.0

/* 403 unless the caller is an admin (the role read from the database by api_begin). */
static int require_admin(struct http_req *req) {
    struct api_ctx *c = api_ctx(req);
    if (c && strcmp(c->role, "admin") == 0) return 0;
    http_error(req, 403, "forbidden", "only an admin can manage agents", NULL);
    return -1;
}

/* 1..63 of [a-z0-9_-]: what agent files may declare (lib/orrery/agent.lua). */
static int name_valid(const char *name) {
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > BUS_NAME_MAX) return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) return 0;
    return 1;
}

static void not_found(struct http_req *req) {
    http_error(req, 404, "not_found", "no such agent", NULL);
}

/* The name of the route, or NULL after a 404 (a name no agent can have). */
static const char *route_name(struct http_req *req) {
    const char *name = http_param(req, "name");
    if (name_valid(name)) return name;
    not_found(req);
    return NULL;
}

/* Adds origin (and file or version) from the store to an agent's status object. */
static void add_origin(struct app *app, json_t *agent) {
    json_t *origin = agents_store_origin(app, json_string_value(json_object_get(agent, "name")));
    if (origin) json_object_update(agent, origin);
    json_decref(origin);
}

/* ---- GET /api/agents ---- */

static void agents_list(struct http_req *req) {
    if (require_admin(req)) return;
    struct app *app = http_app(req);
    json_t *all = app->agents ? agents_status(app->agents) : json_array();
    size_t i;
    json_t *a;
    json_array_foreach(all, i, a) add_origin(app, a);
    http_json(req, 200, json_pack("{s:o}", "items", all));
}

/* ---- GET /api/agents/{name} ---- */

#define VERSION_COLUMNS \
    "version, active, checksum, " \
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), created_by"

static json_t *version_json(const PGresult *r, int row) {
    return json_pack("{s:I, s:b, s:s, s:s, s:s?}", "version", (json_int_t)strtol(PQgetvalue(r, row, 0), NULL, 10),
                     "active", strcmp(PQgetvalue(r, row, 1), "t") == 0, "checksum", PQgetvalue(r, row, 2),
                     "created_at", PQgetvalue(r, row, 3), "created_by",
                     PQgetisnull(r, row, 4) ? NULL : PQgetvalue(r, row, 4));
}

static void agents_get(struct http_req *req) {
    if (require_admin(req)) return;
    const char *name = route_name(req);
    if (!name || api_tx_set_ctx(req, "admin") != 0) return;
    struct app *app = http_app(req);
    const char *p[1] = {name};
    PGresult *r = api_exec(req,
                           "SELECT " VERSION_COLUMNS ", CASE WHEN active THEN source END "
                           "FROM agents WHERE name = $1 ORDER BY version DESC",
                           1, p);
    if (!r) return;
    json_t *status = app->agents ? agents_status_one(app->agents, name) : NULL;
    if (!status && PQntuples(r) == 0) {
        PQclear(r);
        not_found(req);
        return;
    }
    json_t *out = status ? status : json_pack("{s:s, s:n}", "name", name, "status");
    add_origin(app, out);
    json_t *versions = json_array();
    const char *active_source = NULL;
    for (int i = 0; i < PQntuples(r); i++) {
        json_array_append_new(versions, version_json(r, i));
        if (!PQgetisnull(r, i, 5)) active_source = PQgetvalue(r, i, 5);
    }
    json_object_set_new(out, "versions", versions);
    /* The database's active version when there is one; else the file this process runs. */
    size_t len = 0;
    char *file_source = active_source ? NULL : agents_store_source(app, name, &len);
    const char *source = active_source ? active_source : file_source;
    json_object_set_new(out, "source", source ? json_stringn(source, active_source ? strlen(source) : len) : json_null());
    free(file_source);
    PQclear(r);
    http_json(req, 200, out);
}

/* ---- After a change is committed ---- */

/* Loads the active version here, tells the other replicas, and answers with the agent. The
 * transaction is already committed: a failure to load is reported, not undone. */
static void changed(struct http_req *req, const char *name, long version, int status, json_t *extra) {
    struct app *app = http_app(req);
    if (agents_store_reload(app, name) < 0) {
        json_decref(extra);
        http_error(req, 500, "load_failed",
                   "the version was stored but could not be loaded here; see the server log", NULL);
        return;
    }
    if (app->on_agent_changed) app->on_agent_changed(app, name, version);
    json_t *out = app->agents ? agents_status_one(app->agents, name) : NULL;
    if (!out) out = json_pack("{s:s}", "name", name);
    add_origin(app, out);
    if (extra) json_object_update(out, extra);
    json_decref(extra);
    http_json(req, status, out);
}

/* ---- PUT /api/agents/{name} {"source": "..."} ---- */

static void agents_put(struct http_req *req) {
    if (require_admin(req)) return;
    struct api_ctx *c = api_ctx(req);
    struct app *app = http_app(req);
    const char *name = http_param(req, "name");
    /* "messages" would be shadowed by GET /api/agents/messages (the message log). */
    if (!name_valid(name) || strcmp(name, "messages") == 0) {
        api_bad_field(req, "name", "an agent's name is 1..63 characters of [a-z0-9_-], and not 'messages'");
        return;
    }
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"source", NULL};
    if (api_only_keys(req, body, allowed)) return;
    json_t *sv = json_object_get(body, "source");
    if (!json_is_string(sv)) {
        api_bad_field(req, "source", "source is required: the agent's Lua source as a string");
        return;
    }
    const char *src = json_string_value(sv);
    size_t len = json_string_length(sv);
    if (len > AGENTS_SOURCE_MAX) {
        http_error(req, 413, "payload_too_large", "source is too large",
                   json_pack("{s:s, s:i}", "field", "source", "max_bytes", AGENTS_SOURCE_MAX));
        return;
    }
    if (len == 0 || strlen(src) != len) {
        api_bad_field(req, "source", len ? "source must not contain NUL characters" : "source must not be empty");
        return;
    }
    if (!app->agents) {
        http_error(req, 503, "unavailable", "the agent runtime is not running", NULL);
        return;
    }
    /* Compiled and run in a scratch state with the agents' limits: nothing is stored unless it
     * loads. Errors read "source:LINE: message". */
    struct agents_info info;
    char err[1024];
    if (agents_check(app->agents, "=source", src, len, &info, err, sizeof err) != 0) {
        json_t *details = json_pack("{s:s}", "field", "source");
        int line = agents_store_error_line("=source", err);
        if (details && line > 0) json_object_set_new(details, "line", json_integer(line));
        http_error(req, 400, "invalid_field", err, details);
        return;
    }
    int same = strcmp(info.name, name) == 0;
    if (!same) {
        char msg[256];
        snprintf(msg, sizeof msg, "the source declares the agent '%s', not '%s'", info.name, name);
        api_bad_field(req, "name", msg);
    }
    agents_info_clear(&info);
    if (!same || api_tx_set_ctx(req, "admin") != 0) return;

    /* The active row's lock orders concurrent PUTs: the second one sees the first's version when
     * it goes on. Two first versions at once collide on the key: 409. */
    const char *p[3] = {name, src, c->claims.sub};
    PGresult *r = api_exec(req, "UPDATE agents SET active = false WHERE name = $1 AND active", 1, p);
    if (!r) return;
    PQclear(r);
    r = db_exec(c->db,
                "INSERT INTO agents (name, version, source, created_by, active) "
                "SELECT $1, coalesce(max(version), 0) + 1, $2, $3::uuid, true FROM agents WHERE name = $1 "
                "RETURNING " VERSION_COLUMNS,
                3, p);
    if (!db_ok(r)) {
        c->failed = 1;
        int conflict = strcmp(api_sqlstate(r), "23505") == 0;
        if (!conflict) log_error("agents: storing '%s' failed: %s", name, r ? PQresultErrorMessage(r) : "no result");
        PQclear(r);
        if (conflict) http_error(req, 409, "conflict", "another change to this agent was saved at the same time; try again", NULL);
        else http_error(req, PQstatus(c->db) == CONNECTION_OK ? 500 : 503, "internal", "the version could not be saved", NULL);
        return;
    }
    json_t *stored = version_json(r, 0);
    long version = strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    if (api_release(req) != 0) {
        json_decref(stored);
        return;
    }
    log_info("agents: admin %s stored '%s' version %ld", c->claims.sub, name, version);
    json_t *extra = json_pack("{s:o}", "stored", stored);
    changed(req, name, version, version == 1 ? 201 : 200, extra);
}

/* ---- POST /api/agents/{name}/rollback ---- */

static void agents_rollback(struct http_req *req) {
    if (require_admin(req)) return;
    struct api_ctx *c = api_ctx(req);
    const char *name = route_name(req);
    if (!name || api_tx_set_ctx(req, "admin") != 0) return;
    const char *p[1] = {name};
    /* Locks the active row: concurrent rollbacks go one after the other. */
    PGresult *r = api_exec(req,
                           "SELECT a.version, (SELECT max(b.version) FROM agents b WHERE b.name = a.name AND b.version < a.version) "
                           "FROM agents a WHERE a.name = $1 AND a.active FOR UPDATE",
                           1, p);
    if (!r) return;
    if (PQntuples(r) != 1) {
        PQclear(r);
        r = api_exec(req, "SELECT 1 FROM agents WHERE name = $1 LIMIT 1", 1, p);
        if (!r) return;
        int exists = PQntuples(r) > 0;
        PQclear(r);
        if (exists) http_error(req, 409, "conflict", "the agent was changed at the same time; try again", NULL);
        else http_error(req, 404, "not_found", "this agent has no stored versions to roll back", NULL);
        return;
    }
    if (PQgetisnull(r, 0, 1)) {
        PQclear(r);
        http_error(req, 409, "no_previous_version", "the active version is the first one: there is nothing to roll back to",
                   NULL);
        return;
    }
    long from = strtol(PQgetvalue(r, 0, 0), NULL, 10), to = strtol(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    char from_s[24], to_s[24];
    snprintf(from_s, sizeof from_s, "%ld", from);
    snprintf(to_s, sizeof to_s, "%ld", to);
    const char *pf[2] = {name, from_s}, *pt[2] = {name, to_s};
    /* Two statements: the one-active index is checked row by row. */
    r = api_exec(req, "UPDATE agents SET active = false WHERE name = $1 AND version = $2::int", 2, pf);
    if (!r) return;
    PQclear(r);
    r = api_exec(req, "UPDATE agents SET active = true WHERE name = $1 AND version = $2::int", 2, pt);
    if (!r) return;
    PQclear(r);
    if (api_release(req) != 0) return;
    log_info("agents: admin %s rolled '%s' back from version %ld to %ld", c->claims.sub, name, from, to);
    changed(req, name, to, 200, json_pack("{s:I}", "rolled_back_from", (json_int_t)from));
}

/* ---- POST /api/agents/{name}/messages ---- */

/* The runtime's own answer when no reply came: a `failure` whose content is exactly
 * {"error": code}. NULL for a reply from the agent. */
static const char *runtime_failure(const struct bus_envelope *reply) {
    static const char *const codes[] = {"timeout", "unknown_agent", "busy", "stopped", "invalid", "out_of_memory", NULL};
    if ((strcmp(reply->performative, "failure") != 0 && strcmp(reply->performative, "refuse") != 0) ||
        !reply->content)
        return NULL;
    json_t *c = json_loads(reply->content, JSON_DECODE_ANY, NULL);
    const char *found = NULL;
    if (json_is_object(c) && json_object_size(c) == 1) {
        const char *e = json_string_value(json_object_get(c, "error"));
        for (const char *const *k = codes; e && *k; k++)
            if (strcmp(e, *k) == 0) found = *k; /* static: outlives c */
    }
    json_decref(c);
    return found;
}

/* The reply, on a runtime thread: sets the response and completes the suspended request, which
 * is not touched afterwards. */
static void message_done(void *ud, struct bus_envelope *reply) {
    struct http_req *req = ud;
    const char *failure = reply ? runtime_failure(reply) : "out_of_memory";
    if (!failure) {
        char *text = bus_envelope_to_json(reply);
        json_t *o = text ? json_loads(text, 0, NULL) : NULL;
        free(text);
        if (o) http_json(req, 200, o);
        else http_error(req, 500, "internal", "the reply could not be encoded", NULL);
    } else if (strcmp(failure, "timeout") == 0) {
        http_error(req, 504, "timeout", "the agent did not answer in time", NULL);
    } else if (strcmp(failure, "unknown_agent") == 0 || strcmp(failure, "invalid") == 0) {
        http_error(req, 404, "unknown_agent", "no such agent", NULL);
    } else if (strcmp(failure, "busy") == 0) {
        http_add_header(req, "Retry-After", "1");
        http_error(req, 503, "busy", "the agent's mailbox is full; try again", NULL);
    } else if (strcmp(failure, "stopped") == 0) {
        http_add_header(req, "Retry-After", "5");
        http_error(req, 503, "unavailable", "the agent runtime is stopping", NULL);
    } else {
        http_error(req, 500, "internal", "internal error", NULL);
    }
    bus_envelope_free(reply);
    http_finish(req);
}

static void agents_message(struct http_req *req) {
    if (require_admin(req)) return;
    struct api_ctx *c = api_ctx(req);
    struct app *app = http_app(req);
    const char *name = http_param(req, "name");
    json_t *body = http_body_json(req);
    static const char *const allowed[] = {"content", "performative", "conversation_id", "timeout", NULL};
    const char *perf = NULL, *conv = NULL;
    if (api_only_keys(req, body, allowed) || api_string(req, body, "performative", 0, 1, 15, &perf) ||
        api_string(req, body, "conversation_id", 0, 1, 63, &conv))
        return;
    if (perf && !bus_performative_valid(perf)) {
        api_bad_field(req, "performative", "not a performative (request, inform, query, ...)");
        return;
    }
    if (conv && strlen(conv) > 63) {
        api_bad_field(req, "conversation_id", "conversation_id is at most 63 bytes");
        return;
    }
    double timeout = MESSAGE_TIMEOUT_DEFAULT;
    json_t *t = json_object_get(body, "timeout");
    if (t) {
        timeout = json_is_number(t) ? json_number_value(t) : -1;
        if (!(timeout > 0 && timeout <= MESSAGE_TIMEOUT_MAX)) {
            api_bad_field(req, "timeout", "timeout is a number of seconds, more than 0 and at most 300");
            return;
        }
    }
    if (!name_valid(name) || !app->agents) {
        http_error(req, 404, "unknown_agent", "no such agent", NULL);
        return;
    }
    struct bus_envelope env;
    memset(&env, 0, sizeof env);
    snprintf(env.receiver, sizeof env.receiver, "%s", name);
    snprintf(env.performative, sizeof env.performative, "%s", perf ? perf : "request");
    snprintf(env.conversation_id, sizeof env.conversation_id, "%s", conv ? conv : "");
    snprintf(env.user_id, sizeof env.user_id, "%s", c->claims.sub);
    json_t *content = json_object_get(body, "content");
    env.content = content ? json_dumps(content, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (content && !env.content) {
        http_error(req, 500, "internal", "internal error", NULL);
        return;
    }
    /* No database connection is held while the agent works. */
    if (api_release(req) != 0) {
        bus_envelope_clear(&env);
        return;
    }
    /* Suspended first: the reply may come on another thread before agents_request returns. */
    http_suspend(req);
    int rc = agents_request(app->agents, &env, timeout, message_done, req);
    bus_envelope_clear(&env);
    if (rc != 0) {
        http_error(req, 500, "internal", "out of memory", NULL);
        http_finish(req);
    }
}

const struct route api_agents_routes[] = {
    {"GET", "/api/agents", agents_list, 0},
    {"GET", "/api/agents/{name}", agents_get, 0},
    {"PUT", "/api/agents/{name}", agents_put, ROUTE_JSON_BODY},
    {"POST", "/api/agents/{name}/rollback", agents_rollback, 0},
    {"POST", "/api/agents/{name}/messages", agents_message, ROUTE_JSON_BODY},
    {NULL, NULL, NULL, 0},
};
