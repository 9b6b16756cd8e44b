/* agents — the agent runtime: each agent in its own sandboxed Lua 5.4 state, a few worker threads
 * that run ready agents (an agent is touched by one worker at a time, its messages handled in
 * order), every handler a coroutine, and host calls that wait (orrery.sleep, orrery.bus.request,
 * and any I/O built on agents_wait_*) yielding to the runtime instead of blocking a worker.
 * Messages travel on the bus (src/bus.c); the runtime registers each agent there and is woken by it.
 *
 * Threads: `workers` threads run agents; one timer thread fires sleeps and request timeouts.
 * Nothing here touches the database: recording, redelivery and replica fan-out plug in as hooks.
 * Implemented by agents.c (registry, scheduling, runs, supervision) and agents_lua.c (the orrery
 * table agent states see: bus, sleep, log, json, time). See docs/agents.md. */
#ifndef ORRERY_AGENTS_H
#define ORRERY_AGENTS_H

#include <stddef.h>

#include <jansson.h>
#include <lua.h>

#include "bus.h"
#include "sandbox.h"

struct agents;
struct aio;

struct agents_config {
    int workers;                  /* worker threads (>= 1) */
    size_t mailbox;               /* envelopes per mailbox (0 = 4096) */
    struct sandbox_limits limits; /* per state: memory; per run: instructions (whole run), seconds
                                   * (wall clock between two waits) */
    double run_timeout;           /* a handler run's whole life, waits included (0 = 300 s) */
    int max_runs;                 /* live handler runs per agent; more stay in the mailbox (0 = 10000) */
    double request_timeout;       /* default orrery.bus.request timeout (0 = 30 s) */
    const char *lib_dir;          /* where require() finds Lua modules (NULL = "lib"); copied */
    struct aio *aio;              /* orrery.db and orrery.http go through it (borrowed; NULL = none):
                                   * stop the runtime (agents_stop) before freeing it */
};

/* Hooks for what sits above the runtime (all optional; called from runtime threads, must not
 * block for long and must not call back into the runtime except agents_deliver_remote):
 * - record: an envelope was accepted into a mailbox (pending = 1: it is to be handled) or is only
 *   traced (pending = 0: published copy summary, a refused or undeliverable send);
 * - handled: agent finished with envelope id (handler returned, failed, or it was a reply that
 *   resumed a waiting run);
 * - publish: a topic envelope published here, for the other replicas. */
struct agents_hooks {
    void (*record)(void *ud, const struct bus_envelope *env, int pending);
    void (*handled)(void *ud, const char *agent, const char *envelope_id);
    void (*publish)(void *ud, const struct bus_envelope *env);
    void *ud;
};

/* NULL with a message in err on failure. Starts the threads. */
struct agents *agents_new(const struct agents_config *cfg, char *err, size_t errlen);
/* Stops the worker and timer threads: nothing runs afterwards (completions are only queued).
 * Idempotent. */
void agents_stop(struct agents *rt);
/* Stops (agents_stop), closes every state, frees the bus. Accepts NULL. */
void agents_free(struct agents *rt);
/* Set before loading agents; not thread-safe against running agents. */
void agents_set_hooks(struct agents *rt, const struct agents_hooks *hooks);
/* The bus the agents talk over (owned by the runtime). */
struct bus *agents_bus(struct agents *rt);

/* What a checked agent file declares. */
struct agents_info {
    char name[BUS_NAME_MAX + 1];
    char *description;       /* malloc'd */
    char *capabilities_json; /* malloc'd JSON array of {name, description, args} */
    char *subscribes_json;   /* malloc'd JSON array of topic patterns */
};
void agents_info_clear(struct agents_info *info);

/* Compiles source in a scratch state with the agent limits and checks what it returns: a table with
 * name ([a-z0-9_-], 1..63), description (string), capabilities (list of names or of
 * {name, description, args}), subscribes (list of patterns), on (table of performative -> function).
 * 0 and *info filled (caller clears), or -1 with "chunkname:LINE: message" (or "name: ..."). */
int agents_check(struct agents *rt, const char *chunkname, const char *source, size_t len,
                 struct agents_info *info, char *err, size_t errlen);

/* Loads source as a new version of its agent (the name comes from the source) and swaps it in:
 * new messages go to the new state, runs already started finish on the state they started in.
 * A first load registers the agent on the bus and subscribes it. 0, or -1 with err as agents_check.
 * name_out (may be NULL) receives the agent's name. */
int agents_load(struct agents *rt, const char *chunkname, const char *source, size_t len, long version,
                char name_out[BUS_NAME_MAX + 1], char *err, size_t errlen);
/* Stops an agent: unregisters it; its runs are abandoned. 0, or -1 when unknown. */
int agents_unload(struct agents *rt, const char *name);

/* [{name, description, version, status ("running" | "restarting" | "degraded"), mailbox, runs,
 *   handled, failed, restarts, last_error, capabilities}] sorted by name; caller decrefs. */
json_t *agents_status(struct agents *rt);
/* One agent's status object, NULL when unknown. */
json_t *agents_status_one(struct agents *rt, const char *name);
/* How many agents are degraded now. */
int agents_degraded(struct agents *rt);

/* Sends a request from outside any agent (HTTP, specs): env->receiver, content, user_id,
 * conversation_id and performative (default "request") are the caller's; sender becomes "_client"
 * and reply_with a fresh id. done(ud, reply) is called exactly once, from a runtime thread, with the
 * reply — or with a `failure` envelope whose content is {"error": "timeout" | "unknown_agent" |
 * "busy" | "stopped"} — and owns reply (bus_envelope_free). 0, or -1 when out of memory (done is
 * then not called). */
int agents_request(struct agents *rt, const struct bus_envelope *env, double timeout,
                   void (*done)(void *ud, struct bus_envelope *reply), void *ud);

/* Sends or publishes an envelope from outside any agent (env->topic set: publish). The result of
 * bus_send / bus_publish. Publishes go to the publish hook too unless remote is set (an envelope
 * that came from another replica). */
int agents_deliver(struct agents *rt, const struct bus_envelope *env, int remote);

/* ---- Waiting (for host calls built on the runtime) ----
 * A host function running in an agent's handler calls agents_wait_begin(L) to get a token, starts
 * its I/O, and returns agents_wait_yield(L). Later, from any thread, exactly one
 * agents_wait_complete(token, push, data, drop) resumes that run: push(L, data) runs on the
 * agent's worker (protected: it may raise on memory) and pushes the values the host function
 * returns; then, and also when the run is gone (timed out, agent unloaded), drop(data) frees data
 * (drop may be NULL). Tokens are plain values. */
struct agents_token {
    struct agents *rt;
    void *agent;
    unsigned long long run_id;
    unsigned long wait_seq;
};
int agents_wait_begin(lua_State *L, struct agents_token *out); /* 0, or -1 outside a handler run */
int agents_wait_yield(lua_State *L);                             /* return this from the C function */
void agents_wait_complete(const struct agents_token *token, int (*push)(lua_State *L, void *data), void *data,
                          void (*drop)(void *data));

#endif
