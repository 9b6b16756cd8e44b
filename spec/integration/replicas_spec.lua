-- Two `orrery serve` processes on one database (src/replica.c wired by src/agents_host.c): a topic
-- event published on one reaches the subscribers on both; an agent changed on one (PUT) is swapped
-- in on the other.
local h = require("helpers")
local wait_for = h.wait_for


local WATCHER = [[
local seen = {}
return { name = "watcher", description = "remembers note events", subscribes = { "note.*" }, on = {
  inform = function(msg) seen[#seen + 1] = msg.topic .. ":" .. tostring(msg.content.n) end,
  query = function() return seen end,
} }
]]

local PUB = [[
return { name = "pub", description = "publishes what it is asked to", on = {
  request = function(msg, ctx) return ctx:publish(msg.content.topic, { n = msg.content.n }) end,
} }
]]

local function version_src(v)
  return ([[return { name = "ver", description = "says its version", on = {
    request = function() return "%s" end } }]]):format(v)
end

describe("replicas", function()
  local a, b, admin_a, admin_b

  setup(function()
    local dir = h.tmpdir()
    h.write_file(dir .. "/watcher.lua", WATCHER)
    h.write_file(dir .. "/pub.lua", PUB)
    h.write_file(dir .. "/ver.lua", version_src("file"))
    a = h.start_server({ env = { ORRERY_AGENTS_DIR = dir } })
    b = h.start_server({ database_url = a.database_url, env = { ORRERY_AGENTS_DIR = dir } })
    local u = h.new_user(a.port, "replica-admin")
    a:sql("UPDATE users SET role = 'admin' WHERE id = '" .. u.id .. "'")
    admin_a = u
    -- the same account, through the other process
    admin_b = h.new_user(b.port, "replica-admin-b")
    a:sql("UPDATE users SET role = 'admin' WHERE id = '" .. admin_b.id .. "'")
    -- both are listening once a NOTIFY round trip works: wait for the replicas' connections
    assert.is_true(wait_for(function()
      return a:sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orrery-replica'"
        .. " AND datname = current_database()") == "2"
    end, 10), "both replicas listen")
  end)

  teardown(function()
    if b then b:stop() end
    if a then a:stop() end
  end)

  local function seen_on(u)
    local res = u.call("POST", "/api/agents/watcher/messages", { json = { performative = "query" } })
    assert.equal(200, res.status, res.body)
    return res.json.content
  end

  it("delivers a publish on one replica to the subscribers on both", function()
    local res = admin_a.call("POST", "/api/agents/pub/messages",
      { json = { content = { topic = "note.created", n = 1 } } })
    assert.equal(200, res.status, res.body)
    assert.equal(1, res.json.content) -- one local subscriber on A
    assert.is_true(wait_for(function() return #seen_on(admin_b) == 1 end), "B's watcher got it")
    assert.same({ "note.created:1" }, seen_on(admin_b))
    assert.same({ "note.created:1" }, seen_on(admin_a))

    -- and the other way, with content too large for a NOTIFY payload (sent by id)
    local big = string.rep("x", 9000)
    res = admin_b.call("POST", "/api/agents/pub/messages", { json = { content = { topic = "note.updated", n = big } } })
    assert.equal(200, res.status, res.body)
    assert.is_true(wait_for(function() return #seen_on(admin_a) == 2 end), "A's watcher got the large one")
    assert.equal("note.updated:" .. big, seen_on(admin_a)[2])
    assert.equal("note.updated:" .. big, seen_on(admin_b)[2])
  end)

  it("swaps an agent changed on one replica in on the other", function()
    local function answer(u)
      local res = u.call("POST", "/api/agents/ver/messages", { json = { content = {} } })
      assert.equal(200, res.status, res.body)
      return res.json.content
    end
    assert.equal("file", answer(admin_b))
    local res = admin_a.call("PUT", "/api/agents/ver", { json = { source = version_src("v-db") } })
    assert.is_true(res.status == 200 or res.status == 201, res.body)
    assert.equal("v-db", answer(admin_a))
    assert.is_true(wait_for(function() return answer(admin_b) == "v-db" end), "B swapped it in")
  end)
end)
