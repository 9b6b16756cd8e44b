-- The in-process message bus (src/bus.c) through orrery.core: envelopes, direct delivery, bounded
-- mailboxes, topics, the directory, the idempotency window, and a threaded smoke test in C.
local core = require("orrery.core")
local cjson = require("cjson")

local CAPS = cjson.encode({
  { name = "create_task", description = "Creates a task",
    args = { type = "object", properties = { title = { type = "string" } }, required = { "title" } } },
  { name = "list_tasks", args = { type = "object" } },
})

local function env(t)
  t.performative = t.performative or "inform"
  return t
end

describe("bus", function()
  local bus

  before_each(function()
    bus = core.bus_new(4)
    assert(bus:register("alice", "first agent", "[]"))
    assert(bus:register("bob", "second agent", "[]"))
  end)

  after_each(function()
    bus:close()
  end)

  describe("envelopes", function()
    it("accepts every FIPA performative and refuses others", function()
      for _, p in ipairs({ "request", "inform", "agree", "refuse", "failure", "query", "propose", "accept",
                          "reject", "cancel", "subscribe" }) do
        assert.are.equal("ok", bus:send({ performative = p, receiver = "bob" }))
        assert.are.equal(p, bus:take("bob").performative)
      end
      assert.has_error(function() bus:send({ performative = "shout", receiver = "bob" }) end,
        "invalid performative 'shout'")
      assert.has_error(function() bus:send({ receiver = "bob" }) end)
      local e, err = core.bus_envelope_from_json('{"performative":"Inform"}')
      assert.is_nil(e)
      assert.matches("invalid performative", err)
    end)

    it("refuses fields that are too long or of the wrong type", function()
      assert.has_error(function() bus:send(env({ receiver = "bob", sender = string.rep("s", 64) })) end,
        "envelope.sender is too long (max 63 bytes)")
      assert.are.equal("ok", bus:send(env({ receiver = "bob", sender = string.rep("s", 63) })))
      assert.has_error(function() bus:send(env({ receiver = "bob", topic = 5 })) end)
      assert.has_error(function() bus:send(env({ receiver = "bob", content = "{not json" })) end)
      local cases = {
        { '{"performative":"inform","id":"' .. string.rep("a", 37) .. '"}', "id is too long" },
        { '{"performative":"inform","topic":"' .. string.rep("t", 128) .. '"}', "topic is too long" },
        { '{"performative":"inform","sender":42}', "sender must be a string" },
        { '{"performative":"inform","created_at":"now"}', "created_at must be" },
        { '{"performative":"inform","colour":"red"}', "unknown field 'colour'" },
        { '{"performative":"inform","sender":"a\\u0000b"}', "not allowed" },
        { '["inform"]', "JSON object" },
        { '{"performative":"inform",', "invalid JSON" },
        { '{"performative":"inform","performative":"request"}', "invalid JSON" },
      }
      for _, c in ipairs(cases) do
        local e, err = core.bus_envelope_from_json(c[1])
        assert.is_nil(e, c[1])
        assert.matches(c[2], err, 1, true)
      end
    end)

    it("takes any JSON value as content", function()
      for _, content in ipairs({ '{"a":[1,2,{"b":null}]}', '[1,"two"]', '"text"', "42", "4.5", "true", "false" }) do
        local e = assert(core.bus_envelope_from_json('{"performative":"inform","content":' .. content .. '}'))
        assert.are.same(cjson.decode(content), cjson.decode(e.content))
      end
      local e = assert(core.bus_envelope_from_json('{"performative":"inform","content":null}'))
      assert.is_nil(e.content)
      e = assert(core.bus_envelope_from_json('{"performative":"inform"}'))
      assert.is_nil(e.content)
    end)

    it("generates a UUID v4 id and a timestamp when missing", function()
      local a = assert(core.bus_envelope_from_json('{"performative":"inform"}'))
      local b = assert(core.bus_envelope_from_json('{"performative":"inform","id":""}'))
      local uuid = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"
      assert.matches(uuid, a.id)
      assert.matches(uuid, b.id)
      assert.are_not.equal(a.id, b.id)
      assert.is_true(math.abs(a.created_at - os.time()) < 5)
      local kept = assert(core.bus_envelope_from_json('{"performative":"inform","id":"mine","created_at":12.5}'))
      assert.are.equal("mine", kept.id)
      assert.are.equal(12.5, kept.created_at)
    end)

    it("round-trips through JSON", function()
      local original = {
        id = "6f1c1a52-9d7e-4a43-8f0a-3f2b6a1d2c4e", performative = "request", sender = "alice",
        receiver = "bob", topic = "task.created", conversation_id = "c-1", reply_with = "r-1",
        in_reply_to = "r-0", user_id = "0b7e1c2a-1234-4abc-8def-0123456789ab",
        content = '{"title":"tea","tags":["x"],"n":3}', created_at = 1700000000.25,
      }
      local text = core.bus_envelope_to_json(original)
      local doc = cjson.decode(text)
      assert.are.same({ title = "tea", tags = { "x" }, n = 3 }, doc.content)
      assert.are.equal("request", doc.performative)
      local back = assert(core.bus_envelope_from_json(text))
      assert.are.same(cjson.decode(original.content), cjson.decode(back.content))
      back.content, original.content = nil, nil
      assert.are.same(original, back)
      assert.are.equal(text, core.bus_envelope_to_json(assert(core.bus_envelope_from_json(text))))
    end)
  end)

  describe("direct delivery", function()
    it("keeps each mailbox in order and fills ids", function()
      local big = core.bus_new(100)
      assert(big:register("bob", "", "[]"))
      for i = 1, 50 do
        assert.are.equal("ok", big:send(env({ receiver = "bob", sender = "alice", content = tostring(i) })))
      end
      assert.are.equal(50, big:depth("bob"))
      local ids = {}
      for i = 1, 50 do
        local m = assert(big:take("bob"))
        assert.are.equal(tostring(i), m.content)
        assert.are.equal("bob", m.receiver)
        assert.is_nil(ids[m.id])
        ids[m.id] = true
      end
      assert.is_nil(big:take("bob"))
      assert.are.equal(0, big:depth("bob"))
      big:close()
    end)

    it("keeps the caller's id and separates mailboxes", function()
      bus:send(env({ receiver = "bob", id = "x-1", content = '"b"' }))
      bus:send(env({ receiver = "alice", id = "x-2", content = '"a"' }))
      assert.are.equal("x-2", bus:take("alice").id)
      assert.are.equal("x-1", bus:take("bob").id)
    end)

    it("answers unknown for a receiver that is not registered", function()
      assert.are.equal("unknown", bus:send(env({ receiver = "carol" })))
      assert.has_error(function() bus:send(env({})) end) -- no receiver at all
      local m, err = bus:take("carol")
      assert.is_nil(m)
      assert.are.equal("unknown", err)
      assert.are.equal(0, bus:depth("carol"))
    end)

    it("refuses when the mailbox is full, and builds the busy refusal", function()
      for _ = 1, 4 do assert.are.equal("ok", bus:send(env({ receiver = "bob" }))) end
      local req = { performative = "request", sender = "alice", receiver = "bob", conversation_id = "c-9",
                    reply_with = "r-9", user_id = "u-1", content = '{"x":1}' }
      assert.are.equal("full", bus:send(req))
      assert.are.equal(4, bus:depth("bob"))
      local refusal = core.bus_refuse_busy(req)
      assert.are.equal("refuse", refusal.performative)
      assert.are.equal("alice", refusal.receiver)
      assert.are.equal("bob", refusal.sender)
      assert.are.equal("r-9", refusal.in_reply_to)
      assert.are.equal("c-9", refusal.conversation_id)
      assert.are.equal("u-1", refusal.user_id)
      assert.are.same({ reason = "busy" }, cjson.decode(refusal.content))
      assert.is_string(refusal.id)
      assert.are.equal("ok", bus:send(refusal))
      bus:take("bob")
      assert.are.equal("ok", bus:send(req)) -- room again
    end)

    it("wakes the scheduler only when a mailbox goes from empty to non-empty", function()
      assert.are.equal(0, bus:wakeups())
      bus:send(env({ receiver = "bob" }))
      bus:send(env({ receiver = "bob" }))
      assert.are.equal(1, bus:wakeups())
      bus:take("bob"); bus:take("bob")
      bus:send(env({ receiver = "bob" }))
      assert.are.equal(2, bus:wakeups())
    end)
  end)

  describe("topics", function()
    local cases = {
      { "task.*", "task.created", true },
      { "task.*", "task", false },
      { "task.*", "task.a.b", false },
      { "task.#", "task", true },
      { "task.#", "task.created", true },
      { "task.#", "task.a.b", true },
      { "task.#", "tasks.a", false },
      { "#", "anything.at.all", true },
      { "#", "x", true },
      { "*", "x", true },
      { "*", "x.y", false },
      { "*.created", "task.created", true },
      { "*.created", "task.deleted", false },
      { "a.*.c", "a.b.c", true },
      { "a.*.c", "a.c", false },
      { "a.b.c", "a.b", false },   -- pattern longer than topic
      { "a.b", "a.b.c", false },   -- pattern shorter than topic
      { "task.created", "task.created", true },
      { "task.created", "task.create", false },
      { "task", "task", true },
      { "a..b", "a..b", false },   -- empty segments are invalid on either side
      { "a.*", "a.", false },
      { "*", "", false },
      { "", "", false },
      { ".a", ".a", false },
      { "a.#.b", "a.x.b", false }, -- `#` only as the last segment
      { "ta*", "task", false },    -- wildcards are whole segments
      { "task.*", "task.*", false }, -- topics carry no wildcards
    }
    for _, c in ipairs(cases) do
      it(string.format("%q %s %q", c[1], c[3] and "matches" or "does not match", c[2]), function()
        assert.are.equal(c[3], core.bus_topic_match(c[1], c[2]))
      end)
    end

    it("delivers a copy to each matching subscriber, once per agent", function()
      assert(bus:register("carol", "", "[]"))
      assert(bus:subscribe("alice", "task.*"))
      assert(bus:subscribe("alice", "task.#")) -- two matching patterns, one copy
      assert(bus:subscribe("bob", "task.created"))
      assert(bus:subscribe("carol", "event.*"))
      assert(bus:subscribe("carol", "task.*")) -- twice is a no-op
      assert(bus:subscribe("carol", "task.*"))
      assert.are.equal(3, bus:publish(env({ topic = "task.created", sender = "tasks", content = '{"id":1}' })))
      local a, b, c = bus:take("alice"), bus:take("bob"), bus:take("carol")
      assert.are.equal("alice", a.receiver)
      assert.are.equal("bob", b.receiver)
      assert.are.equal("carol", c.receiver)
      assert.are.equal(a.id, b.id) -- one id for every copy
      assert.are.equal('{"id":1}', c.content)
      assert.is_nil(bus:take("alice"))
      assert.are.equal(1, bus:publish(env({ topic = "task.a.b" })))
      assert.are.equal(1, bus:publish(env({ topic = "task" })))
      assert.are.equal(2, bus:depth("alice"))
      assert.are.equal(0, bus:publish(env({ topic = "calendar.changed" })))
      assert.has_error(function() bus:publish(env({ topic = "task.*" })) end)
      assert.has_error(function() bus:publish(env({})) end)
    end)

    it("unsubscribes, refuses bad patterns and forgets subscriptions of unregistered agents", function()
      assert(bus:subscribe("bob", "task.*"))
      assert.are.equal(1, bus:publish(env({ topic = "task.done" })))
      assert.is_true(bus:unsubscribe("bob", "task.*"))
      assert.is_false(bus:unsubscribe("bob", "task.*"))
      assert.are.equal(0, bus:publish(env({ topic = "task.done" })))
      assert.are.same({ nil, "invalid pattern" }, { bus:subscribe("bob", "a.#.b") })
      assert.are.same({ nil, "invalid pattern" }, { bus:subscribe("bob", "") })
      assert.are.same({ nil, "unknown" }, { bus:subscribe("nobody", "a") })
      assert(bus:subscribe("alice", "#"))
      assert.is_true(bus:unregister("alice"))
      assert.is_false(bus:unregister("alice"))
      assert.are.equal(0, bus:publish(env({ topic = "task.done" })))
    end)

    it("skips full mailboxes and counts them", function()
      assert(bus:subscribe("alice", "t"))
      assert(bus:subscribe("bob", "t"))
      for _ = 1, 4 do bus:send(env({ receiver = "bob" })) end
      assert.are.equal(1, bus:publish(env({ topic = "t" })))
      local stats = cjson.decode(bus:stats())
      assert.are.same({ delivered = 1, refused_full = 0, depth = 1 }, stats.alice)
      assert.are.same({ delivered = 4, refused_full = 1, depth = 4 }, stats.bob)
      bus:take("bob")
      assert.are.equal(3, cjson.decode(bus:stats()).bob.depth)
    end)
  end)

  describe("directory", function()
    it("lists agents sorted by name with their capabilities", function()
      assert(bus:register("tasks", "Creates, lists and completes tasks", CAPS))
      assert(bus:register("aardvark", "", "[]"))
      local dir = cjson.decode(bus:directory())
      local names = {}
      for i, a in ipairs(dir) do names[i] = a.name end
      assert.are.same({ "aardvark", "alice", "bob", "tasks" }, names)
      assert.are.equal("Creates, lists and completes tasks", dir[4].description)
      assert.are.equal("create_task", dir[4].capabilities[1].name)
      assert.are.same({ "title" }, dir[4].capabilities[1].args.required)
      assert.are.equal("list_tasks", dir[4].capabilities[2].name)
      assert.are.same({}, dir[1].capabilities)
    end)

    it("refuses bad names, duplicates and malformed capabilities", function()
      local function refused(name, caps, pattern)
        local ok, err = bus:register(name, "", caps)
        assert.is_nil(ok)
        assert.matches(pattern, err, 1, true)
      end
      refused("alice", "[]", "already registered")
      refused("Alice", "[]", "agent name")
      refused("", "[]", "agent name")
      refused(string.rep("a", 64), "[]", "agent name")
      refused("a.b", "[]", "agent name")
      refused("x", "{", "invalid JSON")
      refused("x", '{"name":"a"}', "must be a JSON array")
      refused("x", '["a"]', "capabilities[0] must be an object")
      refused("x", '[{"args":{}}]', "capabilities[0].name")
      refused("x", '[{"name":"","args":{}}]', "capabilities[0].name")
      refused("x", '[{"name":"a"}]', "capabilities[0].args")
      refused("x", '[{"name":"a","args":[]}]', "capabilities[0].args")
      refused("x", '[{"name":"a","args":{"type":5}}]', "args.type")
      refused("x", '[{"name":"a","description":1,"args":{}}]', "description must be a string")
      refused("x", '[{"name":"a","args":{},"extra":1}]', "unknown key 'extra'")
      refused("x", '[{"name":"a","args":{}},{"name":"a","args":{}}]', "duplicate name 'a'")
      assert(bus:register(string.rep("a", 63), "", nil))
      assert(bus:register("x_1-2", "", '[{"name":"a","args":{}}]'))
    end)
  end)

  describe("seen", function()
    it("reports an id handled before, within a window of 4096 per agent", function()
      local id = "6f1c1a52-9d7e-4a43-8f0a-3f2b6a1d2c4e"
      assert.is_false(bus:seen("alice", id))
      assert.is_true(bus:seen("alice", id))
      assert.is_true(bus:seen("alice", id:upper())) -- a UUID is case-insensitive
      assert.is_false(bus:seen("bob", id))          -- per agent
      assert.is_false(bus:seen("alice", "not-a-uuid"))
      assert.is_true(bus:seen("alice", "not-a-uuid"))
      assert.are.same({ nil, "unknown" }, { bus:seen("nobody", id) })
      for i = 1, 4095 do assert.is_false(bus:seen("alice", "m" .. i)) end
      assert.is_true(bus:seen("alice", "m1")) -- still inside the window; re-seeing does not refresh it
      assert.is_false(bus:seen("alice", "m4096")) -- pushes the original UUID out
      assert.is_false(bus:seen("alice", id))
      assert.is_true(bus:seen("alice", "m4095"))
    end)
  end)

  it("sends and takes from many threads without losing or reordering messages", function()
    assert(core.bus_selftest_threads(4, 20000))
    assert(core.bus_selftest_threads(1, 1000))
  end)

  it("measures round trips and deliveries", function()
    assert.is_true(core.bus_bench_roundtrips(1000) > 0)
    assert.is_true(core.bus_bench_publish(100, 10) > 0)
  end)
end)
