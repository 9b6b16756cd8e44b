-- A small HTTP/1.1 server for specs of outbound requests (orrery.http.fetch): run as
--   lua5.4 spec/support/http_fixture.lua PORT
-- It serves each connection in a coroutine over non-blocking sockets, so a slow answer does not
-- hold up the others. Routes:
--   GET  /hello        200 "hello" with X-Fixture: yes
--   POST /echo         200 with the request body, and the request's method and headers as JSON
--   GET  /big?n=N      200 with N bytes of "x"
--   GET  /slow?s=S     answers after S seconds
--   GET  /redirect     302 to /hello
--   GET  /status/CODE  that status
local socket = require("socket")

local port = tonumber(arg[1]) or error("usage: http_fixture.lua PORT")
local server = assert(socket.bind("127.0.0.1", port))
server:settimeout(0)

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
end

local function respond(c, status, body, headers)
  local lines = { ("HTTP/1.1 %d Fixture"):format(status), "Content-Length: " .. #body, "Connection: close" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  local data = table.concat(lines, "\r\n") .. "\r\n\r\n" .. body
  local i = 1
  while i <= #data do
    local sent, err, partial = c:send(data, i)
    if sent then i = sent + 1 elseif err == "timeout" then i = partial + 1 coroutine.yield("w") else return end
  end
end

local function receive(c, pattern)
  local buf = ""
  while true do
    local data, err, partial = c:receive(pattern)
    if data then return buf .. data end
    buf = buf .. (partial or "")
    if err ~= "timeout" then return nil end
    if type(pattern) == "number" then pattern = pattern - #(partial or "") end
    coroutine.yield("r")
  end
end

local function serve(c)
  local line = receive(c, "*l")
  if not line then return end
  local method, path = line:match("^(%u+) (%S+)")
  local headers, length = {}, 0
  while true do
    local h = receive(c, "*l")
    if not h or h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.*)$")
    if k then
      headers[#headers + 1] = json_string(k:lower()) .. ":" .. json_string(v)
      if k:lower() == "content-length" then length = tonumber(v) or 0 end
    end
  end
  local body = length > 0 and receive(c, length) or ""
  if path == "/hello" then
    respond(c, 200, "hello", { ["X-Fixture"] = "yes", ["Content-Type"] = "text/plain" })
  elseif path == "/echo" then
    respond(c, 200, "{" .. '"method":' .. json_string(method) .. ',"body":' .. json_string(body)
      .. ',"headers":{' .. table.concat(headers, ",") .. "}}", { ["Content-Type"] = "application/json" })
  elseif path:match("^/big") then
    respond(c, 200, string.rep("x", tonumber(path:match("n=(%d+)")) or 1000))
  elseif path:match("^/slow") then
    local until_t = socket.gettime() + (tonumber(path:match("s=([%d.]+)")) or 1)
    while socket.gettime() < until_t do coroutine.yield("t") end
    respond(c, 200, "slow")
  elseif path == "/redirect" then
    respond(c, 302, "", { Location = "/hello" })
  elseif path:match("^/status/%d+$") then
    respond(c, tonumber(path:match("%d+")), "")
  else
    respond(c, 404, "not found")
  end
end

local clients = {}
while true do
  local c = server:accept()
  if c then
    c:settimeout(0)
    clients[#clients + 1] = { sock = c, co = coroutine.create(serve) }
  end
  local reads, busy = { server }, false
  for i = #clients, 1, -1 do
    local cl = clients[i]
    local ok, want = coroutine.resume(cl.co, cl.sock)
    if not ok or coroutine.status(cl.co) == "dead" then
      cl.sock:close()
      table.remove(clients, i)
    elseif want == "r" then
      reads[#reads + 1] = cl.sock
    else
      busy = true
    end
  end
  socket.select(reads, nil, busy and 0.01 or 0.05)
end
