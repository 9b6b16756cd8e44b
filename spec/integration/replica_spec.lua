-- Fan-out between replicas over PostgreSQL LISTEN/NOTIFY (src/replica.c), with two (or three)
-- replica objects in this process on one real, migrated database: what one publishes reaches the
-- others and not itself, large envelopes travel through agent_messages, garbage is ignored, order
-- is kept, closing flushes, and a replica whose session is killed reconnects and listens again.
local h = require("helpers")
local function wait_for(pred, seconds) return h.wait_for(pred, seconds or 10) end
local core = require("orrery.core")
local cjson = require("cjson.safe")

local function uuid()
  return string.format("%08x-%04x-4%03x-%04x-%012x", math.random(0, 0xffffffff), math.random(0, 0xffff),
    math.random(0, 0xfff), 0x8000 + math.random(0, 0x3fff), math.random(0, 0xffffffffffff))
end

-- Polls rep until n events arrived or timeout seconds passed; returns them all.
local function collect(rep, n, timeout)
  local got, deadline = {}, h.now() + (timeout or 5)
  while #got < n and h.now() < deadline do
    for _, ev in ipairs(rep:poll(100)) do got[#got + 1] = ev end
  end
  return got
end


local function inform(topic, content)
  return { performative = "inform", sender = "tasks", topic = topic, content = content }
end

local function large_content(tag)
  return cjson.encode({ tag = tag, blob = string.rep("0123456789abcdef", 600), list = { 1, 2.5, "three", false } })
end

describe("replicas over LISTEN/NOTIFY", function()
  local db, url, owner_url, admin_db_url
  local a, b, ia

  local function open(instance)
    local r = assert(core.replica_new(url, instance or uuid()))
    assert.is_true(wait_for(function() return r:stats().connected end), "replica did not connect")
    return r
  end

  local function sql(q)
    local code, out, err = h.psql(admin_db_url, q)
    assert.equal(0, code, err)
    return (out or ""):gsub("%s+$", "")
  end

  setup(function()
    db, url, owner_url = h.create_database()
    local code, _, err = h.orrery("migrate", {
      DATABASE_URL = url, ORRERY_MIGRATION_DATABASE_URL = owner_url, ORRERY_MIGRATIONS_DIR = h.root .. "/migrations",
    })
    assert(code == 0, "migrate failed: " .. tostring(err))
    admin_db_url = h.admin_url:gsub("/postgres%?", "/" .. db .. "?")
  end)
  teardown(function() h.drop_database(db) end)

  before_each(function()
    ia = uuid()
    a, b = open(ia), open()
  end)
  after_each(function()
    a:close()
    b:close()
  end)

  it("delivers a small publish to the other replica, not back to the sender, inline", function()
    assert.is_true(a:publish(inform("task.created", '{"id":42,"title":"Buy milk"}')))
    local got = collect(b, 1)
    assert.equal(1, #got)
    assert.equal("publish", got[1].kind)
    local env = got[1].envelope
    assert.equal("inform", env.performative)
    assert.equal("tasks", env.sender)
    assert.equal("task.created", env.topic)
    assert.same({ id = 42, title = "Buy milk" }, cjson.decode(env.content))
    assert.matches("^%x+%-%x+%-4%x+%-%x+%-%x+$", env.id)
    assert.same({}, a:poll(300)) -- the sender skips its own notification
    local sa, sb = a:stats(), b:stats()
    assert.equal(1, sa.sent)
    assert.equal(0, sa.received)
    assert.equal(1, sb.received)
    assert.equal(0, sb.fetched)
    assert.equal("0", sql("SELECT count(*) FROM agent_messages"))
  end)

  it("sends a large envelope through agent_messages and the other replica reads it back intact", function()
    local content = large_content("big")
    assert.is_true(#content > 8192)
    local id = uuid()
    assert.is_true(a:publish({ id = id, performative = "inform", sender = "notes", topic = "note.updated",
      conversation_id = "conv-1", reply_with = "r1", created_at = 1700000000.25, content = content }))
    local got = collect(b, 1)
    assert.equal(1, #got)
    local env = got[1].envelope
    assert.equal(id, env.id)
    assert.equal("note.updated", env.topic)
    assert.equal("notes", env.sender)
    assert.equal("conv-1", env.conversation_id)
    assert.equal("r1", env.reply_with)
    assert.near(1700000000.25, env.created_at, 1e-6)
    assert.same(cjson.decode(content), cjson.decode(env.content))
    assert.equal(1, b:stats().fetched)
    -- The publication row (receiver ''), written as 'system' by the sending instance.
    assert.equal("note.updated|" .. ia .. "|trace|t", sql(
      "SELECT topic, instance, state, content = '" .. content .. "'::jsonb FROM agent_messages"
      .. " WHERE id = '" .. id .. "' AND receiver = ''"))
    assert.same({}, a:poll(200))
  end)

  it("still notifies when the publication row was already recorded (ON CONFLICT DO NOTHING)", function()
    local id, content = uuid(), large_content("recorded")
    sql("INSERT INTO agent_messages (id, receiver, performative, topic, content, created_at, instance) VALUES ('"
      .. id .. "', '', 'inform', 'task.done', '" .. content .. "'::jsonb, now(), '" .. uuid() .. "')")
    assert.is_true(a:publish({ id = id, performative = "inform", topic = "task.done", content = content }))
    local got = collect(b, 1)
    assert.equal(1, #got)
    assert.equal(id, got[1].envelope.id)
    assert.same(cjson.decode(content), cjson.decode(got[1].envelope.content))
    assert.equal(0, a:stats().dropped)
  end)

  it("carries agent source changes to the other replica", function()
    assert.is_true(a:agent_changed("tasks", 7))
    local got = collect(b, 1)
    assert.same({ { kind = "agent", name = "tasks", version = 7 } }, got)
    assert.same({}, a:poll(200))
    assert.is_nil((a:agent_changed("Not A Name", 1)))
  end)

  it("reaches every other replica", function()
    local c = open()
    assert.is_true(b:publish(inform("calendar.changed", '{"n":1}')))
    assert.equal(1, #collect(a, 1))
    assert.equal(1, #collect(c, 1))
    assert.same({}, b:poll(200))
    c:close()
  end)

  it("ignores malformed notifications and keeps working", function()
    local other = uuid()
    local garbage = {
      { "orrery_bus", "garbage" },
      { "orrery_bus", "[1,2,3]" },
      { "orrery_bus", '{"e":{"performative":"inform"}}' },                                 -- no sender id
      { "orrery_bus", '{"i":"' .. other .. '","e":{"performative":"shout"}}' },             -- bad performative
      { "orrery_bus", '{"i":"' .. other .. '","e":{"performative":"inform","x":1}}' },      -- unknown field
      { "orrery_bus", '{"i":"' .. other .. '","e":{"performative":"inform","topic":"' .. ("t"):rep(300) .. '"}}' },
      { "orrery_bus", '{"i":"' .. other .. '","id":"not-a-uuid"}' },
      { "orrery_bus", '{"i":"' .. other .. '","id":"' .. uuid() .. '"}' },                  -- no such row
      { "orrery_bus", '{"i":"' .. other .. '","e":{"performative":"inform"},"id":"x"}' },   -- both
      { "orrery_agents", '{"i":"' .. other .. '","agent":"../etc","v":1}' },
      { "orrery_agents", '{"i":"' .. other .. '","agent":"tasks","v":"1"}' },
      { "orrery_agents", '{"i":"' .. other .. '","agent":"tasks"}' },
    }
    local stmts = {}
    for _, g in ipairs(garbage) do
      stmts[#stmts + 1] = "SELECT pg_notify('" .. g[1] .. "', '" .. g[2]:gsub("'", "''") .. "');"
    end
    local code, _, err = h.psql(owner_url, table.concat(stmts, " "))
    assert.equal(0, code, err)
    assert.is_true(wait_for(function() return b:stats().invalid == #garbage end), "invalid=" .. b:stats().invalid)
    assert.same({}, b:poll(100))
    -- A well-formed notification from a replica that is not an object of this process still counts.
    code, _, err = h.psql(owner_url, "SELECT pg_notify('orrery_agents', '{\"i\":\"" .. other
      .. "\",\"agent\":\"notes\",\"v\":3}')")
    assert.equal(0, code, err)
    assert.same({ { kind = "agent", name = "notes", version = 3 } }, collect(b, 1))
    assert.is_true(a:publish(inform("task.created", '{"after":"garbage"}')))
    local got = collect(b, 1)
    assert.equal(1, #got)
    assert.same({ after = "garbage" }, cjson.decode(got[1].envelope.content))
    assert.is_true(b:stats().connected)
  end)

  it("keeps the order of several publishes, small and large mixed", function()
    local n = 40
    for i = 1, n do
      local content = (i % 5 == 0) and cjson.encode({ seq = i, blob = string.rep("y", 9000) })
        or cjson.encode({ seq = i })
      assert.is_true(a:publish(inform("seq.test", content)))
    end
    local got = collect(b, n, 10)
    assert.equal(n, #got)
    for i = 1, n do assert.equal(i, cjson.decode(got[i].envelope.content).seq) end
    assert.equal(n / 5, b:stats().fetched)
  end)

  it("drops an item PostgreSQL refuses and sends the rest", function()
    -- A large envelope naming a user that does not exist cannot be recorded (foreign key).
    local bad = inform("task.created", large_content("orphan"))
    bad.user_id = uuid()
    assert.is_true(a:publish(inform("task.created", '{"n":1}')))
    assert.is_true(a:publish(bad))
    assert.is_true(a:publish(inform("task.created", '{"n":2}')))
    local got = collect(b, 2)
    assert.equal(2, #got)
    assert.equal(1, cjson.decode(got[1].envelope.content).n)
    assert.equal(2, cjson.decode(got[2].envelope.content).n)
    assert.same({}, b:poll(200))
    assert.is_true(wait_for(function() return a:stats().dropped == 1 end))
    assert.equal(2, a:stats().sent)
  end)

  it("sends what is queued when closed", function()
    local c = assert(core.replica_new(url, uuid())) -- closed at once, maybe before it even connected
    for i = 1, 25 do assert.is_true(c:publish(inform("flush.test", cjson.encode({ seq = i })))) end
    assert.is_true(c:agent_changed("tasks", 99))
    c:close()
    local got = collect(b, 26)
    assert.equal(26, #got)
    for i = 1, 25 do assert.equal(i, cjson.decode(got[i].envelope.content).seq) end
    assert.same({ kind = "agent", name = "tasks", version = 99 }, got[26])
  end)

  it("closes promptly and flushes however soon after starting it is closed", function()
    -- replica_free's wake-up can land while the thread is still connecting; it must not be lost.
    local t0 = h.now()
    for i = 1, 20 do
      local c = assert(core.replica_new(url, uuid()))
      assert.is_true(c:publish(inform("churn.test", cjson.encode({ seq = i }))))
      c:close()
    end
    assert.is_true(h.now() - t0 < 10, "20 open/publish/close took " .. (h.now() - t0) .. " s")
    local got = collect(b, 20)
    assert.equal(20, #got)
    for i = 1, 20 do assert.equal(i, cjson.decode(got[i].envelope.content).seq) end
  end)

  it("reconnects and listens again after its session is killed", function()
    local killed = sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
      .. " WHERE application_name = 'orrery-replica' AND datname = current_database()")
    assert.equal("2", killed)
    assert.is_true(wait_for(function()
      local sa, sb = a:stats(), b:stats()
      return sa.reconnects == 1 and sb.reconnects == 1 and sa.connected and sb.connected
    end), "replicas did not reconnect")
    -- Each is told that it may have missed something.
    assert.same({ { kind = "resync" } }, collect(a, 1))
    assert.same({ { kind = "resync" } }, collect(b, 1))
    assert.is_true(a:publish(inform("after.restart", '{"ok":true}')))
    assert.is_true(b:agent_changed("notes", 2))
    local got_b, got_a = collect(b, 1), collect(a, 1)
    assert.equal(1, #got_b)
    assert.equal("after.restart", got_b[1].envelope.topic)
    assert.same({ { kind = "agent", name = "notes", version = 2 } }, got_a)
  end)

  it("waits out a PostgreSQL restart, queueing, then reconnects and sends", function()
    -- Stops this worktree's own cluster (like server_spec.lua); restarted even if the test fails.
    finally(function() h.db_start() end)
    assert.equal(0, (h.db_stop()))
    assert.is_true(wait_for(function() return not a:stats().connected and not b:stats().connected end))
    -- Queued until a is back; b gets it only if it was listening again first (at most once).
    assert.is_true(a:publish(inform("while.down", '{"queued":true}')))
    assert.equal(1, a:stats().queued)
    assert.equal(0, (h.db_start()))
    assert.is_true(wait_for(function()
      local sa, sb = a:stats(), b:stats()
      return sa.connected and sb.connected and sa.queued == 0
    end, 15), "replicas did not come back")
    assert.equal(1, a:stats().sent)
    assert.same({ { kind = "resync" } }, collect(a, 1))
    assert.is_true(a:publish(inform("after.up", '{"ok":true}')))
    local topics = {}
    local deadline = h.now() + 5
    while topics[#topics] ~= "after.up" and h.now() < deadline do
      for _, ev in ipairs(b:poll(100)) do
        topics[#topics + 1] = ev.envelope and ev.envelope.topic or ev.kind
      end
    end
    assert.equal("resync", topics[1])
    assert.equal("after.up", topics[#topics])
    assert.is_true(#topics == 2 or (#topics == 3 and topics[2] == "while.down"), table.concat(topics, ","))
  end)

  it("never blocks the publisher: queues while PostgreSQL is unreachable, bounded; closes in bounded time", function()
    local d = assert(core.replica_new("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", uuid()))
    local t0 = h.now()
    local refused = 0
    for i = 1, 4100 do
      if not d:publish(inform("queue.test", '{"i":' .. i .. '}')) then refused = refused + 1 end
    end
    assert.is_true(h.now() - t0 < 2, "publishing blocked")
    assert.equal(4, refused) -- REPLICA_QUEUE_MAX = 4096
    local s = d:stats()
    assert.equal(4096, s.queued)
    assert.equal(4, s.dropped)
    assert.is_false(s.connected)
    t0 = h.now()
    d:close()
    assert.is_true(h.now() - t0 < 5, "close took " .. (h.now() - t0) .. " s")
  end)

  it("waits without spinning, connected or retrying", function()
    local d = assert(core.replica_new("postgresql://nobody@127.0.0.1:1/none", uuid()))
    local c0 = os.clock() -- CPU time of the whole process, every thread included
    h.sleep(1)
    local used = os.clock() - c0
    d:close()
    assert.is_true(used < 0.1, "CPU while idle: " .. used .. " s")
  end)

  it("refuses a bad instance id and misuse", function()
    local r, err = core.replica_new(url, "not-a-uuid")
    assert.is_nil(r)
    assert.matches("instance UUID", err)
    assert.has_error(function() a:publish({ performative = "shout" }) end)
    assert.has_error(function() a:publish({ performative = "inform", content = "{not json" }) end)
  end)
end)
