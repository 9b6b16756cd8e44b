/* agents_internal — private to the runtime's files: agents.c (registry, scheduling, runs, timers,
 * supervision) and agents_lua.c (the orrery table agent states see). The public API is agents.h. */
#ifndef ORRERY_AGENTS_INTERNAL_H
#define ORRERY_AGENTS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "agents.h"

struct agent;
struct state;

/* One handler run: a coroutine handling one envelope. Touched only by the worker holding its agent. */
struct run {
    unsigned long long id;        /* (generation << 32) | slot in the agent's run table */
    struct state *st;
    lua_State *co;
    int ref;                      /* the coroutine's registry reference */
    struct bus_envelope *msg;     /* the envelope being handled (owned) */
    long instructions;            /* used so far, across resumes */
    double started;
    int waiting;                  /* suspended in a host wait */
    unsigned long wait_seq;       /* which wait: completions of older ones are dropped */
    char wait_reply[64];          /* reply_with of an outstanding orrery.bus.request, "" if none */
    int replied;                  /* a reply to msg was sent */
    int abandon_armed;            /* its run_timeout timer is set (at its first wait) */
    int returned;                 /* the handler returned: its coroutine can serve another run */
    struct run *prev, *next;      /* the state's runs */
};

/* One version of an agent: its sandboxed state. */
struct state {
    struct agent *agent;
    struct sandbox *sb;
    long version;
    int module_ref, sdk_ref, encode_ref, decode_ref, ctxmeta_ref, dispatch_ref;
    struct run *runs;             /* live runs */
    int live;
    struct run *current;          /* the run being resumed now, NULL outside one */
    struct state *next;           /* retiring states */
    lua_State *spare[4];          /* coroutines of runs that returned, for the next runs */
    int spare_ref[4], nspare;
};

/* The state of lua_State L (stored in its extra space). */
static inline struct state *agents_state_of(lua_State *L) {
    return *(struct state **)lua_getextraspace(L);
}

/* ---- agents.c, for agents_lua.c ---- */

/* The agent's name. */
const char *agents_agent_name(const struct agent *a);
struct agents *agents_agent_runtime(const struct agent *a);
/* Sends env from inside the runtime: fills id/created_at, intercepts replies to "_client", records.
 * BUS_OK or a BUS_* error. */
int agents_send(struct agents *rt, struct bus_envelope *env);
/* Publishes env (topic set): local subscribers, the record hook and the publish hook. Count or error. */
int agents_publish(struct agents *rt, struct bus_envelope *env);
/* Arms a timer that completes the run's current wait (token) after `seconds` with no values
 * (timeout_error NULL) or with nil, timeout_error. */
void agents_wait_timer(const struct agents_token *token, double seconds, const char *timeout_error);
/* agents_wait_yield with a continuation of one's own: when the wait completes, k runs with the
 * completion's values above the stack the host function had (its context is that stack's size). */
int agents_wait_yieldk(lua_State *L, lua_KFunction k);
/* The runtime's I/O loop, or NULL. */
struct aio *agents_aio(const struct agents *rt);
/* Default request timeout. */
double agents_request_timeout(const struct agents *rt);

/* ---- agents_lua.c ---- */

/* Builds the `orrery` table agent states see (log, json, time, bus, sleep); ud is the state. */
void agents_lua_build(lua_State *L, void *ud);
/* Sets up what require() may load: Lua modules under lib_dir (text only, in the sandbox). */
void agents_lua_require_build(lua_State *L, void *ud);
void agents_lua_set_lib_dir(const char *dir);

#endif
