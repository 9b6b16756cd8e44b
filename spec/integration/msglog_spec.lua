-- The message log (src/msglog.c) against a real, migrated PostgreSQL database, driven through
-- orrery.core: batches written off the caller's thread and visible once flushed; the trace order;
-- handled marks that win even when they arrive before their record; a full queue that drops and
-- counts instead of blocking; rows the database refuses costing only themselves; a connection
-- killed under the writer; and redelivery after a crash — exactly the pending rows of dead
-- processes, once, never a live process's, never the same row to two claimers.
local h = require("helpers")
local core = require("orrery.core")
local cjson = require("cjson.safe")

local function uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    local v = c == "x" and math.random(0, 15) or math.random(8, 11)
    return string.format("%x", v)
  end))
end

describe("message log", function()
  local db, url, admin_db_url

  -- Runs q as the superuser in the spec's database; returns its output lines.
  local function sql(q)
    local code, out, err = h.psql(admin_db_url, q)
    assert.equal(0, code, err)
    local lines = {}
    for line in (out or ""):gmatch("[^\n]+") do lines[#lines + 1] = line end
    return lines
  end

  -- Cleanups of the running test, run after it in reverse order (busted keeps one `finally`).
  local undo = {}
  local function defer(fn) undo[#undo + 1] = fn end
  after_each(function()
    for i = #undo, 1, -1 do pcall(undo[i]) end
    undo = {}
  end)

  -- A log closed after the test (closing twice is harmless: abandon and close end it early).
  local function new_log(instance, queue_max, flush_ms)
    local ml, err = core.msglog_new(url, instance or uuid(), queue_max, flush_ms)
    assert.is_truthy(ml, err)
    defer(function() ml:close() end)
    return ml
  end

  local function envelope(fields)
    local e = { id = uuid(), performative = "inform", sender = "alice", receiver = "bob", conversation_id = "conv" }
    for k, v in pairs(fields or {}) do e[k] = v end
    return e
  end

  -- state of each row of conversation conv, in trace order: { {id, receiver, state}, ... }
  local function rows(conv)
    local out = {}
    for _, line in ipairs(sql("SELECT id, receiver, state, instance FROM agent_messages WHERE conversation_id = '" ..
      conv .. "' ORDER BY created_at, seq")) do
      local id, receiver, state, instance = line:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)$")
      out[#out + 1] = { id = id, receiver = receiver, state = state, instance = instance }
    end
    return out
  end

  local function new_user_row()
    return sql("INSERT INTO users (email, password_hash) VALUES ('" .. h.new_email("ml"):lower() ..
      "', 'x') RETURNING id")[1]
  end

  setup(function()
    local owner
    db, url, owner = h.create_database()
    admin_db_url = h.admin_url:gsub("/postgres%?", "/" .. db .. "?")
    local code, _, err = h.orrery("migrate", { DATABASE_URL = url, ORRERY_MIGRATION_DATABASE_URL = owner,
      ORRERY_MIGRATIONS_DIR = h.root .. "/migrations", ORRERY_LOG_LEVEL = "warn" })
    assert.equal(0, code, err)
  end)
  teardown(function() h.drop_database(db) end)

  describe("writing", function()
    it("writes nothing on the caller's thread, then the whole batch in one transaction with every field", function()
      local ml = new_log(nil, 100, 60000) -- a batch waits a minute unless flushed
      local user = new_user_row()
      local a = envelope({ conversation_id = "w1", content = '{"title":"tea","n":[1,2.5,null]}', user_id = user,
        reply_with = "r1", created_at = 1700000000.25 })
      local b = envelope({ conversation_id = "w1", performative = "agree", sender = "bob", receiver = "alice",
        in_reply_to = "r1", content = '"ok"', created_at = 1700000001.5 })
      local pub = envelope({ conversation_id = "w1", receiver = "", topic = "task.created", created_at = 1700000002 })
      assert.is_true(ml:record(a, true))
      assert.is_true(ml:record(b, false))
      assert.is_true(ml:record(pub, false))
      assert.equal(3, ml:stats().queued)
      assert.same({ "0" }, sql("SELECT count(*) FROM agent_messages WHERE conversation_id = 'w1'"))
      assert.is_true(ml:flush(5000))
      local s = ml:stats()
      assert.equal(0, s.queued)
      assert.equal(3, s.written)
      -- one batch = one transaction: every row carries the same xmin
      assert.same({ "1" }, sql("SELECT count(DISTINCT xmin::text) FROM agent_messages WHERE conversation_id = 'w1'"))
      local got = sql("SELECT id, receiver, performative, sender, topic, reply_with, in_reply_to, " ..
        "coalesce(user_id::text, 'NULL'), coalesce(content::text, 'NULL'), extract(epoch FROM created_at), state " ..
        "FROM agent_messages WHERE conversation_id = 'w1' ORDER BY created_at, seq")
      assert.same({
        table.concat({ a.id, "bob", "inform", "alice", "", "r1", "", user,
          '{"n": [1, 2.5, null], "title": "tea"}', "1700000000.250000", "pending" }, "|"),
        table.concat({ b.id, "alice", "agree", "bob", "", "", "r1", "NULL", '"ok"', "1700000001.500000",
          "trace" }, "|"),
        table.concat({ pub.id, "", "inform", "alice", "task.created", "", "", "NULL", "NULL", "1700000002.000000",
          "trace" }, "|"),
      }, got)
    end)

    it("writes within flush_ms without a flush", function()
      local ml = new_log(nil, 100, 50)
      assert.is_true(ml:record(envelope({ conversation_id = "w2" }), false))
      local deadline = h.now() + 5
      repeat h.sleep(0.02) until sql("SELECT count(*) FROM agent_messages WHERE conversation_id = 'w2'")[1] == "1"
        or h.now() > deadline
      assert.same({ "1" }, sql("SELECT count(*) FROM agent_messages WHERE conversation_id = 'w2'"))
    end)

    it("keeps the trace in created_at order, and in recording order for equal times", function()
      local ml = new_log(nil, 1000, 60000)
      local want = {}
      for i = 1, 30 do
        local e = envelope({ conversation_id = "order", created_at = 1700000100, content = tostring(i) })
        want[#want + 1] = e.id
        assert.is_true(ml:record(e, false))
      end
      local early = envelope({ conversation_id = "order", created_at = 1700000050 })
      assert.is_true(ml:record(early, false))
      table.insert(want, 1, early.id)
      assert.is_true(ml:flush(5000))
      local got = {}
      for _, r in ipairs(rows("order")) do got[#got + 1] = r.id end
      assert.same(want, got)
    end)

    it("records a delivery once: the same id and receiver again is ignored, a pending copy outranks a trace",
      function()
        local ml = new_log(nil, 100, 60000)
        local e = envelope({ conversation_id = "dup" })
        assert.is_true(ml:record(e, false))
        assert.is_true(ml:record(e, true))
        assert.is_true(ml:flush(5000))
        assert.is_true(ml:record(e, false)) -- a later batch: ON CONFLICT DO NOTHING
        assert.is_true(ml:flush(5000))
        local r = rows("dup")
        assert.equal(1, #r)
        assert.equal("pending", r[1].state)
      end)

    it("lets a handled mark win in whatever order it reaches the writer", function()
      local ml = new_log(nil, 100, 60000)
      local before_same = envelope({ conversation_id = "hd", content = "1" })
      local after_same = envelope({ conversation_id = "hd", content = "2" })
      local before_earlier = envelope({ conversation_id = "hd", content = "3" })
      local later = envelope({ conversation_id = "hd", content = "4" })
      local never = envelope({ conversation_id = "hd", content = "5" })
      local traced = envelope({ conversation_id = "hd", content = "6" })
      -- batch 1: the mark before its record, a record before its mark, a mark whose record comes later
      assert.is_true(ml:handled("bob", before_same.id))
      assert.is_true(ml:record(before_same, true))
      assert.is_true(ml:record(after_same, true))
      assert.is_true(ml:handled("bob", after_same.id))
      assert.is_true(ml:handled("bob", before_earlier.id))
      assert.is_true(ml:record(later, true))
      assert.is_true(ml:record(never, true))
      assert.is_true(ml:record(traced, false))
      assert.is_true(ml:flush(5000))
      -- batch 2: the record the early mark was about; a mark for a row written earlier; one for a trace row
      assert.is_true(ml:record(before_earlier, true))
      assert.is_true(ml:handled("bob", later.id))
      assert.is_true(ml:handled("bob", traced.id))
      assert.is_true(ml:flush(5000))
      local states = {}
      for _, r in ipairs(sql("SELECT content::text, state FROM agent_messages WHERE conversation_id = 'hd'")) do
        local n, state = r:match("^(%d)|(%a+)$")
        states[n] = state
      end
      assert.same({ ["1"] = "handled", ["2"] = "handled", ["3"] = "handled", ["4"] = "handled", ["5"] = "pending",
        ["6"] = "trace" }, states)
    end)

    it("drops and counts when the queue is full, without blocking the caller", function()
      local ml = new_log(nil, 3, 60000)
      local t0, accepted = h.now(), 0
      for _ = 1, 10 do
        if ml:record(envelope({ conversation_id = "full" }), true) then accepted = accepted + 1 end
      end
      assert.is_false(ml:handled("bob", uuid()))
      assert.is_true(h.now() - t0 < 1, "record never waits for the database")
      assert.equal(3, accepted)
      local s = ml:stats()
      assert.equal(8, s.dropped)
      assert.equal(3, s.queued)
      assert.is_true(ml:flush(5000))
      assert.equal(3, #rows("full"))
      assert.is_true(ml:record(envelope({ conversation_id = "full" }), true), "room again once written")
    end)

    it("refuses envelopes the table cannot hold, and counts them", function()
      local ml = new_log(nil, 100, 60000)
      assert.is_false(ml:record(envelope({ id = "not-a-uuid", conversation_id = "bad" }), false))
      assert.is_false(ml:record(envelope({ receiver = "Bob", conversation_id = "bad" }), false))
      assert.is_false(ml:record(envelope({ receiver = "", conversation_id = "bad" }), true), "pending needs a receiver")
      assert.is_false(ml:record(envelope({ user_id = "someone", conversation_id = "bad" }), false))
      assert.is_false(ml:handled("Bob", uuid()))
      assert.is_false(ml:handled("bob", "not-a-uuid"))
      assert.is_true(ml:record(envelope({ sender = "caf\xe9", conversation_id = "bad" }), false)) -- not UTF-8
      assert.is_true(ml:record(envelope({ conversation_id = "bad" }), false))
      assert.is_true(ml:flush(5000))
      local s = ml:stats()
      assert.equal(5, s.rejected)
      assert.equal(1, #rows("bad"))
      assert.equal(0, s.failed_batches)
    end)

    it("skips the rows of a user deleted meanwhile instead of failing the batch", function()
      local ml = new_log(nil, 100, 60000)
      local alive, gone = new_user_row(), uuid()
      assert.is_true(ml:record(envelope({ conversation_id = "users", user_id = alive }), true))
      assert.is_true(ml:record(envelope({ conversation_id = "users", user_id = gone }), true))
      assert.is_true(ml:record(envelope({ conversation_id = "users" }), true))
      assert.is_true(ml:flush(5000))
      assert.same({ alive, "NULL" }, sql("SELECT coalesce(user_id::text, 'NULL') FROM agent_messages " ..
        "WHERE conversation_id = 'users' ORDER BY seq"))
      assert.equal(0, ml:stats().failed_batches)
    end)

    it("writes a batch the database refuses row by row, losing only the refused row", function()
      sql("ALTER TABLE agent_messages ADD CONSTRAINT spec_no_poison CHECK (sender <> 'poison')")
      defer(function() sql("ALTER TABLE agent_messages DROP CONSTRAINT spec_no_poison") end)
      local ml = new_log(nil, 100, 60000)
      local ok1, ok2 = envelope({ conversation_id = "poison" }), envelope({ conversation_id = "poison" })
      assert.is_true(ml:record(ok1, true))
      assert.is_true(ml:record(envelope({ conversation_id = "poison", sender = "poison" }), true))
      assert.is_true(ml:record(ok2, true))
      assert.is_true(ml:handled("bob", ok2.id))
      assert.is_true(ml:flush(5000))
      local r = rows("poison")
      assert.equal(2, #r)
      assert.same({ ok1.id, "pending" }, { r[1].id, r[1].state })
      assert.same({ ok2.id, "handled" }, { r[2].id, r[2].state })
      local s = ml:stats()
      assert.equal(1, s.rejected)
      assert.equal(2, s.written)
      assert.equal(0, s.failed_batches)
    end)
  end)

  describe("liveness and connections", function()
    -- The instance rows whose advisory lock some session holds, read the way msglog reads pg_locks.
    local function live_instances()
      return sql("SELECT i.id FROM agent_instances i JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted " ..
        "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) " ..
        "AND l.classid = ((i.lock_key >> 32) & 4294967295)::oid AND l.objid = (i.lock_key & 4294967295)::oid " ..
        "ORDER BY i.id")
    end

    local function contains(list, v)
      for _, x in ipairs(list) do if x == v then return true end end
      return false
    end

    it("registers the instance under a lock that pg_locks shows, and removes it on close", function()
      local id = uuid()
      local ml = new_log(id)
      assert.is_true(contains(live_instances(), id))
      assert.same({ "1" }, sql("SELECT count(*) FROM agent_instances WHERE id = '" .. id .. "' AND hostname <> ''"))
      ml:close()
      assert.same({ "0" }, sql("SELECT count(*) FROM agent_instances WHERE id = '" .. id .. "'"))
    end)

    it("refuses a second live process with the same instance id", function()
      local id = uuid()
      new_log(id)
      local t0 = h.now()
      local again, err = core.msglog_new(url, id)
      assert.is_nil(again)
      assert.matches("already running", err)
      assert.is_true(h.now() - t0 >= 1.9, "it first waits for a session that may be going away")
      assert.is_true(contains(live_instances(), id), "the first one keeps its registration")
    end)

    it("reconnects after its session is killed, takes the lock again, and loses nothing", function()
      local id = uuid()
      local ml = new_log(id, 100, 20)
      -- Terminates the writer's session (the one holding the instance's lock) and waits until it is gone.
      local function kill()
        local pids = sql("SELECT l.pid FROM pg_locks l JOIN agent_instances i ON l.locktype = 'advisory' " ..
          "AND l.objid = (i.lock_key & 4294967295)::oid AND l.classid = ((i.lock_key >> 32) & 4294967295)::oid " ..
          "AND i.id = '" .. id .. "'")
        assert.equal(1, #pids)
        sql("SELECT pg_terminate_backend(" .. pids[1] .. ")")
        local deadline = h.now() + 10
        repeat h.sleep(0.02) until sql("SELECT count(*) FROM pg_stat_activity WHERE pid = " .. pids[1])[1] == "0"
          or h.now() > deadline
      end
      -- killed while idle: the writer notices within a second and is alive again with nothing to write
      kill()
      local deadline = h.now() + 10
      repeat h.sleep(0.1) until (contains(live_instances(), id) and ml:stats().reconnects >= 1) or h.now() > deadline
      assert.is_true(contains(live_instances(), id))
      assert.equal(1, ml:stats().reconnects)
      -- killed right before a batch: the batch is written on the new session
      kill()
      for _ = 1, 5 do assert.is_true(ml:record(envelope({ conversation_id = "reconnect" }), true)) end
      assert.is_true(ml:flush(15000))
      assert.equal(5, #rows("reconnect"))
      local s = ml:stats()
      assert.equal(2, s.reconnects)
      assert.equal(0, s.failed_batches)
      assert.is_true(contains(live_instances(), id))
    end)

    it("gives a batch up after a bounded number of lost connections, counts it, and goes on", function()
      -- A row that kills its own session: every attempt at its batch loses the connection.
      sql("CREATE FUNCTION spec_kill_self() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN " ..
        "IF NEW.sender = 'killer' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NEW; END $$")
      sql("CREATE TRIGGER spec_kill_self BEFORE INSERT ON agent_messages FOR EACH ROW " ..
        "EXECUTE FUNCTION spec_kill_self()")
      defer(function()
        sql("DROP TRIGGER spec_kill_self ON agent_messages")
        sql("DROP FUNCTION spec_kill_self()")
      end)
      local ml = new_log(nil, 100, 60000)
      assert.is_true(ml:record(envelope({ conversation_id = "killer", sender = "killer" }), true))
      assert.is_false(ml:flush(30000))
      local s = ml:stats()
      assert.equal(1, s.failed_batches)
      assert.is_true(s.reconnects >= 4)
      assert.is_true(ml:record(envelope({ conversation_id = "killer" }), true))
      assert.is_true(ml:flush(5000))
      assert.equal(1, #rows("killer"))
      assert.equal(1, ml:stats().failed_batches)
    end)
  end)

  -- A crash: the log stops writing and closes its session; the server releases the session's
  -- lock when its backend has exited, a moment later, and only then is the process dead.
  local function crash(log, id)
    log:abandon()
    local deadline = h.now() + 10
    local function held()
      return sql("SELECT count(*) FROM agent_instances i JOIN pg_locks l ON l.locktype = 'advisory' " ..
        "AND l.objid = (i.lock_key & 4294967295)::oid AND l.classid = ((i.lock_key >> 32) & 4294967295)::oid " ..
        "WHERE i.id = '" .. id .. "'")[1] ~= "0"
    end
    while held() and h.now() < deadline do h.sleep(0.02) end
    assert.is_false(held(), "the crashed session's lock is gone")
  end

  describe("redelivery", function()
    -- Earlier tests' logs are closed, so their pending rows are up for grabs: settle them first.
    before_each(function() sql("UPDATE agent_messages SET state = 'handled' WHERE state = 'pending'") end)

    local function ids(list)
      local out = {}
      for _, e in ipairs(list) do out[#out + 1] = e.id end
      return out
    end

    it("gives a new process exactly the dead one's pending rows, once, in order, with their envelopes", function()
      local dead_id = uuid()
      local a = new_log(dead_id, 100, 60000)
      local user = new_user_row()
      local p = {}
      for i = 1, 5 do
        p[i] = envelope({ conversation_id = "rd", receiver = i % 2 == 0 and "carol" or "bob", user_id = user,
          topic = "t.x", reply_with = "r" .. i, content = '{"i":' .. i .. "}", created_at = 1700001000 + i })
        assert.is_true(a:record(p[i], true))
      end
      assert.is_true(a:record(envelope({ conversation_id = "rd", created_at = 1700001000 }), false)) -- trace only
      assert.is_true(a:handled("bob", p[1].id))
      assert.is_true(a:flush(5000))
      assert.is_true(a:handled("carol", p[2].id)) -- not written: the crash comes first
      crash(a, dead_id)
      assert.same({ "1" }, sql("SELECT count(*) FROM agent_instances WHERE id = '" .. dead_id .. "'"))

      local b_id = uuid()
      local b = new_log(b_id, 100, 60000)
      local got = assert(b:redeliver())
      assert.same({ p[2].id, p[3].id, p[4].id, p[5].id }, ids(got))
      local e = got[2]
      assert.same({ "bob", "inform", "alice", "t.x", "rd", "r3", user, 1700001003.0 },
        { e.receiver, e.performative, e.sender, e.topic, e.conversation_id, e.reply_with, e.user_id, e.created_at })
      assert.same({ i = 3 }, cjson.decode(e.content))
      for _, r in ipairs(rows("rd")) do
        if r.state == "redelivered" then assert.equal(b_id, r.instance) end
      end
      assert.same({ "0" }, sql("SELECT count(*) FROM agent_instances WHERE id = '" .. dead_id .. "'"),
        "the dead instance is forgotten once its rows are claimed")
      assert.same({}, assert(b:redeliver()), "only once")
      local c = new_log(nil, 100, 60000)
      assert.same({}, assert(c:redeliver()), "nor to anyone else")
      -- handled after redelivery
      assert.is_true(b:handled("bob", p[3].id))
      assert.is_true(b:flush(5000))
      local states = {}
      for _, r in ipairs(rows("rd")) do states[r.id] = r.state end
      assert.same({ "handled", "redelivered", "handled", "redelivered", "redelivered" },
        { states[p[1].id], states[p[2].id], states[p[3].id], states[p[4].id], states[p[5].id] })
    end)

    it("never takes a live process's pending rows", function()
      local live = new_log(nil, 100, 60000)
      for _ = 1, 3 do assert.is_true(live:record(envelope({ conversation_id = "live" }), true)) end
      assert.is_true(live:flush(5000))
      local other = new_log(nil, 100, 60000)
      assert.same({}, assert(other:redeliver()))
      for _, r in ipairs(rows("live")) do assert.equal("pending", r.state) end
    end)

    it("takes its own previous run's rows (same instance id, restarted at once), not this run's", function()
      local id = uuid()
      local first = new_log(id, 100, 60000)
      local old = envelope({ conversation_id = "self" })
      assert.is_true(first:record(old, true))
      assert.is_true(first:flush(5000))
      first:abandon() -- and restart at once: registering waits for the old session's lock to go
      local second = new_log(id, 100, 60000)
      local new = envelope({ conversation_id = "self" })
      assert.is_true(second:record(new, true))
      assert.is_true(second:flush(5000))
      assert.same({ old.id }, ids(assert(second:redeliver())))
      assert.same({}, assert(second:redeliver()))
      local st = {}
      for _, r in ipairs(rows("self")) do st[r.id] = r.state end
      assert.same({ [old.id] = "redelivered", [new.id] = "pending" }, st)
    end)

    it("keeps a cleanly closed process's unhandled rows for the next start", function()
      local a = new_log(nil, 100, 60000)
      local e = envelope({ conversation_id = "clean" })
      assert.is_true(a:record(e, true))
      a:close() -- writes what is queued, then leaves
      local b = new_log(nil, 100, 60000)
      assert.same({ e.id }, ids(assert(b:redeliver())))
    end)

    it("never gives the same row to two processes claiming at the same moment", function()
      local n = 3000
      local dead_id = uuid()
      local dead = new_log(dead_id, n + 10, 60000)
      for i = 1, n do
        assert.is_true(dead:record(envelope({ conversation_id = "race", created_at = 1700002000 + i / 1000 }), true))
      end
      assert.is_true(dead:flush(30000))
      crash(dead, dead_id)
      local dir = h.tmpdir()
      defer(function() os.execute("rm -rf " .. h.quote(dir)) end)
      local script = dir .. "/claim.lua"
      h.write_file(script, [[
local core = require("orrery.core")
local url, instance, start, out = arg[1], arg[2], tonumber(arg[3]), arg[4]
local socket = require("socket")
local ml = assert(core.msglog_new(url, instance))
while socket.gettime() < start do end
local got = assert(ml:redeliver())
local f = assert(io.open(out .. ".tmp", "w"))
for _, e in ipairs(got) do f:write(e.id, "\n") end
f:close()
os.rename(out .. ".tmp", out)
ml:close()
]])
      for round = 1, 2 do
        if round == 2 then -- a second round on rows made pending again (two fresh claimers)
          sql("UPDATE agent_messages SET state = 'pending', instance = '" .. uuid() ..
            "' WHERE conversation_id = 'race'")
        end
        local start = h.now() + 1.0
        for k = 1, 2 do
          os.execute(string.format("lua5.4 %s %s %s %.3f %s/out%d >%s/log%d 2>&1 &", h.quote(script), h.quote(url),
            uuid(), start, h.quote(dir), k, h.quote(dir), k))
        end
        local seen, total, deadline = {}, 0, h.now() + 30
        for k = 1, 2 do
          local path = dir .. "/out" .. k
          while not h.read_file(path) and h.now() < deadline do h.sleep(0.05) end -- renamed when complete
          local text = assert(h.read_file(path), h.read_file(dir .. "/log" .. k))
          for id in text:gmatch("[^\n]+") do
            assert.is_nil(seen[id], "claimed twice: " .. id)
            seen[id] = true
            total = total + 1
          end
          os.remove(path)
        end
        assert.equal(n, total)
        assert.same({ tostring(n) }, sql("SELECT count(*) FROM agent_messages WHERE conversation_id = 'race' " ..
          "AND state = 'redelivered'"))
      end
    end)
  end)
end)
