/* bus_lua — envelopes as Lua tables, shared by the orrery.core bindings that take or give them
 * (the bus's own in bus_lua.c, the message log's in msglog.c, the replicas' in replica_lua.c). A table has the envelope's
 * string fields (absent = ""), `content` as JSON text and `created_at` in seconds. Uses Lua and bus. */
#ifndef ORRERY_BUS_LUA_H
#define ORRERY_BUS_LUA_H

#include <lua.h>

#include "bus.h"

/* Reads the table at idx into *e (content malloc'd: the caller clears it with
 * bus_envelope_clear). Raises on misuse (wrong types, too long, content not JSON, invalid
 * envelope); nothing is left allocated when it raises. */
void bus_lua_check_envelope(lua_State *L, int idx, struct bus_envelope *e);
/* Pushes e as a new table (empty strings left out). */
void bus_lua_push_envelope(lua_State *L, const struct bus_envelope *e);

#endif
