/* lua_host — `orrery run FILE.lua` and `orrery check FILE.lua`: a fresh Lua 5.4 state with the
 * standard libraries and the orrery table (lua_api), set up the way lua.c sets up a script
 * (global `arg`, the arguments also passed as `...`). Errors print "orrery: <error>" and the Lua
 * traceback on stderr. Only text chunks are loaded: a crafted binary chunk can crash the VM,
 * and nobody needs precompiled scripts here. "-" reads the script from stdin. */
#include "lua_host.h"

#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "lua_api.h"

struct run_args {
    const char *path;
    int argc;
    char **argv;
};

/* Loads path (NULL: stdin) as text. Returns a lua_load status; the chunk or the message is pushed. */
static int load_script(lua_State *L, const char *path) {
    return luaL_loadfilex(L, strcmp(path, "-") ? path : NULL, "t");
}

/* Message handler: turns any error object into "message\nstack traceback:...". */
int lua_host_traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        /* An error object with __tostring describes itself; pcall so a broken one cannot
         * replace the script's error with "error in error handling". */
        if (luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL) {
            lua_pushvalue(L, 1);
            if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) msg = lua_tostring(L, -1);
        }
        if (msg == NULL) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Runs protected (like lua.c's pmain), so running out of memory while setting up is reported
 * like any other error. Stack in: run_args. Returns the error message on failure via lua_error. */
static int run_main(lua_State *L) {
    const struct run_args *a = lua_touserdata(L, 1);

    luaL_openlibs(L);
    lua_api_open(L);
    lua_pop(L, 1);

    /* arg[0] = the script, arg[1..] = its arguments, as the lua command does. */
    lua_createtable(L, a->argc > 0 ? a->argc - 1 : 0, 1);
    for (int i = 0; i < a->argc; i++) {
        lua_pushstring(L, a->argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");

    if (load_script(L, a->path) != LUA_OK) return lua_error(L); /* no traceback: nothing ran */

    lua_pushcfunction(L, lua_host_traceback);
    lua_insert(L, -2);
    /* stack: run_args, traceback, chunk */
    luaL_checkstack(L, a->argc, "too many script arguments");
    for (int i = 1; i < a->argc; i++) lua_pushstring(L, a->argv[i]);
    if (lua_pcall(L, a->argc > 0 ? a->argc - 1 : 0, 0, 2) != LUA_OK) return lua_error(L);
    return 0;
}

/* Prints the error at the top of the stack, whatever its type. */
static void report(lua_State *L) {
    const char *msg = lua_tostring(L, -1);
    if (msg == NULL) msg = "(error object is not a string)";
    fflush(stdout); /* the script's output first, then why it stopped */
    fprintf(stderr, "orrery: %s\n", msg);
}

int lua_host_run_file(const char *path, int argc, char **argv) {
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "orrery: cannot create a Lua state: not enough memory\n");
        return 1;
    }
    struct run_args a = {path, argc, argv};
    lua_pushcfunction(L, run_main);
    lua_pushlightuserdata(L, &a);
    int rc = lua_pcall(L, 1, 0, 0);
    if (rc != LUA_OK) report(L);
    lua_close(L); /* runs __gc and closes files the script left open */
    return rc == LUA_OK ? 0 : 1;
}

int lua_host_check_file(const char *path) {
    lua_State *L = luaL_newstate();
    if (L == NULL) {
        fprintf(stderr, "orrery: cannot create a Lua state: not enough memory\n");
        return 1;
    }
    /* Compiling runs nothing, so no libraries are needed. */
    int rc = load_script(L, path);
    if (rc == LUA_OK)
        printf("ok: %s\n", path);
    else
        report(L);
    lua_close(L);
    return rc == LUA_OK ? 0 : 1;
}
