-- The agent SDK (lib/orrery/agent.lua) as handlers see it: ctx's calls and fields, what a return
-- value means, how ctx:request reads an answer, and ctx.log's lines. Runs agents on the real
-- runtime through orrery.core; docs/agents.md describes what is tested here.
local core = require("orrery.core")
local json = core.api().json

local USER = "11111111-1111-4111-8111-111111111111"

local function runtime()
  return assert(core.agents_new({ workers = 2, lib_dir = "lib" }))
end

local function load(rt, src)
  return assert(rt:load(src, "=sdk_test.lua"))
end

local function ask(rt, agent, content, opts)
  local o = { timeout = 5 }
  for k, v in pairs(opts or {}) do o[k] = v end
  local r = rt:request(agent, content ~= nil and json.encode(content) or nil, o)
  return r.performative, r.content and json.decode(r.content), r
end

-- Answers with the performative and content it is told to, or returns a value.
local ANSWER = [[return { name = "answer", description = "d", on = {
  request = function(msg, ctx)
    local c = msg.content
    if c.reply then return ctx:reply(c.reply, c.content) end
    if c.sleep then ctx:sleep(c.sleep) end
    return c.value
  end,
  inform = function(msg) return msg.content end,
} }]]

describe("agent SDK", function()
  local rt
  before_each(function()
    rt = runtime()
  end)
  after_each(function()
    rt:close()
  end)

  describe("ctx", function()
    it("carries the agent, the message, its user and its conversation", function()
      load(rt, [[return { name = "who", description = "d", on = { request = function(msg, ctx)
        return { agent = ctx.agent, user = ctx.user_id, conversation = ctx.conversation_id,
                 same = ctx.message == msg, id = msg.id, content = msg.content }
      end } }]])
      local perf, c, r = ask(rt, "who", { x = 1 }, { user_id = USER, conversation_id = "conv-9" })
      assert.equal("inform", perf)
      assert.same({ agent = "who", user = USER, conversation = "conv-9", same = true, id = c.id, content = { x = 1 } },
        c)
      assert.matches("^%x+%-", c.id)
      assert.equal("conv-9", r.conversation_id)
      local _, bare = ask(rt, "who", nil)
      assert.is_nil(bare.user)
      assert.is_nil(bare.conversation)
      assert.is_nil(bare.content)
    end)

    it("answers a message once: a second ctx:reply raises", function()
      load(rt, [[return { name = "twice", description = "d", on = { request = function(_, ctx)
        assert(ctx:reply("agree", "first"))
        local ok, err = pcall(ctx.reply, ctx, "inform", "second")
        assert(not ok)
        orrery.sleep(0) -- whatever the handler does after answering, the sender has its answer
        if not tostring(err):find("already answered", 1, true) then error("unexpected: " .. tostring(err)) end
      end } }]])
      local perf, c = ask(rt, "twice", {})
      assert.equal("agree", perf)
      assert.equal("first", c)
      assert.equal(0, json.decode(rt:status())[1].failed)
    end)

    it("sends a request's return value as inform (false too), and nothing for other performatives", function()
      load(rt, ANSWER)
      local perf, c = ask(rt, "answer", { value = false })
      assert.same({ "inform", false }, { perf, c })
      perf, c = ask(rt, "answer", { value = { a = { 1, 2 } } })
      assert.same({ "inform", { a = { 1, 2 } } }, { perf, c })
      perf, c = ask(rt, "answer", {})
      assert.equal("failure", perf)
      assert.equal("no_reply", c.error)
      load(rt, [[return { name = "teller", description = "d", on = { request = function(_, ctx)
        -- `answer`'s inform handler returns the content: that is not an answer
        local reply, err = ctx:request("answer", "hi", { performative = "inform", timeout = 0.2 })
        return { reply = reply ~= nil, err = err }
      end } }]])
      assert.same({ reply = false, err = "timeout" }, select(2, ask(rt, "teller", {})))
    end)

    it("reads answers in ctx:request: the reply, or nil with the error and the reply", function()
      load(rt, ANSWER)
      load(rt, [[return { name = "asker", description = "d", on = { request = function(msg, ctx)
        local reply, err, raw = ctx:request(msg.content.to or "answer", msg.content.ask, { timeout = 2 })
        if reply then return { perf = reply.performative, content = reply.content, sender = reply.sender } end
        return { err = err, raw = raw and raw.performative }
      end } }]])
      local function via(ask_for, to)
        return select(2, ask(rt, "asker", { ask = ask_for, to = to }))
      end
      assert.same({ perf = "inform", content = 7, sender = "answer" }, via({ value = 7 }))
      assert.same({ perf = "agree", content = "ok", sender = "answer" }, via({ reply = "agree", content = "ok" }))
      assert.same({ err = "not_today", raw = "refuse" }, via({ reply = "refuse", content = { error = "not_today" } }))
      assert.same({ err = "failure", raw = "failure" }, via({ reply = "failure", content = "plain text" }))
      assert.same({ err = "reject", raw = "reject" }, via({ reply = "reject" }))
      assert.same({ err = "no_reply", raw = "failure" }, via({}))
      assert.same({ err = "unknown_agent" }, via({}, "nobody"))
    end)

    it("sends and publishes with the agent as sender and the message's user and conversation", function()
      load(rt, [[
        local seen = {}
        return { name = "sink", description = "d", subscribes = { "sdk.*" }, on = {
          inform = function(msg, ctx)
            seen[#seen + 1] = { sender = msg.sender, topic = msg.topic, user = ctx.user_id,
                                conversation = ctx.conversation_id, content = msg.content }
          end,
          query = function() return seen end,
        } }
      ]])
      load(rt, [[return { name = "source", description = "d", on = { request = function(_, ctx)
        local sent = { ctx:send("sink", "inform", "direct") }
        local other = { ctx:send("sink", "inform", "elsewhere", { conversation_id = "conv-other" }) }
        local published = { ctx:publish("sdk.event", { n = 1 }) }
        local missing = { ctx:send("nobody", "inform", 1) }
        return { sent = sent, other = other, published = published, missing = missing }
      end } }]])
      local _, c = ask(rt, "source", {}, { user_id = USER, conversation_id = "conv-1" })
      assert.same({ sent = { true }, other = { true }, published = { 1 }, missing = { json.null, "unknown_agent" } }, c)
      local seen
      for _ = 1, 100 do
        seen = select(2, ask(rt, "sink", nil, { performative = "query" }))
        if #seen == 3 then break end
      end
      assert.same({
        { sender = "source", user = USER, conversation = "conv-1", content = "direct" },
        { sender = "source", user = USER, conversation = "conv-other", content = "elsewhere" },
        { sender = "source", topic = "sdk.event", user = USER, conversation = "conv-1", content = { n = 1 } },
      }, seen)
    end)

    it("lists the directory and sleeps", function()
      load(rt, ANSWER)
      load(rt, [[return { name = "looker", description = "looks around", capabilities = { "look" },
        on = { request = function(_, ctx)
          local t = orrery.time.monotonic()
          local slept = ctx:sleep(0.05)
          local names = {}
          for _, a in ipairs(ctx:directory()) do names[#names + 1] = a.name .. ":" .. #a.capabilities end
          return { names = names, slept = slept, waited = orrery.time.monotonic() - t >= 0.05 }
        end } }]])
      assert.same({ names = { "answer:0", "looker:1" }, slept = true, waited = true }, select(2, ask(rt, "looker", {})))
    end)
  end)

  describe("ctx.log", function()
    -- Runs the agent and requests in a child process and returns its log lines, decoded.
    local function log_lines(agent_src, requests)
      local script = ([[
        local core = require("orrery.core")
        local rt = assert(core.agents_new({ workers = 1, lib_dir = "lib" }))
        assert(rt:load(%q, "=log_test.lua"))
        rt:requests(%s, 10) -- all at once
        rt:close()
      ]]):format(agent_src, requests)
      local tmp = os.tmpname()
      local f = assert(io.open(tmp, "w"))
      f:write(script)
      f:close()
      local p = assert(io.popen("lua5.4 " .. tmp .. " 2>&1"))
      local out = p:read("a")
      p:close()
      os.remove(tmp)
      local lines = {}
      for line in out:gmatch("[^\n]+") do
        local v = json.decode(line)
        if type(v) == "table" and v.source == "lua" then lines[#lines + 1] = v end
      end
      return lines, out
    end

    it("writes one line per call with the agent, conversation and message, plus the caller's fields", function()
      local lines, out = log_lines([[return { name = "logger", description = "d", on = { request = function(msg, ctx)
        ctx.log.info("hello", { n = 1, nested = { ok = true } })
        local log = ctx.log
        assert(log == ctx.log, "one logger per message")
        ctx:sleep(0.01)
        log.warn("after a wait")
        ctx.log.error("plain")
        ctx.log.debug("not at info level")
        return msg.id
      end } }]], [[{ { "logger", "1", { conversation_id = "conv-7" } } }]])
      assert.equal(3, #lines, out)
      local first, second, third = lines[1], lines[2], lines[3]
      assert.same({ "info", "hello", "logger", "conv-7", 1, true },
        { first.level, first.msg, first.agent, first.conversation_id, first.n, first.nested.ok })
      assert.matches("^%x+%-%x+%-", first.message_id)
      assert.same({ "warn", "after a wait", "logger", "conv-7", first.message_id },
        { second.level, second.msg, second.agent, second.conversation_id, second.message_id })
      assert.same({ "error", "plain", first.message_id }, { third.level, third.msg, third.message_id })
    end)

    it("keeps each message's own fields when handlers interleave", function()
      local lines, out = log_lines([[return { name = "inter", description = "d", on = { request = function(msg, ctx)
        ctx:sleep(msg.content)
        ctx.log.info("done", { slept = msg.content })
        return true
      end } }]], [[{ { "inter", "0.1", { conversation_id = "slow" } },
                   { "inter", "0", { conversation_id = "fast" } } }]])
      assert.equal(2, #lines, out)
      -- the slow one started first and logged last
      assert.same({ "fast", 0 }, { lines[1].conversation_id, lines[1].slept })
      assert.same({ "slow", 0.1 }, { lines[2].conversation_id, lines[2].slept })
      assert.not_equal(lines[1].message_id, lines[2].message_id)
    end)
  end)
end)
