/* agents — see agents.h. This file owns the registry of agents, the ready queue and its workers,
 * the timer thread, handler runs (coroutines) and their waits, supervision and hot swaps;
 * agents_lua.c owns what scripts see.
 *
 * How the pieces fit:
 * - The bus wakes the runtime (bus_set_notify) when a mailbox goes from empty to non-empty; the
 *   agent is then put on the ready queue unless it is already queued or running (`scheduled`).
 *   A worker that takes an agent owns it until it puts it back: its states, runs and run table are
 *   only ever touched by that worker, so Lua needs no locks. Work that arrives from other threads
 *   (a timer fired, a wait completed, a new version, a restart) is an `item` on the agent's list,
 *   under its mutex, and schedules the agent too.
 * - A worker handles at most BATCH items or envelopes of an agent, then requeues it behind the
 *   others: one busy agent cannot starve the rest.
 * - A run is a coroutine made by sandbox_thread_new whose body is the SDK's dispatch(module, msg).
 *   A host call that waits (orrery.sleep, orrery.bus.request, agents_wait_*) yields the sandbox's
 *   host-yield marker; the run is then parked in the agent's run table under (slot, generation) and
 *   resumed by the item that completes its wait. Tokens carry the run id and the wait's sequence
 *   number, so a late completion (timeout already fired, run gone) is dropped, never misapplied.
 * - Everything that allocates in a Lua state outside a run happens in lua_pcall on the main thread
 *   (the state's memory cap makes any allocation fail), so the cap is an error, never a panic.
 * - Supervision: a run that fails is answered with `failure` and the agent goes on; a state that hit
 *   its memory cap is closed (its runs answered `failure`) and rebuilt from the source after a
 *   backoff that doubles per crash (0.1 s .. 30 s); DEGRADED_CRASHES crashes within CRASH_WINDOW
 *   seconds mark the agent degraded until it runs a window without crashing. */
#include "agents.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "agents_internal.h"
#include "bus_lua.h"
#include "log.h"

#define BATCH 64
#define DEFAULT_RUN_TIMEOUT 300.0
#define DEFAULT_MAX_RUNS 10000
#define DEFAULT_REQUEST_TIMEOUT 30.0
#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 30.0
#define CRASH_WINDOW 60.0
#define DEGRADED_CRASHES 3
#define CLIENT "_client"
#define WATCH_EVERY 0.25
#define STUCK_FACTOR 2
#define STUCK_FLOOR 0.5
#define DEFAULT_MAILBOX 4096

enum agent_status { ST_RUNNING, ST_RESTARTING, ST_DEGRADED };

enum item_kind {
    IT_COMPLETE, /* a wait completed: push(L, data) gives the values */
    IT_ABANDON,  /* the run outlived run_timeout */
    IT_SWAP,     /* a new version: data is the struct state */
    IT_RESTART,  /* rebuild the state after a crash */
    IT_UNLOAD,
};

struct item {
    struct item *next;
    enum item_kind kind;
    unsigned long long run_id;
    unsigned long wait_seq;
    int (*push)(lua_State *L, void *data);
    void (*drop)(void *data);
    void *data;
};

/* What IT_SWAP carries: the new state and its source. */
struct swap {
    struct state *st;
    char *src;
    size_t len;
    char chunk[256];
};

struct slot {
    struct run *run;
    unsigned gen;
    int next_free; /* -1: end of the free list */
};

struct agent {
    char name[BUS_NAME_MAX + 1];
    struct agents *rt;
    struct agent *next_all;   /* the registry list */
    struct agent *next_ready; /* the ready queue */

    pthread_mutex_t mu; /* scheduled, wake, items, status fields below */
    int scheduled, wake;
    struct item *items, *items_tail;
    int removed;
    enum agent_status status;
    char last_error[512];
    long version;
    double crashes_at[DEGRADED_CRASHES]; /* times of the last crashes, a ring */
    int crash_count;                     /* crashes in a row (for the backoff) */
    unsigned long restarts;
    char *description, *capabilities_json, *subscribes_json;

    atomic_ulong handled, failed;
    atomic_int live;

    /* Only the worker holding the agent: */
    struct state *cur, *retiring;
    char *source;
    size_t source_len;
    char chunkname[256];
    struct slot *slots;
    int nslots, free_slot;
    unsigned long long seq;
};

struct timer {
    double when;
    int kind; /* enum item_kind for agents, or TM_CLIENT */
    struct agent *agent;
    unsigned long long run_id;
    unsigned long wait_seq;
    unsigned long long client_id;
    const char *error; /* static string */
};
#define TM_CLIENT 100

struct client {
    struct client *next;
    unsigned long long id;
    char reply_with[64];
    struct bus_envelope *request; /* for the failure answer's fields */
    void (*done)(void *ud, struct bus_envelope *reply);
    void *ud;
};

/* A worker thread, watched: busy_ns is when it took its current agent (0 = waiting for one). */
struct worker {
    pthread_t tid;
    struct agents *rt;
    atomic_llong busy_ns;
    _Atomic(struct agent *) agent;
    int flagged; /* the watchdog reported this stall (timer thread only) */
};

struct agents {
    struct agents_config cfg;
    char *lib_dir;
    struct bus *bus;
    struct agents_hooks hooks;

    pthread_rwlock_t reg_lock; /* the registry list */
    struct agent *agents;
    pthread_mutex_t load_mu;   /* one load/unload at a time */

    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    struct agent *q_head, *q_tail;
    int stopping;
    struct worker *workers;    /* cap_workers slots; nworkers started (under w_mu) */
    int nworkers, cap_workers;
    pthread_mutex_t w_mu;

    pthread_mutex_t t_mu;
    pthread_cond_t t_cv;
    struct timer *heap;
    size_t nheap, capheap;
    pthread_t timer_thread;
    int timer_started;
    int stopped; /* agents_stop ran (owner thread only) */

    pthread_mutex_t c_mu;
    struct client *clients;
    unsigned long long next_client;
};

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const char *agents_agent_name(const struct agent *a) {
    return a->name;
}

struct agents *agents_agent_runtime(const struct agent *a) {
    return a->rt;
}

struct aio *agents_aio(const struct agents *rt) {
    return rt->cfg.aio;
}

double agents_request_timeout(const struct agents *rt) {
    return rt->cfg.request_timeout;
}

struct bus *agents_bus(struct agents *rt) {
    return rt->bus;
}

void agents_set_hooks(struct agents *rt, const struct agents_hooks *hooks) {
    rt->hooks = *hooks;
}

/* ---- The registry ---- */

static struct agent *find_agent(struct agents *rt, const char *name) {
    pthread_rwlock_rdlock(&rt->reg_lock);
    struct agent *a = rt->agents;
    while (a && strcmp(a->name, name) != 0) a = a->next_all;
    pthread_rwlock_unlock(&rt->reg_lock);
    return a;
}

/* ---- Scheduling ---- */

static void enqueue(struct agents *rt, struct agent *a) {
    pthread_mutex_lock(&rt->q_mu);
    a->next_ready = NULL;
    if (rt->q_tail)
        rt->q_tail->next_ready = a;
    else
        rt->q_head = a;
    rt->q_tail = a;
    pthread_cond_signal(&rt->q_cv);
    pthread_mutex_unlock(&rt->q_mu);
}

static void schedule(struct agent *a) {
    pthread_mutex_lock(&a->mu);
    int queue = !a->scheduled;
    if (queue)
        a->scheduled = 1;
    else
        a->wake = 1;
    pthread_mutex_unlock(&a->mu);
    if (queue) enqueue(a->rt, a);
}

static void on_notify(void *ud, const char *name) {
    struct agent *a = find_agent(ud, name);
    if (a) schedule(a);
}

static void push_item(struct agent *a, struct item *it) {
    pthread_mutex_lock(&a->mu);
    it->next = NULL;
    if (a->items_tail)
        a->items_tail->next = it;
    else
        a->items = it;
    a->items_tail = it;
    pthread_mutex_unlock(&a->mu);
    schedule(a);
}

static struct item *pop_item(struct agent *a) {
    pthread_mutex_lock(&a->mu);
    struct item *it = a->items;
    if (it) {
        a->items = it->next;
        if (!a->items) a->items_tail = NULL;
    }
    pthread_mutex_unlock(&a->mu);
    return it;
}

static void item_free(struct item *it) {
    if (it->drop && it->data) it->drop(it->data);
    free(it);
}

/* ---- Timers: a binary heap ordered by `when` ---- */

static void heap_swap(struct timer *h, size_t i, size_t j) {
    struct timer t = h[i];
    h[i] = h[j];
    h[j] = t;
}

static int add_timer(struct agents *rt, const struct timer *t) {
    pthread_mutex_lock(&rt->t_mu);
    if (rt->nheap == rt->capheap) {
        size_t cap = rt->capheap ? rt->capheap * 2 : 256;
        struct timer *h = realloc(rt->heap, cap * sizeof *h);
        if (!h) {
            pthread_mutex_unlock(&rt->t_mu);
            return -1;
        }
        rt->heap = h;
        rt->capheap = cap;
    }
    size_t i = rt->nheap++;
    rt->heap[i] = *t;
    while (i > 0 && rt->heap[(i - 1) / 2].when > rt->heap[i].when) {
        heap_swap(rt->heap, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    if (i == 0) pthread_cond_signal(&rt->t_cv);
    pthread_mutex_unlock(&rt->t_mu);
    return 0;
}

static struct timer heap_pop(struct agents *rt) {
    struct timer top = rt->heap[0];
    rt->heap[0] = rt->heap[--rt->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < rt->nheap && rt->heap[l].when < rt->heap[m].when) m = l;
        if (r < rt->nheap && rt->heap[r].when < rt->heap[m].when) m = r;
        if (m == i) break;
        heap_swap(rt->heap, i, m);
        i = m;
    }
    return top;
}

static void client_fire(struct agents *rt, unsigned long long id, const char *error);

static int push_nothing(lua_State *L, void *data) {
    (void)L;
    (void)data;
    return 0;
}

static int push_error(lua_State *L, void *data) {
    lua_pushnil(L);
    lua_pushstring(L, data);
    return 2;
}

static void fire(struct agents *rt, const struct timer *t) {
    if (t->kind == TM_CLIENT) {
        client_fire(rt, t->client_id, t->error);
        return;
    }
    struct item *it = calloc(1, sizeof *it);
    if (!it) {
        log_error("agents: out of memory firing a timer of '%s'", t->agent->name);
        return;
    }
    it->kind = (enum item_kind)t->kind;
    it->run_id = t->run_id;
    it->wait_seq = t->wait_seq;
    if (it->kind == IT_COMPLETE) {
        it->push = t->error ? push_error : push_nothing;
        it->data = (void *)t->error; /* static */
    }
    push_item(t->agent, it);
}

static void watchdog(struct agents *rt);

static void *timer_main(void *arg) {
    struct agents *rt = arg;
    pthread_mutex_lock(&rt->t_mu);
    double next_watch = 0;
    while (!rt->stopping) {
        double now = now_mono();
        if (now >= next_watch) {
            pthread_mutex_unlock(&rt->t_mu);
            watchdog(rt);
            pthread_mutex_lock(&rt->t_mu);
            next_watch = now + WATCH_EVERY;
            continue;
        }
        if (rt->nheap == 0 || rt->heap[0].when > now) {
            double w = rt->nheap && rt->heap[0].when < next_watch ? rt->heap[0].when : next_watch;
            struct timespec ts = {(time_t)w, (long)((w - floor(w)) * 1e9)};
            pthread_cond_timedwait(&rt->t_cv, &rt->t_mu, &ts);
            continue;
        }
        struct timer t = heap_pop(rt);
        pthread_mutex_unlock(&rt->t_mu);
        fire(rt, &t);
        pthread_mutex_lock(&rt->t_mu);
    }
    pthread_mutex_unlock(&rt->t_mu);
    return NULL;
}

/* ---- Runs ---- */

static struct run *run_get(struct agent *a, unsigned long long id) {
    unsigned slot = (unsigned)(id & 0xffffffffu);
    if (slot >= (unsigned)a->nslots || a->slots[slot].gen != (unsigned)(id >> 32)) return NULL;
    return a->slots[slot].run;
}

/* A run in state st for msg (owned by the run from now on). NULL when out of memory. */
static struct run *run_new(struct agent *a, struct state *st, struct bus_envelope *msg) {
    if (a->free_slot < 0) {
        int n = a->nslots ? a->nslots * 2 : 64;
        struct slot *s = realloc(a->slots, (size_t)n * sizeof *s);
        if (!s) return NULL;
        for (int i = a->nslots; i < n; i++) s[i] = (struct slot){NULL, 1, i + 1 < n ? i + 1 : -1};
        a->slots = s;
        a->free_slot = a->nslots;
        a->nslots = n;
    }
    struct run *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    int i = a->free_slot;
    a->free_slot = a->slots[i].next_free;
    a->slots[i].run = r;
    r->id = ((unsigned long long)a->slots[i].gen << 32) | (unsigned)i;
    r->st = st;
    r->msg = msg;
    r->ref = LUA_NOREF;
    r->started = now_mono();
    r->next = st->runs;
    if (st->runs) st->runs->prev = r;
    st->runs = r;
    st->live++;
    atomic_fetch_add(&a->live, 1);
    return r;
}

static void state_free(struct state *st);

/* Forgets the run (its coroutine is left to the collector). Frees a retired state it was the last
 * run of. */
static void run_end(struct agent *a, struct run *r) {
    unsigned slot = (unsigned)(r->id & 0xffffffffu);
    a->slots[slot].run = NULL;
    a->slots[slot].gen++;
    a->slots[slot].next_free = a->free_slot;
    a->free_slot = (int)slot;
    struct state *st = r->st;
    if (r->prev)
        r->prev->next = r->next;
    else
        st->runs = r->next;
    if (r->next) r->next->prev = r->prev;
    st->live--;
    atomic_fetch_sub(&a->live, 1);
    if (r->returned && st->nspare < (int)(sizeof st->spare / sizeof st->spare[0]) &&
        lua_status(r->co) == LUA_OK && lua_gettop(r->co) == 0) {
        st->spare[st->nspare] = r->co; /* still anchored by r->ref */
        st->spare_ref[st->nspare++] = r->ref;
    } else if (r->ref != LUA_NOREF) {
        sandbox_unref(st->sb, r->ref);
    }
    if (a->rt->hooks.handled && r->msg) a->rt->hooks.handled(a->rt->hooks.ud, a->name, r->msg->id);
    bus_envelope_free(r->msg);
    free(r);
    if (st != a->cur && st->live == 0) {
        struct state **p = &a->retiring;
        while (*p && *p != st) p = &(*p)->next;
        if (*p) {
            *p = st->next;
            state_free(st);
        }
    }
}

static int expects_reply(const struct bus_envelope *msg) {
    return msg->sender[0] && !msg->topic[0] &&
           (strcmp(msg->performative, "request") == 0 || strcmp(msg->performative, "query") == 0);
}

/* Answers msg (on behalf of agent) with `failure` {"error": code, "message": message}. */
/* Fills *f (zeroed first; its id and created_at come from sending) as the answer of `sender` to req:
 * back to req's sender, same conversation and user, in reply to req's reply_with (or its id),
 * with content (a JSON object, consumed) as text. */
static void answer_of(struct bus_envelope *f, const char *performative, const char *sender,
                      const struct bus_envelope *req, json_t *content) {
    memset(f, 0, sizeof *f);
    snprintf(f->performative, sizeof f->performative, "%s", performative);
    snprintf(f->sender, sizeof f->sender, "%s", sender);
    snprintf(f->receiver, sizeof f->receiver, "%s", req->sender);
    snprintf(f->conversation_id, sizeof f->conversation_id, "%s", req->conversation_id);
    snprintf(f->in_reply_to, sizeof f->in_reply_to, "%s", req->reply_with[0] ? req->reply_with : req->id);
    snprintf(f->user_id, sizeof f->user_id, "%s", req->user_id);
    f->content = content ? json_dumps(content, JSON_COMPACT) : NULL;
    json_decref(content);
}

static void answer_failure(struct agent *a, const struct bus_envelope *msg, const char *code, const char *message) {
    struct bus_envelope env;
    answer_of(&env, "failure", a->name, msg,
              json_pack("{s:s, s:s}", "error", code, "message", message ? message : ""));
    int rc = agents_send(a->rt, &env);
    if (rc != BUS_OK) log_debug("agents: '%s' could not answer failure to '%s' (%d)", a->name, msg->sender, rc);
    free(env.content);
}

/* A run failed (err "code: message..."): log, count, answer. */
static void run_failed(struct agent *a, struct run *r, const char *err) {
    atomic_fetch_add(&a->failed, 1);
    pthread_mutex_lock(&a->mu);
    snprintf(a->last_error, sizeof a->last_error, "%s", err);
    pthread_mutex_unlock(&a->mu);
    log_warn("agent '%s': handler for %s %s failed: %s", a->name, r->msg ? r->msg->performative : "?",
             r->msg ? r->msg->id : "?", err);
    if (r->msg && expects_reply(r->msg) && !r->replied) {
        char code[40];
        size_t n = strcspn(err, ":");
        snprintf(code, sizeof code, "%.*s", (int)(n < sizeof code ? n : sizeof code - 1), err);
        answer_failure(a, r->msg, code, err);
    }
}

static void crash(struct agent *a, struct state *st, const char *err);

/* Arms r's run_timeout the first time it waits. A run that never waits ends within its slice, and
 * most handlers never wait: a timer per run would fill the heap with one dead entry per message
 * for run_timeout (300 s), and take the timer lock on every message. */
static void arm_abandon(struct agent *a, struct run *r) {
    if (r->abandon_armed) return;
    r->abandon_armed = 1;
    struct timer t = {.when = r->started + a->rt->cfg.run_timeout, .kind = IT_ABANDON, .agent = a, .run_id = r->id};
    if (add_timer(a->rt, &t)) log_error("agents: out of memory arming a timer");
}

/* Resumes r with the nargs values on its coroutine's stack and deals with the outcome. */
static void resume(struct agent *a, struct run *r, int nargs) {
    struct state *st = r->st;
    char err[4096];
    int nres = 0;
    st->current = r;
    r->waiting = 0;
    unsigned long seq_before = r->wait_seq;
    int status = sandbox_resume(st->sb, r->co, nargs, &r->instructions, &nres, err, sizeof err);
    st->current = NULL;
    if (status == SANDBOX_YIELD) {
        int host = nres >= 1 && lua_touserdata(r->co, -nres) == &sandbox_host_yield_key;
        lua_pop(r->co, nres);
        arm_abandon(a, r);
        if (host && r->wait_seq != seq_before) {
            r->waiting = 1; /* agents_wait_begin ran: its completion resumes the run */
            return;
        }
        /* A bare coroutine.yield() in the handler: give way, go on after the queued work. */
        r->wait_seq++;
        r->waiting = 1;
        struct item *it = calloc(1, sizeof *it);
        if (!it) {
            run_failed(a, r, "script.error: out of memory");
            run_end(a, r);
            return;
        }
        it->kind = IT_COMPLETE;
        it->run_id = r->id;
        it->wait_seq = r->wait_seq;
        it->push = push_nothing;
        push_item(a, it);
        return;
    }
    if (status == SANDBOX_OK) {
        lua_pop(r->co, nres);
        r->returned = 1;
        atomic_fetch_add(&a->handled, 1);
        if (r->msg && expects_reply(r->msg) && !r->replied)
            answer_failure(a, r->msg, "no_reply", "the handler returned without replying");
        run_end(a, r);
        return;
    }
    if (status == SANDBOX_MEMORY) {
        crash(a, st, err); /* ends this run too */
        return;
    }
    run_failed(a, r, err);
    run_end(a, r);
}

/* Stack effect on the state's main thread: pushes fn's values; then moves them to co. */
struct push_args {
    int (*push)(lua_State *L, void *data);
    void *data;
    int n;
};

static int push_protected(lua_State *L) {
    struct push_args *p = lua_touserdata(L, 1);
    lua_pop(L, 1);
    p->n = p->push(L, p->data);
    return p->n;
}

/* Runs push(L, data) protected on st's main thread, leaving its values there. The count, or -1 when
 * memory ran out (nothing left). */
static int push_main(struct state *st, int (*push)(lua_State *L, void *data), void *data) {
    lua_State *L = sandbox_state(st->sb);
    int base = lua_gettop(L);
    struct push_args p = {push, data, 0};
    if (!lua_checkstack(L, 3)) return -1;
    lua_pushcfunction(L, push_protected);
    lua_pushlightuserdata(L, &p);
    if (lua_pcall(L, 1, LUA_MULTRET, 0) != LUA_OK) {
        lua_settop(L, base);
        return -1;
    }
    return p.n;
}

/* push_main, then the values move onto co. */
static int push_to(struct state *st, lua_State *co, int (*push)(lua_State *L, void *data), void *data) {
    lua_State *L = sandbox_state(st->sb);
    int n = push_main(st, push, data);
    if (n < 0) return -1;
    if (!lua_checkstack(co, n + 1)) {
        lua_pop(L, n);
        return -1;
    }
    lua_xmove(L, co, n);
    return n;
}

static int push_env(lua_State *L, void *data) {
    bus_lua_push_envelope(L, data);
    return 1;
}

struct start_args {
    struct state *st;
    const struct bus_envelope *msg;
};

/* Pushes the SDK's dispatch, the module table and the message. */
/* Pushes the SDK's dispatch, the module table, the message and its ctx. The ctx is made here
 * rather than in the SDK: a raw lua_setmetatable with the state's hidden ctx metatable (built by
 * ctx_meta at load, never reachable by scripts) costs far less per message than the sandbox's
 * checked setmetatable. */
static int push_start(lua_State *L, void *data) {
    struct start_args *s = data;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->st->dispatch_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->st->module_ref);
    bus_lua_push_envelope(L, s->msg);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, s->st->agent->name);
    lua_setfield(L, -2, "agent");
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "message");
    if (s->msg->user_id[0]) {
        lua_pushstring(L, s->msg->user_id);
        lua_setfield(L, -2, "user_id");
    }
    if (s->msg->conversation_id[0]) {
        lua_pushstring(L, s->msg->conversation_id);
        lua_setfield(L, -2, "conversation_id");
    }
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "replied");
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->st->ctxmeta_ref);
    lua_setmetatable(L, -2);
    return 4;
}

/* Starts a run of the current state for env (owned). */
static void start_run(struct agent *a, struct bus_envelope *env) {
    struct state *st = a->cur;
    struct run *r = run_new(a, st, env);
    if (!r) {
        log_error("agents: '%s': out of memory starting a run", a->name);
        if (expects_reply(env)) answer_failure(a, env, "script.memory_limit", "out of memory");
        bus_envelope_free(env);
        return;
    }
    lua_State *L = sandbox_state(st->sb);
    struct start_args s = {st, env};
    char err[256];
    if (push_main(st, push_start, &s) == 4) {
        if (st->nspare > 0 && lua_checkstack(st->spare[st->nspare - 1], 4)) {
            /* A coroutine whose handler returned is a fresh one to Lua (status OK, no call in
             * progress): reusing it spares a thread's allocation and collection per message. It
             * stays marked as the host's, so scripts still cannot resume or close it. */
            r->co = st->spare[--st->nspare];
            r->ref = st->spare_ref[st->nspare];
            lua_xmove(L, r->co, 4); /* dispatch, module, msg, ctx: the body first */
            resume(a, r, 3);
            return;
        }
        lua_rotate(L, -4, -1); /* module, msg, ctx, dispatch: the body goes on top */
        r->co = sandbox_thread_new(st->sb, &r->ref, err, sizeof err);
        if (r->co && lua_checkstack(r->co, 4)) {
            lua_xmove(L, r->co, 3);
            resume(a, r, 3);
            return;
        }
        lua_pop(L, 3);
    }
    crash(a, st, "script.memory_limit: not enough memory to start a handler");
}

/* Looks for a run of this agent waiting for the reply env; resumes it (env consumed) if found. */
static int deliver_reply(struct agent *a, struct bus_envelope *env) {
    const char *p = env->in_reply_to;
    if (p[0] != 'r') return 0;
    char *end;
    errno = 0;
    unsigned long long id = strtoull(p + 1, &end, 16);
    if (errno || *end != '.') return 0;
    struct run *r = run_get(a, id);
    if (!r || !r->waiting || strcmp(r->wait_reply, env->in_reply_to) != 0) {
        /* An answer to one of this agent's orrery.bus.request calls (their reply_with is
         * r<run>.<wait>.<random>) that nobody waits for any more: it came after the timeout, or
         * its run ended. Dropped: handing it to on.inform would surprise every handler. */
        log_debug("agent '%s': late reply %s (to %s) dropped", a->name, env->id, env->in_reply_to);
        if (a->rt->hooks.handled) a->rt->hooks.handled(a->rt->hooks.ud, a->name, env->id);
        bus_envelope_free(env);
        return 1;
    }
    r->wait_reply[0] = '\0';
    r->wait_seq++; /* the timeout timer of this wait is now stale */
    int n = push_to(r->st, r->co, push_env, env);
    if (a->rt->hooks.handled) a->rt->hooks.handled(a->rt->hooks.ud, a->name, env->id);
    bus_envelope_free(env);
    if (n < 0) {
        crash(a, r->st, "script.memory_limit: not enough memory for the reply");
        return 1;
    }
    resume(a, r, n);
    return 1;
}

static void handle_envelope(struct agent *a, struct bus_envelope *env) {
    if (env->in_reply_to[0] && deliver_reply(a, env)) return;
    if (bus_seen(a->rt->bus, a->name, env->id) == 1) {
        log_debug("agent '%s': envelope %s already handled, dropped", a->name, env->id);
        bus_envelope_free(env);
        return;
    }
    start_run(a, env);
}

/* ---- States ---- */

static void state_free(struct state *st) {
    if (!st) return;
    while (st->runs) {
        struct run *r = st->runs;
        st->runs = r->next;
        bus_envelope_free(r->msg);
        free(r);
    }
    sandbox_free(st->sb);
    free(st);
}

/* Takes st out of the agent (current or retiring), so run_end never frees it. */
static void detach(struct agent *a, struct state *st) {
    if (st == a->cur) {
        a->cur = NULL;
        return;
    }
    struct state **p = &a->retiring;
    while (*p && *p != st) p = &(*p)->next;
    if (*p) *p = st->next;
    st->next = NULL;
}

/* Ends every run of the detached state st, answering `failure` (err) for each request, and frees st. */
static void abandon(struct agent *a, struct state *st, const char *err) {
    while (st->runs) {
        struct run *r = st->runs;
        run_failed(a, r, err);
        run_end(a, r);
    }
    state_free(st);
}

/* Crashes of a within CRASH_WINDOW seconds of now. Caller holds a->mu. */
static int recent_crashes(const struct agent *a, double now) {
    int recent = 0;
    for (int k = 0; k < DEGRADED_CRASHES; k++)
        if (a->crashes_at[k] > 0 && now - a->crashes_at[k] < CRASH_WINDOW) recent++;
    return recent;
}

/* One more crash in a row: the wait before the next rebuild, doubling from BACKOFF_MIN up to
 * BACKOFF_MAX. Caller holds a->mu. */
static double next_backoff(struct agent *a) {
    a->crash_count++;
    double backoff = BACKOFF_MIN * pow(2, a->crash_count - 1);
    return backoff > BACKOFF_MAX ? BACKOFF_MAX : backoff;
}

static void crash(struct agent *a, struct state *st, const char *err) {
    double now = now_mono();
    int was_current = st == a->cur;
    detach(a, st);
    double backoff = 0;
    if (was_current) {
        /* Counted before the runs are answered: whoever gets a failure sees the restart. */
        pthread_mutex_lock(&a->mu);
        /* A crash after a quiet window starts the backoff over. */
        double last = a->restarts ? a->crashes_at[a->restarts % DEGRADED_CRASHES] : 0;
        if (last > 0 && now - last >= CRASH_WINDOW) a->crash_count = 0;
        a->restarts++;
        a->crashes_at[a->restarts % DEGRADED_CRASHES] = now;
        a->status = recent_crashes(a, now) >= DEGRADED_CRASHES ? ST_DEGRADED : ST_RESTARTING;
        backoff = next_backoff(a);
        pthread_mutex_unlock(&a->mu);
    }
    abandon(a, st, err);
    if (!was_current) return;
    pthread_mutex_lock(&a->mu);
    snprintf(a->last_error, sizeof a->last_error, "%s", err);
    pthread_mutex_unlock(&a->mu);
    log_error("agent '%s': state closed (%s); rebuilding in %.1f s", a->name, err, backoff);
    struct timer t = {.when = now + backoff, .kind = IT_RESTART, .agent = a};
    add_timer(a->rt, &t);
}

/* Pushes require("orrery.agent"). */
static const char SDK_CHUNK[] = "return require('orrery.agent')";

/* Runs the SDK's describe(module) as a run of its own and fills info. */
static int describe(struct state *st, struct agents_info *info, char *err, size_t errlen) {
    lua_State *L = sandbox_state(st->sb);
    int base = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->sdk_ref);
    lua_getfield(L, -1, "describe");
    lua_remove(L, -2);
    int ref;
    lua_State *co = sandbox_thread_new(st->sb, &ref, err, errlen);
    if (!co) return -1;
    lua_settop(L, base);
    if (!lua_checkstack(co, 2)) {
        sandbox_unref(st->sb, ref);
        snprintf(err, errlen, "script.memory_limit: not enough memory");
        return -1;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, st->module_ref);
    long instr = 0;
    int nres;
    int status = sandbox_resume(st->sb, co, 1, &instr, &nres, err, errlen);
    int rc = -1;
    if (status == SANDBOX_OK && nres == 4 && lua_type(co, -4) == LUA_TSTRING && lua_type(co, -3) == LUA_TSTRING &&
        lua_type(co, -2) == LUA_TSTRING && lua_type(co, -1) == LUA_TSTRING) {
        const char *name = lua_tostring(co, -4);
        snprintf(info->name, sizeof info->name, "%s", name ? name : "");
        info->description = strdup(lua_tostring(co, -3));
        info->capabilities_json = strdup(lua_tostring(co, -2));
        info->subscribes_json = strdup(lua_tostring(co, -1));
        if (info->description && info->capabilities_json && info->subscribes_json)
            rc = 0;
        else
            snprintf(err, errlen, "out of memory");
    } else if (status == SANDBOX_YIELD) {
        snprintf(err, errlen, "the agent's table cannot be read without waiting");
    } else if (status == SANDBOX_OK) {
        snprintf(err, errlen, "describe returned %d values", nres);
    } else {
        /* "script.error: <message>\nstack..." -> "<message>" */
        const char *p = strstr(err, ": ");
        char tmp[512];
        snprintf(tmp, sizeof tmp, "%.*s", (int)strcspn(p ? p + 2 : err, "\n"), p ? p + 2 : err);
        snprintf(err, errlen, "%s", tmp);
    }
    lua_settop(co, 0);
    sandbox_unref(st->sb, ref);
    return rc;
}

static int ref_top(lua_State *L) {
    lua_pushvalue(L, 1);
    lua_pushinteger(L, luaL_ref(L, LUA_REGISTRYINDEX));
    return 1;
}

/* Pops the value on top of sb's main stack into the registry. LUA_NOREF when out of memory. */
static int ref_pop(struct sandbox *sb) {
    lua_State *L = sandbox_state(sb);
    int ref = LUA_NOREF;
    if (lua_checkstack(L, 3)) {
        lua_pushcfunction(L, ref_top);
        lua_rotate(L, -2, 1);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) ref = (int)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    return ref;
}

/* Refs orrery.json.encode/decode of the state (the hidden tables behind the proxies). */
static int json_refs(lua_State *L) {
    struct state *st = lua_touserdata(L, 1);
    lua_getglobal(L, "orrery");
    lua_getfield(L, -1, "json");
    lua_getfield(L, -1, "encode");
    st->encode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_getfield(L, -1, "decode");
    st->decode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Reads, raw and once per state, what the runtime takes from the SDK: dispatch, and for the hidden
 * metatable of every ctx the SDK's ctx_meta.__index (a function or a table), with the SDK's table
 * itself for getmetatable. Scripts never reach the hidden one, and it never has a __gc, so nothing
 * they do to the SDK's table reaches the ctx objects: the same guarantee as the sandbox's
 * setmetatable snapshots. */
static int sdk_refs(lua_State *L) {
    struct state *st = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, st->sdk_ref); /* index 2 */
    if (lua_type(L, -1) != LUA_TTABLE) return luaL_error(L, "the SDK is not a table");
    lua_pushliteral(L, "ctx_meta");
    if (lua_rawget(L, -2) != LUA_TTABLE) return luaL_error(L, "ctx_meta is not a table");
    lua_createtable(L, 0, 2);
    lua_pushliteral(L, "__index");
    lua_pushliteral(L, "__index");
    int t = lua_rawget(L, -4);
    if (t != LUA_TFUNCTION && t != LUA_TTABLE) return luaL_error(L, "ctx_meta.__index is not a function or a table");
    lua_rawset(L, -3);
    lua_pushliteral(L, "__metatable");
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    st->ctxmeta_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushliteral(L, "dispatch"); /* read once: every message calls it */
    if (lua_rawget(L, 2) != LUA_TFUNCTION) return luaL_error(L, "dispatch is not a function");
    st->dispatch_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* A state for source, loaded and described. NULL with err ("chunk:LINE: message" or a check). */
static struct state *state_build(struct agents *rt, const char *chunkname, const char *source, size_t len,
                                 struct agents_info *info, char *err, size_t errlen) {
    struct state *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->module_ref = st->sdk_ref = st->encode_ref = st->decode_ref = st->ctxmeta_ref = st->dispatch_ref = LUA_NOREF;
    char e[4096];
    st->sb = sandbox_new(&rt->cfg.limits, e, sizeof e);
    if (!st->sb) {
        snprintf(err, errlen, "%s", e);
        free(st);
        return NULL;
    }
    lua_State *L = sandbox_state(st->sb);
    *(struct state **)lua_getextraspace(L) = st; /* every thread made from now on inherits it */
    if (sandbox_add_global(st->sb, "orrery", agents_lua_build, st, e, sizeof e) ||
        sandbox_add_global(st->sb, "require", agents_lua_require_build, rt->lib_dir, e, sizeof e)) {
        snprintf(err, errlen, "%s", e);
        goto fail;
    }
    lua_pushcfunction(L, json_refs);
    lua_pushlightuserdata(L, st);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        lua_pop(L, 1);
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (sandbox_run(st->sb, "=orrery.agent", SDK_CHUNK, sizeof SDK_CHUNK - 1, 1, e, sizeof e) != SANDBOX_OK) {
        snprintf(err, errlen, "the agent SDK (lib/orrery/agent.lua) did not load: %s", e);
        goto fail;
    }
    if ((st->sdk_ref = ref_pop(st->sb)) == LUA_NOREF) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    lua_pushcfunction(L, sdk_refs);
    lua_pushlightuserdata(L, st);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "the agent SDK is not usable: %s",
                 lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "out of memory");
        lua_pop(L, 1);
        goto fail;
    }
    int status = sandbox_run(st->sb, chunkname, source, len, 1, e, sizeof e);
    if (status != SANDBOX_OK) {
        /* "script.syntax: [string "x"]:3: ..." -> "x:3: ..." with Lua's own chunk naming */
        const char *msg = strstr(e, ": ");
        snprintf(err, errlen, "%s", msg ? msg + 2 : e);
        goto fail;
    }
    if ((st->module_ref = ref_pop(st->sb)) == LUA_NOREF) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (describe(st, info, err, errlen) != 0) goto fail;
    return st;
fail:
    state_free(st);
    return NULL;
}

void agents_info_clear(struct agents_info *info) {
    free(info->description);
    free(info->capabilities_json);
    free(info->subscribes_json);
    memset(info, 0, sizeof *info);
}

int agents_check(struct agents *rt, const char *chunkname, const char *source, size_t len,
                 struct agents_info *info, char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    struct state *st = state_build(rt, chunkname, source, len, info, err, errlen);
    if (!st) {
        agents_info_clear(info);
        return -1;
    }
    state_free(st);
    return 0;
}

/* Subscribes a to every pattern of the JSON array text (and unsubscribes those of old not in it). */
static void resubscribe(struct agents *rt, struct agent *a, const char *old_json, const char *new_json) {
    json_t *old = old_json ? json_loads(old_json, 0, NULL) : NULL;
    json_t *cur = json_loads(new_json, 0, NULL);
    size_t i;
    json_t *v;
    json_array_foreach(old, i, v) bus_unsubscribe(rt->bus, a->name, json_string_value(v));
    json_array_foreach(cur, i, v) {
        if (bus_subscribe(rt->bus, a->name, json_string_value(v)) != BUS_OK)
            log_warn("agent '%s': cannot subscribe to '%s'", a->name, json_string_value(v));
    }
    json_decref(old);
    json_decref(cur);
}

/* Installs st as the agent's current state (the worker holding a, or before any worker saw it). */
static void install(struct agent *a, struct state *st) {
    st->agent = a;
    if (a->cur) {
        if (a->cur->live > 0) {
            a->cur->next = a->retiring;
            a->retiring = a->cur;
        } else {
            state_free(a->cur);
        }
    }
    a->cur = st;
}

static int copy_source(struct agent *a, const char *chunkname, const char *source, size_t len) {
    char *src = malloc(len + 1);
    if (!src) return -1;
    memcpy(src, source, len);
    src[len] = '\0';
    free(a->source);
    a->source = src;
    a->source_len = len;
    snprintf(a->chunkname, sizeof a->chunkname, "%s", chunkname);
    return 0;
}

int agents_load(struct agents *rt, const char *chunkname, const char *source, size_t len, long version,
                char name_out[BUS_NAME_MAX + 1], char *err, size_t errlen) {
    struct agents_info info;
    memset(&info, 0, sizeof info);
    struct state *st = state_build(rt, chunkname, source, len, &info, err, errlen);
    if (!st) {
        agents_info_clear(&info);
        return -1;
    }
    st->version = version;
    if (name_out) snprintf(name_out, BUS_NAME_MAX + 1, "%s", info.name);

    pthread_mutex_lock(&rt->load_mu);
    struct agent *a = find_agent(rt, info.name);
    int fresh = !a;
    if (fresh) {
        a = calloc(1, sizeof *a);
        if (!a) goto oom;
        snprintf(a->name, sizeof a->name, "%s", info.name);
        a->rt = rt;
        a->free_slot = -1;
        pthread_mutex_init(&a->mu, NULL);
    }
    int rc = a->removed || fresh
                 ? bus_register(rt->bus, info.name, info.description, info.capabilities_json, err, errlen)
                 : bus_describe(rt->bus, info.name, info.description, info.capabilities_json, err, errlen);
    if (rc != BUS_OK) {
        if (fresh) {
            pthread_mutex_destroy(&a->mu);
            free(a);
        }
        pthread_mutex_unlock(&rt->load_mu);
        state_free(st);
        agents_info_clear(&info);
        return -1;
    }
    resubscribe(rt, a, a->removed ? NULL : a->subscribes_json, info.subscribes_json);

    pthread_mutex_lock(&a->mu);
    free(a->description);
    free(a->capabilities_json);
    free(a->subscribes_json);
    a->description = info.description;
    a->capabilities_json = info.capabilities_json;
    a->subscribes_json = info.subscribes_json;
    info.description = info.capabilities_json = info.subscribes_json = NULL;
    a->version = version;
    a->status = ST_RUNNING;
    a->crash_count = 0;
    memset(a->crashes_at, 0, sizeof a->crashes_at);
    a->last_error[0] = '\0';
    a->removed = 0;
    pthread_mutex_unlock(&a->mu);

    if (fresh) {
        if (copy_source(a, chunkname, source, len)) goto oom_registered;
        install(a, st);
        pthread_rwlock_wrlock(&rt->reg_lock);
        a->next_all = rt->agents;
        rt->agents = a;
        pthread_rwlock_unlock(&rt->reg_lock);
        if (bus_depth(rt->bus, a->name) > 0) schedule(a);
    } else {
        /* The worker holding the agent swaps it in; the source goes with it. */
        struct item *it = calloc(1, sizeof *it);
        struct swap *sw = calloc(1, sizeof *sw);
        char *src = malloc(len + 1);
        if (!it || !sw || !src) {
            free(it);
            free(sw);
            free(src);
            goto oom_registered;
        }
        memcpy(src, source, len);
        src[len] = '\0';
        sw->st = st;
        sw->src = src;
        sw->len = len;
        snprintf(sw->chunk, sizeof sw->chunk, "%s", chunkname);
        it->kind = IT_SWAP;
        it->data = sw;
        push_item(a, it);
    }
    pthread_mutex_unlock(&rt->load_mu);
    agents_info_clear(&info);
    return 0;

oom_registered:
    pthread_mutex_unlock(&rt->load_mu);
    state_free(st);
    agents_info_clear(&info);
    snprintf(err, errlen, "out of memory");
    return -1;
oom:
    pthread_mutex_unlock(&rt->load_mu);
    state_free(st);
    agents_info_clear(&info);
    snprintf(err, errlen, "out of memory");
    return -1;
}

int agents_unload(struct agents *rt, const char *name) {
    pthread_mutex_lock(&rt->load_mu);
    struct agent *a = find_agent(rt, name);
    int rc = -1;
    if (a) {
        pthread_mutex_lock(&a->mu);
        int was = a->removed;
        a->removed = 1;
        pthread_mutex_unlock(&a->mu);
        if (!was) {
            bus_unregister(rt->bus, name);
            struct item *it = calloc(1, sizeof *it);
            if (it) {
                it->kind = IT_UNLOAD;
                push_item(a, it);
            }
            rc = 0;
        }
    }
    pthread_mutex_unlock(&rt->load_mu);
    return rc;
}

/* ---- Items ---- */

static void rebuild(struct agent *a) {
    char err[1024];
    struct agents_info info;
    memset(&info, 0, sizeof info);
    struct state *st = a->source ? state_build(a->rt, a->chunkname, a->source, a->source_len, &info, err, sizeof err)
                                 : NULL;
    agents_info_clear(&info);
    if (!st) {
        /* Try again later, as after a crash. */
        log_error("agent '%s': rebuild failed: %s", a->name, a->source ? err : "no source");
        pthread_mutex_lock(&a->mu);
        double backoff = next_backoff(a);
        snprintf(a->last_error, sizeof a->last_error, "rebuild failed: %.480s", a->source ? err : "no source");
        pthread_mutex_unlock(&a->mu);
        struct timer t = {.when = now_mono() + backoff, .kind = IT_RESTART, .agent = a};
        add_timer(a->rt, &t);
        return;
    }
    pthread_mutex_lock(&a->mu);
    st->version = a->version;
    if (a->status == ST_RESTARTING) a->status = ST_RUNNING;
    pthread_mutex_unlock(&a->mu);
    install(a, st);
    log_info("agent '%s': rebuilt", a->name);
}

static void run_item(struct agent *a, struct item *it) {
    switch (it->kind) {
    case IT_COMPLETE: {
        struct run *r = run_get(a, it->run_id);
        if (!r || !r->waiting || r->wait_seq != it->wait_seq) break; /* stale: dropped below */
        r->wait_reply[0] = '\0';
        int n = push_to(r->st, r->co, it->push, it->data);
        if (n < 0) {
            crash(a, r->st, "script.memory_limit: not enough memory to resume");
            break;
        }
        resume(a, r, n);
        break;
    }
    case IT_ABANDON: {
        struct run *r = run_get(a, it->run_id);
        if (!r) break;
        char err[128];
        snprintf(err, sizeof err, "script.timeout: the handler did not finish within %g s", a->rt->cfg.run_timeout);
        run_failed(a, r, err);
        run_end(a, r);
        break;
    }
    case IT_SWAP: {
        struct swap *sw = it->data;
        if (!a->removed) {
            install(a, sw->st);
            free(a->source);
            a->source = sw->src;
            a->source_len = sw->len;
            snprintf(a->chunkname, sizeof a->chunkname, "%s", sw->chunk);
        } else {
            state_free(sw->st);
            free(sw->src);
        }
        free(sw);
        it->data = NULL;
        break;
    }
    case IT_RESTART:
        if (!a->cur && !a->removed) rebuild(a);
        break;
    case IT_UNLOAD:
        if (a->removed) {
            while (a->retiring) {
                struct state *st = a->retiring;
                detach(a, st);
                abandon(a, st, "stopped: the agent was unloaded");
            }
            if (a->cur) {
                struct state *st = a->cur;
                detach(a, st);
                abandon(a, st, "stopped: the agent was unloaded");
            }
        }
        break;
    }
    item_free(it);
}

static void process(struct agent *a) {
    struct agents *rt = a->rt;
    for (int n = 0; n < BATCH; n++) {
        struct item *it = pop_item(a);
        if (it) {
            run_item(a, it);
            continue;
        }
        if (!a->cur || a->removed || atomic_load(&a->live) >= rt->cfg.max_runs) break;
        struct bus_envelope *env;
        if (bus_take(rt->bus, a->name, &env) != BUS_OK) break;
        handle_envelope(a, env);
    }
    pthread_mutex_lock(&a->mu);
    int more = a->items != NULL || a->wake ||
               (a->cur && !a->removed && atomic_load(&a->live) < rt->cfg.max_runs && bus_depth(rt->bus, a->name) > 0);
    a->wake = 0;
    if (!more) a->scheduled = 0;
    pthread_mutex_unlock(&a->mu);
    if (more) enqueue(rt, a);
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *worker_main(void *arg) {
    struct worker *w = arg;
    struct agents *rt = w->rt;
    for (;;) {
        pthread_mutex_lock(&rt->q_mu);
        while (!rt->q_head && !rt->stopping) pthread_cond_wait(&rt->q_cv, &rt->q_mu);
        if (rt->stopping) {
            pthread_mutex_unlock(&rt->q_mu);
            return NULL;
        }
        struct agent *a = rt->q_head;
        rt->q_head = a->next_ready;
        if (!rt->q_head) rt->q_tail = NULL;
        pthread_mutex_unlock(&rt->q_mu);
        atomic_store(&w->agent, a);
        atomic_store(&w->busy_ns, now_ns());
        process(a);
        atomic_store(&w->busy_ns, 0);
    }
}

static int start_worker(struct agents *rt) {
    pthread_mutex_lock(&rt->w_mu);
    int rc = -1;
    if (rt->nworkers < rt->cap_workers && !rt->stopping) {
        struct worker *w = &rt->workers[rt->nworkers];
        w->rt = rt;
        atomic_init(&w->busy_ns, 0);
        atomic_init(&w->agent, NULL);
        if (pthread_create(&w->tid, NULL, worker_main, w) == 0) {
            rt->nworkers++;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&rt->w_mu);
    return rc;
}

/* The last line against C code no hook can interrupt (a huge table.sort, a table whose keys all
 * collide): a worker that has held one agent for STUCK_FACTOR slices is reported, and another
 * worker is started (up to twice the configured number) so every other agent goes on. The stuck
 * one carries on as an ordinary worker when the call returns. Timer thread only. */
static void watchdog(struct agents *rt) {
    double slice = rt->cfg.limits.seconds > 0 ? rt->cfg.limits.seconds : SANDBOX_DEFAULT_SECONDS;
    long long limit = (long long)((slice * STUCK_FACTOR > STUCK_FLOOR ? slice * STUCK_FACTOR : STUCK_FLOOR) * 1e9);
    long long now = now_ns();
    pthread_mutex_lock(&rt->w_mu);
    int n = rt->nworkers;
    pthread_mutex_unlock(&rt->w_mu);
    for (int i = 0; i < n; i++) {
        struct worker *w = &rt->workers[i];
        long long since = atomic_load(&w->busy_ns);
        if (since == 0 || now - since < limit) {
            w->flagged = 0;
            continue;
        }
        if (w->flagged) continue;
        w->flagged = 1;
        struct agent *a = atomic_load(&w->agent);
        int more = start_worker(rt) == 0;
        log_error("agents: a worker has run agent '%s' for %.1f s inside code that cannot be interrupted; %s",
                  a ? a->name : "?", (double)(now - since) / 1e9,
                  more ? "another worker was started so the other agents go on" : "no more workers can be started");
        if (a) {
            pthread_mutex_lock(&a->mu);
            snprintf(a->last_error, sizeof a->last_error, "stuck: a handler ran %.1f s in uninterruptible code",
                     (double)(now - since) / 1e9);
            pthread_mutex_unlock(&a->mu);
        }
    }
}

/* ---- Waiting ---- */

int agents_wait_begin(lua_State *L, struct agents_token *out) {
    struct state *st = agents_state_of(L);
    if (!st || !st->current || !st->agent) return -1;
    struct run *r = st->current;
    r->wait_seq++;
    out->rt = st->agent->rt;
    out->agent = st->agent;
    out->run_id = r->id;
    out->wait_seq = r->wait_seq;
    return 0;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    return lua_gettop(L) - (int)ctx;
}

int agents_wait_yieldk(lua_State *L, lua_KFunction k) {
    int base = lua_gettop(L);
    lua_pushlightuserdata(L, (void *)&sandbox_host_yield_key);
    return lua_yieldk(L, 1, base, k ? k : wait_k);
}

int agents_wait_yield(lua_State *L) {
    return agents_wait_yieldk(L, NULL);
}

void agents_wait_complete(const struct agents_token *token, int (*push)(lua_State *L, void *data), void *data,
                          void (*drop)(void *data)) {
    struct item *it = calloc(1, sizeof *it);
    if (!it) {
        if (drop) drop(data);
        log_error("agents: out of memory completing a wait");
        return;
    }
    it->kind = IT_COMPLETE;
    it->run_id = token->run_id;
    it->wait_seq = token->wait_seq;
    it->push = push;
    it->drop = drop;
    it->data = data;
    push_item(token->agent, it);
}

void agents_wait_timer(const struct agents_token *token, double seconds, const char *timeout_error) {
    struct timer t = {.when = now_mono() + seconds, .kind = IT_COMPLETE, .agent = token->agent,
                      .run_id = token->run_id, .wait_seq = token->wait_seq, .error = timeout_error};
    if (add_timer(token->rt, &t)) log_error("agents: out of memory arming a timer");
}

/* ---- Sending ---- */

/* The runtime's answer to a client whose request got no reply: `failure` {"error": error}, or for a
 * full mailbox `refuse` {"error": "busy"} (FIPA's refusal: the agent would not take it now). */
static struct bus_envelope *failure_for(const struct bus_envelope *req, const char *error) {
    struct bus_envelope *f = malloc(sizeof *f);
    if (!f) return NULL;
    answer_of(f, strcmp(error, "busy") == 0 ? "refuse" : "failure", req->receiver, req,
              json_pack("{s:s}", "error", error));
    if (bus_envelope_fill(f) != BUS_OK) {
        bus_envelope_free(f);
        return NULL;
    }
    return f;
}

/* Takes the client waiter id out of the list. */
static struct client *client_take(struct agents *rt, unsigned long long id, const char *reply_with) {
    pthread_mutex_lock(&rt->c_mu);
    struct client **p = &rt->clients;
    while (*p && ((*p)->id != id || (reply_with && strcmp((*p)->reply_with, reply_with) != 0))) p = &(*p)->next;
    struct client *c = *p;
    if (c) *p = c->next;
    pthread_mutex_unlock(&rt->c_mu);
    return c;
}

static void client_finish(struct client *c, struct bus_envelope *reply) {
    c->done(c->ud, reply);
    bus_envelope_free(c->request);
    free(c);
}

static void client_fire(struct agents *rt, unsigned long long id, const char *error) {
    struct client *c = client_take(rt, id, NULL);
    if (!c) return;
    client_finish(c, failure_for(c->request, error));
}

/* A reply addressed to "_client": hand it to its waiter. */
static int client_deliver(struct agents *rt, const struct bus_envelope *env) {
    const char *p = env->in_reply_to;
    if (p[0] != 'c') return BUS_UNKNOWN;
    char *end;
    errno = 0;
    unsigned long long id = strtoull(p + 1, &end, 16);
    if (errno || *end != '.') return BUS_UNKNOWN;
    struct client *c = client_take(rt, id, env->in_reply_to);
    if (!c) return BUS_UNKNOWN; /* late (timed out) or forged: nobody waits */
    struct bus_envelope *copy = bus_envelope_copy(env);
    client_finish(c, copy ? copy : failure_for(c->request, "out_of_memory"));
    return BUS_OK;
}

int agents_send(struct agents *rt, struct bus_envelope *env) {
    if (bus_envelope_fill(env) != BUS_OK) return BUS_ERROR;
    if (strcmp(env->receiver, CLIENT) == 0) {
        if (rt->hooks.record) rt->hooks.record(rt->hooks.ud, env, 0);
        return client_deliver(rt, env);
    }
    int rc = bus_send(rt->bus, env);
    if (rt->hooks.record) rt->hooks.record(rt->hooks.ud, env, rc == BUS_OK);
    return rc;
}

int agents_publish(struct agents *rt, struct bus_envelope *env) {
    if (bus_envelope_fill(env) != BUS_OK) return BUS_ERROR;
    int n = bus_publish(rt->bus, env);
    if (n >= 0) {
        if (rt->hooks.record) rt->hooks.record(rt->hooks.ud, env, 0);
        if (rt->hooks.publish) rt->hooks.publish(rt->hooks.ud, env);
    }
    return n;
}

int agents_deliver(struct agents *rt, const struct bus_envelope *env, int remote) {
    struct bus_envelope *copy = bus_envelope_copy(env);
    if (!copy) return BUS_ERROR;
    int rc;
    if (copy->topic[0]) {
        if (remote) {
            if (bus_envelope_fill(copy) != BUS_OK) {
                bus_envelope_free(copy);
                return BUS_ERROR;
            }
            rc = bus_publish(rt->bus, copy);
            if (rc >= 0 && rt->hooks.record) rt->hooks.record(rt->hooks.ud, copy, 0);
        } else {
            rc = agents_publish(rt, copy);
        }
    } else {
        rc = agents_send(rt, copy);
    }
    bus_envelope_free(copy);
    return rc;
}

int agents_request(struct agents *rt, const struct bus_envelope *env, double timeout,
                   void (*done)(void *ud, struct bus_envelope *reply), void *ud) {
    struct client *c = calloc(1, sizeof *c);
    struct bus_envelope *req = bus_envelope_copy(env);
    if (!c || !req) {
        free(c);
        bus_envelope_free(req);
        return -1;
    }
    if (!req->performative[0]) strcpy(req->performative, "request");
    strcpy(req->sender, CLIENT);
    req->topic[0] = '\0';
    req->in_reply_to[0] = '\0';
    char rnd[37];
    if (bus_uuid4(rnd) != BUS_OK || bus_envelope_fill(req) != BUS_OK) {
        free(c);
        bus_envelope_free(req);
        return -1;
    }
    pthread_mutex_lock(&rt->c_mu);
    c->id = ++rt->next_client;
    pthread_mutex_unlock(&rt->c_mu);
    snprintf(c->reply_with, sizeof c->reply_with, "c%llx.%.8s%.4s", c->id, rnd, rnd + 9);
    snprintf(req->reply_with, sizeof req->reply_with, "%s", c->reply_with);
    /* The client keeps its own copy: once req is in the mailbox, the reply can finish (and free)
     * the client on a worker while agents_send is still recording req here. */
    c->request = bus_envelope_copy(req);
    if (!c->request) {
        free(c);
        bus_envelope_free(req);
        return -1;
    }
    c->done = done;
    c->ud = ud;
    pthread_mutex_lock(&rt->c_mu);
    c->next = rt->clients;
    rt->clients = c;
    pthread_mutex_unlock(&rt->c_mu);

    struct timer t = {.when = now_mono() + (timeout > 0 ? timeout : rt->cfg.request_timeout), .kind = TM_CLIENT,
                      .client_id = c->id, .error = "timeout"};
    int rc = agents_send(rt, req);
    bus_envelope_free(req);
    if (rc != BUS_OK) {
        /* Answered from the timer thread, never before this call returns. */
        t.when = 0;
        t.error = rc == BUS_FULL ? "busy" : rc == BUS_UNKNOWN ? "unknown_agent" : "invalid";
    }
    if (add_timer(rt, &t)) {
        struct client *mine = client_take(rt, t.client_id, NULL);
        if (mine) {
            bus_envelope_free(mine->request);
            free(mine);
            return -1;
        }
    }
    return 0;
}

/* ---- Status ---- */

static const char *status_name(enum agent_status s) {
    return s == ST_RUNNING ? "running" : s == ST_RESTARTING ? "restarting" : "degraded";
}

/* a's status now: degraded ends once it has run a window without crashing. Caller holds a->mu. */
static enum agent_status current_status(struct agent *a) {
    if (a->status == ST_DEGRADED && recent_crashes(a, now_mono()) < DEGRADED_CRASHES && a->cur)
        a->status = ST_RUNNING;
    return a->status;
}

static json_t *status_of(struct agents *rt, struct agent *a) {
    pthread_mutex_lock(&a->mu);
    current_status(a);
    json_t *caps = a->capabilities_json ? json_loads(a->capabilities_json, 0, NULL) : NULL;
    json_t *subs = a->subscribes_json ? json_loads(a->subscribes_json, 0, NULL) : NULL;
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:I, s:i, s:I, s:I, s:I, s:s*, s:o, s:o}", "name", a->name,
                          "description", a->description ? a->description : "", "version", (json_int_t)a->version,
                          "status", status_name(a->status), "mailbox", (json_int_t)bus_depth(rt->bus, a->name),
                          "runs", atomic_load(&a->live), "handled", (json_int_t)atomic_load(&a->handled),
                          "failed", (json_int_t)atomic_load(&a->failed), "restarts", (json_int_t)a->restarts,
                          "last_error", a->last_error[0] ? a->last_error : NULL,
                          "capabilities", caps ? caps : json_array(), "subscribes", subs ? subs : json_array());
    pthread_mutex_unlock(&a->mu);
    return o;
}

static int by_name(const void *x, const void *y) {
    return strcmp(json_string_value(json_object_get(*(json_t *const *)x, "name")),
                  json_string_value(json_object_get(*(json_t *const *)y, "name")));
}

json_t *agents_status(struct agents *rt) {
    json_t *arr = json_array();
    pthread_rwlock_rdlock(&rt->reg_lock);
    for (struct agent *a = rt->agents; a; a = a->next_all) {
        if (a->removed) continue;
        json_t *o = status_of(rt, a);
        if (o) json_array_append_new(arr, o);
    }
    pthread_rwlock_unlock(&rt->reg_lock);
    size_t n = json_array_size(arr);
    json_t **items = malloc((n ? n : 1) * sizeof *items);
    if (items) {
        for (size_t i = 0; i < n; i++) items[i] = json_incref(json_array_get(arr, i));
        qsort(items, n, sizeof *items, by_name);
        json_array_clear(arr);
        for (size_t i = 0; i < n; i++) json_array_append_new(arr, items[i]);
        free(items);
    }
    return arr;
}

json_t *agents_status_one(struct agents *rt, const char *name) {
    struct agent *a = find_agent(rt, name);
    return a && !a->removed ? status_of(rt, a) : NULL;
}

int agents_degraded(struct agents *rt) {
    int n = 0;
    pthread_rwlock_rdlock(&rt->reg_lock);
    for (struct agent *a = rt->agents; a; a = a->next_all) {
        if (a->removed) continue;
        pthread_mutex_lock(&a->mu);
        n += current_status(a) == ST_DEGRADED;
        pthread_mutex_unlock(&a->mu);
    }
    pthread_rwlock_unlock(&rt->reg_lock);
    return n;
}

/* ---- Life ---- */

struct agents *agents_new(const struct agents_config *cfg, char *err, size_t errlen) {
    struct agents *rt = calloc(1, sizeof *rt);
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    rt->cfg = *cfg;
    if (rt->cfg.workers < 1) rt->cfg.workers = 1;
    if (rt->cfg.run_timeout <= 0) rt->cfg.run_timeout = DEFAULT_RUN_TIMEOUT;
    if (rt->cfg.max_runs <= 0) rt->cfg.max_runs = DEFAULT_MAX_RUNS;
    if (rt->cfg.request_timeout <= 0) rt->cfg.request_timeout = DEFAULT_REQUEST_TIMEOUT;
    rt->lib_dir = strdup(cfg->lib_dir ? cfg->lib_dir : "lib");
    rt->cfg.lib_dir = rt->lib_dir;
    rt->bus = bus_new(cfg->mailbox ? cfg->mailbox : DEFAULT_MAILBOX);
    if (!rt->lib_dir || !rt->bus) {
        free(rt->lib_dir);
        bus_free(rt->bus);
        free(rt);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_rwlock_init(&rt->reg_lock, NULL);
    pthread_mutex_init(&rt->load_mu, NULL);
    pthread_mutex_init(&rt->q_mu, NULL);
    pthread_cond_init(&rt->q_cv, NULL);
    pthread_mutex_init(&rt->c_mu, NULL);
    pthread_mutex_init(&rt->t_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&rt->t_cv, &ca);
    pthread_condattr_destroy(&ca);
    bus_set_notify(rt->bus, on_notify, rt);

    pthread_mutex_init(&rt->w_mu, NULL);
    rt->cap_workers = rt->cfg.workers * 2;
    rt->workers = calloc((size_t)rt->cap_workers, sizeof *rt->workers);
    if (!rt->workers) {
        snprintf(err, errlen, "out of memory");
        agents_free(rt);
        return NULL;
    }
    for (int i = 0; i < rt->cfg.workers; i++) {
        if (start_worker(rt) != 0) {
            snprintf(err, errlen, "cannot start the runtime's threads: %s", strerror(errno));
            agents_free(rt);
            return NULL;
        }
    }
    if (pthread_create(&rt->timer_thread, NULL, timer_main, rt) != 0) {
        snprintf(err, errlen, "cannot start the runtime's threads");
        agents_free(rt);
        return NULL;
    }
    rt->timer_started = 1;
    return rt;
}

void agents_stop(struct agents *rt) {
    if (!rt || rt->stopped) return;
    rt->stopped = 1;
    pthread_mutex_lock(&rt->q_mu);
    rt->stopping = 1;
    pthread_cond_broadcast(&rt->q_cv);
    pthread_mutex_unlock(&rt->q_mu);
    pthread_mutex_lock(&rt->t_mu);
    pthread_cond_broadcast(&rt->t_cv);
    pthread_mutex_unlock(&rt->t_mu);
    /* The timer thread (the watchdog) may start workers: join it first. */
    if (rt->timer_started) pthread_join(rt->timer_thread, NULL);
    pthread_mutex_lock(&rt->w_mu);
    int n = rt->nworkers;
    pthread_mutex_unlock(&rt->w_mu);
    for (int i = 0; i < n; i++) pthread_join(rt->workers[i].tid, NULL);
}

void agents_free(struct agents *rt) {
    if (!rt) return;
    agents_stop(rt);
    free(rt->workers);

    /* Waiters from outside get their answer. */
    while (rt->clients) {
        struct client *c = rt->clients;
        rt->clients = c->next;
        client_finish(c, failure_for(c->request, "stopped"));
    }
    struct agent *a = rt->agents;
    while (a) {
        struct agent *next = a->next_all;
        while (a->items) {
            struct item *it = a->items;
            a->items = it->next;
            if (it->kind == IT_SWAP) {
                struct swap *sw = it->data;
                state_free(sw->st);
                free(sw->src);
                free(sw);
                it->data = NULL;
            }
            item_free(it);
        }
        state_free(a->cur);
        while (a->retiring) {
            struct state *st = a->retiring;
            a->retiring = st->next;
            state_free(st);
        }
        free(a->slots);
        free(a->source);
        free(a->description);
        free(a->capabilities_json);
        free(a->subscribes_json);
        pthread_mutex_destroy(&a->mu);
        free(a);
        a = next;
    }
    free(rt->heap);
    bus_free(rt->bus);
    free(rt->lib_dir);
    pthread_rwlock_destroy(&rt->reg_lock);
    pthread_mutex_destroy(&rt->load_mu);
    pthread_mutex_destroy(&rt->q_mu);
    pthread_cond_destroy(&rt->q_cv);
    pthread_mutex_destroy(&rt->c_mu);
    pthread_mutex_destroy(&rt->t_mu);
    pthread_cond_destroy(&rt->t_cv);
    pthread_mutex_destroy(&rt->w_mu);
    free(rt);
}
