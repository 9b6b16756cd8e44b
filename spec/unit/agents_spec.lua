-- The agent runtime (src/agents*.c, lib/orrery/agent.lua, docs/agents.md) through orrery.core:
-- real agents on the real scheduler and bus, without a server. Each test builds its own runtime.
local core = require("orrery.core")
local wait_for = require("helpers").wait_for
local socket = require("socket")
local json = core.api().json

local USER = "11111111-1111-4111-8111-111111111111"
local OTHER = "22222222-2222-4222-8222-222222222222"

local function runtime(opts)
  local o = { workers = 2, lib_dir = "lib" }
  for k, v in pairs(opts or {}) do o[k] = v end
  return assert(core.agents_new(o))
end

local function load(rt, src, chunk, version)
  local name, err = rt:load(src, chunk or "=test.lua", version)
  assert(name, err)
  return name
end

-- request -> performative, decoded content, reply
local function ask(rt, agent, content, opts)
  local r = rt:request(agent, content ~= nil and json.encode(content) or nil, opts or { timeout = 5 })
  return r.performative, r.content and json.decode(r.content), r
end

local function status_of(rt, name)
  for _, a in ipairs(json.decode(rt:status())) do
    if a.name == name then return a end
  end
end


local ECHO = [[
return {
  name = "echo",
  description = "Answers with what it got",
  capabilities = { { name = "echo", description = "echo the content", args = { type = "object" } } },
  on = {
    request = function(msg, ctx)
      if type(msg.content) == "table" and msg.content.sleep then ctx:sleep(msg.content.sleep) end
      return { got = msg.content, user = ctx.user_id, conversation = ctx.conversation_id, from = msg.sender }
    end,
  },
}
]]

describe("agent runtime", function()
  local rt
  after_each(function()
    if rt then rt:close() end
    rt = nil
  end)

  describe("loading", function()
    it("loads an agent file and lists it in the directory and status", function()
      rt = runtime()
      assert.equal("echo", load(rt, ECHO))
      local dir = json.decode(rt:directory())
      assert.equal("echo", dir[1].name)
      assert.equal("echo", dir[1].capabilities[1].name)
      local st = status_of(rt, "echo")
      assert.equal("running", st.status)
      assert.equal(1, st.version)
      assert.equal(0, st.handled)
    end)

    it("reports syntax errors with the chunk and line, and loads nothing", function()
      rt = runtime()
      local name, err = rt:load("return {\n name = 'x',\n description = \n}", "=agents/bad.lua")
      assert.is_nil(name)
      assert.matches("agents/bad.lua:4:", err)
      assert.same({}, json.decode(rt:status()))
    end)

    it("checks what the file declares, naming the field", function()
      rt = runtime()
      local cases = {
        { "return 42", "must return a table" },
        { "return { description = 'd', on = {} }", "^name:" },
        { "return { name = 'Bad Name', description = 'd', on = {} }", "^name:" },
        { "return { name = 'a', on = {} }", "^description:" },
        { "return { name = 'a', description = 'd' }", "^on:" },
        { "return { name = 'a', description = 'd', on = { shout = function() end } }", "on.shout: not a performative" },
        { "return { name = 'a', description = 'd', on = { request = 1 } }", "on.request: must be a function" },
        { "return { name = 'a', description = 'd', on = {}, capabilities = { 1 } }", "capabilities%[1%]" },
        { "return { name = 'a', description = 'd', on = {}, subscribes = 'x' }", "subscribes: must be a list" },
        { "error('boom at load')", "boom at load" },
        { "while true do end", "instruction" },
      }
      for _, c in ipairs(cases) do
        local info, err = rt:check(c[1], "=a.lua")
        assert.is_nil(info, c[1])
        assert.matches(c[2], err, 1)
      end
      local info = assert(rt:check(ECHO, "=echo.lua"))
      assert.equal("echo", info.name)
      assert.equal("echo the content", json.decode(info.capabilities)[1].description)
    end)

    it("runs agents without io, os.execute, debug, load of bytecode or writable globals", function()
      rt = runtime()
      load(rt, [[
        return { name = "probe", description = "d", on = { request = function(msg)
          local src = msg.content
          local f = load(src)
          local ok, err = pcall(f)
          return { ok = ok, err = err and tostring(err) or nil }
        end } }
      ]])
      local probes = {
        "return io.open('/etc/passwd')",
        "return os.execute('true')",
        "return debug.getinfo(1)",
        "return package.loadlib('x', 'y')",
        "return load(string.dump(function() end))",
        "x_global = 1",
        "rawset(_G, 'y', 1) return y",
        "string.len = nil",
        "orrery.bus.send = nil",
        "return require('os')",
        "return require('../../etc/passwd')",
      }
      for _, p in ipairs(probes) do
        local perf, c = ask(rt, "probe", p)
        assert.equal("inform", perf)
        assert.is_false(c.ok, p)
      end
    end)
  end)

  describe("messages", function()
    it("answers a request, with the user and conversation of the request", function()
      rt = runtime()
      load(rt, ECHO)
      local perf, c, r = ask(rt, "echo", { a = 1 }, { user_id = USER, conversation_id = "conv-1", timeout = 5 })
      assert.equal("inform", perf)
      assert.same({ a = 1 }, c.got)
      assert.equal(USER, c.user)
      assert.equal("conv-1", c.conversation)
      assert.equal("_client", c.from)
      assert.equal("echo", r.sender)
      assert.equal(USER, r.user_id)
      assert.equal("conv-1", r.conversation_id)
      assert.equal(1, status_of(rt, "echo").handled)
    end)

    it("answers failure for an unknown agent, a missing handler and a handler that does not reply", function()
      rt = runtime()
      load(rt, [[return { name = "quiet", description = "d", on = {
        request = function() end,
        inform = function() end,
      } }]])
      local perf, c = ask(rt, "nobody", {})
      assert.equal("failure", perf)
      assert.equal("unknown_agent", c.error)
      perf, c = ask(rt, "quiet", {}, { performative = "query", timeout = 5 })
      assert.equal("failure", perf)
      assert.equal("not_understood", c.error)
      perf, c = ask(rt, "quiet", {})
      assert.equal("failure", perf)
      assert.equal("no_reply", c.error)
    end)

    it("keeps an agent running after its handler raises, and answers failure with the error", function()
      rt = runtime()
      load(rt, [[return { name = "flaky", description = "d", on = { request = function(msg)
        if msg.content.fail then error("it broke") end
        return "fine"
      end } }]])
      local perf, c = ask(rt, "flaky", { fail = true })
      assert.equal("failure", perf)
      assert.equal("script.error", c.error)
      assert.matches("it broke", c.message)
      perf, c = ask(rt, "flaky", { fail = false })
      assert.equal("inform", perf)
      assert.equal("fine", c)
      local st = status_of(rt, "flaky")
      assert.equal(1, st.failed)
      assert.matches("it broke", st.last_error)
      assert.equal("running", st.status)
    end)

    it("lets one agent ask another and wait for the answer (bus.request)", function()
      rt = runtime()
      load(rt, ECHO)
      load(rt, [[return { name = "front", description = "d", on = { request = function(msg, ctx)
        local reply, err = ctx:request(msg.content.to, { hello = "there" }, { timeout = msg.content.timeout })
        if not reply then return { err = err } end
        return { sender = reply.sender, got = reply.content.got, user = reply.content.user }
      end } }]])
      local perf, c = ask(rt, "front", { to = "echo" }, { user_id = USER, timeout = 5 })
      assert.equal("inform", perf)
      assert.same({ sender = "echo", got = { hello = "there" }, user = USER }, c)
      perf, c = ask(rt, "front", { to = "nobody" })
      assert.equal("inform", perf)
      assert.equal("unknown_agent", c.err)
    end)

    it("times a bus.request out with `timeout` and drops the late reply", function()
      rt = runtime()
      load(rt, ECHO)
      load(rt, [[
        local informs = 0
        return { name = "impatient", description = "d", on = {
          request = function(_, ctx)
            local reply, err = ctx:request("echo", { sleep = 0.5 }, { timeout = 0.1 })
            ctx:sleep(0.6) -- the late reply arrives meanwhile and must not resume anything
            return { reply = reply ~= nil, err = err, informs = informs }
          end,
          inform = function() informs = informs + 1 end,
        } }
      ]])
      local t = socket.gettime()
      local perf, c = ask(rt, "impatient", {})
      assert.equal("inform", perf)
      assert.same({ reply = false, err = "timeout", informs = 0 }, c)
      assert.is_true(socket.gettime() - t < 2)
      assert.equal(0, status_of(rt, "impatient").failed)
    end)

    it("answers `busy` when a mailbox is full instead of growing", function()
      rt = runtime({ mailbox = 4, workers = 1 })
      load(rt, [[return { name = "slow", description = "d", on = { request = function()
        local x = 0
        for i = 1, 3e6 do x = x + i end
        return x
      end } }]])
      local list = {}
      for i = 1, 40 do list[i] = { "slow", "{}" } end
      local busy, done = 0, 0
      for _, r in ipairs(rt:requests(list, 30)) do
        local c = r.content and json.decode(r.content)
        if r.performative == "refuse" and c.error == "busy" then busy = busy + 1 end
        if r.performative == "inform" then done = done + 1 end
      end
      assert.is_true(busy > 0, "some requests were refused busy")
      assert.is_true(done >= 4, "the mailbox's worth was handled")
      assert.equal(40, busy + done)
    end)

    it("publishes to subscribers matching `*` patterns, across agents", function()
      rt = runtime()
      local collector = [[
        local seen = {}
        return { name = "%s", description = "d", subscribes = { "%s" }, on = {
          inform = function(msg) seen[#seen + 1] = msg.topic .. "=" .. tostring(msg.content.n) end,
          query = function() return seen end,
        } }
      ]]
      load(rt, collector:format("tasks_watch", "task.*"))
      load(rt, collector:format("all_watch", "*.created"))
      load(rt, [[return { name = "pub", description = "d", on = { request = function(msg, ctx)
        return ctx:publish(msg.content.topic, { n = msg.content.n })
      end } }]])
      local _, n1 = ask(rt, "pub", { topic = "task.created", n = 1 })
      local _, n2 = ask(rt, "pub", { topic = "event.created", n = 2 })
      local _, n3 = ask(rt, "pub", { topic = "task.done", n = 3 })
      assert.same({ 2, 1, 1 }, { n1, n2, n3 })
      assert.is_true(wait_for(function()
        local _, seen = ask(rt, "all_watch", nil, { performative = "query", timeout = 5 })
        return #seen == 2
      end))
      local _, tasks = ask(rt, "tasks_watch", nil, { performative = "query", timeout = 5 })
      assert.same({ "task.created=1", "task.done=3" }, tasks)
      local _, all = ask(rt, "all_watch", nil, { performative = "query", timeout = 5 })
      assert.same({ "task.created=1", "event.created=2" }, all)
    end)

    it("lets an orchestrator discover capabilities through the directory", function()
      rt = runtime()
      load(rt, ECHO)
      load(rt, [[return { name = "orch", description = "finds who can echo", on = { request = function(_, ctx)
        for _, a in ipairs(ctx:directory()) do
          for _, c in ipairs(a.capabilities) do
            if c.name == "echo" then return ctx:request(a.name, "via directory").content.got end
          end
        end
        return "nobody"
      end } }]])
      local perf, c = ask(rt, "orch", {})
      assert.equal("inform", perf)
      assert.equal("via directory", c)
    end)

    it("handles an envelope id once, even when it is delivered twice", function()
      rt = runtime()
      load(rt, [[
        local count = 0
        return { name = "counter", description = "d", on = {
          inform = function() count = count + 1 end,
          query = function() return count end,
        } }
      ]])
      local env = { id = "33333333-3333-4333-8333-333333333333", performative = "inform", receiver = "counter",
                    sender = "test", content = "1" }
      assert.equal(0, rt:send(env))
      assert.equal(0, rt:send(env))
      env.id = "44444444-4444-4444-8444-444444444444"
      assert.equal(0, rt:send(env))
      assert.is_true(wait_for(function()
        local _, n = ask(rt, "counter", nil, { performative = "query", timeout = 5 })
        return n == 2
      end))
      socket.sleep(0.1)
      local _, n = ask(rt, "counter", nil, { performative = "query", timeout = 5 })
      assert.equal(2, n)
    end)

    it("never lets a script speak as another agent or for another user", function()
      rt = runtime()
      load(rt, ECHO)
      load(rt, [[return { name = "sneaky", description = "d", on = { request = function(_, ctx)
        local r = ctx:request("echo", "x")
        local ok = pcall(orrery.bus.send, "echo", "inform", "x", { sender = "admin", user_id = "someone" })
        return { user = r.content.user, from = r.content.from, sent = ok }
      end } }]])
      local _, c = ask(rt, "sneaky", {}, { user_id = USER, timeout = 5 })
      assert.equal(USER, c.user)
      assert.equal("sneaky", c.from)
      local _, c2 = ask(rt, "sneaky", {}, { user_id = OTHER, timeout = 5 })
      assert.equal(OTHER, c2.user)
    end)
  end)

  describe("waiting without blocking", function()
    it("completes 2,000 concurrent requests whose handler sleeps 1 s in under 2 s", function()
      rt = runtime({ workers = 2 })
      load(rt, ECHO)
      local list = {}
      for i = 1, 2000 do list[i] = { "echo", '{"sleep":1}' } end
      local t = socket.gettime()
      local replies = rt:requests(list, 10)
      local elapsed = socket.gettime() - t
      local ok = 0
      for _, r in ipairs(replies) do
        if r.performative == "inform" then ok = ok + 1 end
      end
      assert.equal(2000, ok)
      assert.is_true(elapsed < 2, ("took %.2f s"):format(elapsed))
    end)

    it("waits inside a script's own coroutines and metamethods, and refuses where C is in the way", function()
      rt = runtime()
      load(rt, [[return { name = "nested", description = "d", on = { request = function(msg, ctx)
        local how = msg.content
        if how == "wrap" then
          local f = coroutine.wrap(function() ctx:sleep(0.01); coroutine.yield("inner"); return "done" end)
          return { f(), f() }
        elseif how == "resume" then
          local co = coroutine.create(function(a) local b = coroutine.yield(a + 1); ctx:sleep(0.01); return b * 2 end)
          local _, x = coroutine.resume(co, 1)
          local _, y = coroutine.resume(co, 10)
          return { x, y }
        elseif how == "meta" then
          local t = setmetatable({}, { __index = function(_, k) ctx:sleep(0.01); return k .. "!" end })
          return t.hi
        elseif how == "sort" then
          local ok, err = pcall(table.sort, { 3, 1, 2 }, function(a, b) ctx:sleep(0.01); return a < b end)
          return { ok = ok, err = tostring(err) }
        end
      end } }]])
      local perf, c = ask(rt, "nested", "wrap")
      assert.equal("inform", perf)
      assert.same({ "inner", "done" }, c)
      perf, c = ask(rt, "nested", "resume")
      assert.equal("inform", perf)
      assert.same({ 2, 20 }, c)
      perf, c = ask(rt, "nested", "meta")
      assert.equal("inform", perf)
      assert.equal("hi!", c)
      perf, c = ask(rt, "nested", "sort")
      assert.equal("inform", perf)
      assert.is_false(c.ok)
      assert.matches("cannot wait here", c.err)
      assert.equal("inform", (ask(rt, "nested", "meta")))
    end)

    it("does not let a script resume or close the coroutine a handler runs in", function()
      rt = runtime()
      load(rt, [[
        local parked
        return { name = "thief", description = "d", on = { request = function(msg, ctx)
          if msg.content == "park" then
            parked = coroutine.running()
            ctx:sleep(0.3)
            return "woke normally"
          end
          local ok1, e1 = coroutine.resume(parked, "forged")
          local ok2, e2 = pcall(coroutine.close, parked)
          return { resumed = ok1, e1 = tostring(e1), closed = ok2, e2 = tostring(e2) }
        end } }
      ]])
      local list = rt:requests({ { "thief", '"park"' }, { "thief", '"steal"' } }, 5)
      assert.equal("woke normally", json.decode(list[1].content))
      local c = json.decode(list[2].content)
      assert.is_false(c.resumed)
      assert.matches("cannot resume a coroutine the host runs", c.e1)
      assert.is_false(c.closed)
    end)

    it("keeps every ctx's metatable out of scripts' reach", function()
      rt = runtime()
      load(rt, [[return { name = "meddler", description = "d", on = { request = function(_, ctx)
        local mt = getmetatable(ctx)
        mt.__index = function() return function() return "hijacked" end end
        mt.__gc = function() while true do end end
        return type(ctx.reply) == "function" and "ctx intact" or "ctx changed"
      end } }]])
      for _ = 1, 3 do
        local perf, c = ask(rt, "meddler", {})
        assert.equal("inform", perf)
        assert.equal("ctx intact", c)
      end
      collectgarbage()
      assert.equal("inform", (ask(rt, "meddler", {})))
    end)

    it("gives way on a bare coroutine.yield() and goes on", function()
      rt = runtime()
      load(rt, [[return { name = "polite", description = "d", on = { request = function()
        for _ = 1, 3 do coroutine.yield() end
        return "after yields"
      end } }]])
      assert.equal("after yields", select(2, ask(rt, "polite", {})))
    end)

    it("ends a handler that outlives run_timeout, waits included", function()
      rt = runtime({ run_timeout = 0.3 })
      load(rt, ECHO)
      local perf, c = ask(rt, "echo", { sleep = 5 })
      assert.equal("failure", perf)
      assert.equal("script.timeout", c.error)
      assert.equal("inform", (ask(rt, "echo", { a = 1 })))
    end)
  end)

  describe("limits and supervision", function()
    local HOSTILE = [[
      return { name = "%s", description = "d", on = { request = function(msg)
        local what = msg.content
        if what == "loop" then while true do end
        elseif what == "pcall_loop" then while true do pcall(function() while true do end end) end
        elseif what == "grow" then local t = {} local i = 0 while true do i = i + 1 t[i] = ("x"):rep(64) .. i end
        elseif what == "rep" then return #string.rep("x", 2^31)
        elseif what == "recurse" then local function f(n) return f(n + 1) + 1 end return f(1)
        elseif what == "pattern" then return string.find(string.rep("a", 30), string.rep("a-", 30) .. "b")
        elseif what == "gc" then setmetatable({}, { __gc = function() while true do end end }) collectgarbage()
        elseif what == "wrap_loop" then
          while true do pcall(coroutine.wrap(function() while true do end end)) end
        end
        return "ok"
      end } }
    ]]

    it("ends only the offending run; the agent and its neighbours keep answering", function()
      rt = runtime({ memory = 16 * 1024 * 1024, instructions = 5e6, seconds = 2 })
      load(rt, HOSTILE:format("hostile"))
      load(rt, ECHO)
      local expect = {
        loop = "script.instruction_limit",
        pcall_loop = "script.instruction_limit",
        wrap_loop = "script.instruction_limit",
        rep = "script.memory_limit",
        recurse = nil, -- a stack overflow (script.error) or the memory cap, depending on the cap
        pattern = "script.error",
        gc = "script.error",
      }
      for what, code in pairs(expect) do
        local perf, c = ask(rt, "hostile", what, { timeout = 20 })
        assert.equal("failure", perf, what)
        if code then assert.equal(code, c.error, what .. ": " .. tostring(c.message)) end
        assert.equal("inform", (ask(rt, "echo", { still = "here" })), "echo after " .. what)
        assert.is_true(wait_for(function()
          return (ask(rt, "hostile", "fine", { timeout = 5 })) == "inform"
        end, 10), "hostile serves again after " .. what)
      end
    end)

    it("rebuilds a state that broke its memory cap, with backoff, and marks repeated crashes degraded", function()
      rt = runtime({ memory = 8 * 1024 * 1024 })
      load(rt, HOSTILE:format("leaky"))
      local perf, c = ask(rt, "leaky", "grow", { timeout = 10 })
      assert.equal("failure", perf)
      assert.equal("script.memory_limit", c.error)
      local st = status_of(rt, "leaky")
      assert.equal(1, st.restarts)
      assert.is_true(wait_for(function() return status_of(rt, "leaky").status == "running" end))
      assert.equal("inform", (ask(rt, "leaky", "fine")))
      for _ = 1, 2 do
        assert.is_true(wait_for(function() return (ask(rt, "leaky", "fine", { timeout = 5 })) == "inform" end, 10))
        ask(rt, "leaky", "grow", { timeout = 10 })
      end
      st = status_of(rt, "leaky")
      assert.equal(3, st.restarts)
      assert.equal("degraded", st.status)
      assert.equal(1, rt:degraded())
      assert.matches("memory", st.last_error)
      -- Degraded is reported, and the agent still comes back.
      assert.is_true(wait_for(function() return (ask(rt, "leaky", "fine", { timeout = 5 })) == "inform" end, 10))
    end)
  end)

  describe("the watchdog", function()
    it("starts another worker when one is stuck in C code no hook can stop, so other agents go on", function()
      rt = runtime({ workers = 1, seconds = 0.1, instructions = 1e10, memory = 256 * 1024 * 1024 })
      load(rt, [[
        local t = {}
        return { name = "sorter", description = "d", on = {
          inform = function() local n = #t for i = n + 1, n + 200000 do t[i] = (i * 7919) % 1000003 end end,
          request = function() table.sort(t) return #t end,
        } }
      ]])
      load(rt, ECHO)
      for _ = 1, 20 do -- 4 million numbers, 200,000 per run (each run well inside its 0.1 s slice)
        rt:send({ performative = "inform", receiver = "sorter", sender = "spec", content = "1" })
      end
      assert.is_true(wait_for(function() return status_of(rt, "sorter").handled == 20 end, 30))
      local t = socket.gettime()
      local replies = rt:requests({ { "sorter", "1" }, { "echo", '"meanwhile"' } }, 30)
      local sorted_at, echoed_at = replies[1].created_at - t, replies[2].created_at - t
      assert.equal("meanwhile", json.decode(replies[2].content).got)
      -- one worker: without the watchdog the echo would wait for the whole sort
      assert.is_true(echoed_at < sorted_at - 0.2, ("echo at %.2f s, sort done at %.2f s"):format(echoed_at, sorted_at))
      assert.matches("^stuck", status_of(rt, "sorter").last_error)
    end)
  end)

  describe("versions", function()
    it("swaps a new version in while a running handler finishes on the old one", function()
      rt = runtime()
      local v = [[return { name = "ver", description = "d", on = { request = function(msg, ctx)
        if msg.content == "slow" then ctx:sleep(0.4) end
        return "%s"
      end } }]]
      load(rt, v:format("v1"), "=ver.lua", 1)
      -- `asker` keeps what the slow request to `ver` answered.
      load(rt, [[
        local got
        return { name = "asker", description = "d", on = {
          inform = function(_, ctx) got = ctx:request("ver", "slow").content end,
          query = function() return got or "pending" end,
        } }
      ]])
      assert.equal(0, rt:send({ performative = "inform", receiver = "asker", sender = "spec", content = "1" }))
      socket.sleep(0.1) -- the slow handler of v1 is asleep now
      assert.equal("ver", load(rt, v:format("v2"), "=ver.lua", 2))
      assert.equal(2, status_of(rt, "ver").version)
      assert.equal("v2", select(2, ask(rt, "ver", "fast")))
      assert.is_true(wait_for(function()
        return select(2, ask(rt, "asker", nil, { performative = "query", timeout = 5 })) ~= "pending"
      end))
      assert.equal("v1", select(2, ask(rt, "asker", nil, { performative = "query", timeout = 5 })))
      assert.equal("v2", select(2, ask(rt, "ver", "slow")))
    end)

    it("unloads an agent: later requests get unknown_agent", function()
      rt = runtime()
      load(rt, ECHO)
      assert.is_true(rt:unload("echo"))
      local perf, c = ask(rt, "echo", {})
      assert.equal("failure", perf)
      assert.equal("unknown_agent", c.error)
      assert.equal("echo", load(rt, ECHO))
      assert.equal("inform", (ask(rt, "echo", {})))
    end)
  end)
end)
