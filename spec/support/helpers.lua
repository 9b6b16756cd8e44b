-- Test support shared by every spec: the real binary, the project's PostgreSQL cluster (a fresh
-- database per server), and a small HTTP client over LuaSocket that can also send what a real
-- client never would (control bytes, slow uploads, half-open connections).
local socket = require("socket")
local cjson = require("cjson.safe")
local luassert = require("luassert")

local M = {}

M.root = os.getenv("ORRERY_TEST_ROOT") or "."
M.bin = os.getenv("ORRERY_BIN") or (M.root .. "/build/bin/orrery")
M.asan = M.bin:find("build%-asan") ~= nil
M.admin_url = os.getenv("ORRERY_TEST_ADMIN_URL")
M.app_url = os.getenv("ORRERY_TEST_APP_URL")
M.owner_url = os.getenv("ORRERY_TEST_OWNER_URL")

local unpack = table.unpack

function M.quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

function M.write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/orrery-spec.XXXXXX")
  local d = p:read("l")
  p:close()
  return d
end

function M.sleep(s) socket.sleep(s) end
function M.now() return socket.gettime() end

-- Polls pred until it returns true or `seconds` (default 5) pass; returns its last answer.
function M.wait_for(pred, seconds)
  local deadline = M.now() + (seconds or 5)
  while M.now() < deadline do
    if pred() then return true end
    M.sleep(0.02)
  end
  return pred()
end

-- Runs a shell command; returns exit code, stdout, stderr.
function M.sh(cmd)
  local dir = M.tmpdir()
  local ok, _, code = os.execute(cmd .. " >" .. dir .. "/out 2>" .. dir .. "/err")
  local out, err = M.read_file(dir .. "/out"), M.read_file(dir .. "/err")
  os.execute("rm -rf " .. M.quote(dir))
  return ok and 0 or code, out, err
end

local function env_prefix(env)
  local parts = {}
  for k, v in pairs(env or {}) do
    if v ~= false then parts[#parts + 1] = k .. "=" .. M.quote(v) end
  end
  table.sort(parts)
  local unset = {}
  for k, v in pairs(env or {}) do
    if v == false then unset[#unset + 1] = "-u " .. k end
  end
  return "env " .. table.concat(unset, " ") .. " " .. table.concat(parts, " ")
end

-- Runs the orrery binary with args (a string) and env (a table; false unsets a variable).
function M.orrery(args, env)
  return M.sh(env_prefix(env) .. " " .. M.quote(M.bin) .. " " .. args)
end

-- Parses JSON log lines; returns an array of decoded objects (non-JSON lines are skipped).
function M.log_lines(text)
  local out = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local o = cjson.decode(line)
    if type(o) == "table" then out[#out + 1] = o end
  end
  return out
end

-- ---- Database ----

function M.psql(url, sql)
  return M.sh("psql -X -q -At -v ON_ERROR_STOP=1 " .. M.quote(url) .. " -c " .. M.quote(sql))
end

local db_counter = 0
-- A fresh database owned by the schema owner role `orrery`. Returns its name, the app role's URL
-- for it (what the server uses) and the owner's URL (what migrations use).
function M.create_database()
  db_counter = db_counter + 1
  local name = string.format("orrery_t_%d_%d_%d", os.time(), math.random(1, 1e6), db_counter)
  local code, _, err = M.psql(M.admin_url, "CREATE DATABASE " .. name .. " OWNER orrery")
  assert(code == 0, "create database: " .. tostring(err))
  local url = M.app_url:gsub("/orrery$", "/" .. name)
  local owner = M.owner_url:gsub("/orrery$", "/" .. name)
  return name, url, owner
end

function M.drop_database(name)
  M.psql(M.admin_url, "DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)")
end

function M.db_stop() return M.sh(M.quote(M.root .. "/scripts/db.sh") .. " stop") end
function M.db_start() return M.sh(M.quote(M.root .. "/scripts/db.sh") .. " start") end

-- ---- Server ----

-- A port nothing listens on right now (the kernel's pick for a throwaway socket).
function M.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return math.tointeger(tonumber(port))
end

local Server = {}
Server.__index = Server

-- Starts `orrery serve` on a free port with its own database (migrated unless opts.migrate is
-- false). opts.env adds or overrides environment variables.
function M.start_server(opts)
  opts = opts or {}
  local self = setmetatable({ dir = M.tmpdir() }, Server)
  if opts.database_url then
    self.database_url = opts.database_url
  else
    self.db_name, self.database_url, self.owner_url = M.create_database()
  end
  local env = {
    DATABASE_URL = self.database_url,
    ORRERY_MIGRATION_DATABASE_URL = self.owner_url or self.database_url,
    ORRERY_LISTEN = "127.0.0.1:" .. M.free_port(),
    ORRERY_ENV = "test",
    ORRERY_LOG_LEVEL = "info",
    ORRERY_MIGRATIONS_DIR = M.root .. "/migrations",
    ORRERY_JWT_SECRET = "test-secret-test-secret-test-secret-0123",
  }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  self.env = env
  local port = tonumber(env.ORRERY_LISTEN:match(":(%d+)$"))
  if opts.migrate ~= false then
    local code, _, err = M.orrery("migrate", env)
    assert(code == 0, "migrate failed: " .. tostring(err))
  end
  self.log = self.dir .. "/server.log"
  local cmd = string.format("%s %s serve >%s 2>&1 & echo $! >%s/pid; wait $!; echo $? >%s/code",
    env_prefix(env), M.quote(M.bin), self.log, self.dir, self.dir)
  os.execute("sh -c " .. M.quote(cmd) .. " >/dev/null 2>&1 &")
  local deadline = M.now() + (M.asan and 30 or 10)
  while M.now() < deadline do
    self.pid = self.pid or tonumber(M.read_file(self.dir .. "/pid") or "")
    local c = M.connect(port)
    if c then c:close(); self.port = port; return self end
    if M.read_file(self.dir .. "/code") then break end
    M.sleep(0.02)
  end
  error("server did not start; log:\n" .. tostring(M.read_file(self.log)))
end

function Server:logs() return M.read_file(self.log) or "" end

-- Runs q in the server's database as the superuser (row-level security does not apply); asserts
-- it succeeded and returns its output without trailing whitespace.
function Server:sql(q)
  local url = M.admin_url:gsub("/postgres%?", "/" .. self.db_name .. "?")
  local code, out, err = M.psql(url, q)
  luassert.equal(0, code, err)
  return (out or ""):gsub("%s+$", "")
end

function Server:alive()
  return self.pid ~= nil and os.execute("kill -0 " .. self.pid .. " 2>/dev/null") == true
end

function Server:signal(sig)
  os.execute("kill -" .. (sig or "TERM") .. " " .. self.pid .. " 2>/dev/null")
end

-- Waits for the process to exit; returns its exit code or nil on timeout.
function Server:wait(timeout)
  local deadline = M.now() + (timeout or 15)
  while M.now() < deadline do
    local code = M.read_file(self.dir .. "/code")
    if code and code:match("%d") then return tonumber(code:match("%d+")) end
    M.sleep(0.02)
  end
  return nil
end

-- Stops the server (SIGTERM, then SIGKILL) and drops its database.
function Server:stop()
  if self.pid and not M.read_file(self.dir .. "/code") then
    self:signal("TERM")
    if not self:wait(15) then self:signal("KILL"); self:wait(5) end
  end
  if self.db_name then M.drop_database(self.db_name) end
  os.execute("rm -rf " .. M.quote(self.dir))
end

-- ---- HTTP ----

function M.connect(port, bind_ip)
  local c = socket.tcp()
  c:settimeout(10)
  if bind_ip then assert(c:bind(bind_ip, 0)) end
  local ok, err = c:connect("127.0.0.1", port)
  if not ok then c:close(); return nil, err end
  return c
end

-- Reads a whole HTTP/1.1 response from c (which the server or Connection: close ends).
function M.read_response(c)
  local status_line, err = c:receive("*l")
  if not status_line then return nil, err end
  local res = { headers = {}, status_line = status_line }
  res.status = tonumber(status_line:match("^HTTP/%d%.%d (%d%d%d)"))
  while true do
    local line = c:receive("*l")
    if not line or line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.-)%s*$")
    if k then res.headers[k:lower()] = v end
  end
  local len = tonumber(res.headers["content-length"] or "")
  if len then
    res.body = len > 0 and c:receive(len) or ""
  elseif (res.headers["transfer-encoding"] or ""):lower() == "chunked" then
    local parts = {}
    while true do
      local size = tonumber((c:receive("*l") or "0"):match("%x+") or "0", 16)
      if size == 0 then c:receive("*l"); break end
      parts[#parts + 1] = c:receive(size)
      c:receive("*l")
    end
    res.body = table.concat(parts)
  else
    local data, _, partial = c:receive("*a")
    res.body = data or partial
  end
  if (res.headers["content-type"] or ""):find("json") then res.json = cjson.decode(res.body or "") end
  return res
end

-- request(port, method, path, {headers = {...}, body = "...", json = table})
function M.request(port, method, path, opts)
  opts = opts or {}
  local body = opts.body
  local headers = { Host = "127.0.0.1", Connection = "close" }
  if opts.json ~= nil then
    body = cjson.encode(opts.json)
    headers["Content-Type"] = "application/json"
  end
  if body then headers["Content-Length"] = tostring(#body) end
  for k, v in pairs(opts.headers or {}) do headers[k] = v or nil end
  local lines = { method .. " " .. path .. " HTTP/1.1" }
  for k, v in pairs(headers) do lines[#lines + 1] = k .. ": " .. v end
  local c = assert(M.connect(port))
  c:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
  local res, err = M.read_response(c)
  c:close()
  assert(res, "no response: " .. tostring(err))
  return res
end

function M.get(port, path, opts) return M.request(port, "GET", path, opts) end

function M.urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- "?a=1&b=2" from a table ("" when empty; keys sorted, so URLs and failures read the same every run).
function M.query(params)
  local keys, parts = {}, {}
  for k in pairs(params or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = M.urlencode(k) .. "=" .. M.urlencode(params[k]) end
  return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

-- ---- API accounts ----

M.PASSWORD = "correct horse battery staple"

local email_counter = 0
-- An address no other spec or run uses: <tag>-<time>-<random>-<n>@example.com.
function M.new_email(tag)
  email_counter = email_counter + 1
  return string.format("%s-%d-%d-%d@example.com", tag, os.time(), math.random(1, 1e6), email_counter)
end

-- Registers a new account on the server at port (email from prefix, password M.PASSWORD, plus the
-- register fields in extra: timezone, name) and returns a client bound to it:
-- {id, email, password, token, call(method, path, opts)} where opts = {json=, body=, headers=}
-- (a raw body is sent as application/json; the bearer token is always sent).
function M.new_user(port, prefix, extra)
  local body = { email = M.new_email(prefix or "user"), password = M.PASSWORD }
  for k, v in pairs(extra or {}) do body[k] = v end
  local res = M.request(port, "POST", "/api/auth/register", { json = body })
  luassert.equal(201, res.status, res.body)
  local u = { id = res.json.user.id, email = body.email, password = body.password, token = res.json.access_token }
  function u.call(method, path, opts)
    opts = opts or {}
    local headers = { Authorization = "Bearer " .. u.token }
    for k, v in pairs(opts.headers or {}) do headers[k] = v end
    if opts.body then headers["Content-Type"] = "application/json" end
    return M.request(port, method, path, { json = opts.json, body = opts.body, headers = headers })
  end
  return u
end

-- new_user, then made admin in the server's database (the role is read from there on every request).
function M.new_admin(srv, prefix)
  local u = M.new_user(srv.port, prefix or "admin")
  srv:sql("UPDATE users SET role = 'admin' WHERE id = '" .. u.id .. "'")
  return u
end

-- A 400 invalid_field response naming field.
function M.assert_bad_field(res, field)
  luassert.equal(400, res.status, res.body)
  luassert.is_table(res.json and res.json.error, res.body)
  luassert.equal("invalid_field", res.json.error.code, res.body)
  luassert.equal(field, res.json.error.details and res.json.error.details.field, res.body)
end

M.unpack = unpack
return M
