-- orrery.agent — the agent SDK. The runtime loads it into every agent's state and calls
-- `dispatch(module, msg)` for each message (inside the handler's coroutine, under the sandbox's
-- limits) and `describe(module)` when an agent file is loaded. Handlers receive (msg, ctx):
--
--   msg.performative, msg.sender, msg.content (decoded JSON), msg.conversation_id, msg.user_id, ...
--   ctx:reply(performative, content)          answer the message (once)
--   ctx:request(agent, content [, opts])      ask another agent and wait: reply | nil, error [, reply]
--   ctx:send(agent, performative, content)    tell another agent, without waiting
--   ctx:publish(topic, content)               an event for every subscriber
--   ctx:sleep(seconds)                        wait without holding a worker
--   ctx:directory()                           who can do what
--   ctx.user_id, ctx.conversation_id, ctx.agent, ctx.message, ctx.log.info(...) (and debug/warn/error)
--
-- A handler of a `request` or `query` that returns a value without calling ctx:reply answers
-- `inform` with that value; one that returns nothing answers `failure` {error = "no_reply"}.
local orrery = orrery
local json = orrery.json
local bus = orrery.bus

local M = {}

local PERFORMATIVES = {
  request = true, inform = true, agree = true, refuse = true, failure = true, query = true,
  propose = true, accept = true, reject = true, cancel = true, subscribe = true,
}
M.performatives = PERFORMATIVES

local reply = bus.reply
local decode = json.decode

-- ctx's methods. A ctx is made for every message, so it holds only the message's own fields; its
-- logger (a table and four closures) is made on first use of ctx.log.
local Ctx = {}

function Ctx:reply(performative, content)
  if self.replied then error("ctx:reply: this message was already answered", 2) end
  self.replied = true
  return reply(performative, content)
end

-- Returns the reply when it is an inform/agree/accept/propose; nil, error, reply for failure,
-- refuse and reject (error is content.error or the performative); nil, "timeout" | "busy" |
-- "unknown_agent" when no reply came.
function Ctx.request(_, agent, content, opts)
  local r, err = bus.request(agent, content, opts)
  if not r then return nil, err end
  local p = r.performative
  if p == "failure" or p == "refuse" or p == "reject" then
    local c = r.content
    return nil, type(c) == "table" and c.error or p, r
  end
  return r
end

function Ctx.send(_, agent, performative, content, opts)
  return bus.send(agent, performative, content, opts)
end

function Ctx.publish(_, topic, content)
  return bus.publish(topic, content)
end

function Ctx.sleep(_, seconds)
  return orrery.sleep(seconds)
end

function Ctx.directory(_)
  return bus.directory()
end

local function logger(agent, msg)
  local fields = { agent = agent, conversation_id = msg.conversation_id, message_id = msg.id }
  local function at(level)
    return function(text, extra)
      local f = {}
      for k, v in pairs(fields) do f[k] = v end
      if type(extra) == "table" then
        for k, v in pairs(extra) do f[k] = v end
      end
      orrery.log[level](tostring(text), f)
    end
  end
  return { debug = at("debug"), info = at("info"), warn = at("warn"), error = at("error") }
end

local CtxMeta = {
  __index = function(ctx, key)
    if key == "log" then
      local log = logger(ctx.agent, ctx.message)
      rawset(ctx, "log", log)
      return log
    end
    return Ctx[key]
  end,
}

local function new_ctx(module, msg)
  return setmetatable({
    agent = module.name,
    message = msg,
    user_id = msg.user_id,
    conversation_id = msg.conversation_id,
    replied = false,
  }, CtxMeta)
end

local function expects_reply(msg)
  return msg.sender ~= nil and msg.topic == nil
    and (msg.performative == "request" or msg.performative == "query")
end

-- The metatable of every ctx; the runtime makes each message's ctx itself, with a private copy of
-- this table's __index.
M.ctx_meta = CtxMeta

-- The runtime's entry point for one message (ctx made by the runtime; new_ctx otherwise).
function M.dispatch(module, msg, ctx)
  if msg.content ~= nil then
    local value, err = decode(msg.content)
    if err then error("message content is not JSON: " .. tostring(err), 0) end
    msg.content = value
  end
  ctx = ctx or new_ctx(module, msg)
  local on = module.on
  local handler = on and on[msg.performative]
  if handler == nil then
    if expects_reply(msg) then
      return ctx:reply("failure", {
        error = "not_understood",
        message = module.name .. " has no handler for " .. msg.performative,
      })
    end
    return
  end
  local result = handler(msg, ctx)
  if expects_reply(msg) and not ctx.replied and result ~= nil then
    ctx:reply("inform", result)
  end
end

local function check_list(list, what)
  if list == nil then return {} end
  if type(list) ~= "table" then error(what .. ": must be a list", 0) end
  local n = #list
  for k in pairs(list) do
    if math.type(k) ~= "integer" or k < 1 or k > n then error(what .. ": must be a list", 0) end
  end
  return list
end

local function encode_list(list)
  if #list == 0 then return "[]" end
  return json.encode(list)
end

-- The runtime's check of an agent file's table: name, description, capabilities (as JSON),
-- subscribes (as JSON), or an error naming the field.
function M.describe(module)
  if type(module) ~= "table" then
    error("the agent file must return a table (got " .. type(module) .. ")", 0)
  end
  local name = module.name
  if type(name) ~= "string" or #name > 63 or not name:match("^[a-z0-9_-]+$") then
    error("name: must be 1..63 characters of [a-z0-9_-]", 0)
  end
  local description = module.description
  if type(description) ~= "string" or description == "" then
    error("description: must be a non-empty string", 0)
  end
  local caps = {}
  for i, c in ipairs(check_list(module.capabilities, "capabilities")) do
    if type(c) == "string" then
      caps[i] = { name = c, args = { type = "object" } }
    elseif type(c) == "table" then
      if type(c.name) ~= "string" then error("capabilities[" .. i .. "].name: must be a string", 0) end
      if c.description ~= nil and type(c.description) ~= "string" then
        error("capabilities[" .. i .. "].description: must be a string", 0)
      end
      if c.args ~= nil and type(c.args) ~= "table" then
        error("capabilities[" .. i .. "].args: must be a JSON schema (a table)", 0)
      end
      caps[i] = { name = c.name, description = c.description, args = c.args or { type = "object" } }
    else
      error("capabilities[" .. i .. "]: must be a name or {name=, description=, args=}", 0)
    end
  end
  local subs = {}
  for i, p in ipairs(check_list(module.subscribes, "subscribes")) do
    if type(p) ~= "string" then error("subscribes[" .. i .. "]: must be a topic pattern", 0) end
    subs[i] = p
  end
  local on = module.on
  if type(on) ~= "table" then error("on: must be a table of handlers by performative", 0) end
  for k, f in pairs(on) do
    if not PERFORMATIVES[k] then error("on." .. tostring(k) .. ": not a performative", 0) end
    if type(f) ~= "function" then error("on." .. k .. ": must be a function", 0) end
  end
  local ok, caps_json = pcall(encode_list, caps)
  if not ok then error("capabilities: cannot be written as JSON: " .. tostring(caps_json), 0) end
  return name, description, caps_json, encode_list(subs)
end

return M
