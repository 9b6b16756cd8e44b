/* sandbox — the Lua 5.4 state that agents and workflows run in, and the limits of each run.
 * A sandbox is one lua_State built from an allow-list (base minus the file and bytecode loaders,
 * string minus dump, table, math, utf8, coroutine, os.time/clock/date), whose globals and library
 * tables are read-only, with a counting lua_Alloc that caps the state's memory. Each run gets a
 * fresh environment table, an instruction budget and a wall-clock deadline (a count hook that,
 * once it kills a run, fires on every instruction so pcall cannot swallow the kill), and pattern
 * matching that bounds its own work. See docs/sandbox.md for the rules and what is not stopped.
 * A sandbox is touched by one thread at a time; different sandboxes are independent.
 * Implemented by sandbox.c (state, limits, runs), sandbox_lib.c (what scripts see) and
 * sandbox_match.c (patterns), which share sandbox_internal.h; uses Lua 5.4 only. */
#ifndef ORRERY_SANDBOX_H
#define ORRERY_SANDBOX_H

#include <stddef.h>

#include <lua.h>

/* Zero fields take the defaults below. */
struct sandbox_limits {
    size_t memory_bytes; /* cap on the bytes the state holds, for its whole life */
    long instructions;   /* per run: VM instructions (counted per 1000) plus C work charged to it */
    double seconds;      /* per run: wall clock, CLOCK_MONOTONIC */
};

#define SANDBOX_DEFAULT_MEMORY ((size_t)64 << 20)
#define SANDBOX_DEFAULT_INSTRUCTIONS 100000000L
#define SANDBOX_DEFAULT_SECONDS 5.0

/* What sandbox_run returns; err then starts with the code in the comment. */
enum sandbox_status {
    SANDBOX_OK = 0,
    SANDBOX_ERROR,        /* "script.error: <message>\nstack traceback: ..." */
    SANDBOX_SYNTAX,       /* "script.syntax: [string \"name\"]:LINE: ..." (nothing ran) */
    SANDBOX_INSTRUCTIONS, /* "script.instruction_limit: ..." */
    SANDBOX_TIMEOUT,      /* "script.timeout: ..." */
    SANDBOX_MEMORY,       /* "script.memory_limit: ..." — rebuild: sandbox_free + sandbox_new */
    SANDBOX_BUSY,         /* "script.error: sandbox is already running" (a run inside a run) */
    SANDBOX_YIELD,        /* sandbox_resume only: the coroutine yielded (not an error) */
};

struct sandbox;

/* A fresh sandbox with the given limits (NULL: all defaults). NULL with a message in err when the
 * memory cap cannot hold the libraries or the system is out of memory. Free with sandbox_free. */
struct sandbox *sandbox_new(const struct sandbox_limits *limits, char *err, size_t errlen);

/* Closes the state (with a hook armed and a short deadline) and frees everything. Accepts NULL. */
void sandbox_free(struct sandbox *sb);

/* Compiles source (text only) as chunkname and runs it in a fresh read-only environment under
 * the limits. On SANDBOX_OK its nresults results (LUA_MULTRET: all) are on top of
 * sandbox_state(sb)'s stack, for the caller to read and pop; on failure nothing is left there and
 * err holds "<code>: <message>". After any result the state is ready for the next run — except
 * SANDBOX_MEMORY, after which the caller should rebuild it (it still works, but a long-lived
 * state that filled its cap will fill it again). */
int sandbox_run(struct sandbox *sb, const char *chunkname, const char *source, size_t len, int nresults,
                char *err, size_t errlen);

/* The state, to read the results of a run. Do not run Lua code in it outside sandbox_run. */
lua_State *sandbox_state(struct sandbox *sb);

/* Bytes the state holds now. */
size_t sandbox_memory(const struct sandbox *sb);

/* Adds a global `name` to every later run: the function build(L, ud) pushes, or a read-only view of
 * the table it pushes (tables it holds are read-only too). Call after sandbox_new, before running scripts. 0, or -1 with err. */
int sandbox_add_global(struct sandbox *sb, const char *name, void (*build)(lua_State *L, void *ud), void *ud,
                       char *err, size_t errlen);

/* ---- Coroutines the host drives (agent handlers) ----
 * A host function that must wait yields `&sandbox_host_yield_key` (light userdata) as its first
 * value; inside a script's own coroutines such a yield is passed up to the host's thread and the
 * answer passed back down, so waiting works at any depth. */
extern const char sandbox_host_yield_key;

/* Creates a coroutine in the state that scripts cannot resume or close, with the function at the top
 * of the main thread's stack (popped) as its body; anchors it in the registry (*ref, for luaL_unref
 * through sandbox_unref). NULL with err when memory runs out. */
lua_State *sandbox_thread_new(struct sandbox *sb, int *ref, char *err, size_t errlen);
/* Drops a reference made by sandbox_thread_new or sandbox_ref. */
void sandbox_unref(struct sandbox *sb, int ref);

/* Resumes co (made by sandbox_thread_new) with the nargs values on its stack, under the limits:
 * *instructions carries the run's count across resumes (in and out); the wall-clock limit applies to
 * this slice. Returns SANDBOX_OK (finished: results on co's stack, *nres of them), SANDBOX_YIELD
 * (*nres yielded values on co's stack) or an error status with err as sandbox_run (the coroutine is
 * then dead; a traceback of where it failed is in err). */
int sandbox_resume(struct sandbox *sb, lua_State *co, int nargs, long *instructions, int *nres, char *err,
                   size_t errlen);

/* Whether the state is inside a run or resume (host functions use it to refuse calls outside one). */
int sandbox_running(const struct sandbox *sb);

/* The stable code of a status ("script.timeout"), "ok" for SANDBOX_OK. */
const char *sandbox_status_code(int status);

#endif
