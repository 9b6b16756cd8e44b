-- `orrery migrate` against the real PostgreSQL: ordering, the Flyway history, refusals, rollback of a
-- failing migration, two migrators at once, and the shipped migrations/. Each test gets its own
-- database (owned by the app role, created with the admin URL) and its own migrations directory.
-- ORRERY_BIN picks the binary (the ASan build in `make test-asan`).

-- ---- Local helpers ----

local function spec_root()
  local src = debug.getinfo(1, "S").source:sub(2)
  local dir = src:match("^(.*)/spec/integration/[^/]*$") or "."
  local p = assert(io.popen("cd '" .. dir .. "' && pwd"))
  local root = p:read("l")
  p:close()
  return root
end

local ROOT = spec_root()
local BIN = os.getenv("ORRERY_BIN") or (ROOT .. "/build/bin/orrery")

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs a shell command; returns its exit code and everything it printed (stdout then stderr).
local function run(cmd)
  local out, errf = os.tmpname(), os.tmpname()
  local ok, _, code = os.execute("(" .. cmd .. ") >" .. q(out) .. " 2>" .. q(errf))
  local text = ""
  for _, f in ipairs({ out, errf }) do
    local h = io.open(f, "rb")
    if h then text = text .. h:read("a"); h:close() end
    os.remove(f)
  end
  return ok and 0 or code, text
end

local function sh(cmd)
  local code, text = run(cmd)
  assert(code == 0, cmd .. " failed (" .. tostring(code) .. "): " .. text)
  return (text:gsub("%s+$", ""))
end

local ADMIN_URL = sh(q(ROOT .. "/scripts/db.sh") .. " admin-url")
local APP_URL = sh(q(ROOT .. "/scripts/db.sh") .. " owner-url")

-- Query on url; rows as lists of strings (psql unaligned, tuples only, fields split on '|').
local function psql(url, sql)
  local out = sh("psql -X -q -A -t -v ON_ERROR_STOP=1 -d " .. q(url) .. " -c " .. q(sql))
  local rows = {}
  for line in (out .. "\n"):gmatch("([^\n]*)\n") do
    if line ~= "" then
      local row = {}
      for field in (line .. "|"):gmatch("([^|]*)|") do row[#row + 1] = field end
      rows[#rows + 1] = row
    end
  end
  return rows
end

local function scalar(url, sql) return psql(url, sql)[1][1] end

math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)

local created_dbs, created_dirs = {}, {}

-- A fresh database owned by the app role; returns the app URL pointing at it.
local function new_database()
  local name = ("orrery_spec_migrate_%d_%d"):format(os.time(), math.random(1, 1e9))
  sh("psql -X -q -v ON_ERROR_STOP=1 -d " .. q(ADMIN_URL) .. " -c " .. q("CREATE DATABASE " .. name .. " OWNER orrery"))
  created_dbs[#created_dbs + 1] = name
  local url = APP_URL:gsub("/[^/?]*(%??[^/]*)$", "/" .. name .. "%1", 1)
  return url
end

local function new_dir(files)
  local dir = sh("mktemp -d")
  created_dirs[#created_dirs + 1] = dir
  for name, content in pairs(files or {}) do
    local f = assert(io.open(dir .. "/" .. name, "wb"))
    f:write(content)
    f:close()
  end
  return dir
end

local function write(dir, name, content)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(content)
  f:close()
end

local function migrate_cmd(url, dir)
  return "DATABASE_URL=" .. q(url) .. " ORRERY_MIGRATIONS_DIR=" .. q(dir) .. " ORRERY_LOG_LEVEL=info " .. q(BIN) ..
    " migrate"
end

-- Under the ASan build a leak or memory error on an error path would hide behind the expected
-- non-zero exit; its report is in the output, so every run is checked for one.
local function assert_clean(out)
  assert(not out:find("Sanitizer", 1, true) and not out:find("runtime error:", 1, true), out)
end

local function migrate(url, dir)
  local code, out = run(migrate_cmd(url, dir))
  assert_clean(out)
  return code, out
end

local function history(url)
  return psql(url, "SELECT version, description, script, checksum, success, type, installed_by, execution_time >= 0 "
    .. "FROM flyway_schema_history ORDER BY installed_rank")
end

local function table_exists(url, name)
  return scalar(url, "SELECT to_regclass('" .. name .. "') IS NOT NULL") == "t"
end

-- ---- Specs ----

describe("orrery migrate", function()
  -- Checksums computed with Python's zlib the way Flyway does (CRC32 over each line's bytes
  -- without terminators, as a signed int32); see spec/unit/migrate_spec.lua.
  local CREATE_LOG = "CREATE TABLE log (seq serial PRIMARY KEY, v text NOT NULL);\n"
  local INSERT_1_1 = "INSERT INTO log (v) VALUES ('1.1');\n"
  local INSERT_2 = "INSERT INTO log (v) VALUES ('2');\n"
  local INSERT_10 = "INSERT INTO log (v) VALUES ('10');\n"
  local ordered = {
    ["V1__create_log.sql"] = CREATE_LOG,
    ["V1.1__point_one.sql"] = INSERT_1_1,
    ["V2__two.sql"] = INSERT_2,
    ["V10__ten.sql"] = INSERT_10,
    ["README.md"] = "not a migration",
  }

  teardown(function()
    for _, name in ipairs(created_dbs) do
      run("psql -X -q -d " .. q(ADMIN_URL) .. " -c " .. q("DROP DATABASE IF EXISTS " .. name .. " WITH (FORCE)"))
    end
    for _, dir in ipairs(created_dirs) do run("rm -rf " .. q(dir)) end
  end)

  it("applies migrations in version order (V2 before V10) and records Flyway history rows", function()
    local url, dir = new_database(), new_dir(ordered)
    local code, out = migrate(url, dir)
    assert.are.equal(0, code, out)
    assert.matches("4 applied", out, 1, true)

    assert.are.same({ { "1.1" }, { "2" }, { "10" } }, psql(url, "SELECT v FROM log ORDER BY seq"))
    assert.are.same({
      { "1", "create log", "V1__create_log.sql", "1545868596", "t", "SQL", "orrery", "t" },
      { "1.1", "point one", "V1.1__point_one.sql", "-1112161110", "t", "SQL", "orrery", "t" },
      { "2", "two", "V2__two.sql", "-1256795012", "t", "SQL", "orrery", "t" },
      { "10", "ten", "V10__ten.sql", "-1039440571", "t", "SQL", "orrery", "t" },
    }, history(url))
    assert.are.same({ { "1" }, { "2" }, { "3" }, { "4" } },
      psql(url, "SELECT installed_rank FROM flyway_schema_history ORDER BY installed_rank"))
    assert.is_true(table_exists(url, "flyway_schema_history_s_idx"))
  end)

  it("applies nothing on a second run, and only the new file once one is added", function()
    local url, dir = new_database(), new_dir(ordered)
    assert.are.equal(0, (migrate(url, dir)))
    local code, out = migrate(url, dir)
    assert.are.equal(0, code, out)
    assert.matches("0 applied", out, 1, true)
    assert.are.equal("3", scalar(url, "SELECT count(*) FROM log"))

    write(dir, "V11__eleven.sql", "INSERT INTO log (v) VALUES ('11');\n")
    code, out = migrate(url, dir)
    assert.are.equal(0, code, out)
    assert.matches("1 applied", out, 1, true)
    assert.are.same({ { "1.1" }, { "2" }, { "10" }, { "11" } }, psql(url, "SELECT v FROM log ORDER BY seq"))
    assert.are.equal("5", scalar(url, "SELECT count(*) FROM flyway_schema_history"))
  end)

  it("refuses to run when an applied file changed, naming it and both checksums, and runs nothing", function()
    local url, dir = new_database(), new_dir(ordered)
    assert.are.equal(0, (migrate(url, dir)))
    write(dir, "V2__two.sql", "INSERT INTO log (v) VALUES ('two');\n")
    write(dir, "V20__new_table.sql", "CREATE TABLE should_not_exist (id int);\n")

    local code, out = migrate(url, dir)
    assert.are_not.equal(0, code)
    assert.matches("V2__two.sql", out, 1, true)
    assert.matches("checksum mismatch", out, 1, true)
    assert.matches("-1256795012", out, 1, true)  -- the recorded checksum
    assert.is_false(table_exists(url, "should_not_exist"))
    assert.are.equal("4", scalar(url, "SELECT count(*) FROM flyway_schema_history"))
  end)

  it("rolls back a failing migration entirely, records nothing for it, and exits non-zero", function()
    local url = new_database()
    local dir = new_dir({
      ["V1__create_log.sql"] = CREATE_LOG,
      ["V2__broken.sql"] = "CREATE TABLE partial (id int);\nINSERT INTO log (v) VALUES ('x');\n"
        .. "SELECT nope FROM missing_table;\n",
      ["V3__after.sql"] = "CREATE TABLE after_broken (id int);\n",
    })
    local code, out = migrate(url, dir)
    assert.are_not.equal(0, code)
    assert.matches("V2__broken.sql", out, 1, true)
    assert.matches("missing_table", out, 1, true)
    assert.matches("does not exist", out, 1, true)
    assert.matches("line 3", out, 1, true)

    assert.is_false(table_exists(url, "partial"))
    assert.is_false(table_exists(url, "after_broken"))
    assert.are.equal("0", scalar(url, "SELECT count(*) FROM log"))
    assert.are.same({ { "1" } }, psql(url, "SELECT version FROM flyway_schema_history"))
    -- The advisory lock was released: a fixed file applies on the next run.
    write(dir, "V2__broken.sql", "CREATE TABLE partial (id int);\n")
    code, out = migrate(url, dir)
    assert.are.equal(0, code, out)
    assert.matches("2 applied", out, 1, true)
    assert.is_true(table_exists(url, "after_broken"))
  end)

  it("refuses a pending migration older than the latest applied one", function()
    local url, dir = new_database(), new_dir(ordered)
    assert.are.equal(0, (migrate(url, dir)))
    write(dir, "V3__late.sql", "CREATE TABLE late (id int);\n")
    local code, out = migrate(url, dir)
    assert.are_not.equal(0, code)
    assert.matches("V3__late.sql", out, 1, true)
    assert.matches("out of order", out, 1, true)
    assert.is_false(table_exists(url, "late"))
  end)

  it("refuses when an applied migration's file is gone or a recorded migration failed", function()
    local url, dir = new_database(), new_dir(ordered)
    assert.are.equal(0, (migrate(url, dir)))
    os.remove(dir .. "/V10__ten.sql")
    local code, out = migrate(url, dir)
    assert.are_not.equal(0, code)
    assert.matches("V10__ten.sql", out, 1, true)
    assert.matches("missing", out, 1, true)

    write(dir, "V10__ten.sql", INSERT_10)
    psql(url, "UPDATE flyway_schema_history SET success = false WHERE version = '2'")
    code, out = migrate(url, dir)
    assert.are_not.equal(0, code)
    assert.matches("failed migration", out, 1, true)
    assert.matches("V2__two.sql", out, 1, true)
  end)

  it("refuses a migrations directory with a badly named V file", function()
    local url, dir = new_database(), new_dir({ ["V1__ok.sql"] = "SELECT 1;\n", ["Vone__bad.sql"] = "SELECT 1;\n" })
    local code, out = migrate(url, dir)
    assert.are_not.equal(0, code)
    assert.matches("Vone__bad.sql", out, 1, true)
    assert.are.equal("f", scalar(url, "SELECT to_regclass('flyway_schema_history') IS NOT NULL"))
  end)

  it("lets two processes started at once both succeed, applying each migration exactly once", function()
    local url = new_database()
    local dir = new_dir({
      ["V1__slow.sql"] = "SELECT pg_sleep(1);\nCREATE TABLE slow (id int);\n",
      ["V2__after.sql"] = "INSERT INTO slow VALUES (1);\n",
    })
    local outs = { os.tmpname(), os.tmpname() }
    local script = {}
    for i = 1, 2 do
      script[#script + 1] = "(" .. migrate_cmd(url, dir) .. " >" .. q(outs[i]) .. " 2>&1; echo \"rc=$?\" >>" ..
        q(outs[i]) .. ") &"
    end
    script[#script + 1] = "wait"
    sh(table.concat(script, "\n"))

    local texts = {}
    for i = 1, 2 do
      local f = assert(io.open(outs[i], "rb"))
      texts[i] = f:read("a")
      f:close()
      os.remove(outs[i])
      assert_clean(texts[i])
      assert.matches("rc=0", texts[i], 1, true)
    end
    local all = texts[1] .. texts[2]
    assert.matches("2 applied", all, 1, true)
    assert.matches("0 applied", all, 1, true)
    assert.matches("waiting", all, 1, true)  -- the second one blocked on the lock
    assert.are.same({ { "1", "1" }, { "2", "1" } },
      psql(url, "SELECT version, count(*) FROM flyway_schema_history GROUP BY version ORDER BY version"))
    assert.are.equal("1", scalar(url, "SELECT count(*) FROM slow"))
  end)

  it("applies the shipped migrations/ cleanly, twice", function()
    local url, dir = new_database(), ROOT .. "/migrations"
    local code, out = migrate(url, dir)
    assert.are.equal(0, code, out)
    local files = sh("ls " .. q(dir) .. " | grep -c '^V.*\\.sql$'")
    assert.are.equal(files, scalar(url, "SELECT count(*) FROM flyway_schema_history WHERE success"))
    code, out = migrate(url, dir)
    assert.are.equal(0, code, out)
    assert.matches("0 applied", out, 1, true)

    -- V1's users table keeps its promises in the schema itself. (V2's row-level security binds the
    -- owner too: orrery.ctx = 'auth' is what the server sets to create accounts.)
    local auth = "SET orrery.ctx = 'auth'; "
    assert.are.same({ { "user", "UTC", "{}", "" } }, psql(url, auth .. "INSERT INTO users (email, password_hash) "
      .. "VALUES ('a@example.com', 'x') RETURNING role, timezone, preferences, name"))
    local bad = {
      "INSERT INTO users (email, password_hash) VALUES ('A@example.com', 'x')",
      "INSERT INTO users (email, password_hash) VALUES ('a@example.com', 'x')",
      "INSERT INTO users (email, password_hash) VALUES ('b@example.com', 'x') RETURNING 1; "
        .. "UPDATE users SET role = 'root' WHERE email = 'b@example.com'",
      "INSERT INTO users (email, password_hash, preferences) VALUES ('c@example.com', 'x', '[]')",
      "INSERT INTO users (email, password_hash) VALUES ('ab', 'x')",
    }
    for _, sql in ipairs(bad) do
      local c = run("psql -X -q -v ON_ERROR_STOP=1 -d " .. q(url) .. " -c " .. q(auth .. sql))
      assert.are_not.equal(0, c, sql)
    end
    -- Without a user or context, row-level security shows and accepts nothing.
    assert.are.equal("0", scalar(url, "SELECT count(*) FROM users"))
    assert.are_not.equal(0, run("psql -X -q -v ON_ERROR_STOP=1 -d " .. q(url) .. " -c "
      .. q("INSERT INTO users (email, password_hash) VALUES ('d@example.com', 'x')")))
  end)
end)
