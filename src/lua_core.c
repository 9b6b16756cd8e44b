/* lua_core — see lua_core.h. `require("orrery.core")` loads build/lua/orrery/core.so. */
#include <lauxlib.h>
#include <lua.h>

#include "lua_core.h"
#include "version.h"

int luaopen_orrery_core(lua_State *L);

int luaopen_orrery_core(lua_State *L) {
    lua_newtable(L); /* stack: core */
    lua_pushstring(L, ORRERY_VERSION);
    lua_setfield(L, -2, "version");
    config_lua_register(L);
    router_lua_register(L);
    migrate_lua_register(L);
    lua_api_lua_register(L);
    auth_lua_register(L);
    db_lua_register(L);
    ics_lua_register(L);
    rrule_lua_register(L);
    bus_lua_register(L);
    sandbox_lua_register(L);
    agents_lua_register(L);
    msglog_lua_register(L);
    replica_lua_register(L);
    return 1;
}
