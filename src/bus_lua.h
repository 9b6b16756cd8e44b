/* bus_lua — orrery.core's bus binding (src/bus_lua.c). Exposes the conversions between envelopes
 * and Lua tables ({id, performative, sender, ..., content = JSON text, created_at}) so that other
 * bindings carrying envelopes (src/replica_lua.c) use the same ones. Uses bus and Lua. */
#ifndef ORRERY_BUS_LUA_H
#define ORRERY_BUS_LUA_H

#include <lua.h>

#include "bus.h"

/* Reads the table at idx into *e (content malloc'd: the caller releases it with bus_envelope_clear).
 * Raises a Lua error on a malformed table (nothing left to free then). */
void bus_lua_check_envelope(lua_State *L, int idx, struct bus_envelope *e);
/* Pushes e as a new table. */
void bus_lua_push_envelope(lua_State *L, const struct bus_envelope *e);

#endif
