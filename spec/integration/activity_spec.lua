-- GET /api/activity through the real `orrery serve`: the caller's log newest first, paged with
-- limit and an opaque cursor, filtered by object type and actor type; 400s for bad parameters;
-- one user never seeing another's rows; and the rows that note changes write (actor and diff).
local h = require("helpers")
local cjson = require("cjson.safe")

local query, urlencode, assert_bad_field = h.query, h.urlencode, h.assert_bad_field

describe("activity", function()
  local srv

  local function client(tag)
    local c = h.new_user(srv.port, tag)
    local call = c.call
    function c.call(method, path, json) return call(method, path, { json = json }) end
    function c.page(params)
      local r = c.call("GET", "/api/activity" .. query(params))
      assert.equal(200, r.status, r.body)
      return r.json
    end
    -- Every row, following next_cursor.
    function c.all(params)
      local rows, cursor, pages = {}, params and params.cursor, 0
      repeat
        local p = {}
        for k, v in pairs(params or {}) do p[k] = v end
        p.cursor = cursor
        local page = c.page(p)
        for _, r in ipairs(page.items) do rows[#rows + 1] = r end
        cursor = page.next_cursor ~= cjson.null and page.next_cursor or nil
        pages = pages + 1
        assert.is_true(pages < 500, "pagination does not end")
      until not cursor
      return rows, pages
    end
    function c.note(fields)
      local r = c.call("POST", "/api/notes", fields)
      assert.equal(201, r.status, r.body)
      return r.json
    end
    return c
  end

  -- Rows written the way an agent or a workflow will: straight into the table, as the schema owner,
  -- under the user's row-level security context.
  local function insert_rows(user_id, rows)
    local values = {}
    for _, r in ipairs(rows) do
      values[#values + 1] = string.format("('%s', '%s', '%s', '%s', '%s', '%s', '{}')", user_id, r.actor_type,
        r.actor_id, r.action or "create", r.object_type, r.object_id)
    end
    local code, _, err = h.psql(srv.owner_url, "SELECT set_config('orrery.user_id', '" .. user_id .. "', false); " ..
      "INSERT INTO activity_log (user_id, actor_type, actor_id, action, object_type, object_id, diff) VALUES " ..
      table.concat(values, ", "))
    assert.equal(0, code, err)
  end

  setup(function()
    srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "100000" } })
  end)
  teardown(function() if srv then srv:stop() end end)

  it("starts empty and answers the list shape", function()
    local c = client("empty")
    local page = c.page()
    assert.same({}, page.items)
    assert.equal(cjson.null, page.next_cursor)
  end)

  it("pages newest first with limit and cursor", function()
    local c = client("pages")
    for i = 1, 5 do c.note({ title = "note " .. i }) end
    local whole = c.page({ limit = 200 })
    assert.equal(5, #whole.items)
    assert.equal(cjson.null, whole.next_cursor)
    for i = 2, #whole.items do assert.is_true(whole.items[i - 1].id > whole.items[i].id) end
    assert.equal("note 5", whole.items[1].diff.title.to)
    assert.equal("note 1", whole.items[5].diff.title.to)

    local first = c.page({ limit = 2 })
    assert.equal(2, #first.items)
    assert.is_string(first.next_cursor)
    -- rows written between pages come before the first page, not in the next ones
    c.note({ title = "late" })
    local rows, pages = c.all({ limit = 2, cursor = first.next_cursor })
    assert.equal(2, pages)
    local ids = {}
    for _, r in ipairs(rows) do ids[#ids + 1] = r.id end
    assert.same({ whole.items[3].id, whole.items[4].id, whole.items[5].id }, ids)
    assert.equal(6, #c.all({ limit = 1 }))
    assert.equal("late", c.page({ limit = 1 }).items[1].diff.title.to)
  end)

  it("filters by object_type and actor_type, alone, together and across pages", function()
    local c = client("filters")
    c.note({ title = "mine" })
    insert_rows(c.id, {
      { actor_type = "agent", actor_id = "tasks", object_type = "task", object_id = "t1" },
      { actor_type = "agent", actor_id = "tasks", object_type = "task", object_id = "t2", action = "update" },
      { actor_type = "workflow", actor_id = "wf-1", object_type = "event", object_id = "e1" },
      { actor_type = "system", actor_id = "scheduler", object_type = "task", object_id = "t3", action = "delete" },
    })
    local function objects(params)
      local out = {}
      for _, r in ipairs(c.all(params)) do out[#out + 1] = r.object_id end
      return out
    end
    assert.same({ "t3", "t2", "t1" }, objects({ object_type = "task" }))
    assert.same({ "t3", "t2", "t1" }, objects({ object_type = "task", limit = 1 }))
    assert.same({ "e1" }, objects({ object_type = "event" }))
    assert.equal(1, #objects({ object_type = "note" }))
    assert.same({ "t2", "t1" }, objects({ actor_type = "agent" }))
    assert.same({ "t2", "t1" }, objects({ actor_type = "agent", limit = 1 }))
    assert.same({ "e1" }, objects({ actor_type = "workflow" }))
    assert.same({ "t3" }, objects({ actor_type = "system" }))
    assert.equal(1, #objects({ actor_type = "user" }))
    assert.same({ "t3" }, objects({ actor_type = "system", object_type = "task" }))
    assert.same({}, objects({ actor_type = "user", object_type = "task" }))
    assert.same({}, objects({ object_type = "nothing" }))
    -- an object type is only a string
    assert.same({}, objects({ object_type = "' OR 1=1 --" }))
    local agent = c.page({ actor_type = "agent", limit = 1 }).items[1]
    assert.same({ type = "agent", id = "tasks" }, agent.actor)
    assert.equal("update", agent.action)
  end)

  it("answers 400 naming the parameter for a bad limit, cursor, actor_type or object_type", function()
    local c = client("bad")
    for i = 1, 3 do c.note({ title = "n" .. i }) end
    local cur = c.page({ limit = 1 }).next_cursor
    assert.is_string(cur)
    local flipped = cur:sub(1, 10) .. (cur:sub(11, 11) == "A" and "B" or "A") .. cur:sub(12)
    for _, case in ipairs({
      { "limit=0", "limit" }, { "limit=201", "limit" }, { "limit=100000", "limit" }, { "limit=abc", "limit" },
      { "limit=-5", "limit" }, { "limit=1.5", "limit" }, { "limit=", "limit" },
      { "cursor=garbage", "cursor" }, { "cursor=" .. urlencode(flipped), "cursor" },
      { "cursor=" .. urlencode(cur .. "x"), "cursor" }, { "cursor=%27%3B--", "cursor" },
      { "actor_type=robot", "actor_type" }, { "actor_type=", "actor_type" }, { "actor_type=USER", "actor_type" },
      { "actor_type=user%27%20OR%201=1", "actor_type" },
      { "object_type=" .. string.rep("x", 41), "object_type" }, { "object_type=", "object_type" },
    }) do
      assert_bad_field(c.call("GET", "/api/activity?" .. case[1]), case[2])
    end
    -- the good cursor still works
    assert.equal(1, #c.page({ limit = 1, cursor = cur }).items)
  end)

  it("needs a bearer token", function()
    local res = h.request(srv.port, "GET", "/api/activity")
    assert.equal(401, res.status, res.body)
  end)

  it("shows each user only their own rows", function()
    local a, b = client("iso-a"), client("iso-b")
    local n = a.note({ title = "A's" })
    insert_rows(a.id, { { actor_type = "agent", actor_id = "notes", object_type = "note", object_id = n.id } })
    b.note({ title = "B's" })
    for _, params in ipairs({ {}, { object_type = "note" }, { actor_type = "agent" }, { actor_type = "user" } }) do
      for _, r in ipairs(b.all(params)) do
        assert.not_equal(n.id, r.object_id)
        assert.not_equal(a.id, r.actor.id)
      end
    end
    assert.equal(1, #b.all())
    assert.equal(2, #a.all())
    -- A's cursor in B's hands pages B's rows only
    local cur = a.page({ limit = 1 }).next_cursor
    assert.is_string(cur)
    local res = b.call("GET", "/api/activity?cursor=" .. urlencode(cur))
    assert.equal(200, res.status, res.body)
    for _, r in ipairs(res.json.items) do assert.not_equal(n.id, r.object_id) end
    -- and the database itself hides A's rows from B's context
    local code, out = h.psql(srv.database_url, "SELECT set_config('orrery.user_id', '" .. b.id .. "', false); " ..
      "SELECT count(*) FROM activity_log WHERE user_id = '" .. a.id .. "'")
    assert.equal(0, code)
    assert.matches("\n0\n?$", out)
  end)

  it("note changes write rows with the user as actor and a JSON diff", function()
    local c = client("notes")
    local n = c.note({ title = "Plan", body = "step one", tags = { "Work" } })
    local res = c.call("PATCH", "/api/notes/" .. n.id, { title = "Plan B" })
    assert.equal(200, res.status, res.body)
    assert.equal(204, c.call("DELETE", "/api/notes/" .. n.id).status)
    local rows = c.page().items
    assert.equal(3, #rows)
    local actions = {}
    for _, r in ipairs(rows) do
      actions[#actions + 1] = r.action
      assert.same({ type = "user", id = c.id }, r.actor)
      assert.equal("note", r.object_type)
      assert.equal(n.id, r.object_id)
      assert.is_table(r.diff)
      assert.is_number(r.id)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", r.created_at)
    end
    assert.same({ "delete", "update", "create" }, actions)
    assert.same({ title = { to = "Plan" }, tags = { to = { "work" } }, body = { changed = true, length = 8 } },
      rows[3].diff)
    assert.same({ title = { from = "Plan", to = "Plan B" } }, rows[2].diff)
    assert.same({ title = { from = "Plan B" }, tags = { from = { "work" } }, body = { changed = true, length = 8 } },
      rows[1].diff)
    -- a refused change writes nothing
    local bad = c.call("POST", "/api/notes", { title = 1 })
    assert.equal(400, bad.status)
    assert.equal(3, #c.page().items)
  end)
end)
