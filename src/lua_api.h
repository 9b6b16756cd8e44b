/* lua_api — assembles the `orrery` table from one file per area (src/lua_api_<area>.c, each
 * exporting lua_api_<area>_inject(L), which sets orrery.<area> on the table at the top).
 * Areas now: log, json (lua-cjson), time. */
#ifndef ORRERY_LUA_API_H
#define ORRERY_LUA_API_H

#include <lua.h>

/* Pushes a new `orrery` table with every area injected. */
void lua_api_push(lua_State *L);
/* Pushes the table and also sets package.loaded["orrery"] and the global `orrery`. */
void lua_api_open(lua_State *L);

void lua_api_log_inject(lua_State *L);
void lua_api_json_inject(lua_State *L);
void lua_api_time_inject(lua_State *L);

#endif
