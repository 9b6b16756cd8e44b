-- Benchmark of the agent runtime (src/agents*.c, lib/orrery/agent.lua): real Lua agents on the real
-- scheduler, driven through orrery.core (core.agents_new), no server. Issue targets on 2 cores:
--   (a) >= 200,000 request/reply round trips/s between two Lua agents
--   (b) >= 1,000,000 deliveries/s publishing to 10 subscribers
--   (c) <= 150 KB per idle agent state       (d) <= 4 KB per suspended handler (conversation)
--   (e) 10,000 concurrent sleeping handlers: wall time and peak RSS
--   LUA_CPATH='build/lua/?.so;;' lua5.4 bench/agents.lua [WORKERS [PART]]
-- Each part (trips, publish, idle, suspended, sleepers) runs in a process of its own, so memory
-- one part freed does not hide what the next one takes. Each line starts with "agents:"
-- (scripts/bench.sh copies them into bench/RESULTS.md).
local core = require("orrery.core")
local json = core.api().json
local clock = core.api().time.monotonic

local WORKERS = math.tointeger(tonumber(arg[1] or "2"))
local PART = arg[2]
if not WORKERS or WORKERS < 1 then
  io.stderr:write("usage: lua5.4 bench/agents.lua [WORKERS [trips|publish|idle|suspended|sleepers]]\n")
  os.exit(2)
end

local function proc_kb(field)
  for line in io.lines("/proc/self/status") do
    local v = line:match("^" .. field .. ":%s+(%d+)")
    if v then return tonumber(v) end
  end
end

-- Peak RSS from here on (Linux: writing 5 to clear_refs resets VmHWM); false where not allowed.
local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if not f then return false end
  local ok = f:write("5")
  f:close()
  return ok ~= nil
end

local function runtime(opts)
  local o = { workers = WORKERS, lib_dir = "lib" }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(core.agents_new(o))
end

local function load(rt, src)
  return assert(rt:load(src, "=bench.lua"))
end

local function ask(rt, agent, performative, content)
  local r = rt:request(agent, content and json.encode(content), { performative = performative, timeout = 120 })
  assert(r.performative == "inform", r.content)
  return json.decode(r.content)
end

-- Best of three: the machine is shared, the slowest run measures the neighbours.
local function best(f)
  local t = math.huge
  for _ = 1, 3 do t = math.min(t, f()) end
  return t
end

-- ---- (a) request/reply round trips between two Lua agents ----

local PONG = [[return { name = "pong", description = "answers", on = {
  request = function(msg) return msg.content end } }]]
-- Each ping handler asks pong k times, one after the other (each a yield and a resume).
local PING = [[return { name = "ping", description = "asks pong k times", on = {
  request = function(msg, ctx)
    for i = 1, msg.content do
      local r = assert(ctx:request("pong", i))
      assert(r.content == i)
    end
    return msg.content
  end } }]]

local function round_trips(conc, k)
  local rt = runtime({ mailbox = conc * 2 })
  load(rt, PONG)
  load(rt, PING)
  local function run(c, n)
    local list = {}
    for i = 1, c do list[i] = { "ping", tostring(n) } end
    local t = clock()
    for _, r in ipairs(rt:requests(list, 120)) do assert(r.performative == "inform", r.content) end
    return clock() - t
  end
  run(conc, 10) -- warm-up
  local t = best(function() return run(conc, k) end)
  rt:close()
  return conc * k / t, t
end

-- ---- (b) publish to 10 subscribers ----

local SUB = [[
local n, target, done_at = 0, -1, nil
return { name = "%s", description = "counts", subscribes = { "bench.*" }, on = {
  inform = function()
    n = n + 1
    if n == target then done_at = orrery.time.monotonic() end
  end,
  request = function(msg)
    if msg.content == "sync" then return n end
    n, target, done_at = 0, msg.content, nil
    return true
  end,
  query = function() return { n = n, done_at = done_at } end,
} }]]
-- Publishes `count` events in chunks; after each chunk it waits until every subscriber has taken
-- it (a request queues behind the events), so the mailboxes hold at most a chunk per publisher.
local PUB = [[return { name = "pub", description = "publishes", on = { request = function(msg, ctx)
  local c = msg.content
  local subs = {}
  for i = 1, c.subscribers do subs[i] = "sub" .. i end
  local left = c.count
  while left > 0 do
    for i = 1, math.min(c.chunk, left) do ctx:publish("bench.tick", i) end
    left = left - c.chunk
    for _, s in ipairs(subs) do assert(ctx:request(s, "sync")) end
  end
  return true
end } }]]

local function publish(subscribers, total, publishers, chunk)
  local rt = runtime({ mailbox = chunk * publishers * 2 })
  for i = 1, subscribers do load(rt, SUB:format("sub" .. i)) end
  load(rt, PUB)
  local function run(count)
    for i = 1, subscribers do ask(rt, "sub" .. i, "request", count) end
    local list = {}
    local per = count // publishers
    for i = 1, publishers do
      list[i] = { "pub", json.encode({ count = per, chunk = chunk, subscribers = subscribers }) }
    end
    local t = clock()
    for _, r in ipairs(rt:requests(list, 300)) do assert(r.performative == "inform", r.content) end
    local last = 0
    for i = 1, subscribers do
      local s = ask(rt, "sub" .. i, "query")
      assert(s.n == per * publishers and s.done_at, "a subscriber missed events: " .. s.n)
      last = math.max(last, s.done_at)
    end
    return last - t
  end
  run(chunk * publishers) -- warm-up
  local t = best(function() return run(total) end)
  rt:close()
  return total * subscribers / t, t
end

-- ---- (c) memory per idle agent ----

local IDLE = [[return { name = "idle%d", description = "does nothing", on = {
  query = function() return collectgarbage("count") end } }]]

local function idle_agents(n)
  local rt = runtime()
  load(rt, IDLE:format(0))
  ask(rt, "idle0", "query")
  collectgarbage()
  local before = proc_kb("VmRSS")
  for i = 1, n do load(rt, IDLE:format(i)) end
  local loaded = proc_kb("VmRSS")
  -- One message each: what an agent that has worked once keeps (its bus id window among it).
  local list = {}
  for i = 1, n do list[i] = { "idle" .. i, nil, { performative = "query" } } end
  local lua_kb = 0
  for _, r in ipairs(rt:requests(list, 60)) do lua_kb = lua_kb + json.decode(r.content) end
  local used = proc_kb("VmRSS")
  rt:close()
  return (loaded - before) / n, (used - before) / n, lua_kb / n
end

-- ---- (d) memory per suspended handler, (e) 10,000 sleeping handlers ----

local SLEEPER = [[
local asleep = 0
return { name = "sleeper", description = "sleeps", on = {
  request = function(msg, ctx)
    asleep = asleep + 1
    ctx:sleep(msg.content)
    asleep = asleep - 1
    return true
  end,
  query = function() return { asleep = asleep, kb = collectgarbage("count") } end,
} }]]

local function suspended(n, seconds)
  local rt = runtime({ max_runs = n + 10, mailbox = n + 10 })
  load(rt, SLEEPER)
  local base = ask(rt, "sleeper", "query")
  collectgarbage()
  local rss0 = proc_kb("VmRSS")
  local env = { performative = "request", receiver = "sleeper", sender = "bench", content = tostring(seconds) }
  for _ = 1, n do assert(rt:send(env) == 0) end
  local s
  repeat s = ask(rt, "sleeper", "query") until s.asleep == n
  local rss1 = proc_kb("VmRSS")
  rt:close()
  return (s.kb - base.kb) * 1024 / n, (rss1 - rss0) * 1024 / n
end

local function many_sleepers(n, seconds)
  local rt = runtime({ max_runs = n + 10, mailbox = n + 10 })
  load(rt, SLEEPER)
  collectgarbage()
  local rss0 = proc_kb("VmRSS")
  local peak_ok = reset_peak()
  local list = {}
  for i = 1, n do list[i] = { "sleeper", tostring(seconds) } end
  local t = clock()
  for _, r in ipairs(rt:requests(list, 60)) do assert(r.performative == "inform", r.content) end
  local wall = clock() - t
  local peak = peak_ok and proc_kb("VmHWM") or proc_kb("VmRSS")
  rt:close()
  return wall, peak / 1024, (peak - rss0) / 1024, peak_ok
end

-- ---- Run ----

local parts = {}

function parts.trips()
  local rps, t = round_trips(200, 500)
  print(string.format("agents: %.0f round trips/s between two Lua agents (200 concurrent handlers x 500 "
    .. "sequential ctx:request, %d workers, best of 3: %.2f s)", rps, WORKERS, t))
end

function parts.publish()
  local dps, t = publish(10, 100000, 2, 1000)
  print(string.format("agents: %.0f deliveries/s to 10 subscribers (100000 ctx:publish from 2 handlers, each "
    .. "delivery a handler run, %d workers, best of 3: %.2f s)", dps, WORKERS, t))
end

function parts.idle()
  local loaded, used, lua_kb = idle_agents(1000)
  print(string.format("agents: %.1f KB RSS per idle agent (1000 loaded), %.1f KB once each handled a message "
    .. "(its Lua state: %.1f KB)", loaded, used, lua_kb))
end

function parts.suspended()
  local lua_b, rss_b = suspended(10000, 5)
  print(string.format("agents: %.0f bytes per suspended handler in its Lua state, %.0f bytes of RSS with the "
    .. "runtime's share (10000 asleep in one agent)", lua_b, rss_b))
end

function parts.sleepers()
  local wall, peak, growth, exact = many_sleepers(10000, 1)
  print(string.format("agents: 10000 concurrent handlers sleeping 1 s: all answered in %.2f s; peak RSS %.1f MB "
    .. "(%.1f MB above the idle runtime%s)", wall, peak, growth, exact and "" or "; RSS at the end"))
end

local ORDER = { "trips", "publish", "idle", "suspended", "sleepers" }

if PART then
  assert(parts[PART], "unknown part " .. PART)()
else
  local lua = arg[-1] or "lua5.4"
  for _, part in ipairs(ORDER) do
    local p = assert(io.popen(("%q %q %d %s"):format(lua, arg[0], WORKERS, part)))
    io.write(p:read("a"))
    io.flush()
    assert(p:close(), "bench/agents.lua: part " .. part .. " failed")
  end
end
