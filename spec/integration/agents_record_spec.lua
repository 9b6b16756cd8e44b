-- The runtime's envelopes through `orrery serve`: every envelope is recorded in agent_messages by
-- the batching writer (src/msglog*.c) and a conversation's trace comes back in order from
-- GET /api/agents/messages; a message accepted but not handled when the process died is
-- redelivered once by the next start, and handled there exactly once.
local h = require("helpers")
local wait_for = h.wait_for
local new_admin = h.new_admin



local AGENTS = {
  ["front.lua"] = [[
return { name = "front", description = "asks back for a word", on = {
  request = function(msg, ctx)
    local r = ctx:request("back", { word = msg.content })
    return { front = true, back = r.content }
  end,
} }
]],
  ["back.lua"] = [[
return { name = "back", description = "upper-cases a word", on = {
  request = function(msg) return string.upper(msg.content.word) end,
} }
]],
  -- Counts what it handled in the database, so a second handling would show.
  ["slow.lua"] = [[
return { name = "slow", description = "handles an inform slowly", on = {
  inform = function(msg, ctx) ctx:sleep(msg.content.sleep) end,
} }
]],
}

local function agents_dir(files)
  local dir = h.tmpdir()
  for name, src in pairs(files) do h.write_file(dir .. "/" .. name, src) end
  return dir
end

describe("recorded envelopes", function()
  it("records every envelope of a conversation and returns its trace in order", function()
    local srv = h.start_server({ env = { ORRERY_AGENTS_DIR = agents_dir(AGENTS) } })
    finally(function() srv:stop() end)
    local admin = new_admin(srv)
    local res = admin.call("POST", "/api/agents/front/messages",
      { json = { content = "hi", conversation_id = "conv-trace-1" } })
    assert.equal(200, res.status, res.body)
    assert.same({ front = true, back = "HI" }, res.json.content)

    local items
    assert.is_true(wait_for(function()
      local t = admin.call("GET", "/api/agents/messages?conversation_id=conv-trace-1")
      assert.equal(200, t.status, t.body)
      items = t.json.items
      return #items == 4
    end), "four envelopes recorded")
    local path = {}
    for i, m in ipairs(items) do
      path[i] = m.sender .. ">" .. m.receiver .. ":" .. m.performative
      assert.equal(admin.id, m.user_id)
    end
    assert.same({ "_client>front:request", "front>back:request", "back>front:inform", "front>_client:inform" }, path)
    assert.same({ word = "hi" }, items[2].content)
    assert.equal(items[2].reply_with, items[3].in_reply_to)
    -- the requests the agents handled are marked handled
    assert.is_true(wait_for(function()
      return srv:sql("SELECT count(*) FROM agent_messages WHERE conversation_id = 'conv-trace-1'"
        .. " AND performative = 'request' AND state = 'handled'") == "2"
    end))

    -- Another user sees nothing of it; the owner of the conversation (here the admin) sees it.
    local other = h.new_user(srv.port, "record-other")
    local t = other.call("GET", "/api/agents/messages?conversation_id=conv-trace-1")
    assert.equal(200, t.status)
    assert.same({}, t.json.items)
  end)

  it("redelivers once, after a crash, what was accepted but not handled", function()
    local dir = agents_dir(AGENTS)
    local instance = "5e1f0c2a-4b7d-4c1e-9a3b-0d2c4e6f8a10"
    local srv = h.start_server({ env = { ORRERY_AGENTS_DIR = dir, ORRERY_INSTANCE_ID = instance } })
    local servers = { srv }
    finally(function()
      for i = #servers, 1, -1 do servers[i]:stop() end -- the first one last: it drops the database
    end)
    local admin = new_admin(srv)
    -- An inform gets no reply: the admin route times out, the handler sleeps on.
    local res = admin.call("POST", "/api/agents/slow/messages",
      { json = { content = { sleep = 60 }, performative = "inform", conversation_id = "conv-crash", timeout = 1 } })
    assert.equal(504, res.status, res.body)
    assert.is_true(wait_for(function()
      return srv:sql("SELECT state FROM agent_messages WHERE conversation_id = 'conv-crash'") == "pending"
    end), "recorded as pending")
    srv:signal("KILL")
    srv:wait(5)

    -- The next start (same database, same instance id) claims it and handles it once.
    h.write_file(dir .. "/slow.lua", AGENTS["slow.lua"]:gsub("ctx:sleep%(msg.content.sleep%)", "ctx:sleep(0.1)"))
    local again = h.start_server({ database_url = srv.database_url,
      env = { ORRERY_AGENTS_DIR = dir, ORRERY_INSTANCE_ID = instance } })
    servers[#servers + 1] = again
    assert.is_true(wait_for(function()
      return srv:sql("SELECT state FROM agent_messages WHERE conversation_id = 'conv-crash'") == "handled"
    end, 10), "handled after the restart")
    assert.matches("redelivered 1 message", again:logs())
    assert.equal("1", srv:sql("SELECT count(*) FROM agent_messages WHERE conversation_id = 'conv-crash'"))
    -- a second restart finds nothing left to redeliver
    again:signal("TERM")
    again:wait(15)
    local third = h.start_server({ database_url = srv.database_url,
      env = { ORRERY_AGENTS_DIR = dir, ORRERY_INSTANCE_ID = instance } })
    servers[#servers + 1] = third
    h.sleep(0.5)
    assert.is_nil(third:logs():match("redelivered %d+ message"))
  end)
end)
