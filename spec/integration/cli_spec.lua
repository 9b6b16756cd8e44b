-- The `orrery` command line: version, help, usage errors, `run` and `check` of Lua scripts.
-- Runs the real binary (ORRERY_BIN, default build/bin/orrery); needs no database.
local cjson = require("cjson")

local BIN = os.getenv("ORRERY_BIN") or "/work/main/build/bin/orrery"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read_file(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function file_exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- Runs the binary with args (a list); returns exit code, stdout, stderr.
local function orrery(args, opts)
  opts = opts or {}
  local err_path = os.tmpname()
  local parts = {}
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  local cmd = string.format("%s%s %s 2>%s", opts.env or "", shell_quote(BIN), table.concat(parts, " "),
                            shell_quote(err_path))
  if opts.stdin then cmd = cmd .. " <" .. shell_quote(opts.stdin) end
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local _, _, code = p:close()
  local err = read_file(err_path)
  os.remove(err_path)
  return code, out, err
end

-- Lines of stderr that are JSON log records, decoded.
local function log_records(err)
  local records = {}
  for line in err:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then records[#records + 1] = cjson.decode(line) end
  end
  return records
end

describe("orrery CLI", function()
  local dir
  local created = {}

  local function script(name, source)
    local path = dir .. "/" .. name
    write_file(path, source)
    created[#created + 1] = path
    return path
  end

  setup(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. shell_quote(dir)))
  end)

  teardown(function()
    for _, path in ipairs(created) do os.remove(path) end
    os.remove(dir)
  end)

  it("binary exists", function()
    assert.is_true(file_exists(BIN), BIN)
  end)

  describe("version and help", function()
    it("prints the version", function()
      local code, out = orrery({ "version" })
      assert.are.equal(0, code)
      assert.matches("^orrery %d+%.%d+%.%d+[%w%.%-+]*\n$", out)
      local code2, out2 = orrery({ "--version" })
      assert.are.equal(0, code2)
      assert.are.equal(out, out2)
    end)

    it("prints help with --help", function()
      local code, out = orrery({ "--help" })
      assert.are.equal(0, code)
      assert.matches("usage: orrery", out)
      assert.matches("run FILE.lua", out, 1, true)
    end)

    it("exits 2 with usage on an unknown command", function()
      local code, out, err = orrery({ "frobnicate" })
      assert.are.equal(2, code)
      assert.are.equal("", out)
      assert.matches("unknown command 'frobnicate'", err, 1, true)
      assert.matches("usage: orrery", err)
    end)

    it("exits 2 with usage on an unknown flag", function()
      local code, _, err = orrery({ "--frobnicate" })
      assert.are.equal(2, code)
      assert.matches("unknown option '--frobnicate'", err, 1, true)
      assert.matches("usage: orrery", err)
    end)

    it("exits 2 when run or check has no file", function()
      for _, cmd in ipairs({ "run", "check" }) do
        local code, _, err = orrery({ cmd })
        assert.are.equal(2, code)
        assert.matches("usage: orrery", err)
      end
    end)
  end)

  describe("run", function()
    it("runs a script that uses orrery.json, orrery.time and orrery.log", function()
      local path = script("uses_api.lua", [[
local orrery = require("orrery")
assert(orrery == _G.orrery)
local doc = orrery.json.decode('{"items":[1,2,3],"name":"x"}')
print("sum", doc.items[1] + doc.items[2] + doc.items[3])
print("json", orrery.json.encode({ name = doc.name }))
print("when", orrery.time.format(orrery.time.parse("2026-01-02T05:04:05+02:00")))
print("now", orrery.time.now() > 1.7e9)
local bad, err = orrery.json.decode("{")
print("bad", bad, type(err))
orrery.log.info("hello from lua", { user = "u1", count = 3, nested = { ok = true } })
orrery.log("plain call")
orrery.log.debug("hidden at info")
orrery.log.warn("careful")
]])
      local code, out, err = orrery({ "run", path })
      assert.are.equal(0, code, err)
      assert.matches("sum\t6\n", out, 1, true)
      assert.matches('json\t{"name":"x"}\n', out, 1, true)
      assert.matches("when\t2026-01-02T03:04:05Z\n", out, 1, true)
      assert.matches("now\ttrue\n", out, 1, true)
      assert.matches("bad\tnil\tstring\n", out, 1, true)

      local records = log_records(err)
      assert.are.equal(3, #records, err)
      for _, r in ipairs(records) do
        assert.is_string(r.time)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d", r.time)
        assert.is_string(r.level)
        assert.is_string(r.msg)
        assert.are.equal("lua", r.source)
      end
      -- every stderr line is one record
      local lines = 0
      for _ in err:gmatch("[^\n]+") do lines = lines + 1 end
      assert.are.equal(3, lines)

      assert.are.equal("info", records[1].level)
      assert.are.equal("hello from lua", records[1].msg)
      assert.are.equal("u1", records[1].user)
      assert.are.equal(3, records[1].count)
      assert.are.same({ ok = true }, records[1].nested)
      assert.are.equal("info", records[2].level)
      assert.are.equal("plain call", records[2].msg)
      assert.are.equal("warn", records[3].level)
      assert.are.equal("careful", records[3].msg)
    end)

    it("honours ORRERY_LOG_LEVEL for script logs", function()
      local path = script("levels.lua", 'orrery.log.debug("d") orrery.log.info("i") orrery.log.error("e")\n')
      local code, _, err = orrery({ "run", path }, { env = "ORRERY_LOG_LEVEL=debug " })
      assert.are.equal(0, code, err)
      assert.are.equal(3, #log_records(err))
      code, _, err = orrery({ "run", path }, { env = "ORRERY_LOG_LEVEL=error " })
      assert.are.equal(0, code, err)
      local records = log_records(err)
      assert.are.equal(1, #records)
      assert.are.equal("e", records[1].msg)
    end)

    it("passes arguments in arg and as ...", function()
      local path = script("args.lua", [[
print(arg[0])
print(#arg, arg[1], arg[2], arg[3])
print(select("#", ...), ...)
]])
      local code, out, err = orrery({ "run", path, "one", "two words", "--flag" })
      assert.are.equal(0, code, err)
      assert.are.equal(path .. "\n3\tone\ttwo words\t--flag\n3\tone\ttwo words\t--flag\n", out)
    end)

    it("exits 1 with the error, file:line and a traceback when the script fails", function()
      local path = script("fails.lua", [[
print("before")
local function inner()
  error("boom")
end
local function outer() inner() end
outer()
print("after")
]])
      local code, out, err = orrery({ "run", path })
      assert.are.equal(1, code)
      assert.are.equal("before\n", out)
      assert.matches("orrery: " .. path .. ":3: boom", err, 1, true)
      assert.matches("stack traceback:", err, 1, true)
      assert.matches(path .. ":6:", err, 1, true)
    end)

    it("reports error objects that are not strings", function()
      local path = script("table_error.lua",
        'error(setmetatable({}, { __tostring = function() return "custom failure" end }))\n')
      local code, _, err = orrery({ "run", path })
      assert.are.equal(1, code)
      assert.matches("orrery: custom failure", err, 1, true)
      assert.matches("stack traceback:", err, 1, true)

      path = script("plain_table_error.lua", "error({ code = 1 })\n")
      code, _, err = orrery({ "run", path })
      assert.are.equal(1, code)
      assert.matches("orrery: (error object is a table value)", err, 1, true)

      path = script("nil_error.lua", "error()\n")
      code, _, err = orrery({ "run", path })
      assert.are.equal(1, code)
      assert.matches("orrery: (error object is a nil value)", err, 1, true)
    end)

    it("exits 1 on a syntax error, naming file:line", function()
      local path = script("syntax_run.lua", "print('x')\nlocal = 1\n")
      local code, out, err = orrery({ "run", path })
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.matches(path .. ":2:", err, 1, true)
    end)

    it("exits 1 with a clear error for a missing file", function()
      local path = dir .. "/does_not_exist.lua"
      local code, out, err = orrery({ "run", path })
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.matches("cannot open " .. path, err, 1, true)
      assert.matches("No such file", err, 1, true)
    end)

    it("runs a script from stdin with -", function()
      local path = script("stdin.lua", 'print("from stdin", arg[1])\n')
      local code, out, err = orrery({ "run", "-", "x" }, { stdin = path })
      assert.are.equal(0, code, err)
      assert.are.equal("from stdin\tx\n", out)
    end)

    it("exits with the script's os.exit code", function()
      local path = script("exit.lua", "io.write('bye') os.exit(3)\n")
      local code, out = orrery({ "run", path })
      assert.are.equal(3, code)
      assert.are.equal("bye", out)
    end)
  end)

  describe("check", function()
    it("accepts a good file without running it", function()
      local marker = dir .. "/marker"
      os.remove(marker)
      local path = script("good.lua", string.format([[
local f = assert(io.open(%q, "w"))
f:write("ran")
f:close()
print("ran")
]], marker))
      local code, out, err = orrery({ "check", path })
      assert.are.equal(0, code, err)
      assert.are.equal("ok: " .. path .. "\n", out)
      assert.is_false(file_exists(marker))

      -- the same script does write the marker when run, so the check above means something
      code = orrery({ "run", path })
      assert.are.equal(0, code)
      assert.is_true(file_exists(marker))
      os.remove(marker)
    end)

    it("exits 1 on a syntax error, naming file:line", function()
      local path = script("syntax.lua", "local x = 1\nif x then\n  print(x)\n")
      local code, out, err = orrery({ "check", path })
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.matches(path .. ":4:", err, 1, true)
      assert.matches("'end' expected", err, 1, true)
    end)

    it("exits 1 for a missing file", function()
      local code, _, err = orrery({ "check", dir .. "/missing.lua" })
      assert.are.equal(1, code)
      assert.matches("cannot open", err, 1, true)
    end)

    it("refuses binary chunks", function()
      local src = script("tobin.lua", "return 1\n")
      local bin = dir .. "/compiled.luac"
      created[#created + 1] = bin
      write_file(bin, string.dump(assert(loadfile(src))))
      local code, _, err = orrery({ "check", bin })
      assert.are.equal(1, code)
      assert.matches("binary", err, 1, true)
      code = orrery({ "run", bin })
      assert.are.equal(1, code)
    end)
  end)
end)
