-- Notes through the real `orrery serve`: create, read, partial update with If-Match, delete; 1 MiB
-- bodies; tags; newest-first pages that stay consistent while notes are added; ranked full-text
-- search with highlighted snippets (and harmless metacharacters); 400s that name the field and
-- write nothing; one user never reaching another's notes; the activity rows every change writes.
local h = require("helpers")
local cjson = require("cjson.safe")

local MIB = 1048576

local query, urlencode, assert_bad_field = h.query, h.urlencode, h.assert_bad_field

local function assert_not_found(res)
  assert.equal(404, res.status, res.body)
  assert.equal("not_found", res.json and res.json.error.code, res.body)
end

-- An ASCII-and-UTF-8 markdown body of exactly n bytes.
local function big_body(n)
  local head = "# Größe\n\nA very long note about orreries and *planets*.\n"
  local line = "The quick brown fox jumps over the lazy dog 0123456789.\n"
  local parts, size = { head }, #head
  while size + #line <= n do
    parts[#parts + 1] = line
    size = size + #line
  end
  parts[#parts + 1] = string.rep("x", n - size)
  return table.concat(parts)
end

describe("notes", function()
  local srv
  local alice, bob

  -- A client bound to one account: c.call(method, path, {json=, body=, headers=}).
  local function client(tag)
    local c = h.new_user(srv.port, tag)
    function c.create(note)
      local r = c.call("POST", "/api/notes", { json = note })
      assert.equal(201, r.status, r.body)
      return r.json
    end
    function c.list(params)
      local r = c.call("GET", "/api/notes" .. query(params))
      assert.equal(200, r.status, r.body)
      return r.json
    end
    -- Every page of a listing, following next_cursor.
    function c.all(params)
      local items, seen, cursor = {}, 0, params and params.cursor
      repeat
        local p = {}
        for k, v in pairs(params or {}) do p[k] = v end
        p.cursor = cursor
        local page = c.list(p)
        for _, it in ipairs(page.items) do items[#items + 1] = it end
        cursor = page.next_cursor ~= cjson.null and page.next_cursor or nil
        seen = seen + 1
        assert.is_true(seen < 500, "pagination does not end")
      until not cursor
      return items
    end
    function c.activity(params)
      local r = c.call("GET", "/api/activity" .. query(params))
      assert.equal(200, r.status, r.body)
      return r.json.items
    end
    return c
  end

  -- How many notes and activity rows a user has: what "nothing written" compares.
  local function footprint(c)
    return { notes = #c.all(), activity = #c.activity({ limit = 200 }) }
  end

  setup(function()
    srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "100000" } })
    alice = client("alice")
    bob = client("bob")
  end)
  teardown(function() if srv then srv:stop() end end)

  describe("CRUD", function()
    it("creates a note: 201, Location, ETag, the note with defaults", function()
      local res = alice.call("POST", "/api/notes",
        { json = { title = "Groceries", body = "- milk\n- *eggs*", tags = { "Home", "errands", "HOME" } } })
      assert.equal(201, res.status, res.body)
      local n = res.json
      assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", n.id)
      assert.equal("/api/notes/" .. n.id, res.headers["location"])
      assert.equal('"1"', res.headers["etag"])
      assert.equal("Groceries", n.title)
      assert.equal("- milk\n- *eggs*", n.body)
      assert.same({ "home", "errands" }, n.tags) -- lower-cased, duplicates dropped, order kept
      assert.equal(1, n.version)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", n.created_at)
      assert.equal(n.created_at, n.updated_at)

      local empty = alice.call("POST", "/api/notes", { body = "{}" })
      assert.equal(201, empty.status, empty.body)
      assert.equal("", empty.json.title)
      assert.equal("", empty.json.body)
      assert.same({}, empty.json.tags)
    end)

    it("reads a note with its body and ETag", function()
      local n = alice.create({ title = "Read me", body = "body text", tags = { "x" } })
      local res = alice.call("GET", "/api/notes/" .. n.id)
      assert.equal(200, res.status, res.body)
      assert.equal('"1"', res.headers["etag"])
      assert.same(n, res.json)
    end)

    it("lists items with an excerpt of the first 200 characters instead of the body", function()
      local body = string.rep("é", 150) .. string.rep("b", 100)
      local n = alice.create({ title = "Long one", body = body })
      local page = alice.list({ limit = 1 })
      local item = page.items[1]
      assert.equal(n.id, item.id)
      assert.is_nil(item.body)
      assert.equal(string.rep("é", 150) .. string.rep("b", 50), item.excerpt)
      assert.is_nil(item.snippet)
      for _, k in ipairs({ "title", "tags", "version", "created_at", "updated_at" }) do
        assert.same(n[k], item[k], k)
      end
    end)

    it("PATCH changes only the fields given, bumps the version and updated_at", function()
      local n = alice.create({ title = "Draft", body = "first", tags = { "a" } })
      h.sleep(0.01)
      local res = alice.call("PATCH", "/api/notes/" .. n.id, { json = { title = "Final" } })
      assert.equal(200, res.status, res.body)
      assert.equal('"2"', res.headers["etag"])
      assert.equal("Final", res.json.title)
      assert.equal("first", res.json.body)
      assert.same({ "a" }, res.json.tags)
      assert.equal(2, res.json.version)
      assert.equal(n.created_at, res.json.created_at)
      assert.is_true(res.json.updated_at > n.updated_at)

      res = alice.call("PATCH", "/api/notes/" .. n.id, { body = '{"tags": [], "body": ""}' })
      assert.equal(200, res.status, res.body)
      assert.same({}, res.json.tags)
      assert.equal("", res.json.body)
      assert.equal("Final", res.json.title)
      assert.equal(3, res.json.version)
      assert.same(res.json, alice.call("GET", "/api/notes/" .. n.id).json)
    end)

    it("PATCH that changes nothing keeps the version and writes no activity", function()
      local n = alice.create({ title = "Same", body = "same", tags = { "t" } })
      local before = #alice.activity({ limit = 200 })
      for _, patch in ipairs({ { title = "Same" }, { body = "same", tags = { "T" } } }) do
        local res = alice.call("PATCH", "/api/notes/" .. n.id, { json = patch })
        assert.equal(200, res.status, res.body)
        assert.equal(1, res.json.version)
      end
      local res = alice.call("PATCH", "/api/notes/" .. n.id, { body = "{}" })
      assert.equal(200, res.status, res.body)
      assert.equal(1, res.json.version)
      assert.equal(before, #alice.activity({ limit = 200 }))
    end)

    it("DELETE answers 204; the note is gone", function()
      local n = alice.create({ title = "Temporary" })
      local res = alice.call("DELETE", "/api/notes/" .. n.id)
      assert.equal(204, res.status, res.body)
      assert_not_found(alice.call("GET", "/api/notes/" .. n.id))
      assert_not_found(alice.call("PATCH", "/api/notes/" .. n.id, { json = { title = "x" } }))
      assert_not_found(alice.call("DELETE", "/api/notes/" .. n.id))
      for _, it in ipairs(alice.all()) do assert.not_equal(n.id, it.id) end
    end)

    it("answers 404 for malformed and unknown ids", function()
      for _, id in ipairs({ "nope", "00000000-0000-0000-0000-000000000000", "1%27%20OR%201=1",
        string.upper("5f0e3d1c-1111-4222-8333-944455556666") }) do
        assert_not_found(alice.call("GET", "/api/notes/" .. id))
        assert_not_found(alice.call("PATCH", "/api/notes/" .. id, { json = { title = "x" } }))
        assert_not_found(alice.call("DELETE", "/api/notes/" .. id))
      end
    end)

    it("needs a bearer token", function()
      local res = h.request(srv.port, "GET", "/api/notes")
      assert.equal(401, res.status, res.body)
      res = h.request(srv.port, "POST", "/api/notes", { json = { title = "x" } })
      assert.equal(401, res.status, res.body)
    end)
  end)

  describe("1 MiB bodies", function()
    it("round-trips a body of exactly 1 MiB", function()
      local body = big_body(MIB)
      assert.equal(MIB, #body)
      local res = alice.call("POST", "/api/notes", { json = { title = "Huge", body = body } })
      assert.equal(201, res.status, res.body and res.body:sub(1, 300))
      local got = alice.call("GET", "/api/notes/" .. res.json.id)
      assert.equal(200, got.status)
      assert.equal(MIB, #got.json.body)
      assert.is_true(got.json.body == body, "the body came back different")
      -- searchable, with a snippet from its beginning
      local found = alice.list({ q = "orreries planets" })
      local hit
      for _, it in ipairs(found.items) do if it.id == res.json.id then hit = it end end
      assert.is_table(hit, "the huge note is found")
      assert.matches("<mark>", hit.snippet)
      assert.is_true(#hit.excerpt <= 400)
      -- and replaced by another 1 MiB body
      local body2 = big_body(MIB):gsub("fox", "cat")
      res = alice.call("PATCH", "/api/notes/" .. res.json.id, { json = { body = body2 } })
      assert.equal(200, res.status, res.body and res.body:sub(1, 300))
      assert.is_true(res.json.body == body2)
    end)

    it("refuses a body one byte over 1 MiB with 400 naming body, and writes nothing", function()
      local before = footprint(alice)
      local res = alice.call("POST", "/api/notes", { json = { title = "Too big", body = big_body(MIB + 1) } })
      assert_bad_field(res, "body")
      local n = alice.create({ title = "small" })
      res = alice.call("PATCH", "/api/notes/" .. n.id, { json = { title = "changed", body = big_body(MIB + 1) } })
      assert_bad_field(res, "body")
      assert.equal("small", alice.call("GET", "/api/notes/" .. n.id).json.title)
      local after = footprint(alice)
      assert.equal(before.notes + 1, after.notes)
      assert.equal(before.activity + 1, after.activity)
    end)

    it("takes a 1 MiB note of characters JSON must escape at the default body limit", function()
      local s2 = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "100000" } })
      local ok, err = pcall(function()
        local reg = h.request(s2.port, "POST", "/api/auth/register",
          { json = { email = h.new_email("limit"), password = h.PASSWORD } })
        assert.equal(201, reg.status, reg.body)
        -- Every character a newline: 1 MiB of body, 2 MiB of JSON.
        local res = h.request(s2.port, "POST", "/api/notes", {
          json = { body = string.rep("\n", MIB) },
          headers = { Authorization = "Bearer " .. reg.json.access_token },
        })
        assert.equal(201, res.status, res.body)
      end)
      s2:stop()
      assert(ok, err)
    end)
  end)

  describe("validation", function()
    it("answers 400 naming the field for bad creates, and writes nothing", function()
      local before = footprint(alice)
      local tags51 = {}
      for i = 1, 51 do tags51[i] = "t" .. i end
      local cases = {
        { { title = 42 }, "title" },
        { { title = string.rep("x", 501) }, "title" },
        { { title = cjson.null }, "title" },
        { { body = 5 }, "body" },
        { { body = { "x" } }, "body" },
        { { tags = "work" }, "tags" },
        { { tags = { "" } }, "tags" },
        { { tags = { string.rep("t", 51) } }, "tags" },
        { { tags = { 1 } }, "tags" },
        { { tags = { k = "v" } }, "tags" },
        { { tags = tags51 }, "tags" },
        { { title = "ok", colour = "red" }, "colour" },
        { { id = "5f0e3d1c-1111-4222-8333-944455556666" }, "id" },
        { { version = 7 }, "version" },
        { { title = "ok", body = "fine", tags = { "fine", 2 } }, "tags" },
      }
      for _, c in ipairs(cases) do
        assert_bad_field(alice.call("POST", "/api/notes", { json = c[1] }), c[2])
      end
      -- not a JSON object at all, or a NUL inside a string (the JSON parser refuses those)
      for _, raw in ipairs({ "[1]", '"x"', "{", "null", '{"title": "a\\u0000b"}' }) do
        local res = alice.call("POST", "/api/notes", { body = raw })
        assert.equal(400, res.status, raw .. ": " .. res.body)
      end
      local after = footprint(alice)
      assert.same(before, after)
    end)

    it("counts characters, not bytes, for titles and tags", function()
      local n = alice.create({ title = string.rep("é", 500), tags = { string.rep("ü", 50) } })
      assert.equal(string.rep("é", 500), n.title)
      assert.same({ string.rep("ü", 50) }, n.tags)
      assert_bad_field(alice.call("POST", "/api/notes", { json = { title = string.rep("é", 501) } }), "title")
      assert_bad_field(alice.call("POST", "/api/notes", { json = { tags = { string.rep("ü", 51) } } }), "tags")
      -- non-ASCII capitals are lower-cased too
      assert.same({ "ärger" }, alice.create({ tags = { "ÄRGER", "ärger" } }).tags)
    end)

    it("answers 400 naming the field for bad patches, and changes nothing", function()
      local n = alice.create({ title = "Keep", body = "keep", tags = { "keep" } })
      local before = footprint(alice)
      for _, c in ipairs({
        { { title = 1 }, "title" }, { { body = false }, "body" }, { { tags = { "" } }, "tags" },
        { { title = "changed", extra = 1 }, "extra" }, { { title = "changed", tags = "x" }, "tags" },
        { { created_at = "2020-01-01T00:00:00Z" }, "created_at" },
      }) do
        assert_bad_field(alice.call("PATCH", "/api/notes/" .. n.id, { json = c[1] }), c[2])
      end
      local now = alice.call("GET", "/api/notes/" .. n.id).json
      assert.same(n, now)
      assert.same(before, footprint(alice))
    end)

    it("answers 400 naming the parameter for bad list queries", function()
      for _, c in ipairs({
        { "limit=0", "limit" }, { "limit=201", "limit" }, { "limit=100000", "limit" }, { "limit=abc", "limit" },
        { "limit=-1", "limit" }, { "cursor=garbage", "cursor" }, { "cursor=" .. string.rep("A", 80), "cursor" },
        { "tag=", "tag" }, { "tag=" .. string.rep("t", 51), "tag" }, { "q=" .. string.rep("w", 501), "q" },
        { "q=%FF%FE", "q" }, { "tag=%C3", "tag" },
      }) do
        local res = alice.call("GET", "/api/notes?" .. c[1])
        assert_bad_field(res, c[2])
      end
    end)

    it("refuses a cursor that was tampered with, or used with the other kind of listing", function()
      for i = 1, 3 do alice.create({ title = "cursor " .. i .. " zebra" }) end
      local page = alice.list({ limit = 1 })
      local cur = page.next_cursor
      assert.is_string(cur)
      local flipped = cur:sub(1, 10) .. (cur:sub(11, 11) == "A" and "B" or "A") .. cur:sub(12)
      assert_bad_field(alice.call("GET", "/api/notes?cursor=" .. urlencode(flipped)), "cursor")
      -- a newest-first cursor cannot continue a search, nor the other way round
      assert_bad_field(alice.call("GET", "/api/notes" .. query({ q = "zebra", cursor = cur })), "cursor")
      local spage = alice.list({ q = "zebra", limit = 1 })
      assert.is_string(spage.next_cursor)
      assert_bad_field(alice.call("GET", "/api/notes" .. query({ cursor = spage.next_cursor })), "cursor")
    end)
  end)

  describe("tags", function()
    it("filters by tag, case-insensitively, alone and with a search", function()
      local c = client("tags")
      local a = c.create({ title = "alpha comet", tags = { "Space", "work" } })
      local b = c.create({ title = "beta comet", tags = { "space" } })
      c.create({ title = "gamma comet", tags = { "home" } })
      local function ids(items)
        local out = {}
        for _, it in ipairs(items) do out[#out + 1] = it.id end
        table.sort(out)
        return out
      end
      local want = { a.id, b.id }
      table.sort(want)
      assert.same(want, ids(c.all({ tag = "space" })))
      assert.same(want, ids(c.all({ tag = "SPACE" })))
      assert.same({ a.id }, ids(c.all({ tag = "work" })))
      assert.same({}, ids(c.all({ tag = "nothing" })))
      assert.same({ b.id }, ids(c.all({ tag = "space", q = "beta" })))
      assert.same({}, ids(c.all({ tag = "home", q = "beta" })))
      -- a tag with metacharacters is only a string
      assert.same({}, ids(c.all({ tag = "' OR 1=1 --" })))
    end)
  end)

  describe("pagination", function()
    it("pages newest first and stays consistent while notes are added", function()
      local c = client("pages")
      local made = {}
      for i = 1, 7 do made[i] = c.create({ title = "page note " .. i }).id end
      local first = c.list({ limit = 3 })
      assert.equal(3, #first.items)
      assert.same({ made[7], made[6], made[5] }, { first.items[1].id, first.items[2].id, first.items[3].id })
      assert.is_string(first.next_cursor)
      -- new notes arrive between pages: they belong before the first page, not in the next ones
      local newer = { c.create({ title = "late 1" }).id, c.create({ title = "late 2" }).id }
      local rest, cursor = {}, first.next_cursor
      while cursor do
        local page = c.list({ limit = 3, cursor = cursor })
        assert.is_true(#page.items <= 3)
        for _, it in ipairs(page.items) do rest[#rest + 1] = it.id end
        cursor = page.next_cursor ~= cjson.null and page.next_cursor or nil
      end
      assert.same({ made[4], made[3], made[2], made[1] }, rest)
      -- a fresh listing sees everything once, newest first
      local all = c.all({ limit = 2 })
      assert.equal(9, #all)
      assert.equal(newer[2], all[1].id)
      assert.equal(newer[1], all[2].id)
      for i = 2, #all do assert.is_true(all[i - 1].created_at >= all[i].created_at) end
      -- the last page says so
      local last = c.list({ limit = 200 })
      assert.equal(cjson.null, last.next_cursor)
    end)

    it("defaults to 50 items and allows 200", function()
      local c = client("many")
      for i = 1, 55 do c.create({ title = "n" .. i }) end
      local page = c.list()
      assert.equal(50, #page.items)
      assert.is_string(page.next_cursor)
      page = c.list({ limit = 200 })
      assert.equal(55, #page.items)
      assert.equal(cjson.null, page.next_cursor)
    end)
  end)

  describe("search", function()
    it("ranks a word in the title above the same word once in the body, with <mark> snippets", function()
      local c = client("search")
      local body_hit = c.create({ title = "Weekly review", body = "Call the astronomer about the telescope mount." })
      local title_hit = c.create({ title = "Telescope", body = "Notes on eyepieces and filters." })
      c.create({ title = "Shopping", body = "bread, butter" })
      local page = c.list({ q = "telescope" })
      assert.equal(2, #page.items, cjson.encode(page))
      assert.equal(title_hit.id, page.items[1].id)
      assert.equal(body_hit.id, page.items[2].id)
      assert.matches("<mark>telescope</mark>", page.items[2].snippet, 1, true)
      assert.is_string(page.items[1].snippet)
      assert.is_nil(page.items[1].body)
      assert.is_string(page.items[1].excerpt)
      -- stemming: "telescopes" finds "telescope"; a phrase and an exclusion work
      assert.equal(2, #c.list({ q = "telescopes" }).items)
      assert.same({ body_hit.id }, { c.list({ q = '"telescope mount"' }).items[1].id })
      local excl = c.list({ q = "telescope -astronomer" })
      assert.equal(1, #excl.items)
      assert.equal(title_hit.id, excl.items[1].id)
    end)

    it("shows at most two fragments per snippet", function()
      local c = client("frag")
      local filler = string.rep("lorem ipsum dolor sit amet consectetur ", 30)
      c.create({ title = "fragments", body = "nebula one " .. filler .. " nebula two " .. filler ..
        " nebula three " .. filler .. " nebula four" })
      local snippet = c.list({ q = "nebula" }).items[1].snippet
      local marks = select(2, snippet:gsub("<mark>", ""))
      assert.is_true(marks >= 1 and marks <= 2, snippet)
      assert.equal(select(2, snippet:gsub("<mark>", "")), select(2, snippet:gsub("</mark>", "")))
    end)

    it("orders by rank, then id, across pages", function()
      local c = client("rankpages")
      -- rank grows with the number of occurrences; two pairs tie
      local bodies = { "quasar", "quasar quasar", "quasar quasar", "quasar quasar quasar", "x quasar", "quasar y" }
      for i, b in ipairs(bodies) do c.create({ title = "r" .. i, body = b }) end
      local whole = c.list({ q = "quasar", limit = 200 }).items
      assert.equal(#bodies, #whole)
      local paged = c.all({ q = "quasar", limit = 1 })
      assert.equal(#whole, #paged)
      for i = 1, #whole do assert.equal(whole[i].id, paged[i].id) end
      local seen = {}
      for _, it in ipairs(paged) do
        assert.is_nil(seen[it.id], "duplicate across pages")
        seen[it.id] = true
      end
      assert.equal("r4", whole[1].title)
    end)

    it("treats SQL and tsquery metacharacters as plain text: always 200", function()
      local c = client("meta")
      c.create({ title = "safe", body = "it's a 100% (really) safe note: a & b | c" })
      for _, q in ipairs({
        "'; DROP TABLE notes; --", "' OR '1'='1", "a & b | !c", "!!!", "&", "|", "(((", ")", ":*", "foo:*",
        "a <-> b", "<2>", "\\", "\"unterminated", "\"\"", "--", "/* */", "%", "_", "$1", "$$", "null",
        "or", "-", "- -", "the", "and or not", "it's", "100%", string.rep("(", 200), "\t\n", "日本語", "💥",
      }) do
        local res = c.call("GET", "/api/notes" .. query({ q = q }))
        assert.equal(200, res.status, q .. ": " .. res.body)
        assert.is_table(res.json.items, q)
      end
      assert.equal(1, #c.all()) -- and the table is still there
      assert.equal(1, #c.list({ q = "really safe" }).items)
    end)

    it("an empty q lists everything; q made of stop words finds nothing", function()
      local c = client("stop")
      c.create({ title = "the note" })
      assert.equal(1, #c.list({ q = "" }).items)
      assert.equal(0, #c.list({ q = "the" }).items)
    end)

    it("keeps the server log to JSON lines (no stray PostgreSQL NOTICEs)", function()
      local c = client("notice")
      -- a search made only of stop words, a word too long to index: both make PostgreSQL talk
      assert.equal(0, #c.list({ q = "the and of" }).items)
      local n = c.create({ title = "long word", body = "start " .. string.rep("w", 3000) .. " end" })
      assert.equal(200, c.call("PATCH", "/api/notes/" .. n.id, { json = { body = string.rep("v", 2500) } }).status)
      assert.equal(1, #c.list({ q = "long word" }).items)
      for raw in srv:logs():gmatch("[^\n]+") do
        assert.is_table(cjson.decode(raw), raw)
      end
    end)
  end)

  describe("isolation", function()
    it("another user's note is 404 for GET, PATCH and DELETE, and unchanged", function()
      local n = alice.create({ title = "Alice private xylophone", body = "secret xylophone", tags = { "secret" } })
      assert_not_found(bob.call("GET", "/api/notes/" .. n.id))
      assert_not_found(bob.call("PATCH", "/api/notes/" .. n.id, { json = { title = "mine" } }))
      assert_not_found(bob.call("PATCH", "/api/notes/" .. n.id, { json = { title = "mine" },
        headers = { ["If-Match"] = '"1"' } }))
      assert_not_found(bob.call("DELETE", "/api/notes/" .. n.id))
      assert.same(n, alice.call("GET", "/api/notes/" .. n.id).json)
      for _, it in ipairs(bob.activity({ limit = 200 })) do assert.not_equal(n.id, it.object_id) end
    end)

    it("another user's search, tag filter and list never return the note", function()
      local n = alice.create({ title = "Alice only marmalade", body = "marmalade recipe", tags = { "jam" } })
      bob.create({ title = "Bob's own", body = "nothing about preserves" })
      for _, params in ipairs({ {}, { q = "marmalade" }, { tag = "jam" }, { q = "marmalade", tag = "jam" } }) do
        for _, it in ipairs(bob.all(params)) do assert.not_equal(n.id, it.id) end
      end
      assert.equal(0, #bob.list({ q = "marmalade" }).items)
      assert.equal(1, #alice.list({ q = "marmalade" }).items)
      -- a cursor from Alice's listing shows Bob only his own notes
      alice.create({ title = "Alice again" })
      local cur = alice.list({ limit = 1 }).next_cursor
      local res = bob.call("GET", "/api/notes?cursor=" .. urlencode(cur))
      assert.equal(200, res.status, res.body)
      for _, it in ipairs(res.json.items) do assert.not_equal(n.id, it.id) end
    end)
  end)

  describe("If-Match", function()
    it("answers 412 precondition_failed when the version differs, and changes nothing", function()
      local n = alice.create({ title = "v1" })
      local function patch(title, etag)
        return alice.call("PATCH", "/api/notes/" .. n.id,
          { json = { title = title }, headers = { ["If-Match"] = etag } })
      end
      local res = patch("v2", '"1"')
      assert.equal(200, res.status, res.body)
      assert.equal('"2"', res.headers["etag"])
      local activity = #alice.activity({ limit = 200 })
      for _, etag in ipairs({ '"1"', '"3"', 'W/"2"', "garbage", '"1", "3"' }) do
        res = patch("lost", etag)
        assert.equal(412, res.status, etag .. ": " .. res.body)
        assert.equal("precondition_failed", res.json.error.code)
        res = alice.call("DELETE", "/api/notes/" .. n.id, { headers = { ["If-Match"] = etag } })
        assert.equal(412, res.status, etag .. ": " .. res.body)
      end
      local now = alice.call("GET", "/api/notes/" .. n.id).json
      assert.equal("v2", now.title)
      assert.equal(2, now.version)
      assert.equal(activity, #alice.activity({ limit = 200 }))
      -- any of a list, "*", and the bare number match
      res = patch("v3", '"7", "2"')
      assert.equal(200, res.status, res.body)
      res = patch("v4", "*")
      assert.equal(200, res.status, res.body)
      res = alice.call("DELETE", "/api/notes/" .. n.id, { headers = { ["If-Match"] = '"4"' } })
      assert.equal(204, res.status, res.body)
    end)

    it("validates the body before the precondition and 404s before both", function()
      local n = alice.create({ title = "order" })
      assert_bad_field(alice.call("PATCH", "/api/notes/" .. n.id,
        { json = { title = 5 }, headers = { ["If-Match"] = '"9"' } }), "title")
      assert_not_found(alice.call("PATCH", "/api/notes/00000000-0000-0000-0000-000000000000",
        { json = { title = "x" }, headers = { ["If-Match"] = '"9"' } }))
    end)
  end)

  describe("activity", function()
    it("records create, update and delete with the user as actor and a diff of what changed", function()
      local c = client("act")
      local n = c.create({ title = "Log me", body = "abc", tags = { "one" } })
      c.call("PATCH", "/api/notes/" .. n.id, { json = { title = "Logged", tags = { "one" } } })
      c.call("PATCH", "/api/notes/" .. n.id, { json = { body = "abcdé", tags = { "two" } } })
      assert.equal(204, c.call("DELETE", "/api/notes/" .. n.id).status)
      local rows = c.activity({ object_type = "note" })
      assert.equal(4, #rows)
      local del, upd2, upd1, cre = rows[1], rows[2], rows[3], rows[4]
      for _, r in ipairs(rows) do
        assert.same({ type = "user", id = c.id }, r.actor)
        assert.equal("note", r.object_type)
        assert.equal(n.id, r.object_id)
      end
      assert.equal("create", cre.action)
      assert.same({ title = { to = "Log me" }, tags = { to = { "one" } }, body = { changed = true, length = 3 } },
        cre.diff)
      assert.equal("update", upd1.action)
      assert.same({ title = { from = "Log me", to = "Logged" } }, upd1.diff) -- tags unchanged: not recorded
      assert.same({ tags = { from = { "one" }, to = { "two" } }, body = { changed = true, length = 6 } }, upd2.diff)
      assert.equal("delete", del.action)
      assert.same({ title = { from = "Logged" }, tags = { from = { "two" } }, body = { changed = true, length = 6 } },
        del.diff)
    end)

    it("never copies a large body into the diff", function()
      local c = client("actbig")
      local n = c.create({ title = "big", body = big_body(MIB) })
      c.call("PATCH", "/api/notes/" .. n.id, { json = { body = big_body(MIB - 1) } })
      local res = c.call("GET", "/api/activity?object_type=note")
      assert.equal(200, res.status)
      assert.is_true(#res.body < 4096, "activity response is " .. #res.body .. " bytes")
      assert.same({ changed = true, length = MIB - 1 }, res.json.items[1].diff.body)
      assert.same({ changed = true, length = MIB }, res.json.items[2].diff.body)
    end)
  end)
end)
