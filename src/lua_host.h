/* lua_host — runs Lua 5.4 scripts for the CLI (`orrery run FILE.lua`, `orrery check FILE.lua`)
 * with the `orrery` module available. The agent sandbox and scheduler build on this later.
 * Uses lua_api (the orrery.* table) and log. */
#ifndef ORRERY_LUA_HOST_H
#define ORRERY_LUA_HOST_H

#include <lua.h>

/* Runs path with `arg` set to argv (argv[0] = the script). Errors print the Lua traceback on
 * stderr. Returns the process exit code: 0 on success, 1 on any error. */
int lua_host_run_file(const char *path, int argc, char **argv);

/* Compiles path without running it. Prints "ok: FILE" on stdout, or the syntax error with
 * file and line on stderr. Returns 0 or 1. */
int lua_host_check_file(const char *path);

/* Message handler for lua_pcall: turns any error object (string, __tostring, other) into
 * "message\nstack traceback:..." without ever raising. Shared with the sandbox. */
int lua_host_traceback(lua_State *L);

#endif
