/* lua_core — the Lua module `orrery.core` (build/lua/orrery/core.so): the same C code the server
 * runs, callable from busted specs without a server. Each module adds its functions to the table
 * on top of the stack with its <module>_lua_register(L); lua_core.c calls them all. */
#ifndef ORRERY_LUA_CORE_H
#define ORRERY_LUA_CORE_H

#include <lua.h>

void config_lua_register(lua_State *L);
void router_lua_register(lua_State *L);
void migrate_lua_register(lua_State *L);
void lua_api_lua_register(lua_State *L);
void auth_lua_register(lua_State *L);
void db_lua_register(lua_State *L);
void ics_lua_register(lua_State *L);
void rrule_lua_register(lua_State *L);
void bus_lua_register(lua_State *L);
void sandbox_lua_register(lua_State *L);
void agents_lua_register(lua_State *L);
void msglog_lua_register(lua_State *L);
void replica_lua_register(lua_State *L);

#endif
