-- Agents waiting on I/O (src/aio.c through orrery.db.query and orrery.http.fetch): the handler
-- yields, the I/O loop does the work, and the agent's worker serves other messages meanwhile.
-- Real PostgreSQL (a fresh migrated database) and a real HTTP server (spec/support/http_fixture.lua).
local core = require("orrery.core")
local h = require("spec.support.helpers")
local json = core.api().json

local function ask(rt, agent, content, opts)
  local r = rt:request(agent, content ~= nil and json.encode(content) or nil, opts or { timeout = 10 })
  return r.performative, r.content and json.decode(r.content), r
end

local function load(rt, src)
  return assert(rt:load(src, "=io_test.lua"))
end

local DB_AGENT = [[
return { name = "dbq", description = "runs the query it is given", on = { request = function(msg)
  local rows, n = orrery.db.query(msg.content.sql, msg.content.params)
  if not rows then return { error = n } end
  return { rows = rows, n = n }
end } }
]]

local ECHO = [[
return { name = "echo", description = "d", on = { request = function(msg) return msg.content end } }
]]

describe("agents doing I/O", function()
  describe("orrery.db.query", function()
    local dbname, app_url, owner_url, rt
    local A = "aaaaaaaa-0000-4000-8000-00000000000a"
    local B = "bbbbbbbb-0000-4000-8000-00000000000b"

    setup(function()
      dbname, app_url, owner_url = h.create_database()
      local code, out, err = h.orrery("migrate",
        { DATABASE_URL = owner_url, ORRERY_MIGRATION_DATABASE_URL = owner_url })
      assert(code == 0, tostring(out) .. tostring(err))
      local pcode, _, perr = h.psql(owner_url, ([[
        SELECT set_config('orrery.ctx', 'admin', false);
        INSERT INTO users (id, email, password_hash) VALUES ('%s', 'a@example.com', 'x'), ('%s', 'b@example.com', 'x');
        SELECT set_config('orrery.user_id', '%s', false);
        INSERT INTO tasks (user_id, title) VALUES ('%s', 'a task of A');
        SELECT set_config('orrery.user_id', '%s', false);
        INSERT INTO tasks (user_id, title) VALUES ('%s', 'a task of B');
      ]]):format(A, B, A, A, B, B))
      assert(pcode == 0, perr)
    end)

    teardown(function()
      if rt then rt:close() end
      h.drop_database(dbname)
    end)

    before_each(function()
      if rt then rt:close() end
      rt = assert(core.agents_new({ workers = 1, db_url = app_url, lib_dir = "lib" }))
      load(rt, DB_AGENT)
      load(rt, ECHO)
    end)

    it("returns rows with typed columns, and the count", function()
      local sql = "SELECT $1::int + 1 AS n, 'x' AS s, true AS b, 2.5::float8 AS f, NULL AS z"
      local perf, c = ask(rt, "dbq", { sql = sql, params = { 41 } })
      assert.equal("inform", perf)
      assert.same({ { n = 42, s = "x", b = true, f = 2.5 } }, c.rows)
      assert.equal(1, c.n)
    end)

    it("runs as the user of the message: row-level security shows only their rows", function()
      local _, a = ask(rt, "dbq", { sql = "SELECT title FROM tasks ORDER BY title" }, { user_id = A, timeout = 10 })
      assert.same({ { title = "a task of A" } }, a.rows)
      local _, b = ask(rt, "dbq", { sql = "SELECT title FROM tasks ORDER BY title" }, { user_id = B, timeout = 10 })
      assert.same({ { title = "a task of B" } }, b.rows)
      local _, none = ask(rt, "dbq", { sql = "SELECT title FROM tasks" })
      assert.same({}, none.rows)
      -- the user setting ends with the query's transaction
      local _, after = ask(rt, "dbq", { sql = "SELECT current_setting('orrery.user_id', true) AS u" })
      assert.equal("", after.rows[1].u or "")
    end)

    it("reports SQL errors as nil, message and rolls the statement back", function()
      local _, c = ask(rt, "dbq", { sql = "SELECT * FROM no_such_table" })
      assert.matches("no_such_table", c.error)
      _, c = ask(rt, "dbq", { sql = "UPDATE tasks SET title = 'x' WHERE user_id = $1 AND 1/0 = 1", params = { A } },
        { user_id = A, timeout = 10 })
      assert.matches("division by zero", c.error)
      local _, again = ask(rt, "dbq", { sql = "SELECT title FROM tasks" }, { user_id = A, timeout = 10 })
      assert.equal("a task of A", again.rows[1].title)
    end)

    it("does not hold the agent's worker while the query runs", function()
      local replies = rt:requests({
        { "dbq", json.encode({ sql = "SELECT pg_sleep(1) IS NULL AS slept" }) },
        { "echo", '"quick"' },
      }, 10)
      local slow, quick = replies[1], replies[2]
      assert.equal("inform", slow.performative)
      assert.equal('"quick"', quick.content)
      -- one worker: the echo was answered while the query was still sleeping
      assert.is_true(slow.created_at - quick.created_at > 0.5,
        ("quick at %.3f, slow at %.3f"):format(quick.created_at, slow.created_at))
    end)
  end)

  describe("orrery.http.fetch", function()
    local port, proc, rt
    local FETCH = [[
      return { name = "web", description = "fetches", on = { request = function(msg)
        local r, err = orrery.http.fetch(msg.content.url, msg.content.opts)
        if not r then return { error = err } end
        return { status = r.status, body = #r.body > 2000 and ("#" .. #r.body) or r.body, headers = r.headers }
      end } }
    ]]

    setup(function()
      port = h.free_port()
      proc = io.popen(("exec lua5.4 %s/spec/support/http_fixture.lua %d"):format(h.root, port), "r")
      local c
      for _ = 1, 100 do
        c = require("socket").connect("127.0.0.1", port)
        if c then break end
        h.sleep(0.05)
      end
      assert(c, "the fixture server did not start")
      c:close()
    end)

    teardown(function()
      if rt then rt:close() end
      os.execute(("pkill -f 'http_fixture.lua %d'"):format(port))
      if proc then proc:close() end
    end)

    local function runtime(opts)
      if rt then rt:close() end
      local o = { workers = 1, lib_dir = "lib", fetch_allow_private = true }
      for k, v in pairs(opts or {}) do o[k] = v end
      rt = assert(core.agents_new(o))
      load(rt, FETCH)
      load(rt, ECHO)
      return rt
    end

    local function url(path) return ("http://127.0.0.1:%d%s"):format(port, path) end

    it("fetches a page: status, body and lower-case headers", function()
      runtime()
      local perf, c = ask(rt, "web", { url = url("/hello") })
      assert.equal("inform", perf)
      assert.equal(200, c.status)
      assert.equal("hello", c.body)
      assert.equal("yes", c.headers["x-fixture"])
    end)

    it("sends the method, headers and body", function()
      runtime()
      local _, c = ask(rt, "web", { url = url("/echo"), opts = { method = "POST", body = "payload",
                                                                 headers = { ["X-Thing"] = "1" } } })
      local echoed = json.decode(c.body)
      assert.equal("POST", echoed.method)
      assert.equal("payload", echoed.body)
      assert.equal("1", echoed.headers["x-thing"])
    end)

    it("does not follow redirects and returns the status as is", function()
      runtime()
      local _, c = ask(rt, "web", { url = url("/redirect") })
      assert.equal(302, c.status)
      assert.equal("/hello", c.headers.location)
    end)

    it("cuts a response over the size cap, and a slow one at the timeout", function()
      runtime({ fetch_max_bytes = 1000 })
      local _, c = ask(rt, "web", { url = url("/big?n=5000") })
      assert.matches("^too_large", c.error)
      _, c = ask(rt, "web", { url = url("/big?n=500") })
      assert.equal(500, #c.body)
      _, c = ask(rt, "web", { url = url("/slow?s=3"), opts = { timeout = 0.3 } })
      assert.equal("timeout", c.error)
    end)

    it("refuses other schemes, hosts outside the allow list and private addresses by default", function()
      runtime({ fetch_allow_private = false, io = true })
      local _, c = ask(rt, "web", { url = url("/hello") })
      assert.matches("^refused", c.error)
      _, c = ask(rt, "web", { url = "file:///etc/passwd" })
      assert.matches("only http and https", c.error)
      runtime({ fetch_allow = "example.com,.example.org", fetch_allow_private = true })
      _, c = ask(rt, "web", { url = url("/hello") })
      assert.matches("not in ORRERY_FETCH_ALLOW", c.error)
    end)

    it("does not hold the agent's worker while a response is slow", function()
      runtime()
      local replies = rt:requests({
        { "web", json.encode({ url = url("/slow?s=1") }) },
        { "echo", '"quick"' },
      }, 10)
      assert.equal("inform", replies[1].performative)
      assert.is_true(replies[1].created_at - replies[2].created_at > 0.5)
    end)
  end)
end)
