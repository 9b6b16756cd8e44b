/* sandbox — see sandbox.h; the rules and their reasons are in docs/sandbox.md. This file owns the
 * state, its memory cap, the count hook and runs; sandbox_lib.c builds what scripts see and
 * sandbox_match.c matches patterns.
 *
 * How the pieces fit:
 * - The allocator's userdata is the struct sandbox, so any C function or hook finds its sandbox
 *   with lua_getallocf, and a state that is not a sandbox's is recognised by its allocator.
 * - A run is one lua_pcall of a C function that compiles, builds the run's environment and calls
 *   the chunk under a message handler: everything that allocates is protected, so hitting the
 *   memory cap is an error and never a panic.
 * - The count hook fires every HOOK_EVERY instructions. When the budget or the deadline is broken
 *   it marks the run killed and re-arms itself with count 1 (and the line hook) on the running
 *   thread and the main thread, so every further instruction raises: pcall can delay the end by an
 *   instruction, not prevent it. The result is decided by the killed flag, not the Lua status.
 * - Growing a block by BIG_BLOCK bytes or more checks the deadline too, and a killed run gets no
 *   more big blocks: instructions that copy megabytes cannot stretch the time between hooks.
 * - Lua runs __gc metamethods, and handlers of errors raised in a hook, with hooks off:
 *   sandbox_lib.c makes sure no script code ever runs there. */
#include "sandbox.h"
#include "lua_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>

#include "lua_core.h"
#include "sandbox_internal.h"

#define HOOK_EVERY 1000
#define BIG_BLOCK (64 * 1024)
#define CLOSE_SECONDS 0.1

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Memory ---- */

/* Counts every block; refuses any growth past the cap. ptr == NULL means osize is a type tag. */
static void *sb_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    struct sandbox *sb = ud;
    size_t old = ptr != NULL ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        sb->used -= old;
        return NULL;
    }
    if (nsize > old) {
        if (nsize - old > sb->cap - sb->used) {
            sb->mem_refused = 1;
            return NULL;
        }
        if (nsize - old >= BIG_BLOCK && sb->running) {
            if (!sb->killed && now() >= sb->deadline) sb->killed = SANDBOX_TIMEOUT; /* the hook raises */
            if (sb->killed) return NULL;
        }
    }
    void *p = realloc(ptr, nsize);
    if (p == NULL) {
        sb->mem_refused = 1;
        return NULL;
    }
    sb->used = sb->used - old + nsize;
    return p;
}

struct sandbox *sandbox_of(lua_State *L) {
    void *ud;
    return lua_getallocf(L, &ud) == sb_alloc ? ud : NULL;
}

/* ---- Instructions and time ---- */

static void sb_hook(lua_State *L, lua_Debug *ar);

void sandbox_arm(lua_State *L, const struct sandbox *sb) {
    if (!sb->running)
        lua_sethook(L, NULL, 0, 0);
    else if (sb->killed)
        lua_sethook(L, sb_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
    else
        lua_sethook(L, sb_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

/* Marks the run killed (the first cause wins), re-arms L and the main thread, and raises. */
static int kill_run(lua_State *L, struct sandbox *sb, int why, lua_Debug *ar) {
    if (!sb->killed) sb->killed = why;
    if (sb->where[0] == '\0') {
        lua_Debug here;
        if (ar == NULL && lua_getstack(L, 1, &here)) ar = &here;
        if (ar != NULL && lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
            snprintf(sb->where, sizeof sb->where, " (at %s:%d)", ar->short_src, ar->currentline);
    }
    sandbox_arm(L, sb);
    sandbox_arm(sb->L, sb);
    lua_pushstring(L, sandbox_status_code(sb->killed));
    return lua_error(L);
}

static void sb_hook(lua_State *L, lua_Debug *ar) {
    struct sandbox *sb = sandbox_of(L);
    if (sb == NULL || !sb->running) {
        lua_sethook(L, NULL, 0, 0); /* a thread left over from an earlier run */
        return;
    }
    if (sb->killed) kill_run(L, sb, sb->killed, ar);
    sb->instr_used += HOOK_EVERY;
    if (sb->instr_used > sb->instr_limit)
        kill_run(L, sb, SANDBOX_INSTRUCTIONS, ar);
    else if (now() >= sb->deadline)
        kill_run(L, sb, SANDBOX_TIMEOUT, ar);
}

void sandbox_charge(lua_State *L, long units) {
    struct sandbox *sb = sandbox_of(L);
    if (sb == NULL || !sb->running) return;
    if (sb->killed) kill_run(L, sb, sb->killed, NULL);
    sb->instr_used += units;
    if (sb->instr_used > sb->instr_limit)
        kill_run(L, sb, SANDBOX_INSTRUCTIONS, NULL);
    else if (now() >= sb->deadline)
        kill_run(L, sb, SANDBOX_TIMEOUT, NULL);
}

struct sandbox *sandbox_new(const struct sandbox_limits *limits, char *err, size_t errlen) {
    struct sandbox *sb = calloc(1, sizeof *sb);
    if (sb == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sb->cap = limits && limits->memory_bytes ? limits->memory_bytes : SANDBOX_DEFAULT_MEMORY;
    sb->instr_limit = limits && limits->instructions > 0 ? limits->instructions : SANDBOX_DEFAULT_INSTRUCTIONS;
    sb->seconds = limits && limits->seconds > 0 ? limits->seconds : SANDBOX_DEFAULT_SECONDS;
    sb->L = lua_newstate(sb_alloc, sb);
    if (sb->L == NULL) {
        snprintf(err, errlen, "cannot create a Lua state in %zu bytes", sb->cap);
        free(sb);
        return NULL;
    }
    lua_pushcfunction(sb->L, sandbox_lib_setup);
    if (lua_pcall(sb->L, 0, 0, 0) != LUA_OK) {
        const char *msg = lua_type(sb->L, -1) == LUA_TSTRING ? lua_tostring(sb->L, -1) : "unknown error";
        snprintf(err, errlen, "cannot set up the sandbox in %zu bytes: %s", sb->cap, msg);
        sandbox_free(sb);
        return NULL;
    }
    /* Collect when the heap is 4x its live size (Lua's default is 2x): agent states are small and
     * busy, so cycles over the whole state dominated a message's cost; the cap still bounds it. */
    lua_gc(sb->L, LUA_GCINC, 400, 0, 0);
    return sb;
}

void sandbox_free(struct sandbox *sb) {
    if (sb == NULL) return;
    if (sb->L != NULL) {
        /* Closing runs no script code (no finalizers, no pending to-be-closed variables); should
         * any run anyway, it dies on its first instruction. */
        sb->running = 1;
        sb->killed = SANDBOX_TIMEOUT;
        sb->deadline = now() + CLOSE_SECONDS;
        sandbox_arm(sb->L, sb);
        lua_close(sb->L);
    }
    free(sb);
}

lua_State *sandbox_state(struct sandbox *sb) {
    return sb->L;
}

size_t sandbox_memory(const struct sandbox *sb) {
    return sb->used;
}

const char *sandbox_status_code(int status) {
    switch (status) {
    case SANDBOX_OK: return "ok";
    case SANDBOX_SYNTAX: return "script.syntax";
    case SANDBOX_INSTRUCTIONS: return "script.instruction_limit";
    case SANDBOX_TIMEOUT: return "script.timeout";
    case SANDBOX_MEMORY: return "script.memory_limit";
    case SANDBOX_YIELD: return "yield";
    default: return "script.error";
    }
}

/* ---- Running ---- */

struct run_args {
    const char *name, *source;
    size_t len;
    int nresults;
    int syntax; /* the chunk did not compile */
    int status; /* the status of the failed step, which lua_error would turn into LUA_ERRRUN */
};

/* Message handler: "message\nstack traceback: ...", whatever the error object. */
static int on_error(lua_State *L) {
    struct sandbox *sb = sandbox_of(L);
    if (sb->killed) return 1; /* the host writes the message; run nothing more */
    const char *msg = lua_tostring(L, 1);
    if (msg != NULL && sb->mem_refused && strcmp(msg, "not enough memory") == 0) sb->mem_error = 1;
    return lua_host_traceback(L);
}

/* Stack in: run_args. Out: the chunk's results. */
static int run_protected(lua_State *L) {
    struct run_args *a = lua_touserdata(L, 1);
    lua_pushcfunction(L, on_error);
    a->status = luaL_loadbufferx(L, a->source, a->len, a->name, "t");
    if (a->status != LUA_OK) {
        a->syntax = a->status == LUA_ERRSYNTAX;
        return lua_error(L);
    }
    /* stack: args, on_error, chunk */
    sandbox_lib_push_env(L);
    lua_setupvalue(L, 3, 1); /* the chunk's _ENV */
    a->status = lua_pcall(L, 0, a->nresults, 2);
    if (a->status != LUA_OK) return lua_error(L);
    return lua_gettop(L) - 2;
}

/* Writes the message of a broken limit (timeout_fmt takes the seconds and where) into err; 0 when
 * status is not a limit. */
static int limit_message(const struct sandbox *sb, int status, const char *timeout_fmt, char *err, size_t errlen) {
    if (status != SANDBOX_INSTRUCTIONS && status != SANDBOX_TIMEOUT && status != SANDBOX_MEMORY) return 0;
    size_t n = (size_t)snprintf(err, errlen, "%s: ", sandbox_status_code(status));
    if (n >= errlen) return 1;
    if (status == SANDBOX_INSTRUCTIONS)
        snprintf(err + n, errlen - n, "more than %ld instructions%s", sb->instr_limit, sb->where);
    else if (status == SANDBOX_TIMEOUT)
        snprintf(err + n, errlen - n, timeout_fmt, sb->seconds, sb->where);
    else
        snprintf(err + n, errlen - n, "not enough memory (the state may hold %zu bytes)", sb->cap);
    return 1;
}

static void start_run(struct sandbox *sb) {
    sb->running = 1;
    sb->killed = 0;
    sb->mem_refused = sb->mem_error = 0;
    sb->instr_used = 0;
    sb->where[0] = '\0';
    sb->deadline = now() + sb->seconds;
    sandbox_arm(sb->L, sb);
}

static void end_run(struct sandbox *sb) {
    sb->running = 0;
    sb->killed = 0;
    sb->instr_used = 0;
    sandbox_arm(sb->L, sb);
    /* Results may fill the stack; if no slot can be had the old environment lingers, unreachable,
     * until the next run replaces it. */
    if (lua_checkstack(sb->L, 1)) sandbox_lib_clear_env(sb->L);
}

int sandbox_run(struct sandbox *sb, const char *chunkname, const char *source, size_t len, int nresults,
                char *err, size_t errlen) {
    if (sb->running) {
        snprintf(err, errlen, "script.error: sandbox is already running");
        return SANDBOX_BUSY;
    }
    lua_State *L = sb->L;
    int base = lua_gettop(L);
    struct run_args a = {chunkname, source, len, nresults, 0, LUA_OK};
    start_run(sb);
    int st = lua_checkstack(L, 2) ? LUA_OK : LUA_ERRMEM;
    if (st == LUA_OK) {
        lua_pushcfunction(L, run_protected);
        lua_pushlightuserdata(L, &a);
        st = lua_pcall(L, 1, nresults, 0);
    }

    if (st != LUA_OK && a.status != LUA_OK) st = a.status;
    int status;
    if (sb->killed)
        status = sb->killed; /* whatever the status: the script may have caught the kill */
    else if (st == LUA_OK)
        status = SANDBOX_OK;
    else if (st == LUA_ERRMEM || sb->mem_error || (st == LUA_ERRERR && sb->mem_refused))
        status = SANDBOX_MEMORY;
    else if (a.syntax)
        status = SANDBOX_SYNTAX;
    else
        status = SANDBOX_ERROR;

    const char *code = sandbox_status_code(status);
    if (!limit_message(sb, status, "run took more than %g s%s", err, errlen) && status != SANDBOX_OK) {
        const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "(error object is not a string)";
        snprintf(err, errlen, "%s: %s", code, msg);
    }
    if (status != SANDBOX_OK) lua_settop(L, base);
    if (status == SANDBOX_MEMORY) lua_gc(L, LUA_GCCOLLECT); /* no finalizers can run script code */
    end_run(sb);
    return status;
}

/* ---- Globals and host coroutines ---- */

struct add_args {
    const char *name;
    void (*build)(lua_State *L, void *ud);
    void *ud;
};

static int add_protected(lua_State *L) {
    struct add_args *a = lua_touserdata(L, 1);
    lua_settop(L, 0);
    lua_pushcfunction(L, sandbox_lib_add_global);
    lua_pushstring(L, a->name);
    a->build(L, a->ud);
    lua_call(L, 2, 0);
    return 0;
}

/* Runs fn(arg) protected on the main thread, outside any run; 0 or -1 with the message in err. */
static int call_protected(struct sandbox *sb, lua_CFunction fn, void *arg, const char *what, char *err,
                          size_t errlen) {
    lua_State *L = sb->L;
    int base = lua_gettop(L);
    int st = LUA_ERRMEM;
    if (lua_checkstack(L, 2)) {
        lua_pushcfunction(L, fn);
        lua_pushlightuserdata(L, arg);
        st = lua_pcall(L, 1, 0, 0);
    }
    if (st != LUA_OK) {
        const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "not enough memory";
        snprintf(err, errlen, "%s: %s", what, msg);
    }
    lua_settop(L, base);
    return st == LUA_OK ? 0 : -1;
}

int sandbox_add_global(struct sandbox *sb, const char *name, void (*build)(lua_State *L, void *ud), void *ud,
                       char *err, size_t errlen) {
    struct add_args a = {name, build, ud};
    return call_protected(sb, add_protected, &a, "sandbox_add_global", err, errlen);
}

struct thread_args {
    lua_State *co;
    int ref;
};

/* Stack: args, then the body (moved here by sandbox_thread_new). */
static int thread_protected(lua_State *L) {
    struct thread_args *a = lua_touserdata(L, 1);
    lua_State *co = lua_newthread(L);
    lua_pushcfunction(L, sandbox_lib_mark_host);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    lua_pushvalue(L, 2);
    lua_xmove(L, co, 1);
    lua_pushvalue(L, -1);
    a->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    a->co = co;
    return 0;
}

lua_State *sandbox_thread_new(struct sandbox *sb, int *ref, char *err, size_t errlen) {
    lua_State *L = sb->L;
    struct thread_args a = {NULL, LUA_NOREF};
    /* stack: body */
    int st = LUA_ERRMEM;
    if (lua_checkstack(L, 3)) {
        lua_pushcfunction(L, thread_protected);
        lua_pushlightuserdata(L, &a);
        lua_rotate(L, -3, 2); /* fn, args, body */
        st = lua_pcall(L, 2, 0, 0);
        if (st != LUA_OK) lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
    }
    if (st != LUA_OK) {
        snprintf(err, errlen, "%s: not enough memory for a coroutine", sandbox_status_code(SANDBOX_MEMORY));
        return NULL;
    }
    *ref = a.ref;
    return a.co;
}

void sandbox_unref(struct sandbox *sb, int ref) {
    luaL_unref(sb->L, LUA_REGISTRYINDEX, ref); /* rewrites existing slots: never allocates */
}

int sandbox_running(const struct sandbox *sb) {
    return sb->running;
}

/* Writes "message\nstack traceback:\n\t..." for the dead coroutine co into err, without allocating
 * in the state. */
static void co_traceback(lua_State *co, const char *msg, char *err, size_t errlen) {
    size_t n = (size_t)snprintf(err, errlen, "%s\nstack traceback:", msg);
    lua_Debug ar;
    for (int level = 0; n < errlen && level < 12 && lua_getstack(co, level, &ar); level++) {
        if (!lua_getinfo(co, "Sln", &ar)) break;
        if (ar.currentline > 0)
            n += (size_t)snprintf(err + n, errlen - n, "\n\t%s:%d: in %s%s%s", ar.short_src, ar.currentline,
                                  ar.name ? "function '" : "", ar.name ? ar.name : (*ar.what == 'm' ? "main chunk" : "?"),
                                  ar.name ? "'" : "");
        else
            n += (size_t)snprintf(err + n, errlen - n, "\n\t[%s]: in %s", ar.what, ar.name ? ar.name : "?");
    }
}

int sandbox_resume(struct sandbox *sb, lua_State *co, int nargs, long *instructions, int *nres, char *err,
                   size_t errlen) {
    *nres = 0;
    if (sb->running) {
        snprintf(err, errlen, "script.error: sandbox is already running");
        return SANDBOX_BUSY;
    }
    start_run(sb);
    sb->instr_used = *instructions;
    sandbox_arm(co, sb);
    int st = lua_resume(co, sb->L, nargs, nres);
    int status;
    if (sb->killed)
        status = sb->killed;
    else if (st == LUA_OK)
        status = SANDBOX_OK;
    else if (st == LUA_YIELD)
        status = SANDBOX_YIELD;
    else if (st == LUA_ERRMEM || (sb->mem_refused && lua_type(co, -1) == LUA_TSTRING &&
                                  strcmp(lua_tostring(co, -1), "not enough memory") == 0))
        status = SANDBOX_MEMORY;
    else
        status = SANDBOX_ERROR;

    const char *code = sandbox_status_code(status);
    if (!limit_message(sb, status, "ran more than %g s without waiting%s", err, errlen) && status == SANDBOX_ERROR) {
        char msg[2048];
        const char *m = lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1) : "(error object is not a string)";
        snprintf(msg, sizeof msg, "%s: %s", code, m);
        co_traceback(co, msg, err, errlen);
    }
    if (status != SANDBOX_OK && status != SANDBOX_YIELD) *nres = 0;
    *instructions = sb->instr_used;
    end_run(sb);
    sandbox_arm(co, sb);
    return status;
}

/* ---- Lua binding (orrery.core) ---- */

#define SANDBOX_MT "orrery.sandbox"
#define COPY_DEPTH 16

struct lua_sandbox {
    struct sandbox *sb;
};

static struct sandbox *check_open(lua_State *L) {
    struct lua_sandbox *ls = luaL_checkudata(L, 1, SANDBOX_MT);
    if (ls->sb == NULL) luaL_error(L, "sandbox is closed");
    return ls->sb;
}

/* Pushes onto L a copy of the value at idx in the sandbox state S: plain data, tables copied (no
 * metatables), anything else as "<type>". S's tables are read raw: no script code runs. */
static void copy_out(lua_State *S, int idx, lua_State *L, int depth) {
    luaL_checkstack(L, 3, "sandbox result too deep");
    switch (lua_type(S, idx)) {
    case LUA_TNIL: lua_pushnil(L); break;
    case LUA_TBOOLEAN: lua_pushboolean(L, lua_toboolean(S, idx)); break;
    case LUA_TNUMBER:
        if (lua_isinteger(S, idx))
            lua_pushinteger(L, lua_tointeger(S, idx));
        else
            lua_pushnumber(L, lua_tonumber(S, idx));
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(S, idx, &len);
        lua_pushlstring(L, s, len);
        break;
    }
    case LUA_TTABLE:
        if (depth >= COPY_DEPTH || !lua_checkstack(S, 3)) {
            lua_pushliteral(L, "<table: too deep>");
            break;
        }
        idx = lua_absindex(S, idx);
        lua_newtable(L);
        lua_pushnil(S);
        while (lua_next(S, idx)) {
            copy_out(S, -2, L, depth + 1);
            copy_out(S, -1, L, depth + 1);
            if (lua_isnil(L, -2)) lua_pop(L, 2); else lua_rawset(L, -3);
            lua_pop(S, 1);
        }
        break;
    default: lua_pushfstring(L, "<%s>", luaL_typename(S, idx)); break;
    }
}

static double opt_field(lua_State *L, const char *name) {
    if (lua_type(L, 1) != LUA_TTABLE) return 0;
    lua_getfield(L, 1, name);
    double v = lua_isnil(L, -1) ? 0 : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    if (v < 0) luaL_error(L, "sandbox_new: %s must not be negative", name);
    return v < 1e18 ? v : 1e18; /* converts to size_t and long without overflow */
}

/* core.sandbox_new{memory = bytes, instructions = n, seconds = s} -> sandbox | nil, message */
static int l_sandbox_new(lua_State *L) {
    struct sandbox_limits lim = {
        .memory_bytes = (size_t)opt_field(L, "memory"),
        .instructions = (long)opt_field(L, "instructions"),
        .seconds = opt_field(L, "seconds"),
    };
    struct lua_sandbox *ls = lua_newuserdatauv(L, sizeof *ls, 0);
    ls->sb = NULL;
    luaL_setmetatable(L, SANDBOX_MT);
    char err[256];
    ls->sb = sandbox_new(&lim, err, sizeof err);
    if (ls->sb == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return 1;
}

/* sb:run(source [, chunkname]) -> true, results... | nil, code, message */
static int l_run(lua_State *L) {
    struct sandbox *sb = check_open(L);
    size_t len;
    const char *src = luaL_checklstring(L, 2, &len);
    const char *name = luaL_optstring(L, 3, "=sandbox");
    lua_State *S = sandbox_state(sb);
    int base = lua_gettop(S);
    char err[8192];
    int st = sandbox_run(sb, name, src, len, LUA_MULTRET, err, sizeof err);
    if (st != SANDBOX_OK) {
        const char *code = sandbox_status_code(st);
        size_t clen = strlen(code);
        lua_pushnil(L);
        lua_pushstring(L, code);
        lua_pushstring(L, strncmp(err, code, clen) == 0 && err[clen] == ':' ? err + clen + 2 : err);
        return 3;
    }
    int n = lua_gettop(S) - base;
    lua_settop(L, 1); /* keep the sandbox referenced while copying */
    luaL_checkstack(L, n + 1, "too many results");
    lua_pushboolean(L, 1);
    for (int i = 1; i <= n; i++) copy_out(S, base + i, L, 0);
    lua_settop(S, base);
    return n + 1;
}

static int l_memory(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)sandbox_memory(check_open(L)));
    return 1;
}

static int l_close(lua_State *L) {
    struct lua_sandbox *ls = luaL_checkudata(L, 1, SANDBOX_MT);
    sandbox_free(ls->sb);
    ls->sb = NULL;
    return 0;
}

void sandbox_lua_register(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"run", l_run},
        {"memory", l_memory},
        {"close", l_close},
        {NULL, NULL},
    };
    if (luaL_newmetatable(L, SANDBOX_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_sandbox_new);
    lua_setfield(L, -2, "sandbox_new"); /* stack: core */
}
