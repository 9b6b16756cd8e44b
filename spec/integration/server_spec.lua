-- `orrery serve` as a process: readiness against the real database, configuration errors,
-- structured logs, and graceful shutdown.
local h = require("helpers")

describe("readiness", function()
  it("is ready when the database is reachable and migrations are current", function()
    local srv = h.start_server()
    finally(function() srv:stop() end)
    local res = h.get(srv.port, "/readyz")
    assert.equal(200, res.status, res.body)
    assert.equal("ready", res.json.status)
    assert.equal("ok", res.json.checks.database)
    assert.equal("current", res.json.checks.migrations)
    assert.equal("ok", res.json.checks.agents.status)
    assert.same({}, res.json.checks.agents.degraded)
  end)

  it("answers 503 while migrations are pending", function()
    local srv = h.start_server({ migrate = false })
    finally(function() srv:stop() end)
    local res = h.get(srv.port, "/readyz")
    assert.equal(503, res.status)
    assert.equal("not_ready", res.json.error.code)
    assert.equal("pending", res.json.error.details.checks.migrations)
    assert.equal("5", res.headers["retry-after"])
    assert.equal(200, h.get(srv.port, "/healthz").status)
  end)

  it("flips to 503 when PostgreSQL stops and back to 200 when it returns, without a restart", function()
    local srv = h.start_server({ env = { ORRERY_DB_TIMEOUT_MS = "2000" } })
    finally(function()
      h.db_start()
      srv:stop()
    end)
    assert.equal(200, h.get(srv.port, "/readyz").status)
    -- Load throughout: 8 connections hammering /readyz while PostgreSQL goes away and comes back.
    local wrk_out = srv.dir .. "/wrk.txt"
    os.execute(string.format("wrk -t1 -c8 -d6s http://127.0.0.1:%d/readyz >%s 2>&1 &", srv.port, wrk_out))
    h.sleep(1)
    local code = h.db_stop()
    assert.equal(0, code)
    local res = h.get(srv.port, "/readyz")
    assert.equal(503, res.status)
    assert.equal("unavailable", res.json.error.details.checks.database)
    assert.equal(200, h.get(srv.port, "/healthz").status, "liveness does not depend on the database")
    assert.equal(0, (h.db_start()))
    local status
    local deadline = h.now() + 10
    repeat
      status = h.get(srv.port, "/readyz").status
      if status ~= 200 then h.sleep(0.1) end
    until status == 200 or h.now() > deadline
    assert.equal(200, status)
    assert.is_true(srv:alive())
    -- Every answer under load was 200 or 503: no 500s, no dropped connections.
    deadline = h.now() + 10
    while not (h.read_file(wrk_out) or ""):find("Requests/sec") and h.now() < deadline do h.sleep(0.2) end
    local report = h.read_file(wrk_out)
    assert.matches("Requests/sec", report)
    assert.is_nil(report:find("Socket errors"), report)
    local metrics = h.get(srv.port, "/metrics").body
    assert.matches('route="/readyz",method="GET",status="503"} %d+', metrics)
    assert.matches('route="/readyz",method="GET",status="200"} %d+', metrics)
    assert.is_nil(metrics:find('route="/readyz",method="GET",status="5[0-9][0-24-9]"'), "only 200 and 503")
  end)
end)

describe("configuration errors", function()
  local cases = {
    { "ORRERY_LISTEN", "127.0.0.1:abc" },
    { "ORRERY_DB_POOL", "-1" },
    { "ORRERY_MAX_BODY_BYTES", "lots" },
    { "ORRERY_ENV", "staging" },
  }
  for _, c in ipairs(cases) do
    it("stop start-up with one line naming " .. c[1], function()
      local code, _, err = h.orrery("serve", { [c[1]] = c[2] })
      assert.equal(1, code)
      assert.matches("^orrery: configuration error: " .. c[1] .. ": ", err)
      assert.equal(1, select(2, err:gsub("\n", "")), "exactly one line")
    end)
  end

  it("refuses a port that is taken", function()
    local srv = h.start_server()
    finally(function() srv:stop() end)
    local code, _, err = h.orrery("serve", {
      ORRERY_LISTEN = "127.0.0.1:" .. srv.port, DATABASE_URL = srv.database_url,
      ORRERY_MIGRATIONS_DIR = h.root .. "/migrations",
    })
    assert.equal(1, code)
    assert.matches("cannot listen", err)
  end)
end)

describe("logs", function()
  it("are JSON lines and honour ORRERY_LOG_LEVEL", function()
    local srv = h.start_server({ env = { ORRERY_LOG_LEVEL = "warn" } })
    h.get(srv.port, "/healthz")
    srv:signal("TERM")
    assert.equal(0, srv:wait())
    local text = srv:logs()
    srv:stop()
    for line in text:gmatch("[^\n]+") do
      local o = require("cjson").decode(line)
      assert.is_string(o.time)
      assert.is_true(o.level == "warn" or o.level == "error", line)
    end
  end)
end)

describe("graceful shutdown", function()
  it("stops accepting, finishes the request in flight, then exits 0", function()
    local srv = h.start_server({ env = { ORRERY_SHUTDOWN_TIMEOUT = "10" } })
    finally(function() srv:stop() end)
    local body = '{"slow":"' .. string.rep("z", 100) .. '"}'
    local c = assert(h.connect(srv.port))
    c:send("POST /api/_test/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" ..
      "Connection: close\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body:sub(1, 20))
    h.sleep(0.2)
    srv:signal("TERM")
    h.sleep(0.3)
    assert.is_true(srv:alive(), "waits for the request in flight")
    local refused = h.connect(srv.port)
    assert.is_nil(refused, "no new connections while draining")
    c:send(body:sub(21))
    local res = h.read_response(c)
    c:close()
    assert.equal(200, res.status)
    assert.equal(string.rep("z", 100), res.json.received.slow)
    assert.equal(0, srv:wait(10))
    local logs = srv:logs()
    assert.matches("shutting down", logs)
    assert.matches('"msg":"stopped"', logs)
  end)

  it("gives up on requests that outlast ORRERY_SHUTDOWN_TIMEOUT", function()
    local srv = h.start_server({ env = { ORRERY_SHUTDOWN_TIMEOUT = "1" } })
    finally(function() srv:stop() end)
    local c = assert(h.connect(srv.port))
    c:send("POST /api/_test/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
    h.sleep(0.2)
    local t0 = h.now()
    srv:signal("INT")
    assert.equal(0, srv:wait(10))
    assert.is_true(h.now() - t0 < 5)
    assert.matches("cut off", srv:logs())
    c:close()
  end)
end)
