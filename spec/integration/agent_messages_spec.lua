-- GET /api/agents/messages through the real `orrery serve`: a conversation's trace from the
-- message log, oldest first, with every field (content as JSON); the owner sees their own rows,
-- another user an empty list, an admin every row (system traffic included); 400s naming the
-- field; pages that follow the cursor without gaps or repeats.
local h = require("helpers")
local core = require("orrery.core")
local cjson = require("cjson.safe")

local query, assert_bad_field = h.query, h.assert_bad_field

local function uuid()
  return (string.gsub("xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", "[xy]", function(c)
    return string.format("%x", c == "x" and math.random(0, 15) or math.random(8, 11))
  end))
end

describe("agent message trace", function()
  local srv, owner, stranger, admin, ml
  local conv = "trace-" .. uuid()
  local mine, system_row, theirs = {}, nil, nil

  local function get(user, params)
    return user.call("GET", "/api/agents/messages" .. query(params))
  end

  local function ids(items)
    local out = {}
    for _, it in ipairs(items) do out[#out + 1] = it.id end
    return out
  end

  setup(function()
    srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "100000" } })
    owner = h.new_user(srv.port, "trace-owner")
    stranger = h.new_user(srv.port, "trace-stranger")
    admin = h.new_user(srv.port, "trace-admin")
    srv:sql("UPDATE users SET role = 'admin' WHERE id = '" .. admin.id .. "'")
    -- Rows written the way the runtime writes them: through the message log, as the app role.
    ml = assert(core.msglog_new(srv.database_url, uuid(), 100, 60000))
    local function rec(fields, pending)
      local e = { id = uuid(), performative = "inform", sender = "orchestrator", receiver = "tasks",
        conversation_id = conv }
      for k, v in pairs(fields) do e[k] = v end
      assert.is_true(ml:record(e, pending))
      return e
    end
    for i = 1, 6 do -- recorded out of order: the trace sorts by created_at
      mine[#mine + 1] = rec({ user_id = owner.id, created_at = 1700000000 + (7 - i) + 0.123456,
        content = cjson.encode({ step = 7 - i, args = { title = "tea" } }), reply_with = "r" .. i }, i % 2 == 0)
    end
    table.sort(mine, function(a, b) return a.created_at < b.created_at end)
    system_row = rec({ topic = "system.tick", receiver = "", created_at = 1700000003.5 }, false)
    theirs = rec({ user_id = stranger.id, created_at = 1700000004.5, performative = "request" }, true)
    rec({ user_id = owner.id, conversation_id = "another-" .. uuid(), created_at = 1700000001 }, false)
    assert.is_true(ml:handled("tasks", mine[1].id))
    assert.is_true(ml:flush(5000))
  end)
  teardown(function()
    if ml then ml:close() end
    if srv then srv:stop() end
  end)

  it("shows the owner their rows of the conversation, oldest first, with every field", function()
    local res = get(owner, { conversation_id = conv })
    assert.equal(200, res.status, res.body)
    assert.same(ids(mine), ids(res.json.items))
    assert.equal(cjson.null, res.json.next_cursor)
    local first = res.json.items[1]
    assert.same({
      id = mine[1].id, receiver = "tasks", performative = "inform", sender = "orchestrator", topic = "",
      conversation_id = conv, reply_with = mine[1].reply_with, in_reply_to = "", user_id = owner.id,
      content = { step = 1, args = { title = "tea" } }, created_at = "2023-11-14T22:13:21.123456Z",
      state = "handled",
    }, first)
    local states = {}
    for _, it in ipairs(res.json.items) do states[#states + 1] = it.state end
    -- oldest first: r6 .. r1, recorded pending on even i; the oldest was then marked handled
    assert.same({ "handled", "trace", "pending", "trace", "pending", "trace" }, states)
  end)

  it("shows another user nothing: an empty list, not a 404", function()
    local res = get(stranger, { conversation_id = conv })
    assert.equal(200, res.status, res.body)
    assert.same({ theirs.id }, ids(res.json.items), "only the row that is theirs")
    local nobody = h.new_user(srv.port, "trace-nobody")
    res = get(nobody, { conversation_id = conv })
    assert.equal(200, res.status, res.body)
    assert.same({}, ids(res.json.items))
    assert.matches('"items":%s*%[%]', res.body)
  end)

  it("shows an admin every row of the conversation, system traffic and other users included", function()
    local res = get(admin, { conversation_id = conv })
    assert.equal(200, res.status, res.body)
    local want = ids(mine)
    table.insert(want, 4, system_row.id) -- 1700000003.5 sorts after 1700000003.123456
    table.insert(want, 6, theirs.id)     -- 1700000004.5
    assert.same(want, ids(res.json.items))
    local sys = res.json.items[4]
    assert.equal(cjson.null, sys.user_id)
    assert.equal(cjson.null, sys.content)
    assert.equal("", sys.receiver)
    assert.equal("system.tick", sys.topic)
  end)

  it("pages with limit and an opaque cursor, without gaps or repeats", function()
    local seen, cursor, pages = {}, nil, 0
    repeat
      local res = get(admin, { conversation_id = conv, limit = 3, cursor = cursor })
      assert.equal(200, res.status, res.body)
      assert.is_true(#res.json.items <= 3)
      for _, it in ipairs(res.json.items) do seen[#seen + 1] = it.id end
      cursor = res.json.next_cursor ~= cjson.null and res.json.next_cursor or nil
      pages = pages + 1
    until not cursor or pages > 10
    assert.equal(3, pages)
    assert.same(ids(get(admin, { conversation_id = conv }).json.items), seen)
  end)

  it("answers 400 naming the field for a missing or bad conversation_id, limit or cursor", function()
    assert_bad_field(get(owner, {}), "conversation_id")
    assert_bad_field(get(owner, { conversation_id = "" }), "conversation_id")
    assert_bad_field(get(owner, { conversation_id = string.rep("c", 64) }), "conversation_id")
    assert_bad_field(owner.call("GET", "/api/agents/messages?conversation_id=%FF"), "conversation_id")
    assert.equal(200, get(owner, { conversation_id = string.rep("é", 63) }).status, "63 characters, 126 bytes")
    assert_bad_field(get(owner, { conversation_id = conv, limit = 0 }), "limit")
    assert_bad_field(get(owner, { conversation_id = conv, limit = 501 }), "limit")
    assert.equal(200, get(owner, { conversation_id = conv, limit = 500 }).status)
    assert_bad_field(get(owner, { conversation_id = conv, cursor = "forged" }), "cursor")
    local page = get(owner, { conversation_id = conv, limit = 2 })
    assert.is_string(page.json.next_cursor)
    assert_bad_field(get(owner, { conversation_id = "other", cursor = page.json.next_cursor }), "cursor")
  end)

  it("requires a token", function()
    local res = h.get(srv.port, "/api/agents/messages" .. query({ conversation_id = conv }))
    assert.equal(401, res.status, res.body)
  end)
end)
