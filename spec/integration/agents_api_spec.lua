-- Agents as files and the admin API, through the real `orrery serve` (src/agents_store.c,
-- src/api_agents.c, migrations/V9__agents.sql, docs/agents-admin.md): files of ORRERY_AGENTS_DIR
-- load and a broken one is reported with its file and line; PUT compiles in a scratch state first
-- (400 with the line, 400 for the wrong name), stores a new version and swaps it in while a handler
-- already running finishes on its own version; rollback; GET shows status and counters; hostile
-- agents fail alone, and repeated crashes show as degraded without failing /readyz; 2,000
-- concurrent sleeping handlers through the server while /healthz keeps answering; the database
-- version overrides the file after a restart; file watching in development.
local h = require("helpers")
local wait_for = h.wait_for
local new_admin = h.new_admin
local cjson = require("cjson.safe")
local socket = require("socket")

local assert_bad_field = h.assert_bad_field

-- An agent file: name, and the body of its `on` table.
local function agent_src(name, on, prelude)
  return string.format([[
%s
return {
  name = %q,
  description = "spec agent %s",
  on = {
%s
  },
}
]], prelude or "", name, name, on)
end

-- Answers {tag = tag, got = content}, after content.sleep seconds when asked.
local function echo_src(tag)
  return agent_src("echo", string.format([[
    request = function(msg, ctx)
      if type(msg.content) == "table" and msg.content.sleep then ctx:sleep(msg.content.sleep) end
      return { tag = %q, got = msg.content }
    end,]], tag))
end

local BROKEN = "-- a file with a syntax error on line 3\nreturn {\n  name = = 'broken',\n}\n"



-- POST /api/agents/{name}/messages as u; returns the response.
local function ask(u, name, content, extra)
  local body = { content = content }
  for k, v in pairs(extra or {}) do body[k] = v end
  return u.call("POST", "/api/agents/" .. name .. "/messages", { json = body })
end

-- The reply's decoded content, asserting a 200 with performative perf (default inform).
local function answer(u, name, content, perf)
  local res = ask(u, name, content)
  assert.equal(200, res.status, res.body)
  assert.equal(perf or "inform", res.json.performative, res.body)
  return res.json.content
end

local function put(u, name, source)
  return u.call("PUT", "/api/agents/" .. name, { json = { source = source } })
end

local function status_of(u, name)
  local res = u.call("GET", "/api/agents")
  assert.equal(200, res.status, res.body)
  for _, a in ipairs(res.json.items) do
    if a.name == name then return a end
  end
end

-- Sends a request on its own connection without reading the answer (read it with h.read_response).
local function send_only(port, u, method, path, json)
  local body = cjson.encode(json)
  local c = assert(h.connect(port))
  c:settimeout(30)
  c:send(table.concat({
    method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
    "Authorization: Bearer " .. u.token, "Content-Type: application/json",
    "Content-Length: " .. #body, "", body,
  }, "\r\n"))
  return c
end

local function logs_matching(srv, pattern)
  local out = {}
  for _, l in ipairs(h.log_lines(srv:logs())) do
    if type(l.msg) == "string" and l.msg:find(pattern) then out[#out + 1] = l end
  end
  return out
end

describe("agents admin API", function()
  local srv, dir, admin, user

  setup(function()
    dir = h.tmpdir()
    h.write_file(dir .. "/echo.lua", echo_src("file"))
    h.write_file(dir .. "/broken.lua", BROKEN)
    h.write_file(dir .. "/other.lua", agent_src("other", [[
    request = function(msg) return { other = msg.content } end,]]))
    srv = h.start_server({ env = {
      ORRERY_AGENTS_DIR = dir, ORRERY_AGENTS_WATCH = "0", ORRERY_AGENT_MEMORY_MB = "16",
      ORRERY_AGENT_INSTRUCTIONS = "5000000", ORRERY_AGENT_WORKERS = "2",
    } })
    admin = new_admin(srv)
    user = h.new_user(srv.port, "agents-user")
  end)
  teardown(function()
    srv:stop()
    os.execute("rm -rf " .. h.quote(dir))
  end)

  describe("agents as files", function()
    it("skips a broken file, logging its file and line, while the valid ones answer", function()
      local errs = logs_matching(srv, "broken%.lua")
      assert.is_true(#errs >= 1, srv:logs())
      local e = errs[1]
      assert.equal("error", e.level)
      assert.equal(dir .. "/broken.lua", e.file)
      assert.equal(3, e.line)
      assert.matches("broken%.lua:3:", e.msg)
      assert.is_nil(status_of(admin, "broken"))
      assert.same({ tag = "file", got = { n = 1 } }, answer(admin, "echo", { n = 1 }))
      assert.same({ other = "hi" }, answer(admin, "other", "hi"))
      local st = status_of(admin, "echo")
      assert.equal("file", st.origin)
      assert.equal(dir .. "/echo.lua", st.file)
      assert.equal("running", st.status)
    end)
  end)

  describe("access", function()
    it("refuses every route to a non-admin with 403 and to no token with 401", function()
      local routes = {
        { "GET", "/api/agents" }, { "GET", "/api/agents/echo" },
        { "PUT", "/api/agents/echo", { source = echo_src("user") } },
        { "POST", "/api/agents/echo/rollback" },
        { "POST", "/api/agents/echo/messages", { content = 1 } },
      }
      for _, r in ipairs(routes) do
        local res = user.call(r[1], r[2], { json = r[3] })
        assert.equal(403, res.status, r[1] .. " " .. r[2] .. ": " .. res.body)
        assert.equal("forbidden", res.json.error.code)
        res = h.request(srv.port, r[1], r[2], { json = r[3] })
        assert.equal(401, res.status, r[1] .. " " .. r[2])
      end
      -- Nothing changed: the file's echo still answers, and nothing was stored.
      assert.equal("file", answer(admin, "echo", 1).tag)
      assert.equal("0", srv:sql("SELECT count(*) FROM agents"))
    end)
  end)

  describe("PUT /api/agents/{name}", function()
    it("answers 400 with the line for a syntax error, and stores nothing", function()
      local res = put(admin, "echo", "return {\n  name = 'echo',\n  description = 'x'\n  on = {},\n}\n")
      assert_bad_field(res, "source")
      assert.equal(4, res.json.error.details.line, res.body)
      assert.matches("source:4:", res.json.error.message)
      assert.equal("0", srv:sql("SELECT count(*) FROM agents"))
      assert.equal("file", answer(admin, "echo", 1).tag)
    end)

    it("checks what the source declares, and the name in the URL", function()
      assert_bad_field(put(admin, "echo", agent_src("other", "")), "name")
      assert_bad_field(put(admin, "messages", agent_src("messages", "")), "name")
      assert_bad_field(put(admin, "Bad%20Name", agent_src("echo", "")), "name")
      assert_bad_field(put(admin, "echo", "return { name = 'echo', on = {} }"), "source")
      assert_bad_field(put(admin, "echo", ""), "source")
      assert_bad_field(admin.call("PUT", "/api/agents/echo", { json = { src = "x" } }), "src")
      assert_bad_field(admin.call("PUT", "/api/agents/echo", { json = { source = 42 } }), "source")
      -- Code at the top of the file runs under the limits too: a loop there is refused.
      local res = put(admin, "echo", "while true do end")
      assert_bad_field(res, "source")
      assert.matches("instruction", res.json.error.message)
      local big = "-- " .. string.rep("x", 256 * 1024) .. "\n" .. echo_src("big")
      res = put(admin, "echo", big)
      assert.equal(413, res.status, res.body)
      assert.equal("source", res.json.error.details.field)
      assert.equal("0", srv:sql("SELECT count(*) FROM agents"))
    end)

    it("stores new versions that new requests see, while a running handler finishes on its own", function()
      local res = put(admin, "echo", echo_src("v1"))
      assert.equal(201, res.status, res.body)
      assert.equal(1, res.json.version)
      assert.equal("database", res.json.origin)
      assert.equal(1, res.json.stored.version)
      assert.equal("v1", answer(admin, "echo", 1).tag)

      -- A handler of v1 sleeps while v2 is installed: it answers as v1; the next request gets v2.
      local c = send_only(srv.port, admin, "POST", "/api/agents/echo/messages", { content = { sleep = 1.5 } })
      assert.is_true(wait_for(function() return status_of(admin, "echo").runs == 1 end, 5))
      res = put(admin, "echo", echo_src("v2"))
      assert.equal(200, res.status, res.body)
      assert.equal(2, res.json.version)
      assert.equal("v2", answer(admin, "echo", 1).tag)
      local slow = h.read_response(c)
      c:close()
      assert.equal(200, slow.status, slow.body)
      assert.same({ tag = "v1", got = { sleep = 1.5 } }, slow.json.content)

      assert.equal("1,false|2,true", srv:sql(
        "SELECT string_agg(version || ',' || active, '|' ORDER BY version) FROM agents WHERE name = 'echo'"))
      -- The checksum is the source's sha256, whatever the client sent.
      assert.equal("t", srv:sql("SELECT checksum = encode(sha256(convert_to(source, 'UTF8')), 'hex') "
        .. "FROM agents WHERE name = 'echo' AND version = 2"))
      assert.equal(admin.id, srv:sql("SELECT created_by FROM agents WHERE name = 'echo' AND version = 2"))
    end)

    it("keeps versions immutable in the database", function()
      local code, _, err = h.psql(srv.database_url,
        "SET orrery.ctx = 'admin'; UPDATE agents SET source = 'x' WHERE name = 'echo' AND version = 1")
      assert.is_not.equal(0, code)
      assert.matches("immutable", err)
      code, _, err = h.psql(srv.database_url, "SET orrery.ctx = 'admin'; DELETE FROM agents WHERE name = 'echo'")
      assert.is_not.equal(0, code)
      assert.matches("permission denied", err)
      -- Without the admin or system context the rows are invisible.
      code = select(1, h.psql(srv.database_url, "SELECT 1"))
      assert.equal(0, code)
      local _, out = h.psql(srv.database_url, "SELECT count(*) FROM agents")
      assert.equal("0", (out:gsub("%s+$", "")))
    end)

    it("adds an agent that exists only in the database", function()
      local res = put(admin, "fresh", agent_src("fresh", [[
    request = function() return "fresh" end,]]))
      assert.equal(201, res.status, res.body)
      assert.equal("fresh", answer(admin, "fresh", nil))
    end)
  end)

  describe("GET /api/agents/{name}", function()
    it("shows the status, the active source and the versions", function()
      local res = admin.call("GET", "/api/agents/echo")
      assert.equal(200, res.status, res.body)
      local a = res.json
      assert.equal("echo", a.name)
      assert.equal("running", a.status)
      assert.equal(2, a.version)
      assert.equal("database", a.origin)
      assert.equal(echo_src("v2"), a.source)
      assert.equal(2, #a.versions)
      assert.same({ 2, true }, { a.versions[1].version, a.versions[1].active })
      assert.same({ 1, false }, { a.versions[2].version, a.versions[2].active })
      assert.matches("^%x+$", a.versions[1].checksum)
      assert.equal(admin.id, a.versions[1].created_by)
      for _, k in ipairs({ "mailbox", "handled", "failed", "restarts", "runs" }) do
        assert.is_number(a[k], k)
      end
      assert.is_true(a.handled >= 2)

      res = admin.call("GET", "/api/agents/other")
      assert.equal(200, res.status, res.body)
      assert.equal("file", res.json.origin)
      assert.same({}, res.json.versions)
      assert.matches('name = "other"', res.json.source, 1, true)

      assert.equal(404, admin.call("GET", "/api/agents/nobody").status)
      assert.equal(404, admin.call("GET", "/api/agents/broken").status)
    end)

    it("counts handled and failed messages and keeps the last error", function()
      assert.equal(201, put(admin, "flaky", agent_src("flaky", [[
    request = function(msg)
      if msg.content == "fail" then error("flaky failed on purpose") end
      return "ok"
    end,]])).status)
      assert.equal("ok", answer(admin, "flaky", "ok"))
      local c = answer(admin, "flaky", "fail", "failure")
      assert.matches("flaky failed on purpose", c.message or c.error)
      -- handled counts the runs that ended well, failed the ones that raised.
      local st = status_of(admin, "flaky")
      assert.equal(1, st.handled)
      assert.equal(1, st.failed)
      assert.matches("flaky failed on purpose", st.last_error)
      assert.equal(0, st.mailbox)
      assert.equal("running", st.status)
    end)
  end)

  describe("POST /api/agents/{name}/rollback", function()
    it("restores the previous version; again goes one further back; then there is none", function()
      local res = admin.call("POST", "/api/agents/echo/rollback")
      assert.equal(200, res.status, res.body)
      assert.equal(1, res.json.version)
      assert.equal(2, res.json.rolled_back_from)
      assert.equal("v1", answer(admin, "echo", 1).tag)
      assert.equal(echo_src("v1"), admin.call("GET", "/api/agents/echo").json.source)

      res = admin.call("POST", "/api/agents/echo/rollback")
      assert.equal(409, res.status, res.body)
      assert.equal("no_previous_version", res.json.error.code)
      assert.equal("v1", answer(admin, "echo", 1).tag)

      -- A new PUT goes on from the highest version.
      res = put(admin, "echo", echo_src("v3"))
      assert.equal(200, res.status, res.body)
      assert.equal(3, res.json.version)
      assert.equal("v3", answer(admin, "echo", 1).tag)
      res = admin.call("POST", "/api/agents/echo/rollback")
      assert.equal(200, res.status, res.body)
      assert.equal(2, res.json.version)
      assert.equal("v2", answer(admin, "echo", 1).tag)

      -- An agent that only has a file has nothing to roll back to.
      res = admin.call("POST", "/api/agents/other/rollback")
      assert.equal(404, res.status, res.body)
      assert.same({ other = 1 }, answer(admin, "other", 1))
    end)
  end)

  describe("POST /api/agents/{name}/messages", function()
    it("sends as the admin and answers with the reply envelope", function()
      assert.equal(201, put(admin, "whoami", agent_src("whoami", [[
    request = function(msg, ctx) return { user = ctx.user_id, conv = ctx.conversation_id, p = msg.performative } end,
    query = function(msg) return { q = msg.content } end,]])).status)
      local res = ask(admin, "whoami", { a = { 1, 2 } }, { conversation_id = "conv-42" })
      assert.equal(200, res.status, res.body)
      assert.equal("inform", res.json.performative)
      assert.equal("whoami", res.json.sender)
      assert.equal("conv-42", res.json.conversation_id)
      assert.same({ user = admin.id, conv = "conv-42", p = "request" }, res.json.content)
      res = ask(admin, "whoami", "x", { performative = "query" })
      assert.equal(200, res.status, res.body)
      assert.same({ q = "x" }, res.json.content)
    end)

    it("answers 504 on timeout, 404 for an unknown agent, 400 naming bad fields", function()
      local res = ask(admin, "echo", { sleep = 3 }, { timeout = 0.3 })
      assert.equal(504, res.status, res.body)
      assert.equal("timeout", res.json.error.code)
      res = ask(admin, "nobody", 1)
      assert.equal(404, res.status, res.body)
      assert.equal("unknown_agent", res.json.error.code)
      assert_bad_field(ask(admin, "echo", 1, { timeout = 301 }), "timeout")
      assert_bad_field(ask(admin, "echo", 1, { timeout = 0 }), "timeout")
      assert_bad_field(ask(admin, "echo", 1, { timeout = "1" }), "timeout")
      assert_bad_field(ask(admin, "echo", 1, { performative = "shout" }), "performative")
      assert_bad_field(ask(admin, "echo", 1, { conversation_id = string.rep("c", 64) }), "conversation_id")
      assert_bad_field(ask(admin, "echo", 1, { receiver = "other" }), "receiver")
    end)
  end)

  describe("hostile agents", function()
    it("fail alone: an endless loop and a memory blow-up answer failure, the rest keeps serving", function()
      assert.equal(201, put(admin, "looper", agent_src("looper", [[
    request = function() local i = 0 while true do i = i + 1 end end,]])).status)
      assert.equal(201, put(admin, "hog", agent_src("hog", [[
    request = function()
      local t = {}
      for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
    end,]])).status)
      local c = answer(admin, "looper", 1, "failure")
      assert.equal("script.instruction_limit", c.error)
      c = answer(admin, "hog", 1, "failure")
      assert.equal("script.memory_limit", c.error)
      assert.same({ other = "still" }, answer(admin, "other", "still"))
      assert.equal(200, h.get(srv.port, "/healthz").status)
      assert.equal("running", status_of(admin, "looper").status)
    end)

    it("marks repeated crashes degraded in /api/agents; /readyz lists it and still answers 200", function()
      -- hog crashed once above; two more within the window make it degraded.
      for _ = 1, 2 do
        assert.equal("failure", ask(admin, "hog", 1).json.performative)
      end
      assert.is_true(wait_for(function() return status_of(admin, "hog").status == "degraded" end, 10),
        cjson.encode(status_of(admin, "hog")))
      local st = status_of(admin, "hog")
      assert.matches("memory", st.last_error)
      assert.is_true(st.restarts >= 2)
      local res = h.get(srv.port, "/readyz")
      assert.equal(200, res.status, res.body)
      assert.equal("degraded", res.json.checks.agents.status)
      local names = {}
      for _, a in ipairs(res.json.checks.agents.degraded) do names[a.name] = a.status end
      assert.equal("degraded", names.hog)
      assert.is_nil(names.echo)
      assert.same({ other = 1 }, answer(admin, "other", 1))
      -- A fixed version clears it.
      assert.equal(200, put(admin, "hog", agent_src("hog", [[
    request = function() return "tame" end,]])).status)
      assert.equal("tame", answer(admin, "hog", 1))
      assert.equal("running", status_of(admin, "hog").status)
    end)
  end)

  describe("2,000 concurrent handlers", function()
    it("all sleep at once, reply within 2 s, and /healthz answers quickly meanwhile", function()
      local N = 2000
      assert.equal(201, put(admin, "sleeper", agent_src("sleeper", [[
    request = function(msg, ctx) ctx:sleep(1) return { i = msg.content.i } end,]])).status)
      assert.equal(201, put(admin, "driver", agent_src("driver", [[
    request = function(msg)
      local n = msg.content.n
      state.n, state.count, state.finished = n, 0, nil
      state.started = orrery.time.now()
      for i = 1, n do
        assert(orrery.bus.send("sleeper", "request", { i = i }, { reply_with = "fan-" .. i }))
      end
      return { sent = n }
    end,
    inform = function(msg)
      if (msg.in_reply_to or ""):sub(1, 4) == "fan-" then
        state.count = state.count + 1
        if state.count == state.n then state.finished = orrery.time.now() end
      end
    end,
    query = function()
      return { n = state.n, count = state.count, started = state.started, finished = state.finished }
    end,]], "local state = { count = 0 }")).status)

      assert.same({ sent = N }, answer(admin, "driver", { n = N }))
      local slowest, probes, done = 0, 0, nil
      local deadline = h.now() + 30
      while h.now() < deadline do
        local t0 = socket.gettime()
        local res = h.get(srv.port, "/healthz")
        local took = socket.gettime() - t0
        assert.equal(200, res.status)
        probes = probes + 1
        if took > slowest then slowest = took end
        if probes % 5 == 0 then
          local q = ask(admin, "driver", nil, { performative = "query" })
          assert.equal(200, q.status, q.body)
          if q.json.content.finished then done = q.json.content break end
        end
        h.sleep(0.02)
      end
      assert.is_table(done, "the driver never saw its 2,000 replies")
      assert.equal(N, done.count)
      local elapsed = done.finished - done.started
      assert.is_true(elapsed >= 1.0, "replies came before the sleeps ended: " .. elapsed)
      assert.is_true(elapsed < (h.asan and 6 or 2), "2,000 replies took " .. elapsed .. " s")
      assert.is_true(probes >= 5)
      assert.is_true(slowest < (h.asan and 1 or 0.2), "slowest /healthz took " .. slowest .. " s")
      assert.equal(N, status_of(admin, "sleeper").handled)
    end)
  end)
end)

describe("agents across a restart", function()
  it("runs the database's active version over the file of the same name, and database-only agents", function()
    local dir = h.tmpdir()
    h.write_file(dir .. "/echo.lua", echo_src("file"))
    local env = { ORRERY_AGENTS_DIR = dir, ORRERY_AGENTS_WATCH = "0" }
    local srv = h.start_server({ env = env })
    local db_name = srv.db_name
    local admin = new_admin(srv)
    assert.equal(201, put(admin, "echo", echo_src("db")).status)
    assert.equal(201, put(admin, "solo", agent_src("solo", [[
    request = function() return "solo" end,]])).status)
    srv.db_name = nil -- keep the database for the next server
    srv:stop()

    local srv2 = h.start_server({ env = env, database_url = srv.database_url, migrate = false })
    srv2.db_name = db_name
    local ok, err = pcall(function()
      -- The same account (same database, same signing key) on the new server.
      local again = { id = admin.id }
      function again.call(method, path, opts)
        opts = opts or {}
        return h.request(srv2.port, method, path,
          { json = opts.json, headers = { Authorization = "Bearer " .. admin.token } })
      end
      assert.equal("db", answer(again, "echo", 1).tag)
      assert.equal("solo", answer(again, "solo", nil))
      local st = status_of(again, "echo")
      assert.equal("database", st.origin)
      assert.equal(1, st.version)
      assert.equal(1, #logs_matching(srv2, "loaded 'echo' version 1 from the database"))
    end)
    srv2:stop()
    os.execute("rm -rf " .. h.quote(dir))
    assert(ok, err)
  end)
end)

describe("agents file watching (ORRERY_AGENTS_WATCH=1)", function()
  local srv, dir, admin

  setup(function()
    dir = h.tmpdir()
    h.write_file(dir .. "/echo.lua", echo_src("first"))
    srv = h.start_server({ env = { ORRERY_AGENTS_DIR = dir, ORRERY_AGENTS_WATCH = "1" } })
    admin = new_admin(srv)
  end)
  teardown(function()
    srv:stop()
    os.execute("rm -rf " .. h.quote(dir))
  end)

  local function tag_becomes(name, tag)
    return wait_for(function()
      local res = ask(admin, name, 1)
      return res.status == 200 and type(res.json.content) == "table" and res.json.content.tag == tag
    end, 6)
  end

  it("reloads a rewritten file, keeps the running version when the new one is broken, loads new files", function()
    assert.equal("first", answer(admin, "echo", 1).tag)
    h.write_file(dir .. "/echo.lua", echo_src("second"))
    assert.is_true(tag_becomes("echo", "second"), "the rewritten file was not picked up")

    h.write_file(dir .. "/echo.lua", "return {\n  name = 'echo',\n  on = {\n    request = function( end,\n  },\n}\n")
    assert.is_true(wait_for(function() return #logs_matching(srv, "echo%.lua:4:") > 0 end, 6), srv:logs())
    local e = logs_matching(srv, "echo%.lua:4:")[1]
    assert.equal(dir .. "/echo.lua", e.file)
    assert.equal(4, e.line)
    assert.matches("running version is kept", e.msg)
    assert.equal("second", answer(admin, "echo", 1).tag)

    h.write_file(dir .. "/late.lua", agent_src("late", [[
    request = function() return { tag = "late" } end,]]))
    assert.is_true(tag_becomes("late", "late"), "the new file was not loaded")
    assert.equal("file", status_of(admin, "late").origin)
  end)

  it("ignores file changes of an agent the database overrides", function()
    assert.equal(201, put(admin, "echo", echo_src("db")).status)
    assert.equal("db", answer(admin, "echo", 1).tag)
    h.write_file(dir .. "/echo.lua", echo_src("third"))
    assert.is_true(wait_for(function() return #logs_matching(srv, "file ignored") > 0 end, 6), srv:logs())
    assert.equal("db", answer(admin, "echo", 1).tag)
    assert.equal("database", status_of(admin, "echo").origin)
  end)
end)
