-- The agent runtime behind the real server: 2,000 concurrent requests to an agent whose handler
-- sleeps 1 s, sent by a `driver` agent over the bus, while wrk hammers GET /healthz.
--   lua5.4 bench/agents_http.lua PORT OWNER_DATABASE_URL
-- Prints one "agents_http:" line: how long the 2,000 replies took and what /healthz did meanwhile.
package.path = "spec/support/?.lua;" .. package.path
local h = require("helpers")
local socket = require("socket")

local port, owner_url = tonumber(arg[1]), arg[2]
assert(port and owner_url, "usage: lua5.4 bench/agents_http.lua PORT OWNER_DATABASE_URL")
local N = 2000

local admin = h.new_user(port, "bench-admin")
local code, _, err = h.psql(owner_url, "SELECT set_config('orrery.ctx', 'admin', false); "
  .. "UPDATE users SET role = 'admin' WHERE id = '" .. admin.id .. "'")
assert(code == 0, err)

local function put(name, source)
  local res = admin.call("PUT", "/api/agents/" .. name, { json = { source = source } })
  assert(res.status == 200 or res.status == 201, res.body)
end
put("sleeper", [[return { name = "sleeper", description = "sleeps 1 s", on = {
  request = function(msg, ctx) ctx:sleep(1) return msg.content end } }]])
put("driver", [[
local state = { count = 0 }
return { name = "driver", description = "fans requests out", on = {
  request = function(msg)
    state.n, state.count, state.finished = msg.content.n, 0, nil
    state.started = orrery.time.now()
    for i = 1, state.n do assert(orrery.bus.send("sleeper", "request", i, { reply_with = "fan-" .. i })) end
    return state.n
  end,
  inform = function(msg)
    if (msg.in_reply_to or ""):sub(1, 4) == "fan-" then
      state.count = state.count + 1
      if state.count == state.n then state.finished = orrery.time.now() end
    end
  end,
  query = function() return state end,
} }]])

-- wrk on /healthz in the background for the whole fan-out
local out = os.tmpname()
os.execute(("wrk -t1 -c8 -d3s --latency http://127.0.0.1:%d/healthz > %s 2>&1 &"):format(port, out))
socket.sleep(0.2)
local res = admin.call("POST", "/api/agents/driver/messages", { json = { content = { n = N } } })
assert(res.status == 200, res.body)
local done
local deadline = h.now() + 30
while h.now() < deadline do
  local q = admin.call("POST", "/api/agents/driver/messages", { json = { performative = "query" } })
  if q.json and q.json.content and q.json.content.finished then done = q.json.content break end
  socket.sleep(0.05)
end
socket.sleep(3.2) -- let wrk finish
local wrk = io.open(out):read("a")
os.remove(out)
assert(done, "the driver never got its replies")
local rps = wrk:match("Requests/sec:%s*([%d.]+)")
local p99 = wrk:match("\n%s*99%%%s*(%S+)")
print(("agents_http: %d concurrent bus requests to a handler sleeping 1 s, through orrery serve: all %d replies"
  .. " in %.2f s; GET /healthz meanwhile (wrk -t1 -c8 -d3s) %s req/s, p99 %s"):format(N, done.count,
  done.finished - done.started, rps or "?", p99 or "?"))
