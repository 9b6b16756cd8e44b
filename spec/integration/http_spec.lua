-- The HTTP layer of the real `orrery serve`: routing, the error shape, and every middleware.
local h = require("helpers")
local cjson = require("cjson.safe")

local function assert_error(res, status, code)
  assert.equal(status, res.status, res.body)
  assert.matches("^application/json", res.headers["content-type"])
  assert.is_table(res.json, "JSON error body")
  assert.equal(code, res.json.error.code)
  assert.is_string(res.json.error.message)
end

describe("http", function()
  local srv
  setup(function()
    srv = h.start_server({ env = { ORRERY_MAX_BODY_BYTES = "1024" } })
  end)
  teardown(function() srv:stop() end)

  it("GET /healthz answers 200 JSON with a generated request id", function()
    local res = h.get(srv.port, "/healthz")
    assert.equal(200, res.status)
    assert.same({ status = "ok" }, res.json)
    assert.matches("^%x+$", res.headers["x-request-id"])
    assert.equal(32, #res.headers["x-request-id"])
  end)

  it("keeps a valid X-Request-Id and replaces an unsafe one", function()
    local res = h.get(srv.port, "/healthz", { headers = { ["X-Request-Id"] = "abc-123.z" } })
    assert.equal("abc-123.z", res.headers["x-request-id"])
    res = h.get(srv.port, "/healthz", { headers = { ["X-Request-Id"] = "bad id\"<x>" } })
    assert.matches("^%x+$", res.headers["x-request-id"])
  end)

  it("logs each request as one JSON line carrying its request id", function()
    h.get(srv.port, "/healthz", { headers = { ["X-Request-Id"] = "trace-me-42" } })
    h.sleep(0.1)
    local found
    for _, l in ipairs(h.log_lines(srv:logs())) do
      if l.request_id == "trace-me-42" and l.msg == "request" then found = l end
    end
    assert.is_table(found)
    assert.equal("/healthz", found.path)
    assert.equal(200, found.status)
    assert.equal("info", found.level)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", found.time)
  end)

  it("answers 404 with the JSON error shape for unknown routes", function()
    assert_error(h.get(srv.port, "/nope"), 404, "not_found")
    assert_error(h.get(srv.port, "/api/tasks/"), 404, "not_found")
  end)

  it("answers 405 with Allow when the method is wrong", function()
    local res = h.request(srv.port, "POST", "/healthz")
    assert_error(res, 405, "method_not_allowed")
    assert.equal("GET, HEAD", res.headers["allow"])
  end)

  it("serves HEAD from GET routes without a body", function()
    local res = h.request(srv.port, "HEAD", "/healthz")
    assert.equal(200, res.status)
  end)

  it("parses JSON bodies", function()
    local res = h.request(srv.port, "POST", "/api/_test/echo", { json = { a = 1, b = { "x" } } })
    assert.equal(200, res.status)
    assert.same({ received = { a = 1, b = { "x" } } }, res.json)
  end)

  it("accepts a charset on the JSON content type", function()
    local res = h.request(srv.port, "POST", "/api/_test/echo",
      { body = '{"k":"v"}', headers = { ["Content-Type"] = "application/json; charset=utf-8" } })
    assert.equal(200, res.status)
  end)

  it("answers 400 with the position for malformed JSON", function()
    local res = h.request(srv.port, "POST", "/api/_test/echo",
      { body = '{"a": 1,\n "b": }', headers = { ["Content-Type"] = "application/json" } })
    assert_error(res, 400, "invalid_json")
    assert.equal(2, res.json.error.details.line)
    assert.is_number(res.json.error.details.column)
    assert.is_number(res.json.error.details.position)
  end)

  it("answers 400 for duplicate keys, non-objects, empty bodies and invalid UTF-8", function()
    for _, body in ipairs({ '{"a":1,"a":2}', "[1,2]", "42", '{"s":"\255\254"}' }) do
      local res = h.request(srv.port, "POST", "/api/_test/echo",
        { body = body, headers = { ["Content-Type"] = "application/json" } })
      assert_error(res, 400, "invalid_json")
    end
    local res = h.request(srv.port, "POST", "/api/_test/echo", { headers = { ["Content-Type"] = "application/json" } })
    assert_error(res, 400, "invalid_json")
    assert.equal("body", res.json.error.details.field)
  end)

  it("answers 415 for a body that is not JSON", function()
    local res = h.request(srv.port, "POST", "/api/_test/echo",
      { body = "a=1", headers = { ["Content-Type"] = "application/x-www-form-urlencoded" } })
    assert_error(res, 415, "unsupported_media_type")
    res = h.request(srv.port, "POST", "/api/_test/echo", { body = "{}" }) -- no content type at all
    assert_error(res, 415, "unsupported_media_type")
  end)

  it("answers 413 for a declared body over the limit", function()
    local res = h.request(srv.port, "POST", "/api/_test/echo",
      { body = '{"x":"' .. string.rep("a", 2000) .. '"}', headers = { ["Content-Type"] = "application/json" } })
    assert_error(res, 413, "payload_too_large")
    assert.equal(1024, res.json.error.details.max_bytes)
  end)

  it("answers 413 for a chunked body that grows over the limit", function()
    local c = assert(h.connect(srv.port))
    c:send("POST /api/_test/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" ..
      "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    local chunk = string.rep("a", 600)
    for _ = 1, 3 do c:send(string.format("%x\r\n%s\r\n", #chunk, chunk)) end
    c:send("0\r\n\r\n")
    local res = h.read_response(c)
    c:close()
    assert.equal(413, res.status)
  end)

  it("answers 400 for header values with control bytes", function()
    local c = assert(h.connect(srv.port))
    c:send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Evil: a\1b\r\nConnection: close\r\n\r\n")
    local res = h.read_response(c)
    c:close()
    assert.equal(400, res.status)
    assert.equal("bad_header", cjson.decode(res.body).error.code)
  end)

  it("refuses a 100 KB header without falling over", function()
    local res = h.get(srv.port, "/healthz", { headers = { ["X-Big"] = string.rep("b", 100 * 1024) } })
    assert.equal(431, res.status)
    assert.equal(200, h.get(srv.port, "/healthz").status)
  end)

  it("answers a handler that set no response with a bare 500", function()
    local res = h.get(srv.port, "/api/_test/unanswered")
    assert_error(res, 500, "internal")
    assert.equal("internal error", res.json.error.message)
    assert.is_nil(res.json.error.details)
  end)

  it("keeps connections alive across requests", function()
    local c = assert(h.connect(srv.port))
    for _ = 1, 3 do
      c:send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
      local res = h.read_response(c)
      assert.equal(200, res.status)
    end
    c:close()
  end)

  it("exposes Prometheus metrics by route, method and status", function()
    h.get(srv.port, "/healthz")
    h.get(srv.port, "/nope")
    local res = h.get(srv.port, "/metrics")
    assert.equal(200, res.status)
    assert.matches("^text/plain", res.headers["content-type"])
    local n = res.body:match('orrery_http_requests_total{route="/healthz",method="GET",status="200"} (%d+)')
    assert.is_true(tonumber(n) >= 1)
    assert.matches('orrery_http_requests_total{route="unmatched",method="",status="404"} %d+', res.body)
    assert.matches('orrery_http_request_duration_seconds_bucket{route="/healthz",method="GET",le="%+Inf"} %d+',
      res.body)
    assert.matches('orrery_db_pool_connections{state="size"} %d+', res.body)
    assert.matches('orrery_db_pool_connections{state="in_use"} %d+', res.body)
  end)
end)

describe("http connection limits", function()
  local srv
  setup(function()
    srv = h.start_server({ env = {
      ORRERY_WORKERS = "1", ORRERY_MAX_CONNECTIONS_PER_IP = "8", ORRERY_CONNECTION_TIMEOUT = "2",
    } })
  end)
  teardown(function() srv:stop() end)

  it("slow clients hold no worker, are capped per IP, and are timed out", function()
    -- Connections that never finish their headers, until the per-IP cap refuses one.
    local slow, refused = {}, 0
    for _ = 1, 12 do
      local c = h.connect(srv.port)
      if c then
        c:send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow[#slow + 1] = c
      else
        refused = refused + 1
      end
    end
    h.sleep(0.3)
    local held = {}
    for _, c in ipairs(slow) do
      c:settimeout(0.05)
      local _, err = c:receive("*l")
      if err == "timeout" then held[#held + 1] = c else c:close() end
    end
    assert.is_true(#held <= 8, "at most 8 held, got " .. #held)
    assert.is_true(#held >= 6, "the cap lets up to 8 in, got " .. #held)
    assert.is_true(refused + (#slow - #held) >= 4, "the rest were refused")
    -- Another address is served promptly by the single worker meanwhile.
    local t0 = h.now()
    local other = assert(h.connect(srv.port, "127.0.0.2"))
    other:send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.equal(200, h.read_response(other).status)
    other:close()
    assert.is_true(h.now() - t0 < 1)
    -- After the idle timeout the server has closed the slow ones.
    h.sleep(3.5)
    for _, c in ipairs(held) do
      c:settimeout(1)
      local data, err, partial = c:receive("*a")
      assert.is_true(err == nil or err == "closed", tostring(err))
      assert.is_true(data ~= nil or partial ~= nil)
      c:close()
    end
    assert.equal(200, h.get(srv.port, "/healthz").status)
  end)
end)
