-- Instructions per delivery to 10 Lua subscribers, counted by callgrind (deterministic where
-- wall-clock rates on a shared machine are not):
--   for n in 2500 5000; do LUA_CPATH='build/lua/?.so;;' valgrind --tool=callgrind \
--     --callgrind-out-file=/tmp/cg.$n lua5.4 bench/agents_callgrind.lua $n 2>&1 | grep 'I   refs'; done
-- (I(5000) - I(2500)) / 25000 is the cost of one delivery; callgrind_annotate --inclusive=yes
-- /tmp/cg.5000 shows where it goes. One publisher, 10 subscribers, one worker.
local core = require("orrery.core")
local json = core.api().json
local N = tonumber(arg[1]) or 2000
local rt = assert(core.agents_new({ workers = 1, lib_dir = "lib", mailbox = 100000 }))
local SUB = [[
local n = 0
return { name = "%s", description = "counts", subscribes = { "bench.*" }, on = {
  inform = function() n = n + 1 end,
  query = function() return n end,
} }]]
for i = 1, 10 do assert(rt:load(SUB:format("sub" .. i))) end
assert(rt:load([[return { name = "pub", description = "publishes", on = { request = function(msg, ctx)
  for i = 1, msg.content do ctx:publish("bench.tick", i) end
  return true
end } }]]))
local r = rt:request("pub", tostring(N), { timeout = 300 })
assert(r.performative == "inform", r.content)
for i = 1, 10 do
  local q
  repeat
    q = rt:request("sub" .. i, nil, { performative = "query", timeout = 300 })
  until json.decode(q.content) == N
end
rt:close()
print(("delivered %d"):format(N * 10))
