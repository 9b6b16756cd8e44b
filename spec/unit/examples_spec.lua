-- The example agents of agents/examples/ (docs/agents.md), loaded from their files into the real
-- runtime through orrery.core: what they advertise and how they behave together.
local core = require("orrery.core")
local wait_for = require("helpers").wait_for
local socket = require("socket")
local json = core.api().json

local USER = "11111111-1111-4111-8111-111111111111"
local OTHER = "22222222-2222-4222-8222-222222222222"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function load_file(rt, path)
  return assert(rt:load(read(path), "@" .. path))
end

-- request -> performative, decoded content
local function ask(rt, agent, content, opts)
  local o = { timeout = 5, user_id = USER }
  for k, v in pairs(opts or {}) do o[k] = v end
  local r = rt:request(agent, content ~= nil and json.encode(content) or nil, o)
  return r.performative, r.content and json.decode(r.content)
end


local function sessions(rt, user)
  local perf, list = ask(rt, "journal", nil, { performative = "query", user_id = user })
  assert.equal("inform", perf)
  return list
end

describe("example agents", function()
  local rt
  before_each(function()
    rt = assert(core.agents_new({ workers = 2, lib_dir = "lib" }))
    assert.equal("pomodoro", load_file(rt, "agents/examples/pomodoro.lua"))
    assert.equal("journal", load_file(rt, "agents/examples/journal.lua"))
  end)
  after_each(function()
    rt:close()
  end)

  it("advertise their capabilities, with the JSON schema of their arguments, in the directory", function()
    local dir = json.decode(rt:directory())
    assert.same({ "journal", "pomodoro" }, { dir[1].name, dir[2].name })
    local start = dir[2].capabilities[1]
    assert.equal("start", start.name)
    assert.same({ "label" }, start.args.required)
    assert.equal(100, start.args.properties.label.maxLength)
    assert.is_false(start.args.additionalProperties)
    local st = json.decode(rt:status())
    assert.same({ "pomodoro.*" }, st[1].subscribes)
  end)

  it("agree at once, then publish pomodoro.done when the time is up; the journal records it per user", function()
    local t = socket.gettime()
    local perf, c = ask(rt, "pomodoro", { capability = "start", args = { label = "write docs", seconds = 0.3 } })
    assert.equal("agree", perf)
    assert.is_true(socket.gettime() - t < 0.25, "the agreement does not wait for the timer")
    assert.equal("pomodoro-1", c.timer)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", c.ends_at)
    assert.same({}, sessions(rt, USER))
    assert.is_true(wait_for(function() return #sessions(rt, USER) == 1 end))
    local s = sessions(rt, USER)[1]
    assert.equal("write docs", s.label)
    assert.equal(0.3, s.seconds)
    assert.is_true(socket.gettime() - t >= 0.3)
    assert.same({}, sessions(rt, OTHER), "another user's journal is empty")
  end)

  it("refuse arguments that break the schema, naming what is wrong", function()
    local cases = {
      { {}, "label" },
      { { label = "" }, "label" },
      { { label = ("x"):rep(101) }, "label" },
      { { label = "x", seconds = -1 }, "seconds" },
      { { label = "x", seconds = "soon" }, "seconds" },
      { { label = "x", seconds = 7201 }, "seconds" },
    }
    for _, case in ipairs(cases) do
      local perf, c = ask(rt, "pomodoro", { capability = "start", args = case[1] })
      assert.equal("refuse", perf)
      assert.equal("invalid_args", c.error)
      assert.matches(case[2], c.message)
    end
    local perf, c = ask(rt, "pomodoro", { capability = "nap" })
    assert.equal("refuse", perf)
    assert.equal("unknown_capability", c.error)
  end)

  it("report status by asking the journal, and still answer when the journal is gone", function()
    ask(rt, "pomodoro", { capability = "start", args = { label = "a", seconds = 0 } })
    assert.is_true(wait_for(function() return #sessions(rt, USER) == 1 end))
    ask(rt, "pomodoro", { capability = "start", args = { label = "b", seconds = 30 } })
    local perf, c = ask(rt, "pomodoro", { capability = "status" })
    assert.equal("inform", perf)
    assert.same({ running = 1, done = 1 }, c)
    local _, other = ask(rt, "pomodoro", { capability = "status" }, { user_id = OTHER })
    assert.same({ running = 0, done = 0 }, other)
    assert.is_true(rt:unload("journal"))
    perf, c = ask(rt, "pomodoro", { capability = "status" })
    assert.equal("inform", perf)
    assert.same({ running = 1, done = "unavailable" }, c)
  end)

  it("cancel a timer for the user who started it only; a cancelled timer publishes nothing", function()
    local _, a = ask(rt, "pomodoro", { capability = "start", args = { label = "cancelled", seconds = 0.3 } })
    local _, b = ask(rt, "pomodoro", { capability = "start", args = { label = "kept", seconds = 0.3 } })
    local perf, c = ask(rt, "pomodoro", { timer = a.timer }, { performative = "cancel", user_id = OTHER })
    assert.equal("inform", perf)
    assert.is_false(c.cancelled)
    perf, c = ask(rt, "pomodoro", { timer = a.timer }, { performative = "cancel" })
    assert.equal("inform", perf)
    assert.is_true(c.cancelled)
    assert.is_true(wait_for(function() return #sessions(rt, USER) == 1 end))
    socket.sleep(0.1)
    local list = sessions(rt, USER)
    assert.equal(1, #list)
    assert.equal("kept", list[1].label)
    assert.not_equal(a.timer, b.timer)
  end)

  it("keep 500 timers running at once without holding a worker, at most 100 per user", function()
    local users, list = {}, {}
    for u = 1, 5 do users[u] = ("%08d-0000-4000-8000-000000000000"):format(u) end
    for i = 1, 500 do
      list[i] = { "pomodoro", json.encode({ capability = "start", args = { label = "t" .. i, seconds = 0.5 } }),
                  { user_id = users[i % 5 + 1] } }
    end
    local t = socket.gettime()
    for _, r in ipairs(rt:requests(list, 10)) do assert.equal("agree", r.performative) end
    local perf, c = ask(rt, "pomodoro", { capability = "start", args = { label = "one more" } }, { user_id = users[1] })
    assert.equal("refuse", perf)
    assert.equal("too_many_timers", c.error)
    assert.is_true(socket.gettime() - t < 0.5, "all answered before the first timer ended")
    assert.is_true(wait_for(function()
      for _, u in ipairs(users) do
        local status = select(2, ask(rt, "pomodoro", { capability = "status" }, { user_id = u }))
        if status.running ~= 0 or status.done ~= 50 then return false end
      end
      return true
    end, 5), "every timer ended; the journal keeps each user's last 50")
    assert.equal("t500", sessions(rt, users[1])[50].label)
    assert.is_true(socket.gettime() - t < 3)
  end)
end)
