-- journal — an example agent (docs/agents.md) that listens: it subscribes to `pomodoro.*` and keeps
-- each user's finished focus sessions, which the pomodoro agent (agents/examples/pomodoro.lua) and
-- anyone else can ask for. Not loaded by `orrery serve` unless copied into agents/.
--
-- inform on pomodoro.done (published)  -> records {label, seconds, at} for the message's user
-- request {capability = "count"}        -> inform {count = n}
-- query                                 -> inform [{label, seconds, at}, ...], newest last
--
-- Kept in the agent's Lua state: lost when the agent is reloaded or its state is rebuilt. An agent
-- that must remember would keep it in the database (orrery.db.query).
local KEEP = 50 -- sessions per user; the state's memory is capped

local sessions = {} -- user id ("" for none) -> list of sessions

local function list_of(user_id)
  local key = user_id or ""
  local list = sessions[key]
  if not list then
    list = {}
    sessions[key] = list
  end
  return list
end

return {
  name = "journal",
  description = "Remembers the focus sessions each user finished",
  capabilities = {
    { name = "count", description = "How many sessions the user finished", args = { type = "object" } },
  },
  subscribes = { "pomodoro.*" },
  on = {
    inform = function(msg, ctx)
      if msg.topic ~= "pomodoro.done" or type(msg.content) ~= "table" then return end
      local list = list_of(ctx.user_id) -- published events carry the user of the publisher's message
      list[#list + 1] = { label = msg.content.label, seconds = msg.content.seconds, at = msg.created_at }
      if #list > KEEP then table.remove(list, 1) end
      ctx.log.debug("session recorded", { label = msg.content.label, from = msg.sender })
    end,
    request = function(msg, ctx)
      if type(msg.content) == "table" and msg.content.capability == "count" then
        return { count = #list_of(ctx.user_id) }
      end
      return ctx:reply("refuse", { error = "unknown_capability" })
    end,
    query = function(_, ctx)
      return list_of(ctx.user_id) -- an empty list goes out as {}: JSON cannot tell an empty table's kind
    end,
  },
}
