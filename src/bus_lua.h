/* bus_lua — envelopes as Lua tables (string fields, content as JSON text, created_at a number),
 * shared by every binding that hands envelopes to Lua: orrery.core's bus, the agent runtime's
 * states and specs' helpers. Implemented in bus_lua.c. */
#ifndef ORRERY_BUS_LUA_H
#define ORRERY_BUS_LUA_H

#include <lua.h>

#include "bus.h"

/* Pushes the table of e (empty fields left out; content as JSON text when present). */
void bus_lua_push_envelope(lua_State *L, const struct bus_envelope *e);
/* Reads the table at idx into *e (content malloc'd and checked to be JSON: caller clears with
 * bus_envelope_clear). Raises on misuse, with nothing left to free. */
void bus_lua_check_envelope(lua_State *L, int idx, struct bus_envelope *e);

#endif
