-- pomodoro — an example agent (docs/agents.md): focus timers that run for minutes without holding
-- a worker. Not loaded by `orrery serve` unless copied into agents/ (or ORRERY_AGENTS_DIR points
-- here); spec/unit/examples_spec.lua runs it on the real runtime.
--
-- request {capability = "start", args = {label =, seconds =}}  -> agree {timer =, ends_at =} at once,
--         then, when the time is up, publishes `pomodoro.done` {timer =, label =, seconds =}
-- request {capability = "status"}   -> inform {running =, done =} (`done` asked of the journal agent)
-- cancel  {timer = id}              -> inform {cancelled = true | false}
--
-- What it shows: a capability with a JSON schema (advertised in the directory; the handler still
-- checks what it gets), replying early and going on working, ctx:sleep, ctx:publish, asking
-- another agent with ctx:request and coping when it is not there, ctx.log, and state shared by
-- the handlers of one agent (its own Lua state: no locks needed).
local json = orrery.json

local MAX_SECONDS = 7200
local MAX_RUNNING = 100 -- per user: the state's memory is capped, so is what it keeps

-- Timers in flight, by id. Only this agent's handlers touch it, one at a time.
local running = {}
local next_id = 0

local function count_running(user_id)
  local n = 0
  for _, t in pairs(running) do
    if t.user_id == user_id then n = n + 1 end
  end
  return n
end

-- The advertised schema says what callers should send; this is what the handler relies on.
local function check_start(args)
  if type(args) ~= "table" then return nil, "args must be an object" end
  local label, seconds = args.label, args.seconds
  if type(label) ~= "string" or label == "" or #label > 100 then
    return nil, "label must be a string of 1..100 bytes"
  end
  if seconds == nil then seconds = 25 * 60 end
  if type(seconds) ~= "number" or seconds ~= seconds or seconds < 0 or seconds > MAX_SECONDS then
    return nil, "seconds must be a number from 0 to " .. MAX_SECONDS
  end
  return { label = label, seconds = seconds }
end

local function start(msg, ctx)
  local args, err = check_start(msg.content.args)
  if not args then return ctx:reply("refuse", { error = "invalid_args", message = err }) end
  if count_running(ctx.user_id) >= MAX_RUNNING then
    return ctx:reply("refuse", { error = "too_many_timers", message = "at most " .. MAX_RUNNING .. " at a time" })
  end
  next_id = next_id + 1
  local id = ctx.agent .. "-" .. next_id
  local timer = { user_id = ctx.user_id, label = args.label, seconds = args.seconds }
  running[id] = timer
  -- Answer now; the handler goes on (a reply does not end it).
  ctx:reply("agree", { timer = id, ends_at = orrery.time.format(orrery.time.now() + args.seconds) })
  ctx.log.debug("timer started", { timer = id, seconds = args.seconds })
  ctx:sleep(args.seconds) -- the worker serves other messages meanwhile
  running[id] = nil
  if timer.cancelled then
    ctx.log.info("timer was cancelled", { timer = id })
    return
  end
  local n, perr = ctx:publish("pomodoro.done", { timer = id, label = args.label, seconds = args.seconds })
  if not n then ctx.log.warn("could not publish", { timer = id, error = perr }) end
end

local function status(_, ctx)
  local done = "unavailable"
  -- Another agent, asked and waited for; a missing or slow journal is not this agent's failure.
  local reply, err = ctx:request("journal", { capability = "count" }, { timeout = 2 })
  if reply then
    done = reply.content.count
  else
    ctx.log.warn("journal did not answer", { error = err })
  end
  return { running = count_running(ctx.user_id), done = done }
end

return {
  name = "pomodoro",
  description = "Focus timers: start one, cancel it, hear when it is done",
  capabilities = {
    {
      name = "start",
      description = "Start a focus timer; `pomodoro.done` is published when it ends",
      args = {
        type = "object",
        properties = {
          label = { type = "string", minLength = 1, maxLength = 100 },
          seconds = { type = "number", minimum = 0, maximum = MAX_SECONDS, default = 25 * 60 },
        },
        required = { "label" },
        additionalProperties = false,
      },
    },
    { name = "status", description = "Timers running and sessions done, for the user", args = { type = "object" } },
  },
  on = {
    request = function(msg, ctx)
      local c = msg.content
      local capability = type(c) == "table" and c.capability
      if capability == "start" then return start(msg, ctx) end
      if capability == "status" then return status(msg, ctx) end
      return ctx:reply("refuse", { error = "unknown_capability", message = json.encode(capability or json.null) })
    end,
    cancel = function(msg, ctx)
      local id = type(msg.content) == "table" and msg.content.timer
      local timer = running[id]
      -- Only the user who started a timer may cancel it.
      local ok = timer ~= nil and timer.user_id == ctx.user_id
      if ok then timer.cancelled = true end
      if msg.reply_with then ctx:reply("inform", { cancelled = ok }) end
    end,
  },
}
