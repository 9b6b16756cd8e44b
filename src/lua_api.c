/* lua_api — assembles the `orrery` table that scripts see. Each area lives in its own file
 * (src/lua_api_<area>.c) and adds orrery.<area> with lua_api_<area>_inject(L); this file is the one
 * place that lists them, so adding an area is one line here and one in lua_api.h.
 * Also gives orrery.core an `api()` so specs exercise the same table scripts get. */
#include "lua_api.h"

#include <lauxlib.h>

#include "lua_core.h"

/* The areas, in the order they are injected. */
static void (*const areas[])(lua_State *L) = {
    lua_api_log_inject,
    lua_api_json_inject,
    lua_api_time_inject,
};

void lua_api_push(lua_State *L) {
    lua_createtable(L, 0, (int)(sizeof areas / sizeof areas[0]));
    for (size_t i = 0; i < sizeof areas / sizeof areas[0]; i++) areas[i](L);
    /* stack: orrery */
}

void lua_api_open(lua_State *L) {
    lua_api_push(L);
    /* stack: orrery */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    /* stack: orrery, package.loaded */
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "orrery"); /* require("orrery") returns the same table as the global */
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_setglobal(L, "orrery");
    /* stack: orrery */
}

/* orrery.core.api() -> a fresh orrery table, so each spec gets its own json instance. */
static int core_api(lua_State *L) {
    lua_api_push(L);
    return 1;
}

void lua_api_lua_register(lua_State *L) {
    lua_pushcfunction(L, core_api);
    lua_setfield(L, -2, "api");
}
