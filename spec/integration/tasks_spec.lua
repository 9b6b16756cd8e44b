-- The tasks API of the real `orrery serve`, end to end: CRUD, validation that names the field and
-- writes nothing, filters, full-text search, sort orders, keyset pagination, ETag / If-Match,
-- recurring tasks across a DST change, sub-task trees, isolation between users, the activity log,
-- and the schema's own constraints.
local h = require("helpers")
local cjson = require("cjson.safe")

local NULL = cjson.null

local qs, assert_bad_field = h.query, h.assert_bad_field

local function ids_of(items)
  local out = {}
  for i, t in ipairs(items) do out[i] = t.id end
  return out
end

describe("tasks API", function()
  local srv, port

  -- A fresh account: returns a client {id, token, call(method, path, json, headers)}.
  local function new_user(timezone)
    local u = h.new_user(port, "tasks", { timezone = timezone })
    local call = u.call
    function u.call(method, path, json, headers) return call(method, path, { json = json, headers = headers }) end
    function u.create(fields)
      local r = u.call("POST", "/api/tasks", fields)
      assert.equal(201, r.status, r.body)
      return r.json
    end
    function u.list(params)
      local r = u.call("GET", "/api/tasks" .. qs(params))
      assert.equal(200, r.status, r.body)
      return r.json.items, r.json.next_cursor, r
    end
    -- Every task of the user, following cursors.
    function u.all(params)
      local p, out = {}, {}
      for k, v in pairs(params or {}) do p[k] = v end
      p.limit = p.limit or 200
      repeat
        local items, cursor = u.list(p)
        for _, t in ipairs(items) do out[#out + 1] = t end
        p.cursor = cursor ~= NULL and cursor or nil
      until not p.cursor
      return out
    end
    function u.activity()
      local r = u.call("GET", "/api/activity?object_type=task&limit=200")
      assert.equal(200, r.status, r.body)
      return r.json.items
    end
    return u
  end

  -- Rows in the server's database, whoever owns them (superuser: row-level security does not apply).
  local function db_count(sql) return tonumber((srv:sql(sql))) end

  setup(function()
    srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "100000" } })
    port = srv.port
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("CRUD", function()
    it("creates with defaults, Location and ETag; reads, updates, deletes", function()
      local u = new_user()
      local res = u.call("POST", "/api/tasks", { title = "Buy milk" })
      assert.equal(201, res.status, res.body)
      local t = res.json
      assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", t.id)
      assert.equal("/api/tasks/" .. t.id, res.headers["location"])
      assert.equal('"1"', res.headers["etag"])
      assert.equal("Buy milk", t.title)
      assert.equal("", t.notes)
      assert.equal("open", t.status)
      assert.equal(4, t.priority)
      assert.equal(NULL, t.due_at)
      assert.same({}, t.labels)
      assert.equal(NULL, t.recurrence)
      assert.equal(NULL, t.parent_id)
      assert.equal(NULL, t.completed_at)
      assert.equal(1, t.version)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", t.created_at)
      assert.equal(t.created_at, t.updated_at)

      local got = u.call("GET", "/api/tasks/" .. t.id)
      assert.equal(200, got.status, got.body)
      assert.equal('"1"', got.headers["etag"])
      assert.same(t, got.json)

      local upd = u.call("PATCH", "/api/tasks/" .. t.id, { title = "Buy oat milk", notes = "2 litres" })
      assert.equal(200, upd.status, upd.body)
      assert.equal('"2"', upd.headers["etag"])
      assert.equal("Buy oat milk", upd.json.title)
      assert.equal("2 litres", upd.json.notes)
      assert.equal(2, upd.json.version)
      assert.equal(t.created_at, upd.json.created_at)
      assert.is_true(upd.json.updated_at >= t.updated_at)

      local del = u.call("DELETE", "/api/tasks/" .. t.id)
      assert.equal(204, del.status, del.body)
      assert.equal(404, u.call("GET", "/api/tasks/" .. t.id).status)
      assert.equal(404, u.call("DELETE", "/api/tasks/" .. t.id).status)
      assert.equal(404, u.call("PATCH", "/api/tasks/" .. t.id, { title = "x" }).status)
    end)

    it("keeps every field as given: date stays a date, labels lower-cased without duplicates", function()
      local u = new_user("Europe/Berlin")
      local t = u.create({
        title = "Plan trip", notes = "passports", status = "in_progress", priority = "p2",
        due_at = "2026-07-01", labels = { "Travel", "travel", "FAMILY", "Ünïcode" }, recurrence = "FREQ=YEARLY",
      })
      assert.equal("in_progress", t.status)
      assert.equal(2, t.priority)
      assert.equal("2026-07-01", t.due_at)
      assert.same({ "travel", "family", "ünïcode" }, t.labels)
      assert.equal("FREQ=YEARLY", t.recurrence)

      local ts = u.create({ title = "Call", due_at = "2026-03-01T09:30:00+01:00", priority = 1 })
      assert.equal("2026-03-01T08:30:00.000Z", ts.due_at)
      assert.equal(1, ts.priority)
      assert.equal(3, u.create({ title = "P", priority = "P3" }).priority)
      assert.equal("2026-03-01T08:30:15.250Z", u.create({ title = "Z", due_at = "2026-03-01T08:30:15.25Z" }).due_at)

      -- A timestamp can become a date and back; null clears.
      local r = u.call("PATCH", "/api/tasks/" .. ts.id, { due_at = "2026-03-02" })
      assert.equal("2026-03-02", r.json.due_at)
      r = u.call("PATCH", "/api/tasks/" .. ts.id, { due_at = "2026-03-02T10:00:00Z" })
      assert.equal("2026-03-02T10:00:00.000Z", r.json.due_at)
      r = u.call("PATCH", "/api/tasks/" .. t.id, { due_at = NULL, recurrence = NULL, labels = NULL, notes = NULL })
      assert.equal(200, r.status, r.body)
      assert.equal(NULL, r.json.due_at)
      assert.equal(NULL, r.json.recurrence)
      assert.same({}, r.json.labels)
      assert.equal("", r.json.notes)
      -- 500 characters, not bytes; notes up to 100000 characters (and searchable).
      local long = string.rep("é", 500)
      assert.equal(long, u.create({ title = long }).title)
      local notes = string.rep("wörd ", 19999) .. "last!"
      assert.equal(100000, utf8.len(notes))
      local big = u.create({ title = "Big", notes = notes })
      assert.equal(notes, big.notes)
      assert.same({ big.id }, ids_of(u.list({ q = "last" })))
    end)

    it("sets completed_at when done and clears it when the task leaves done", function()
      local u = new_user()
      local t = u.create({ title = "Finish report" })
      local r = u.call("PATCH", "/api/tasks/" .. t.id, { status = "done" })
      assert.equal(200, r.status, r.body)
      assert.matches("Z$", r.json.completed_at)
      assert.is_nil(r.json.next)
      r = u.call("PATCH", "/api/tasks/" .. t.id, { status = "open" })
      assert.equal(NULL, r.json.completed_at)
      r = u.call("PATCH", "/api/tasks/" .. t.id, { status = "cancelled" })
      assert.equal(NULL, r.json.completed_at)
      assert.equal(4, r.json.version)
      local done = u.create({ title = "Already done", status = "done" })
      assert.matches("Z$", done.completed_at)
    end)
  end)

  describe("bad input", function()
    local u, existing
    setup(function()
      u = new_user()
      existing = u.create({ title = "Existing", labels = { "keep" } })
    end)

    local too_many = {}
    for i = 1, 21 do too_many[i] = "l" .. i end
    local cases = {
      { "unknown field", { title = "x", colour = "red" }, "colour" },
      { "id is not writable", { title = "x", id = "5b8e3c1e-0000-4000-8000-000000000000" }, "id" },
      { "missing title", { notes = "x" }, "title" },
      { "title of the wrong type", { title = 42 }, "title" },
      { "null title", { title = NULL }, "title" },
      { "empty title", { title = "" }, "title" },
      { "blank title", { title = "   " }, "title" },
      { "title too long", { title = string.rep("a", 501) }, "title" },
      { "notes too long", { title = "x", notes = string.rep("n", 100001) }, "notes" },
      { "notes of the wrong type", { title = "x", notes = { "a" } }, "notes" },
      { "unknown status", { title = "x", status = "closed" }, "status" },
      { "status of the wrong type", { title = "x", status = 1 }, "status" },
      { "priority 0", { title = "x", priority = 0 }, "priority" },
      { "priority 5", { title = "x", priority = 5 }, "priority" },
      { "priority p9", { title = "x", priority = "p9" }, "priority" },
      { "priority p0", { title = "x", priority = "p0" }, "priority" },
      { "priority as a digit string", { title = "x", priority = "1" }, "priority" },
      { "fractional priority", { title = "x", priority = 1.5 }, "priority" },
      { "boolean priority", { title = "x", priority = true }, "priority" },
      { "February 30th", { title = "x", due_at = "2026-02-30" }, "due_at" },
      { "'tomorrow'", { title = "x", due_at = "tomorrow" }, "due_at" },
      { "'now'", { title = "x", due_at = "now" }, "due_at" },
      { "month 13", { title = "x", due_at = "2026-13-01" }, "due_at" },
      { "hour 25", { title = "x", due_at = "2026-03-01T25:00:00Z" }, "due_at" },
      { "a timestamp without offset", { title = "x", due_at = "2026-03-01T09:00:00" }, "due_at" },
      { "an offset PostgreSQL refuses", { title = "x", due_at = "2026-03-01T09:00:00+23:00" }, "due_at" },
      { "February 29th of a common year", { title = "x", due_at = "2027-02-29T10:00:00Z" }, "due_at" },
      { "a number as due_at", { title = "x", due_at = 1767225600 }, "due_at" },
      { "labels not an array", { title = "x", labels = "work" }, "labels" },
      { "labels an object", { title = "x", labels = { a = "b" } }, "labels" },
      { "a number label", { title = "x", labels = { 1 } }, "labels" },
      { "an empty label", { title = "x", labels = { "" } }, "labels" },
      { "a label too long", { title = "x", labels = { string.rep("l", 51) } }, "labels" },
      { "21 labels", { title = "x", labels = too_many }, "labels" },
      { "an invalid RRULE", { title = "x", recurrence = "FREQ=SOMETIMES" }, "recurrence" },
      { "an RRULE with an unknown part", { title = "x", recurrence = "FREQ=DAILY;FOO=1" }, "recurrence" },
      { "an empty RRULE", { title = "x", recurrence = "" }, "recurrence" },
      { "recurrence of the wrong type", { title = "x", recurrence = 7 }, "recurrence" },
      { "a malformed parent_id", { title = "x", parent_id = "not-a-uuid" }, "parent_id" },
      { "an unknown parent_id", { title = "x", parent_id = "5b8e3c1e-0000-4000-8000-000000000000" }, "parent_id" },
      { "parent_id of the wrong type", { title = "x", parent_id = 12 }, "parent_id" },
    }

    for _, c in ipairs(cases) do
      it("POST with " .. c[1] .. " is a 400 naming " .. c[3] .. " and writes nothing", function()
        local before, acts = db_count("SELECT count(*) FROM tasks"), #u.activity()
        assert_bad_field(u.call("POST", "/api/tasks", c[2]), c[3])
        assert.equal(before, db_count("SELECT count(*) FROM tasks"))
        assert.equal(acts, #u.activity())
      end)
    end

    for _, c in ipairs(cases) do
      if c[3] ~= "title" or c[2].title ~= nil then
        it("PATCH with " .. c[1] .. " is a 400 naming " .. c[3] .. " and changes nothing", function()
          local body = {}
          for k, v in pairs(c[2]) do body[k] = v end
          if c[3] ~= "title" then body.title = nil end
          if next(body) == nil then body = c[2] end
          assert_bad_field(u.call("PATCH", "/api/tasks/" .. existing.id, body), c[3])
          local now = u.call("GET", "/api/tasks/" .. existing.id).json
          assert.same(existing, now)
        end)
      end
    end

    it("refuses an empty PATCH and a body that is not an object", function()
      assert.equal(400, u.call("PATCH", "/api/tasks/" .. existing.id, {}).status)
      local r = u.call("POST", "/api/tasks", { "a", "b" })
      assert.equal(400, r.status, r.body)
      assert.same(existing, u.call("GET", "/api/tasks/" .. existing.id).json)
    end)

    it("answers 404 for malformed and unknown ids", function()
      for _, id in ipairs({ "nope", "5b8e3c1e-0000-4000-8000-000000000000", "1%27%20OR%20%271%27%3D%271" }) do
        assert.equal(404, u.call("GET", "/api/tasks/" .. id).status)
        assert.equal(404, u.call("PATCH", "/api/tasks/" .. id, { title = "x" }).status)
        assert.equal(404, u.call("DELETE", "/api/tasks/" .. id).status)
      end
    end)
  end)

  describe("lists", function()
    local u, t = nil, {}
    setup(function()
      u = new_user("Europe/Berlin")
      t.a = u.create({ title = "Write quarterly report", notes = "numbers from finance", labels = { "Work" },
        priority = 1, due_at = "2026-04-10T16:00:00+02:00" })
      t.b = u.create({ title = "Buy groceries", notes = "milk, eggs & bread", labels = { "home", "errands" },
        priority = 3, due_at = "2026-04-08" })
      t.c = u.create({ title = "Call the plumber", labels = { "home" }, status = "in_progress", priority = 2 })
      t.d = u.create({ title = "Old report", status = "done", priority = 2, due_at = "2026-03-01T09:00:00Z" })
      t.e = u.create({ title = "Sub-step of the report", parent_id = t.a.id, due_at = "2026-04-09" })
    end)

    local function titles(items)
      local out = {}
      for i, x in ipairs(items) do out[i] = x.title end
      return out
    end

    it("lists everything in creation order by default", function()
      local items, cursor = u.list()
      assert.same(ids_of({ t.a, t.b, t.c, t.d, t.e }), ids_of(items))
      assert.equal(NULL, cursor)
      assert.same(t.a, items[1])
    end)

    it("filters by status, label, parent_id", function()
      assert.same(ids_of({ t.c }), ids_of(u.list({ status = "in_progress" })))
      assert.same(ids_of({ t.d }), ids_of(u.list({ status = "done" })))
      assert.same({}, u.list({ status = "cancelled" }))
      assert.same(ids_of({ t.a, t.b, t.e }), ids_of(u.list({ status = "open" })))
      assert.same(ids_of({ t.b, t.c }), ids_of(u.list({ label = "home" })))
      assert.same(ids_of({ t.a }), ids_of(u.list({ label = "WORK" })))
      assert.same({}, u.list({ label = "nothing" }))
      assert.same(ids_of({ t.e }), ids_of(u.list({ parent_id = t.a.id })))
      assert.same(ids_of({ t.a, t.b, t.c, t.d }), ids_of(u.list({ parent_id = "null" })))
      assert.same({}, u.list({ parent_id = t.b.id }))
    end)

    it("filters by due date with timestamps and dates (due_after inclusive, due_before exclusive)", function()
      -- Dates are days in the user's zone (Europe/Berlin).
      assert.same(ids_of({ t.b, t.e }), ids_of(u.list({ due_after = "2026-04-08", due_before = "2026-04-10" })))
      assert.same(ids_of({ t.a, t.b, t.e }), ids_of(u.list({ due_after = "2026-04-08" })))
      assert.same(ids_of({ t.d }), ids_of(u.list({ due_before = "2026-04-01T00:00:00Z" })))
      assert.same(ids_of({ t.a }), ids_of(u.list({ due_after = "2026-04-10T14:00:00Z" })))
      assert.same({}, u.list({ due_after = "2026-04-10T14:00:00.001Z" }))
      -- 2026-04-08 starts at 2026-04-07T22:00:00Z in Berlin.
      local just_after = "2026-04-08T00:00:01+02:00"
      assert.same(ids_of({ t.b }), ids_of(u.list({ due_after = "2026-04-07T22:00:00Z", due_before = just_after })))
      assert.same({}, u.list({ due_after = "2026-04-07T22:00:01Z", due_before = just_after }))
    end)

    it("searches title and notes, and any text in q is harmless", function()
      assert.same(ids_of({ t.a, t.d, t.e }), ids_of(u.list({ q = "report" })))
      assert.same(ids_of({ t.a }), ids_of(u.list({ q = "finance" })))
      assert.same(ids_of({ t.a }), ids_of(u.list({ q = "quarterly report" })))
      assert.same(ids_of({ t.d, t.e }), ids_of(u.list({ q = "report -quarterly" })))
      assert.same(ids_of({ t.b }), ids_of(u.list({ q = "\"eggs bread\"" })))
      assert.same(ids_of({ t.a }), ids_of(u.list({ q = "report", label = "work" })))
      for _, q in ipairs({ "'; DROP TABLE tasks; --", "a & b | !c", "\\", "'", "\"", ":*", "(((", "!!!", "<->",
        "%", "_", "$1", "' OR 1=1 --", "  ", "report' OR 'x'='x" }) do
        local r = u.call("GET", "/api/tasks" .. qs({ q = q }))
        assert.equal(200, r.status, q .. ": " .. r.body)
        assert.is_table(r.json.items)
      end
      assert.equal(5, #u.all())
      assert.equal(0, #u.list({ q = "'; DROP TABLE tasks; --" }))
    end)

    it("sorts by priority, by due date (none last) and by creation", function()
      assert.same(ids_of({ t.a, t.c, t.d, t.b, t.e }), ids_of(u.list({ sort = "priority" })))
      assert.same(ids_of({ t.d, t.b, t.e, t.a, t.c }), ids_of(u.list({ sort = "due_at" })))
      assert.same(ids_of({ t.a, t.b, t.c, t.d, t.e }), ids_of(u.list({ sort = "created_at" })))
      assert.same({ "Old report", "Buy groceries", "Sub-step of the report", "Write quarterly report",
        "Call the plumber" }, titles(u.list({ sort = "due_at" })))
    end)

    it("refuses bad parameters with a 400 naming them", function()
      for _, c in ipairs({
        { { limit = "0" }, "limit" }, { { limit = "201" }, "limit" }, { { limit = "100000" }, "limit" },
        { { limit = "abc" }, "limit" }, { { limit = "-1" }, "limit" }, { { limit = "" }, "limit" },
        { { limit = "1e2" }, "limit" }, { { status = "closed" }, "status" }, { { status = "" }, "status" },
        { { sort = "title" }, "sort" }, { { sort = "created_at; DROP TABLE tasks" }, "sort" },
        { { due_before = "tomorrow" }, "due_before" }, { { due_after = "2026-02-30" }, "due_after" },
        { { parent_id = "xyz" }, "parent_id" }, { { label = string.rep("x", 51) }, "label" },
        { { cursor = "garbage" }, "cursor" },
      }) do
        assert_bad_field(u.call("GET", "/api/tasks" .. qs(c[1])), c[2])
      end
      assert.equal(200, u.call("GET", "/api/tasks?limit=200").status)
      assert.equal(200, u.call("GET", "/api/tasks?limit=1").status)
    end)
  end)

  describe("pagination", function()
    it("continues after inserts without duplicates or gaps", function()
      local u = new_user()
      local made = {}
      for i = 1, 7 do made[i] = u.create({ title = "task " .. i }) end
      local items, cursor = u.list({ limit = 3 })
      assert.same(ids_of({ made[1], made[2], made[3] }), ids_of(items))
      assert.is_string(cursor)
      -- New tasks arrive between pages.
      local late = { u.create({ title = "late 1" }), u.create({ title = "late 2" }) }
      local seen = ids_of(items)
      repeat
        local page, c = u.list({ limit = 3, cursor = cursor })
        for _, x in ipairs(page) do seen[#seen + 1] = x.id end
        cursor = c ~= NULL and c or nil
      until not cursor
      local expect = ids_of(made)
      expect[#expect + 1] = late[1].id
      expect[#expect + 1] = late[2].id
      assert.same(expect, seen)
    end)

    it("pages every sort order exactly like the whole list", function()
      local u = new_user()
      local dues = { NULL, "2026-05-01", "2026-05-01T10:00:00Z", NULL, "2026-04-30T23:00:00Z", "2026-05-01",
        NULL, "2026-06-01T00:00:00+02:00" }
      for i, due in ipairs(dues) do u.create({ title = "t" .. i, due_at = due, priority = (i % 4) + 1 }) end
      for _, sort in ipairs({ "created_at", "priority", "due_at" }) do
        local whole = ids_of(u.list({ sort = sort, limit = 200 }))
        assert.equal(#dues, #whole)
        for _, size in ipairs({ 1, 2, 3 }) do
          local paged = ids_of(u.all({ sort = sort, limit = size }))
          assert.same(whole, paged, sort .. " by " .. size)
        end
      end
    end)

    it("refuses a tampered cursor or one from another sort order", function()
      local u = new_user()
      for i = 1, 3 do u.create({ title = "x" .. i }) end
      local _, cursor = u.list({ limit = 1 })
      assert.is_string(cursor)
      local first = cursor:sub(1, 1)
      local tampered = (first == "e" and "f" or "e") .. cursor:sub(2)
      assert_bad_field(u.call("GET", "/api/tasks" .. qs({ cursor = tampered })), "cursor")
      assert_bad_field(u.call("GET", "/api/tasks" .. qs({ cursor = cursor:sub(1, -5) })), "cursor")
      assert_bad_field(u.call("GET", "/api/tasks" .. qs({ cursor = cursor, sort = "priority" })), "cursor")
      assert.equal(200, u.call("GET", "/api/tasks" .. qs({ cursor = cursor })).status)
    end)
  end)

  describe("ETag and If-Match", function()
    it("refuses a lost update with 412 and accepts the current version", function()
      local u = new_user()
      local t = u.create({ title = "Shared" })
      local path = "/api/tasks/" .. t.id
      local r = u.call("PATCH", path, { title = "first" }, { ["If-Match"] = '"1"' })
      assert.equal(200, r.status, r.body)
      assert.equal('"2"', r.headers["etag"])
      -- A second writer still holding version 1.
      r = u.call("PATCH", path, { title = "second" }, { ["If-Match"] = '"1"' })
      assert.equal(412, r.status, r.body)
      assert.equal("precondition_failed", r.json.error.code)
      assert.equal("first", u.call("GET", path).json.title)
      assert.equal(2, u.call("GET", path).json.version)
      r = u.call("PATCH", path, { title = "weak" }, { ["If-Match"] = 'W/"2"' })
      assert.equal(200, r.status, r.body)
      r = u.call("PATCH", path, { title = "any" }, { ["If-Match"] = "*" })
      assert.equal(200, r.status, r.body)
      r = u.call("PATCH", path, { title = "listed" }, { ["If-Match"] = '"1", "4", "9"' })
      assert.equal(200, r.status, r.body)
      assert.equal(5, r.json.version)
      for _, bad in ipairs({ '"abc"', "5", '""', '"5', "garbage" }) do
        r = u.call("PATCH", path, { title = "nope" }, { ["If-Match"] = bad })
        assert.equal(412, r.status, bad .. ": " .. r.body)
      end
      -- Deleting with a stale version is refused too.
      assert.equal(412, u.call("DELETE", path, nil, { ["If-Match"] = '"4"' }).status)
      assert.equal(200, u.call("GET", path).status)
      assert.equal(204, u.call("DELETE", path, nil, { ["If-Match"] = '"5"' }).status)
    end)
  end)

  describe("recurring tasks", function()
    it("creates the next occurrence at the same local time across the DST change", function()
      local u = new_user("Europe/Berlin")
      local parent = u.create({ title = "Team" })
      local t = u.create({ title = "Weekly review", notes = "agenda", priority = 2, labels = { "work" },
        recurrence = "FREQ=WEEKLY;BYDAY=MO", due_at = "2026-03-23T09:00:00+01:00", parent_id = parent.id })
      local r = u.call("PATCH", "/api/tasks/" .. t.id, { status = "done" })
      assert.equal(200, r.status, r.body)
      assert.equal("done", r.json.status)
      assert.matches("Z$", r.json.completed_at)
      local n = r.json.next
      assert.is_table(n, r.body)
      -- 09:00 in Berlin: +01:00 before 2026-03-29, +02:00 after.
      assert.equal("2026-03-30T07:00:00.000Z", n.due_at)
      assert.equal("open", n.status)
      assert.equal("Weekly review", n.title)
      assert.equal("agenda", n.notes)
      assert.equal(2, n.priority)
      assert.same({ "work" }, n.labels)
      assert.equal("FREQ=WEEKLY;BYDAY=MO", n.recurrence)
      assert.equal(parent.id, n.parent_id)
      assert.equal(1, n.version)
      assert.equal(NULL, n.completed_at)
      assert.not_equal(t.id, n.id)
      assert.same(n, u.call("GET", "/api/tasks/" .. n.id).json)
      -- Reopening and completing again does not make a second occurrence.
      u.call("PATCH", "/api/tasks/" .. t.id, { status = "open" })
      r = u.call("PATCH", "/api/tasks/" .. t.id, { status = "done" })
      assert.is_nil(r.json.next)
      assert.equal(3, #u.all())
      -- The next one continues the series.
      r = u.call("PATCH", "/api/tasks/" .. n.id, { status = "done" })
      assert.equal("2026-04-06T07:00:00.000Z", r.json.next.due_at)
    end)

    it("keeps date-only series as dates", function()
      local u = new_user("America/New_York")
      local t = u.create({ title = "Water plants", due_at = "2026-02-27", recurrence = "FREQ=DAILY;INTERVAL=2" })
      local r = u.call("PATCH", "/api/tasks/" .. t.id, { status = "done" })
      assert.equal("2026-03-01", r.json.next.due_at)
      local m = u.create({ title = "Rent", due_at = "2026-01-31", recurrence = "FREQ=MONTHLY;BYMONTHDAY=-1" })
      r = u.call("PATCH", "/api/tasks/" .. m.id, { status = "done" })
      assert.equal("2026-02-28", r.json.next.due_at)
    end)

    it("ends the series at COUNT and UNTIL", function()
      local u = new_user()
      local t = u.create({ title = "Twice", due_at = "2026-05-01T10:00:00Z", recurrence = "FREQ=DAILY;COUNT=2" })
      local r = u.call("PATCH", "/api/tasks/" .. t.id, { status = "done" })
      local n = r.json.next
      assert.equal("2026-05-02T10:00:00.000Z", n.due_at)
      r = u.call("PATCH", "/api/tasks/" .. n.id, { status = "done" })
      assert.equal(200, r.status, r.body)
      assert.is_nil(r.json.next)

      local w = u.create({ title = "Until", due_at = "2026-04-01", recurrence = "FREQ=WEEKLY;UNTIL=20260410" })
      r = u.call("PATCH", "/api/tasks/" .. w.id, { status = "done" })
      assert.equal("2026-04-08", r.json.next.due_at)
      r = u.call("PATCH", "/api/tasks/" .. r.json.next.id, { status = "done" })
      assert.is_nil(r.json.next)
      assert.equal(4, #u.all())
    end)

    it("does nothing special for a recurring task without a due date or one not completed", function()
      local u = new_user()
      local t = u.create({ title = "Someday", recurrence = "FREQ=DAILY" })
      local r = u.call("PATCH", "/api/tasks/" .. t.id, { status = "done" })
      assert.equal(200, r.status, r.body)
      assert.is_nil(r.json.next)
      local c = u.create({ title = "Cancelled", recurrence = "FREQ=DAILY", due_at = "2026-01-01" })
      r = u.call("PATCH", "/api/tasks/" .. c.id, { status = "cancelled" })
      assert.is_nil(r.json.next)
      assert.equal(2, #u.all())
    end)
  end)

  describe("sub-tasks", function()
    it("refuses a parent of another user, and cycles", function()
      local a, b = new_user(), new_user()
      local theirs = b.create({ title = "B's task" })
      local before = db_count("SELECT count(*) FROM tasks")
      assert_bad_field(a.call("POST", "/api/tasks", { title = "x", parent_id = theirs.id }), "parent_id")
      assert.equal(before, db_count("SELECT count(*) FROM tasks"))
      local root = a.create({ title = "root" })
      local child = a.create({ title = "child", parent_id = root.id })
      local grandchild = a.create({ title = "grandchild", parent_id = child.id })
      assert_bad_field(a.call("PATCH", "/api/tasks/" .. child.id, { parent_id = theirs.id }), "parent_id")
      assert_bad_field(a.call("PATCH", "/api/tasks/" .. root.id, { parent_id = root.id }), "parent_id")
      assert_bad_field(a.call("PATCH", "/api/tasks/" .. root.id, { parent_id = child.id }), "parent_id")
      assert_bad_field(a.call("PATCH", "/api/tasks/" .. root.id, { parent_id = grandchild.id }), "parent_id")
      assert.equal(NULL, a.call("GET", "/api/tasks/" .. root.id).json.parent_id)
      assert.equal(1, a.call("GET", "/api/tasks/" .. root.id).json.version)
      -- Moving within the tree is fine, and null makes a task top-level.
      local r = a.call("PATCH", "/api/tasks/" .. grandchild.id, { parent_id = root.id })
      assert.equal(root.id, r.json.parent_id)
      r = a.call("PATCH", "/api/tasks/" .. child.id, { parent_id = NULL })
      assert.equal(NULL, r.json.parent_id)
      r = a.call("PATCH", "/api/tasks/" .. child.id, { parent_id = grandchild.id })
      assert.equal(grandchild.id, r.json.parent_id)
      assert_bad_field(a.call("PATCH", "/api/tasks/" .. root.id, { parent_id = child.id }), "parent_id")
    end)

    it("never lets two concurrent moves close a cycle", function()
      local u = new_user()
      -- Sends a request without waiting for its answer.
      local function send(path, json)
        local body = cjson.encode(json)
        local c = assert(h.connect(port))
        c:send(table.concat({ "PATCH " .. path .. " HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
          "Authorization: Bearer " .. u.token, "Content-Type: application/json",
          "Content-Length: " .. #body, "", body }, "\r\n"))
        return c
      end
      for _ = 1, 10 do
        local a, b = u.create({ title = "a" }), u.create({ title = "b" })
        local ca = send("/api/tasks/" .. a.id, { parent_id = b.id })
        local cb = send("/api/tasks/" .. b.id, { parent_id = a.id })
        local ra, rb = h.read_response(ca), h.read_response(cb)
        ca:close()
        cb:close()
        local statuses = { ra.status, rb.status }
        table.sort(statuses)
        assert.same({ 200, 400 }, statuses)
      end
    end)

    it("deletes sub-tasks with their parent", function()
      local u = new_user()
      local root = u.create({ title = "root" })
      local child = u.create({ title = "child", parent_id = root.id })
      local grandchild = u.create({ title = "grandchild", parent_id = child.id })
      local other = u.create({ title = "other" })
      assert.equal(204, u.call("DELETE", "/api/tasks/" .. root.id).status)
      assert.equal(404, u.call("GET", "/api/tasks/" .. child.id).status)
      assert.equal(404, u.call("GET", "/api/tasks/" .. grandchild.id).status)
      assert.same({ other.id }, ids_of(u.all()))
      local acts = u.activity()
      assert.equal("delete", acts[1].action)
      assert.same({ title = "root", subtasks_deleted = 2 }, acts[1].diff)
    end)
  end)

  describe("isolation", function()
    it("shows another user's task to no one but its owner", function()
      local a, b = new_user(), new_user()
      local t = a.create({ title = "A's secret", labels = { "secret" }, due_at = "2026-01-01" })
      local path = "/api/tasks/" .. t.id
      for _, r in ipairs({ b.call("GET", path), b.call("PATCH", path, { title = "hijacked" }),
        b.call("PATCH", path, { title = "hijacked" }, { ["If-Match"] = "*" }), b.call("DELETE", path) }) do
        assert.equal(404, r.status, r.body)
        assert.is_nil(r.body:find("secret", 1, true))
      end
      assert.same(t, a.call("GET", path).json)
      assert.same({}, b.all())
      assert.same({}, b.list({ q = "secret" }))
      assert.same({}, b.list({ label = "secret" }))
      assert.same({}, b.list({ parent_id = t.id }))
      assert.same({}, b.list({ due_before = "2027-01-01" }))
      for _, act in ipairs(b.activity()) do assert.not_equal(t.id, act.object_id) end
      -- A cursor sealed for A's list reveals nothing to B.
      a.create({ title = "A's second" })
      local _, cursor = a.list({ limit = 1 })
      assert.same({}, b.list({ cursor = cursor }))
    end)

    it("goes with the account that owns it", function()
      local u = new_user()
      local root = u.create({ title = "root", due_at = "2026-01-01", recurrence = "FREQ=DAILY" })
      u.create({ title = "child", parent_id = root.id })
      u.call("PATCH", "/api/tasks/" .. root.id, { status = "done" })
      assert.equal(3, db_count("SELECT count(*) FROM tasks WHERE user_id = '" .. u.id .. "'"))
      local r = u.call("DELETE", "/api/me", { password = u.password })
      assert.equal(204, r.status, r.body)
      assert.equal(0, db_count("SELECT count(*) FROM tasks WHERE user_id = '" .. u.id .. "'"))
    end)

    it("is enforced by the database too (row-level security)", function()
      local url = h.app_url:gsub("/orrery$", "/" .. srv.db_name)
      local code, out = h.psql(url, "SELECT count(*) FROM tasks")
      assert.equal(0, code)
      assert.equal("0", out:match("%d+"))
    end)
  end)

  describe("activity", function()
    it("records create, update (from/to of the changed fields) and delete", function()
      local u = new_user()
      local t = u.create({ title = "Tracked", priority = 2 })
      u.call("PATCH", "/api/tasks/" .. t.id, { title = "Tracked!", priority = 2, labels = { "A" } })
      u.call("DELETE", "/api/tasks/" .. t.id)
      local acts = u.activity()
      assert.equal(3, #acts)
      local del, upd, cre = acts[1], acts[2], acts[3]
      for _, a in ipairs(acts) do
        assert.equal("task", a.object_type)
        assert.equal(t.id, a.object_id)
        assert.equal("user", a.actor.type)
        assert.equal(u.id, a.actor.id)
      end
      assert.equal("create", cre.action)
      assert.equal("Tracked", cre.diff.title)
      assert.equal(2, cre.diff.priority)
      assert.equal("update", upd.action)
      assert.same({ title = { from = "Tracked", to = "Tracked!" }, labels = { from = {}, to = { "a" } } }, upd.diff)
      assert.equal("delete", del.action)
      assert.same({ title = "Tracked!" }, del.diff)
    end)

    it("records the next occurrence of a recurring task as created", function()
      local u = new_user()
      local t = u.create({ title = "Daily", due_at = "2026-01-01", recurrence = "FREQ=DAILY" })
      local n = u.call("PATCH", "/api/tasks/" .. t.id, { status = "done" }).json.next
      local acts = u.activity()
      assert.equal(3, #acts)
      assert.equal("create", acts[1].action)
      assert.equal(n.id, acts[1].object_id)
      assert.equal(t.id, acts[1].diff.recurrence_of)
      assert.equal("update", acts[2].action)
      assert.same({ from = "open", to = "done" }, acts[2].diff.status)
    end)
  end)

  describe("schema", function()
    it("refuses bad rows whatever writes them", function()
      local u = new_user()
      local url = h.admin_url:gsub("/postgres%?", "/" .. srv.db_name .. "?")
      for _, values in ipairs({
        "'x', 'open', 9, '{}'", "'', 'open', 1, '{}'", "'x', 'later', 1, '{}'", "'x', 'open', 1, '{UPPER}'",
        "'x', 'open', 1, '{a,a}'", "'x', 'done', 1, '{}'",
      }) do
        local code = h.psql(url, "INSERT INTO tasks (user_id, title, status, priority, labels) VALUES ('" .. u.id
          .. "', " .. values .. ")")
        assert.not_equal(0, code, values)
      end
      assert.equal(0, db_count("SELECT count(*) FROM tasks WHERE user_id = '" .. u.id .. "'"))
    end)
  end)
end)
