-- Micro-benchmark of the in-process bus alone (src/bus.c): C loops driven through orrery.core, no
-- Lua agents, no scheduler, one thread. Issue targets for the full runtime on 2 cores:
-- >= 200,000 round trips/s and >= 1,000,000 deliveries/s (publish to 10 subscribers).
--   LUA_CPATH='build/lua/?.so;;' lua5.4 bench/bus.lua [ROUND_TRIPS] [PUBLISHES] [SUBSCRIBERS]
local core = require("orrery.core")

local function count(i, default)
  local n = math.tointeger(tonumber(arg[i] or default))
  if not n or n < 1 then
    io.stderr:write("usage: lua5.4 bench/bus.lua [ROUND_TRIPS] [PUBLISHES] [SUBSCRIBERS]\n")
    os.exit(2)
  end
  return n
end

local trips, pubs, subs = count(1, "1000000"), count(2, "200000"), count(3, "10")

core.bus_bench_roundtrips(math.min(trips, 10000)) -- warm-up
core.bus_bench_publish(math.min(pubs, 1000), subs)

-- Best of three: the machine is shared, the slowest run measures the neighbours.
local function best(f)
  local t = math.huge
  for _ = 1, 3 do t = math.min(t, f()) end
  return t
end

local rt = best(function() return core.bus_bench_roundtrips(trips) end)
print(string.format("bus: %.0f round trips/s (%d request -> take -> inform -> take, %.3f us each)",
  trips / rt, trips, rt / trips * 1e6))
local pt = best(function() return core.bus_bench_publish(pubs, subs) end)
print(string.format("bus: %.0f deliveries/s (%d publishes to %d subscribers, each taking its copy)",
  pubs * subs / pt, pubs, subs))
