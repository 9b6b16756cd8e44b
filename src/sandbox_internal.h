/* sandbox_internal — private to the sandbox's three files: sandbox.c (the state, its memory cap,
 * the count hook and runs), sandbox_lib.c (the libraries scripts see, read-only, with the wrappers
 * that keep C code bounded) and sandbox_match.c (metered pattern matching). Not for other units:
 * the public API is sandbox.h. */
#ifndef ORRERY_SANDBOX_INTERNAL_H
#define ORRERY_SANDBOX_INTERNAL_H

#include <stddef.h>

#include <lua.h>

struct sandbox {
    lua_State *L;
    size_t used, cap;  /* bytes held, the cap */
    long instr_limit;  /* per run */
    double seconds;    /* per run */
    /* per run, reset by each sandbox_run */
    int running;
    int killed;        /* 0, SANDBOX_INSTRUCTIONS or SANDBOX_TIMEOUT */
    int mem_refused;   /* the allocator refused a block during this run */
    int mem_error;     /* the error that ended the run was such a refusal */
    long instr_used;
    double deadline;
    char where[160];   /* where the kill struck: " (at chunk:line)" */
};

/* ---- sandbox.c ---- */

/* The sandbox of a state, or NULL when the state is not a sandbox's. */
struct sandbox *sandbox_of(lua_State *L);

/* Gives thread L the hook it should carry now: none outside a run, every HOOK_EVERY instructions
 * during one, every instruction once the run is killed. */
void sandbox_arm(lua_State *L, const struct sandbox *sb);

/* Adds units to the current run's instruction count and checks the deadline. When the run is
 * killed, or now breaks its budget or deadline, this raises (does not return). Outside a run, or
 * in a state that is not a sandbox's, it does nothing. */
void sandbox_charge(lua_State *L, long units);

/* ---- sandbox_lib.c ---- */

/* lua_CFunction, run protected on a fresh state: opens the allowed libraries behind read-only
 * proxies and makes the hidden globals table the state's globals. */
int sandbox_lib_setup(lua_State *L);

/* Pushes a fresh environment for one run (_G is itself, writes raise) and makes it the default
 * environment of load() until sandbox_lib_clear_env. Allocates: call it protected. */
void sandbox_lib_push_env(lua_State *L);

/* lua_CFunction, run protected: sets the hidden global named by arg 1 to a read-only proxy of the
 * table at arg 2 (and of the tables it holds, one level down). */
int sandbox_lib_add_global(lua_State *L);

/* lua_CFunction, run protected: marks the thread at arg 1 as the host's (scripts cannot resume or
 * close it). */
int sandbox_lib_mark_host(lua_State *L);

/* Forgets the run's environment. Needs one free stack slot; never allocates. */
void sandbox_lib_clear_env(lua_State *L);

/* ---- sandbox_match.c ---- */

/* Sets find, match, gmatch and gsub in the table at idx to the metered matcher. */
void sandbox_match_install(lua_State *L, int idx);

#endif
