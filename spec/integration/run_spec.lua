-- `make run`'s script (scripts/run.sh): migrates, serves, prints where, and lets the
-- environment win over what it would choose.
local h = require("helpers")

describe("make run (scripts/run.sh)", function()
  it("migrates, serves /healthz, prints the URL and the DATABASE_URL, and stops on Ctrl-C", function()
    local db, url, owner = h.create_database()
    local port = h.free_port()
    local dir = h.tmpdir()
    finally(function()
      os.execute("kill -INT $(cat " .. dir .. "/pid) 2>/dev/null")
      h.drop_database(db)
      os.execute("rm -rf " .. h.quote(dir))
    end)
    local env = string.format("ORRERY_BIN=%s ORRERY_LISTEN=127.0.0.1:%d DATABASE_URL=%s " ..
      "ORRERY_MIGRATION_DATABASE_URL=%s ORRERY_LOG_LEVEL=warn", h.quote(h.bin), port, h.quote(url), h.quote(owner))
    local cmd = string.format("env %s %s/scripts/run.sh >%s/out 2>&1 & echo $! >%s/pid; wait $!; echo $? >%s/code",
      env, h.root, dir, dir, dir)
    os.execute("sh -c " .. h.quote(cmd) .. " >/dev/null 2>&1 &")
    local res
    local deadline = h.now() + 30
    repeat
      local c = h.connect(port)
      if c then c:close(); res = h.get(port, "/readyz") else h.sleep(0.1) end
    until res or h.now() > deadline
    assert.is_table(res, "not serving; output:\n" .. tostring(h.read_file(dir .. "/out")))
    assert.equal(200, res.status, "migrated before serving")
    assert.equal(200, h.get(port, "/healthz").status)
    local out = h.read_file(dir .. "/out")
    assert.matches("serving http://127%.0%.0%.1:" .. port, out)
    assert.matches("DATABASE_URL=postgresql://orrery_app:%*%*%*@127%.0%.0%.1:%d+/" .. db, out)
    assert.is_nil(out:find(url, 1, true), "the password is not printed")
    os.execute("kill -INT $(cat " .. dir .. "/pid)")
    local code
    deadline = h.now() + 15
    repeat
      code = h.read_file(dir .. "/code")
      if not code then h.sleep(0.05) end
    until code or h.now() > deadline
    assert.equal("0", code and code:match("%d+"))
    assert.is_nil(h.connect(port))
  end)
end)
