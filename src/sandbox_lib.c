/* sandbox_lib — what a sandboxed script sees: an allow-list of Lua's libraries (base minus the file
 * and bytecode loaders, print and warn; string minus dump; table; math; utf8; coroutine; os.time,
 * os.clock, os.date), every table of them read-only, and wrappers where a library function could
 * otherwise escape the sandbox's limits:
 * - rawset refuses the library proxies and the globals; setmetatable takes a snapshot of the
 *   metatable's "__" fields (so __gc and ephemeron __mode can be refused for good); load reads text
 *   only, in the run's environment; collectgarbage allows "count" and "step"; xpcall skips the
 *   script's handler in a killed run (it would run with hooks off); coroutine.wrap/close do not
 *   run __close handlers of a coroutine the hook killed (same reason).
 * - C loops whose length a script chooses (table.concat/insert/remove/move/sort, load's reader,
 *   string.rep) charge their work to the run, so the budget and the deadline hold inside them.
 * Scripts never hold a hidden table: globals and libraries are empty proxies whose metatables
 * (guarded by __metatable) point to the hidden copies. Uses sandbox.c and sandbox_match.c. */
#include <limits.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "sandbox.h"
#include "sandbox_internal.h"

#define READER_CALL_UNITS 16 /* a call to load's reader function, in instructions */

/* Registry keys (light userdata: their addresses). */
static const char KEY_ENV = 'e';       /* this run's environment, or false */
static const char KEY_ENVMT = 'm';     /* the environments' metatable */
static const char KEY_PROTECTED = 'p'; /* set of the tables rawset must not write */
static const char KEY_SNAPSHOTS = 's'; /* weak map: script metatable -> its latest snapshot */
static const char KEY_HOST = 'h';      /* weak set of the threads the host runs handlers in */
/* The first value of a yield that waits for the host (sandbox_host_yield_key). */
const char sandbox_host_yield_key = 'y';
/* Key inside a snapshot, which scripts never see: 2 x (the "__" fields copied) + (1 if the script's
 * metatable had a __metatable: then, as in Lua, it can no longer be replaced). */
static const char KEY_SNAPSHOT = 'k';

/* Charges n units, n possibly huge. */
static void charge_count(lua_State *L, lua_Unsigned n) {
    sandbox_charge(L, n > (lua_Unsigned)(LONG_MAX / 4) ? LONG_MAX / 4 : (long)n);
}

/* Calls upvalue 1 (the original function) with this call's arguments; returns all its results. */
static int call_original(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* t[name] = fn with the current t[name] as its upvalue. */
static void wrap_field(lua_State *L, int t, const char *name, lua_CFunction fn) {
    t = lua_absindex(L, t);
    lua_getfield(L, t, name);
    lua_pushcclosure(L, fn, 1);
    lua_setfield(L, t, name);
}

/* ---- Read-only tables ---- */

static void protect(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_PROTECTED);
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static int is_protected(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_PROTECTED);
    lua_pushvalue(L, idx);
    int yes = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return yes;
}

/* __newindex; upvalue 1: the table's name ("_G" for the environment). */
static int ro_newindex(lua_State *L) {
    const char *name = lua_tostring(L, lua_upvalueindex(1));
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : luaL_typename(L, 2);
    if (strcmp(name, "_G") == 0) return luaL_error(L, "attempt to modify a read-only global '%s'", key);
    return luaL_error(L, "attempt to modify a read-only table '%s' (key '%s')", name, key);
}

/* The proxy's iterator: next over the hidden table (upvalue 1), which it never hands out. */
static int proxy_next(lua_State *L) {
    lua_settop(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 2);
    if (lua_next(L, 3)) return 2;
    lua_pushnil(L);
    return 1;
}

static int proxy_pairs(lua_State *L) {
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushcclosure(L, proxy_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

/* Pushes a read-only proxy of the table at idx (which stays hidden). */
static void push_proxy(lua_State *L, int idx, const char *name) {
    idx = lua_absindex(L, idx);
    lua_newtable(L);
    lua_createtable(L, 0, 4);
    /* stack: proxy, mt */
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, ro_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, idx);
    lua_pushcclosure(L, proxy_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    if (lua_getmetatable(L, idx)) { /* a callable table (orrery.log) stays callable */
        lua_getfield(L, -1, "__call");
        lua_setfield(L, -3, "__call");
        lua_pop(L, 1);
    }
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
    protect(L, -1);
    protect(L, idx);
}

/* ---- Base library ---- */

static int sb_rawset(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (is_protected(L, 1)) return luaL_error(L, "attempt to modify a read-only table");
    return call_original(L);
}

static int is_metakey(lua_State *L, int idx) {
    size_t len;
    if (lua_type(L, idx) != LUA_TSTRING) return 0;
    const char *k = lua_tolstring(L, idx, &len);
    return len >= 2 && k[0] == '_' && k[1] == '_';
}

/* Whether the snapshot at snap still has exactly the "__" fields of the metatable at mt. */
static int snapshot_fresh(lua_State *L, int snap, int mt) {
    lua_Integer n = 0;
    lua_Unsigned seen = 0;
    int same = 1;
    lua_pushnil(L);
    while (same && lua_next(L, mt)) {
        seen++;
        if (is_metakey(L, -2)) {
            n++;
            lua_pushvalue(L, -2);
            lua_rawget(L, snap);
            same = lua_rawequal(L, -1, -2);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    if (!same) lua_pop(L, 1); /* the key lua_next left */
    charge_count(L, seen / 16);
    lua_rawgetp(L, snap, &KEY_SNAPSHOT);
    same = same && lua_tointeger(L, -1) / 2 == n;
    lua_pop(L, 1);
    return same;
}

/* Pushes the snapshot of the metatable at mt: a hidden table with its "__" fields (metamethods are
 * only ever looked up raw) and __metatable set so getmetatable returns mt. Later changes to mt do
 * not reach objects that already carry a snapshot; that is what makes the checks below final. */
static void push_snapshot(lua_State *L, int mt) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_SNAPSHOTS);
    int cache = lua_gettop(L);
    lua_pushvalue(L, mt);
    if (lua_rawget(L, cache) == LUA_TTABLE && snapshot_fresh(L, cache + 1, mt)) {
        lua_remove(L, cache);
        return;
    }
    lua_pop(L, 1);
    lua_newtable(L);
    int snap = lua_gettop(L);
    lua_Integer n = 0;
    lua_Unsigned seen = 0;
    lua_pushnil(L);
    while (lua_next(L, mt)) {
        seen++;
        if (is_metakey(L, -2)) {
            n++;
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, snap);
        } else {
            lua_pop(L, 1);
        }
    }
    charge_count(L, seen / 16);
    /* Lua runs finalizers with hooks off: a looping __gc could never be stopped. */
    if (lua_getfield(L, snap, "__gc") != LUA_TNIL)
        luaL_error(L, "__gc metamethods are not allowed in the sandbox");
    lua_pop(L, 1);
    /* Ephemeron tables cost the collector time quadratic in their entries, with no hook inside. */
    if (lua_getfield(L, snap, "__mode") == LUA_TSTRING) {
        const char *mode = lua_tostring(L, -1);
        if (strchr(mode, 'k') != NULL && strchr(mode, 'v') == NULL)
            luaL_error(L, "weak-key tables (__mode 'k') are not allowed in the sandbox; 'v' and 'kv' are");
    }
    lua_pop(L, 1);
    int locked = lua_getfield(L, snap, "__metatable") != LUA_TNIL;
    lua_pop(L, 1);
    if (!locked) {
        lua_pushvalue(L, mt);
        lua_setfield(L, snap, "__metatable");
    }
    lua_pushinteger(L, 2 * n + locked);
    lua_rawsetp(L, snap, &KEY_SNAPSHOT);
    lua_pushvalue(L, mt);
    lua_pushvalue(L, snap);
    lua_rawset(L, cache);
    lua_remove(L, cache);
}

/* setmetatable(t, mt) with a snapshot of mt (lua_getfield on a fresh snapshot is raw: it has no
 * metatable). */
static int sb_setmetatable(lua_State *L) {
    int t = lua_type(L, 2);
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    lua_settop(L, 2);
    if (lua_getmetatable(L, 1)) {
        int open = lua_rawgetp(L, -1, &KEY_SNAPSHOT) == LUA_TNUMBER && lua_tointeger(L, -1) % 2 == 0;
        lua_pop(L, 2);
        if (!open) return luaL_error(L, "cannot change a protected metatable");
    }
    if (t == LUA_TTABLE)
        push_snapshot(L, 2);
    else
        lua_pushnil(L);
    lua_setmetatable(L, 1);
    lua_settop(L, 1);
    return 1;
}

/* load's reader, charged per call and per byte; upvalue 1: the script's reader. */
static int load_reader(lua_State *L) {
    sandbox_charge(L, READER_CALL_UNITS);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_call(L, 0, 1);
    if (lua_type(L, -1) == LUA_TSTRING) charge_count(L, lua_rawlen(L, -1) / 16);
    return 1;
}

/* load(chunk [, chunkname [, mode [, env]]]): text only; the default environment is the run's. */
static int sb_load(lua_State *L) {
    int has_env = lua_gettop(L) >= 4;
    lua_settop(L, 4);
    if (lua_type(L, 1) == LUA_TFUNCTION) {
        lua_pushvalue(L, 1);
        lua_pushcclosure(L, load_reader, 1);
        lua_replace(L, 1);
    } else if (lua_type(L, 1) == LUA_TSTRING) {
        charge_count(L, lua_rawlen(L, 1) / 16); /* compiling is linear and has no hook */
    }
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    if (!has_env) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_ENV);
        lua_replace(L, 4);
    }
    return call_original(L);
}

static int sb_collectgarbage(lua_State *L) {
    const char *opt = luaL_optstring(L, 1, "collect");
    if (strcmp(opt, "count") != 0 && strcmp(opt, "step") != 0)
        return luaL_error(L, "collectgarbage: option '%s' is not allowed in the sandbox", opt);
    return call_original(L);
}

/* A message handler runs where the error was raised: for a kill, inside the count hook, where
 * Lua has hooks off, so a looping handler could never be stopped. In a killed run the script's
 * handler (upvalue 1) is skipped and the error passes through unchanged. */
static int xpcall_handler(lua_State *L) {
    if (sandbox_of(L)->killed) return 1;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static int xpcall_finish(lua_State *L, int status, lua_KContext extra) {
    if (status != LUA_OK && status != LUA_YIELD) {
        lua_pushboolean(L, 0);
        lua_pushvalue(L, -2);
        return 2;
    }
    return lua_gettop(L) - (int)extra;
}

/* xpcall(f, handler, ...) as Lua's (yieldable: a continuation, not lua_call), with the handler
 * behind xpcall_handler. */
static int sb_xpcall(lua_State *L) {
    int n = lua_gettop(L);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_pushvalue(L, 2);
    lua_pushcclosure(L, xpcall_handler, 1);
    lua_replace(L, 2);
    lua_pushboolean(L, 1); /* first result */
    lua_pushvalue(L, 1);
    lua_rotate(L, 3, 2); /* stack: f, handler, true, f, args... */
    int status = lua_pcallk(L, n - 2, LUA_MULTRET, 2, 2, xpcall_finish);
    return xpcall_finish(L, status, 2);
}

/* ---- String ---- */

/* string.rep: a result larger than the state could ever hold fails as an allocation over the cap
 * would (Lua's own limit, INT_MAX bytes, would make it an ordinary error); the copying is charged,
 * one unit per 64 bytes. */
static int sb_rep(lua_State *L) {
    size_t l, lsep;
    luaL_checklstring(L, 1, &l);
    lua_Integer count = luaL_checkinteger(L, 2);
    luaL_optlstring(L, 3, "", &lsep);
    struct sandbox *sb = sandbox_of(L);
    if (count > 0 && (double)l * (double)count + (double)lsep * (double)(count - 1) > (double)(sb->cap - sb->used)) {
        sb->mem_refused = 1;
        lua_pushliteral(L, "not enough memory");
        return lua_error(L);
    }
    int n = call_original(L);
    charge_count(L, lua_rawlen(L, -1) / 64);
    return n;
}

/* ---- Coroutines ---- */

static void new_coroutine(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_State *co = lua_newthread(L);
    lua_pushvalue(L, 1);
    lua_xmove(L, co, 1);
    sandbox_arm(co, sandbox_of(L));
}

static int sb_cocreate(lua_State *L) {
    new_coroutine(L);
    return 1;
}

/* Whether the value at idx is a thread the host runs a handler in. */
static int is_host_thread(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_HOST);
    lua_pushvalue(L, idx);
    int yes = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return yes;
}

/* Resumes co with narg values from L: the number of results moved to L, or -1 with the error on
 * top of L. */
static int resume_moving(lua_State *L, lua_State *co, int narg) {
    int nres;
    if (!lua_checkstack(co, narg)) {
        lua_pushliteral(L, "too many arguments to resume");
        return -1;
    }
    lua_xmove(L, co, narg);
    int status = lua_resume(co, L, narg, &nres);
    if (status == LUA_OK || status == LUA_YIELD) {
        if (!lua_checkstack(L, nres + 1)) {
            lua_pop(co, nres);
            lua_pushliteral(L, "too many results to resume");
            return -1;
        }
        lua_xmove(co, L, nres);
        return nres;
    }
    lua_xmove(co, L, 1);
    return -1;
}

/* Whether co's last yield, whose r values are on top of L, waits for the host (orrery.sleep and
 * the like inside a script's own coroutine). Such a yield is passed on up to the handler's thread
 * and the host's answer passed back down, as OpenResty does, so waiting works at any depth. */
static int host_yield(lua_State *L, lua_State *co, int r) {
    return r >= 1 && lua_status(co) == LUA_YIELD && lua_touserdata(L, -r) == &sandbox_host_yield_key;
}

/* Yields L with the r values on top (a host wait), dropping what is below them except keep slots
 * at the bottom; k resumes co with the host's answer. */
static int pass_up(lua_State *L, int r, int keep, lua_KFunction k) {
    if (!lua_isyieldable(L)) {
        lua_settop(L, keep);
        return luaL_error(L, "cannot wait here: a C function (a metamethod, table.sort, ...) is in the way");
    }
    int below = lua_gettop(L) - r - keep;
    if (below > 0) {
        lua_rotate(L, keep + 1, r); /* the values first, then what was below them */
        lua_settop(L, keep + r);
    }
    return lua_yieldk(L, r, 0, k);
}

static int coresume_k(lua_State *L, int status, lua_KContext ctx);

/* coroutine.resume's common end: the results of resuming the coroutine at index 1. */
static int coresume_finish(lua_State *L, lua_State *co, int r) {
    if (r < 0) {
        lua_pushboolean(L, 0);
        lua_insert(L, -2);
        return 2; /* false, error */
    }
    if (host_yield(L, co, r)) return pass_up(L, r, 1, coresume_k);
    lua_pushboolean(L, 1);
    lua_insert(L, -(r + 1));
    return r + 1; /* true, results */
}

/* The handler's thread got the host's answer: hand it down to the coroutine at index 1. */
static int coresume_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    lua_State *co = lua_tothread(L, 1);
    return coresume_finish(L, co, resume_moving(L, co, lua_gettop(L) - 1));
}

static int auxwrap_k(lua_State *L, int status, lua_KContext ctx);

/* The function coroutine.wrap returns; upvalue 1: the coroutine. As Lua's, except that in a killed
 * run a failed coroutine's to-be-closed variables are not closed: an error raised by the count
 * hook leaves the coroutine with hooks off, so its __close handlers could loop unstoppably. */
static int auxwrap_finish(lua_State *L, lua_State *co, int r) {
    if (r >= 0) return host_yield(L, co, r) ? pass_up(L, r, 0, auxwrap_k) : r;
    int stat = lua_status(co);
    if (stat != LUA_OK && stat != LUA_YIELD && !sandbox_of(L)->killed) {
        stat = lua_resetthread(co); /* close its to-be-closed variables */
        lua_xmove(co, L, 1);
    }
    if (stat != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
        luaL_where(L, 1);
        lua_insert(L, -2);
        lua_concat(L, 2);
    }
    return lua_error(L);
}

static int auxwrap_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    (void)ctx;
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    return auxwrap_finish(L, co, resume_moving(L, co, lua_gettop(L)));
}

static int auxwrap(lua_State *L) {
    lua_State *co = lua_tothread(L, lua_upvalueindex(1));
    return auxwrap_finish(L, co, resume_moving(L, co, lua_gettop(L)));
}

static int sb_cowrap(lua_State *L) {
    new_coroutine(L);
    lua_pushcclosure(L, auxwrap, 1);
    return 1;
}

/* coroutine.resume, as Lua's; nothing more is resumed once the run is killed. */
static int sb_coresume(lua_State *L) {
    if (sandbox_of(L)->killed) sandbox_charge(L, 0); /* raises */
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co != NULL, 1, "coroutine");
    if (is_host_thread(L, 1)) { /* a handler's own thread is the host's to resume */
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "cannot resume a coroutine the host runs a handler in");
        return 2;
    }
    return coresume_finish(L, co, resume_moving(L, co, lua_gettop(L) - 1));
}

/* coroutine.close: not in a killed run, where it could run __close handlers with hooks off. */
static int sb_coclose(lua_State *L) {
    if (sandbox_of(L)->killed) sandbox_charge(L, 0); /* raises */
    if (lua_type(L, 1) == LUA_TTHREAD && is_host_thread(L, 1))
        return luaL_error(L, "cannot close a coroutine the host runs a handler in");
    return call_original(L);
}

/* ---- Table ---- */

/* Loops in the table functions run no VM instructions when the metamethods they meet are C
 * functions (__index = rawlen...), so they charge themselves every TICK_EVERY iterations. */
#define TICK_EVERY 1024

static void tick(lua_State *L, lua_Unsigned *count) {
    if (++*count % TICK_EVERY == 0) sandbox_charge(L, TICK_EVERY);
}

/* table.concat(list [, sep [, i [, j]]]): Lua's, called on slices of TICK_EVERY elements. */
static int sb_tconcat(lua_State *L) {
    size_t lsep;
    luaL_checktype(L, 1, LUA_TTABLE);
    const char *sep = luaL_optlstring(L, 2, "", &lsep);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    lua_Integer j = lua_isnoneornil(L, 4) ? luaL_len(L, 1) : luaL_checkinteger(L, 4);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    while (i <= j) {
        lua_Integer last = (j - i >= TICK_EVERY - 1) ? i + (TICK_EVERY - 1) : j;
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, 1);
        lua_pushlstring(L, sep, lsep);
        lua_pushinteger(L, i);
        lua_pushinteger(L, last);
        lua_call(L, 4, 1);
        luaL_addvalue(&b);
        if (last == j) break;
        luaL_addlstring(&b, sep, lsep);
        sandbox_charge(L, (long)(last - i + 1));
        i = last + 1;
    }
    luaL_pushresult(&b);
    return 1;
}

/* table.move(a1, f, e, t [, a2]), as the manual says, charged as it goes. */
static int sb_tmove(lua_State *L) {
    lua_Integer f = luaL_checkinteger(L, 2);
    lua_Integer e = luaL_checkinteger(L, 3);
    lua_Integer t = luaL_checkinteger(L, 4);
    int tt = !lua_isnoneornil(L, 5) ? 5 : 1; /* destination table */
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, tt, LUA_TTABLE);
    if (e >= f) {
        lua_Unsigned ticks = 0;
        luaL_argcheck(L, f > 0 || e < LUA_MAXINTEGER + f, 3, "too many elements to move");
        lua_Integer n = e - f;
        luaL_argcheck(L, t <= LUA_MAXINTEGER - n, 4, "destination wrap around");
        if (t > e || t <= f || (tt != 1 && !lua_compare(L, 1, tt, LUA_OPEQ))) {
            for (lua_Integer k = 0; k <= n; k++) {
                lua_geti(L, 1, f + k);
                lua_seti(L, tt, t + k);
                tick(L, &ticks);
            }
        } else { /* overlapping, destination after the source: back to front */
            for (lua_Integer k = n; k >= 0; k--) {
                lua_geti(L, 1, f + k);
                lua_seti(L, tt, t + k);
                tick(L, &ticks);
            }
        }
    }
    lua_pushvalue(L, tt);
    return 1;
}

/* table.insert(list, [pos,] value), as Lua's, charged as it shifts (a __len can make it long). */
static int sb_tinsert(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer e = (lua_Integer)((lua_Unsigned)luaL_len(L, 1) + 1u); /* first empty element */
    lua_Integer pos;
    lua_Unsigned ticks = 0;
    switch (lua_gettop(L)) {
    case 2:
        pos = e;
        break;
    case 3:
        pos = luaL_checkinteger(L, 2);
        luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)e, 2, "position out of bounds");
        for (lua_Integer i = e; i > pos; i--) {
            lua_geti(L, 1, i - 1);
            lua_seti(L, 1, i);
            tick(L, &ticks);
        }
        break;
    default:
        return luaL_error(L, "wrong number of arguments to 'insert'");
    }
    lua_seti(L, 1, pos);
    return 0;
}

/* table.remove(list [, pos]), as Lua's, charged as it shifts. */
static int sb_tremove(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer size = luaL_len(L, 1);
    lua_Integer pos = luaL_optinteger(L, 2, size);
    lua_Unsigned ticks = 0;
    if (pos != size)
        luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
    lua_geti(L, 1, pos);
    for (; pos < size; pos++) {
        lua_geti(L, 1, pos + 1);
        lua_seti(L, 1, pos);
        tick(L, &ticks);
    }
    lua_pushnil(L);
    lua_seti(L, 1, pos);
    return 1;
}

static long sort_units(lua_Integer n) {
    long lg = 1;
    for (lua_Integer m = n; m > 1; m >>= 1) lg++;
    return (long)n * lg;
}

/* table.sort(list [, comp]): n log n charged first. Lua's sort runs on a plain table whose length
 * is bounded by the memory cap: a list with a metatable is copied out (its __len asked once),
 * sorted and copied back. A comparator is Lua code, counted as it runs. */
static int sb_tsort(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    if (!lua_getmetatable(L, 1)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
        if (n > 1 && n < INT_MAX) sandbox_charge(L, sort_units(n));
        return call_original(L);
    }
    lua_pop(L, 1);
    lua_Integer n = luaL_len(L, 1);
    if (n <= 1) return 0;
    luaL_argcheck(L, n < INT_MAX, 1, "array too big");
    lua_Unsigned ticks = 0;
    lua_createtable(L, (int)n, 0); /* 3: the copy; the cap bounds n */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 1, i);
        lua_rawseti(L, 3, i);
        tick(L, &ticks);
    }
    sandbox_charge(L, sort_units(n));
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, i);
        lua_seti(L, 1, i);
        tick(L, &ticks);
    }
    return 0;
}

/* ---- Building the state ---- */

struct lib {
    const char *name;
    lua_CFunction open;
    const char *const *allow;
};

static const char *const base_allow[] = {
    "assert", "error", "getmetatable", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget", "rawlen",
    "select", "tonumber", "tostring", "type", "_VERSION",
    "collectgarbage", "load", "rawset", "setmetatable", "xpcall", /* replaced below */
    NULL,
};
static const char *const string_allow[] = {
    "byte", "char", "find", "format", "gmatch", "gsub", "len", "lower", "match", "pack", "packsize", "rep",
    "reverse", "sub", "unpack", "upper", NULL,
};
static const char *const table_allow[] = {"concat", "insert", "move", "pack", "remove", "sort", "unpack", NULL};
static const char *const math_allow[] = {
    "abs", "acos", "asin", "atan", "ceil", "cos", "deg", "exp", "floor", "fmod", "huge", "log", "max",
    "maxinteger", "min", "mininteger", "modf", "pi", "rad", "random", "randomseed", "sin", "sqrt", "tan",
    "tointeger", "type", "ult", NULL,
};
static const char *const utf8_allow[] = {"char", "charpattern", "codes", "codepoint", "len", "offset", NULL};
static const char *const coroutine_allow[] = {
    "close", "create", "isyieldable", "resume", "running", "status", "wrap", "yield", NULL,
};
static const char *const os_allow[] = {"clock", "date", "time", NULL};

static const struct lib libs[] = {
    {"string", luaopen_string, string_allow},
    {"table", luaopen_table, table_allow},
    {"math", luaopen_math, math_allow},
    {"utf8", luaopen_utf8, utf8_allow},
    {"coroutine", luaopen_coroutine, coroutine_allow},
    {"os", luaopen_os, os_allow},
};

/* Pushes a new table with the allowed fields of the table at src. */
static void push_allowed(lua_State *L, int src, const char *const *allow) {
    src = lua_absindex(L, src);
    lua_newtable(L);
    for (; *allow != NULL; allow++) {
        lua_getfield(L, src, *allow);
        lua_setfield(L, -2, *allow);
    }
}

/* Replaces functions of the hidden copy at t (of the library name) by their sandbox versions. */
static void adapt_library(lua_State *L, const char *name, int t) {
    t = lua_absindex(L, t);
    if (strcmp(name, "string") == 0) {
        sandbox_match_install(L, t);
        wrap_field(L, t, "rep", sb_rep);
        /* Method calls on strings read the hidden copy; getmetatable("") gets a locked guard. */
        lua_pushliteral(L, "");
        lua_getmetatable(L, -1);
        lua_pushvalue(L, t);
        lua_setfield(L, -2, "__index");
        lua_newtable(L);
        push_proxy(L, -1, "string metatable");
        lua_setfield(L, -3, "__metatable");
        lua_pop(L, 3);
    } else if (strcmp(name, "table") == 0) {
        wrap_field(L, t, "concat", sb_tconcat);
        wrap_field(L, t, "sort", sb_tsort);
        lua_pushcfunction(L, sb_tmove);
        lua_setfield(L, t, "move");
        lua_pushcfunction(L, sb_tinsert);
        lua_setfield(L, t, "insert");
        lua_pushcfunction(L, sb_tremove);
        lua_setfield(L, t, "remove");
    } else if (strcmp(name, "coroutine") == 0) {
        lua_pushcfunction(L, sb_cocreate);
        lua_setfield(L, t, "create");
        lua_pushcfunction(L, sb_cowrap);
        lua_setfield(L, t, "wrap");
        wrap_field(L, t, "close", sb_coclose);
        lua_pushcfunction(L, sb_coresume);
        lua_setfield(L, t, "resume");
    }
}

int sandbox_lib_setup(lua_State *L) {
    lua_newtable(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_PROTECTED);
    lua_pushboolean(L, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_ENV); /* the key exists from now on: clearing it never allocates */
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode"); /* ours: one step per entry, never a chain */
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_SNAPSHOTS);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_HOST);

    luaL_requiref(L, "_G", luaopen_base, 0);
    push_allowed(L, -1, base_allow);
    /* stack: full globals, hidden globals */
    int globals = lua_gettop(L);
    wrap_field(L, globals, "rawset", sb_rawset);
    wrap_field(L, globals, "load", sb_load);
    wrap_field(L, globals, "collectgarbage", sb_collectgarbage);
    lua_pushcfunction(L, sb_setmetatable);
    lua_setfield(L, globals, "setmetatable");
    lua_pushcfunction(L, sb_xpcall);
    lua_setfield(L, globals, "xpcall");

    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
        luaL_requiref(L, libs[i].name, libs[i].open, 0);
        push_allowed(L, -1, libs[i].allow);
        /* stack: ..., full library, hidden copy */
        adapt_library(L, libs[i].name, -1);
        push_proxy(L, -1, libs[i].name);
        lua_setfield(L, globals, libs[i].name);
        lua_pop(L, 2);
    }

    protect(L, globals);
    lua_pushvalue(L, globals);
    lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS); /* load's default, lua_getglobal: the hidden table */

    lua_createtable(L, 0, 3);
    lua_pushvalue(L, globals);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "_G");
    lua_pushcclosure(L, ro_newindex, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_ENVMT);

    /* The full tables stay reachable only from the registry's loaded table: drop them. */
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_gc(L, LUA_GCCOLLECT);
    return 0;
}

void sandbox_lib_push_env(lua_State *L) {
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "_G"); /* rawset(_G, ...) writes this run's table and nothing else */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_ENVMT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_ENV);
}

void sandbox_lib_clear_env(lua_State *L) {
    lua_pushboolean(L, 0);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &KEY_ENV);
}

/* Proxies the table at idx and, one level down, the tables it holds (orrery.bus, orrery.json...). */
static void push_proxy_deep(lua_State *L, int idx, const char *name, int depth) {
    idx = lua_absindex(L, idx);
    if (depth < 2) {
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            if (lua_type(L, -1) == LUA_TTABLE && lua_type(L, -2) == LUA_TSTRING && !is_protected(L, -1)) {
                lua_pushvalue(L, -2);
                push_proxy_deep(L, -2, lua_tostring(L, -1), depth + 1);
                /* stack: key, table, key, proxy */
                lua_rawset(L, idx); /* replacing an existing key's value is allowed during next */
            }
            lua_pop(L, 1);
        }
    }
    push_proxy(L, idx, name);
}

int sandbox_lib_add_global(lua_State *L) {
    const char *name = lua_tostring(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    if (lua_type(L, 2) == LUA_TFUNCTION)
        lua_pushvalue(L, 2);
    else if (lua_type(L, 2) == LUA_TTABLE)
        push_proxy_deep(L, 2, name, 0);
    else
        return luaL_error(L, "a sandbox global must be a table or a function");
    lua_setfield(L, -2, name);
    return 0;
}

int sandbox_lib_mark_host(lua_State *L) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, &KEY_HOST);
    lua_pushvalue(L, 1);
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
    return 0;
}
