-- The sandbox agents and workflows run in (src/sandbox*.c, docs/sandbox.md) through orrery.core:
-- what scripts can do, what they cannot reach, and the limits that end a hostile run. Every hostile
-- case checks the error code and that the sandbox (a fresh one after a memory kill) still runs.
local core = require("orrery.core")

local function run(sb, src)
  return table.pack(sb:run(src))
end

local function ok(sb, src)
  local r = run(sb, src)
  assert(r[1], ("%s\n-> %s: %s"):format(src, tostring(r[2]), tostring(r[3])))
  return table.unpack(r, 2, r.n)
end

-- Runs src, expects the code (and a part of the message), returns the message.
local function fails(sb, src, code, part)
  local r = run(sb, src)
  assert.is_nil(r[1], src .. " should fail")
  assert.equal(code, r[2], r[3])
  if part then
    assert.is_truthy(r[3]:find(part, 1, true), ("%q should contain %q"):format(r[3], part))
  end
  return r[3]
end

local function still_works(sb)
  assert.same({ true, 2 }, { sb:run("return 1 + 1") })
end

-- CPU seconds taken by f (the runaway cases all burn CPU).
local function timed(f)
  local t0 = os.clock()
  f()
  return os.clock() - t0
end

describe("sandbox", function()
  local sb

  before_each(function()
    -- a small budget ends runaway cases long before the deadline, even under ASan
    sb = assert(core.sandbox_new({ memory = 32 * 2 ^ 20, instructions = 5e6, seconds = 5 }))
  end)

  after_each(function()
    sb:close()
  end)

  describe("normal scripts", function()
    it("return plain values and tables", function()
      assert.same({ true, 2 }, { sb:run("return 1 + 1") })
      assert.same({ true, "a", 1.5, 7, false }, { sb:run("return 'a', 1.5, 7, false") })
      assert.same({ true, { 1, 2, { x = "y" } } }, { sb:run("return {1, 2, {x = 'y'}}") })
      assert.same({ true }, { sb:run("local x = 1") })
      assert.equal(math.type(7), math.type(select(2, sb:run("return 7"))))
    end)

    it("use string, table, math, utf8 and os.time/clock/date", function()
      local up, rep, fmt, n, joined, sorted, fl, mx, u, ulen, t, d, c = ok(sb, [[
        local t = {3, 1, 2}
        table.sort(t)
        table.insert(t, 4)
        return ("abc"):upper(), string.rep("ab", 3, "-"), string.format("%05.1f|%q", 3.14159, "x"),
          select("#", table.unpack({1, 2, 3})), table.concat(t, ","), t[1] < t[2],
          math.floor(2.7), math.max(1, 9, 3), utf8.char(72, 233), utf8.len("h\u{e9}"),
          os.time({year = 2026, month = 1, day = 1, hour = 12}) > 0, os.date("!%Y-%m-%d", 0), os.clock() >= 0
      ]])
      assert.equal("ABC", up)
      assert.equal("ab-ab-ab", rep)
      assert.equal('003.1|"x"', fmt)
      assert.equal(3, n)
      assert.equal("1,2,3,4", joined)
      assert.is_true(sorted)
      assert.equal(2, fl)
      assert.equal(9, mx)
      assert.equal("H\u{e9}", u)
      assert.equal(2, ulen)
      assert.is_true(t)
      assert.equal("1970-01-01", d)
      assert.is_true(c)
    end)

    it("match patterns", function()
      local words, gs, count, s, e, cap, pos = ok(sb, [[
        local words = {}
        for w in ("one two  three"):gmatch("%a+") do words[#words + 1] = w end
        local gs, count = ("hello world"):gsub("o", "0")
        local s, e, cap = ("key = value"):find("(%w+)%s*=")
        return words, gs, count, s, e, cap, ("abc"):match("()b")
      ]])
      assert.same({ "one", "two", "three" }, words)
      assert.equal("hell0 w0rld", gs)
      assert.equal(2, count)
      assert.same({ 1, 5, "key" }, { s, e, cap })
      assert.equal(2, pos)
    end)

    it("run coroutines, pcall, error and load of text", function()
      assert.same({ true, 1, 2, 3 }, { sb:run([[
        local co = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
        return co(), co(), co()
      ]]) })
      assert.same({ true, true, 3, true, 20, false, "cannot resume dead coroutine", "dead" }, { sb:run([[
        local co = coroutine.create(function(a, b) local c = coroutine.yield(a + b) return c * 2 end)
        local ok1, v1 = coroutine.resume(co, 1, 2)
        local ok2, v2 = coroutine.resume(co, 10)
        local ok3, v3 = coroutine.resume(co)
        return ok1, v1, ok2, v2, ok3, v3, coroutine.status(co)
      ]]) })
      fails(sb, "coroutine.wrap(function() error('inner') end)()", "script.error", "inner")
      local okp, msg = ok(sb, "return pcall(error, {code = 1})")
      assert.is_false(okp)
      assert.same({ code = 1 }, msg)
      assert.equal(42, ok(sb, "return load('return 6 * 7')()"))
      assert.equal(5, ok(sb, "return load('return x', 'chunk', 't', {x = 5})()"))
      assert.same({ true, 1, true, 2 }, { sb:run([[
        local co = coroutine.wrap(function()
          return xpcall(function() coroutine.yield(1) return 2 end, function(e) return e end)
        end)
        return co(), co()
      ]]) })
      assert.same({ true, false, "handled: x" }, { sb:run([[
        return xpcall(function() error("x", 0) end, function(e) return "handled: " .. e end)
      ]]) })
    end)

    it("lets locals and local _ENV replace globals", function()
      assert.equal(3, ok(sb, "local _ENV = {y = 3} return y"))
      assert.equal(10, ok(sb, "local n = 0 for i = 1, 4 do n = n + i end return n"))
    end)

    it("iterates library tables with pairs", function()
      local n, has_upper, has_dump = ok(sb, [[
        local n, up, dump = 0, false, false
        for k in pairs(string) do n = n + 1; up = up or k == "upper"; dump = dump or k == "dump" end
        return n, up, dump
      ]])
      assert.is_true(n > 10)
      assert.is_true(has_upper)
      assert.is_false(has_dump)
    end)

    it("reports script errors with a traceback and compile errors with the line", function()
      local msg = fails(sb, "local x = nil\nreturn x.y", "script.error", "attempt to index")
      assert.is_truthy(msg:find("stack traceback", 1, true))
      fails(sb, "return 1 +", "script.syntax", "sandbox:1:")
      fails(sb, "error(setmetatable({}, {__tostring = function() return 'custom' end}))", "script.error", "custom")
      fails(sb, "error({})", "script.error", "error object is a table value")
      still_works(sb)
    end)

    it("names the chunk as asked", function()
      fails(sb, "error('boom')", "script.error", "sandbox:1: boom")
      local r = { sb:run("error('boom')", "=workflow 7") }
      assert.is_truthy(r[3]:find("workflow 7:1: boom", 1, true))
    end)

    it("holds little memory when idle", function()
      local m = sb:memory()
      assert.is_true(m > 1000 and m < 200 * 1024, tostring(m))
    end)

    it("refuses a closed sandbox", function()
      local other = core.sandbox_new()
      other:close()
      other:close()
      assert.has_error(function() other:run("return 1") end, "sandbox is closed")
    end)

    it("refuses a memory cap that cannot hold the libraries", function()
      local s, err = core.sandbox_new({ memory = 4096 })
      assert.is_nil(s)
      assert.is_truthy(err:find("4096", 1, true), err)
    end)
  end)

  describe("what scripts cannot reach", function()
    it("has no io, debug, package, require, file loaders, print, os.execute or string.dump", function()
      local r = { sb:run([[
        return io == nil, debug == nil, package == nil, require == nil, dofile == nil, loadfile == nil,
          print == nil, os.execute == nil, os.getenv == nil, os.exit == nil, os.remove == nil,
          string.dump == nil, ("").dump == nil
      ]]) }
      assert.same({ true, true, true, true, true, true, true, true, true, true, true, true, true, true }, r)
      fails(sb, "return package.loadlib('libc.so.6', 'system')", "script.error", "package")
      fails(sb, "return require('os')", "script.error", "require")
      fails(sb, "return dofile('/etc/passwd')", "script.error", "dofile")
      fails(sb, "return loadfile('/etc/passwd')", "script.error", "loadfile")
      fails(sb, "return debug.getregistry()", "script.error", "debug")
      fails(sb, "return io.open('/etc/passwd')", "script.error", "io")
      fails(sb, "return os.execute('true')", "script.error", "execute")
      still_works(sb)
    end)

    it("loads no bytecode", function()
      fails(sb, "return load(string.dump(function() end))", "script.error", "dump")
      local f, msg = ok(sb, "return load('\\27Lua\\x54\\0\\x19\\x93\\r\\n\\x1a\\n')")
      assert.is_nil(f)
      assert.is_truthy(msg:find("binary chunk", 1, true))
      f, msg = ok(sb, "return load('\\27Lua', 'x', 'b')")
      assert.is_nil(f)
      assert.is_truthy(msg:find("binary chunk", 1, true))
      f, msg = ok(sb, "local parts = {'\\27Lua'} return load(function() return table.remove(parts) end)")
      assert.is_nil(f)
      assert.is_truthy(msg:find("binary chunk", 1, true))
    end)

    it("keeps globals read-only", function()
      fails(sb, "x = 1", "script.error", "attempt to modify a read-only global 'x'")
      fails(sb, "_G.string = nil", "script.error", "read-only global")
      fails(sb, "function f() end", "script.error", "read-only global")
      fails(sb, "load('y = 2')()", "script.error", "read-only global")
      fails(sb, "setmetatable(_G, nil)", "script.error", "protected metatable")
      assert.equal("locked", ok(sb, "return getmetatable(_G)"))
      still_works(sb)
    end)

    it("keeps rawset(_G, ...) inside its own run", function()
      assert.equal(1, ok(sb, "rawset(_G, 'x', 1) return x"))
      assert.is_nil(ok(sb, "return x"))
      assert.equal("shadow", ok(sb, "rawset(_G, 'string', 'shadow') return string"))
      assert.equal("ABC", ok(sb, "return string.upper('abc')"))
      ok(sb, "load('rawset(_ENV, \"math\", 1)')()")
      assert.equal(3, ok(sb, "return math.floor(3.5)"))
    end)

    it("keeps library tables read-only, raw or not", function()
      fails(sb, "string.upper = nil", "script.error", "read-only table 'string'")
      fails(sb, "string.evil = print", "script.error", "read-only table 'string'")
      fails(sb, "rawset(string, 'upper', function() return 'pwned' end)", "script.error", "read-only table")
      fails(sb, "rawset(math, 'pi', 3)", "script.error", "read-only table")
      fails(sb, "table.insert(os, 1)", "script.error", "read-only table")
      fails(sb, "setmetatable(string, {})", "script.error", "protected metatable")
      fails(sb, "local _, t = pairs(string) rawset(t, 'upper', 1)", "script.error", "read-only table")
      assert.equal("ABC", ok(sb, "return string.upper('abc')"))
      assert.equal(math.pi, ok(sb, "return math.pi"))
    end)

    it("locks the string metatable", function()
      fails(sb, "getmetatable('').__index = {upper = function() return 'pwned' end}", "script.error", "read-only")
      fails(sb, "getmetatable('').__index.upper = nil", "script.error")
      fails(sb, "rawset(getmetatable(''), '__index', {})", "script.error", "read-only")
      assert.is_nil(ok(sb, "return getmetatable('').__index"))
      assert.equal("ABC", ok(sb, "return ('abc'):upper()"))
    end)

    it("takes a snapshot of a metatable at setmetatable", function()
      -- getmetatable gives the script's table back, methods added to a class later are found...
      assert.same({ true, true, true, 7 }, { sb:run([[
        local C = {} C.__index = C
        local o = setmetatable({}, C)
        function C.seven() return 7 end
        return getmetatable(o) == C, rawequal(getmetatable(o), C), o.seven()
      ]]) })
      -- ...but metamethods added to the metatable later apply from the next setmetatable on.
      assert.same({ true, false, 1 }, { sb:run([[
        local mt = {}
        local t = setmetatable({}, mt)
        mt.__index = function() return 1 end
        local before = t.x
        setmetatable(t, mt)
        return before ~= nil, t.x
      ]]) })
      -- __metatable protects as in Lua; metatables can be replaced and removed.
      assert.same({ true, "mine", false }, { sb:run([[
        local t = setmetatable({}, {__metatable = "mine"})
        return getmetatable(t), (pcall(setmetatable, t, {}))
      ]]) })
      assert.same({ true, 2, true }, { sb:run([[
        local t = setmetatable({}, {__index = {a = 1}})
        setmetatable(t, {__index = {a = 2}})
        local a = t.a
        return a, getmetatable(setmetatable(t, nil)) == nil
      ]]) })
      assert.equal("P", ok(sb, "return tostring(setmetatable({}, {__tostring = function() return 'P' end}))"))
      assert.equal(3, ok(sb, "return #setmetatable({}, {__len = function() return 3 end})"))
    end)

    it("refuses weak-key (ephemeron) tables, whose collection can take quadratic time", function()
      fails(sb, "setmetatable({}, {__mode = 'k'})", "script.error", "__mode 'k'")
      assert.equal("ok", ok(sb, "setmetatable({}, {__mode = 'v'}) setmetatable({}, {__mode = 'kv'}) return 'ok'"))
      -- setting __mode later changes nothing: the table keeps its keys
      assert.is_true(ok(sb, [[
        local mt = {}
        local t = setmetatable({}, mt)
        mt.__mode = "k"
        t[{}] = true
        repeat until collectgarbage("step", 1024)
        repeat until collectgarbage("step", 1024)
        return next(t) ~= nil
      ]]))
    end)

    it("limits collectgarbage to count and step", function()
      assert.is_true(ok(sb, "return collectgarbage('count') > 0"))
      ok(sb, "collectgarbage('step')")
      fails(sb, "collectgarbage()", "script.error", "not allowed")
      fails(sb, "collectgarbage('stop')", "script.error", "not allowed")
      fails(sb, "collectgarbage('incremental', 1000, 1000)", "script.error", "not allowed")
    end)
  end)

  describe("limits", function()
    it("ends an endless loop at the instruction budget", function()
      fails(sb, "while true do end", "script.instruction_limit", "more than 5000000 instructions (at sandbox:1)")
      still_works(sb)
    end)

    it("ends a busy loop at the deadline when the budget is generous", function()
      local s = assert(core.sandbox_new({ instructions = 1e12, seconds = 0.2 }))
      local took = timed(function() fails(s, "local i = 0 while true do i = i + 1 end", "script.timeout") end)
      assert.is_true(took < 1, tostring(took))
      still_works(s)
      s:close()
    end)

    it("cannot be swallowed by pcall", function()
      fails(sb, "while true do pcall(function() while true do end end) end", "script.instruction_limit")
      still_works(sb)
      fails(sb, "for _ = 1, 1e9 do pcall(pcall, pcall, function() while true do end end) end",
        "script.instruction_limit")
      fails(sb, "while true do xpcall(function() while true do end end, function() while true do end end) end",
        "script.instruction_limit")
      fails(sb, "local function f() while true do end end repeat local ok = pcall(f) until false",
        "script.instruction_limit")
      still_works(sb)
    end)

    it("runs no __close handler of a killed coroutine, where hooks are off", function()
      fails(sb, [[
        local co = coroutine.wrap(function()
          local x <close> = setmetatable({}, {__close = function() while true do end end})
          while true do end
        end)
        co()
      ]], "script.instruction_limit")
      fails(sb, [[
        local a = coroutine.create(function()
          local x <close> = setmetatable({}, {__close = function() while true do end end})
          while true do end
        end)
        coroutine.wrap(function() coroutine.resume(a) coroutine.close(a) end)()
      ]], "script.instruction_limit")
      fails(sb, [[
        local x <close> = setmetatable({}, {__close = function() while true do end end})
        while true do end
      ]], "script.instruction_limit")
      still_works(sb)
    end)

    it("is decided by the host, even when the script returns normally after the kill", function()
      fails(sb, [[
        local co = coroutine.create(function() while true do end end)
        local ok = coroutine.resume(co)
        return "escaped", ok
      ]], "script.instruction_limit")
      fails(sb, "pcall(coroutine.wrap(function() while true do end end)) return 'escaped'",
        "script.instruction_limit")
      still_works(sb)
    end)

    it("ends pcall/error loops that swallow errors", function()
      fails(sb, "while true do pcall(error, 'x') end", "script.instruction_limit")
      fails(sb, "while true do local ok, e = pcall(error) if not ok then e = nil end end", "script.instruction_limit")
      still_works(sb)
    end)

    it("follows coroutines", function()
      fails(sb, "coroutine.wrap(function() while true do end end)()", "script.instruction_limit")
      fails(sb, "while true do coroutine.wrap(function() end)() end", "script.instruction_limit")
      fails(sb, "while true do coroutine.resume(coroutine.create(function() while true do end end)) end",
        "script.instruction_limit")
      fails(sb, [[
        local function spawn() return coroutine.wrap(function() while true do pcall(spawn()) end end) end
        spawn()()
      ]], "script.instruction_limit")
      still_works(sb)
    end)

    it("stops a string.rep larger than the cap as a memory error", function()
      fails(sb, 'return string.rep("x", 2^31)', "script.memory_limit")
      fails(sb, 'return ("x"):rep(40 * 2^20)', "script.memory_limit")
      local fresh = core.sandbox_new({ memory = 32 * 2 ^ 20 })
      still_works(fresh)
      fresh:close()
      still_works(sb) -- not promised, but the state survives
      assert.same({ true, false, "not enough memory" }, { sb:run('return pcall(string.rep, "x", 2^31)') })
    end)

    it("stops a table that grows forever", function()
      fails(sb, "local t = {} while true do t[#t + 1] = {} end", "script.memory_limit")
      fails(sb, "local t = {} local i = 0 while true do i = i + 1 t[i] = ('x'):rep(100) .. i end",
        "script.memory_limit")
      -- re-raised, or raised in a coroutine, it is still the memory limit
      fails(sb, "local ok, e = pcall(function() local t = {} while true do t[#t + 1] = {} end end) error(e, 0)",
        "script.memory_limit")
      fails(sb, "coroutine.wrap(function() local t = {} while true do t[#t + 1] = {} end end)()",
        "script.memory_limit")
      local fresh = core.sandbox_new({ memory = 32 * 2 ^ 20 })
      still_works(fresh)
      fresh:close()
      still_works(sb)
      assert.is_true(sb:memory() < 1024 * 1024, tostring(sb:memory()))
    end)

    it("turns deep recursion into an ordinary error", function()
      -- Lua's stack stops at 1,000,000 slots: with a cap that holds them it is "stack overflow"...
      local big = core.sandbox_new({ memory = 256 * 2 ^ 20 })
      fails(big, "local function f() return 1 + f() end return f()", "script.error", "stack overflow")
      still_works(big)
      big:close()
      -- ...with a smaller cap the memory runs out first.
      fails(sb, "local function f() return 1 + f() end return f()", "script.memory_limit")
      still_works(sb)
      -- Recursion through C functions stops at Lua's C stack limit.
      fails(sb, "local function f() pcall(f) error('x') end f()", "script.error")
      fails(sb, "local t = setmetatable({}, {__index = function(t, k) return t[k] end}) return t.x",
        "script.error", "stack overflow")
      still_works(sb)
    end)

    it("fails a catastrophic pattern fast", function()
      local took = timed(function()
        fails(sb, 'return string.find(string.rep("a", 30), string.rep("a-", 30) .. "b")', "script.error",
          "pattern too complex")
        fails(sb, 'return string.match(string.rep("a", 5000), "a*a*a*b")', "script.error", "pattern too complex")
        fails(sb, 'return string.gsub(string.rep("a", 40), string.rep("a*", 40) .. "b", "")', "script.error",
          "pattern too complex")
        fails(sb, 'for x in string.gmatch(string.rep("a", 30), string.rep("a?", 30) .. "b") do end',
          "script.error", "pattern too complex")
      end)
      assert.is_true(took < 1, tostring(took))
      still_works(sb)
    end)

    it("charges matcher work to the run", function()
      local s = assert(core.sandbox_new({ instructions = 5e6 }))
      fails(s, 'while true do pcall(string.find, ("a"):rep(30), ("a-"):rep(30) .. "b") end',
        "script.instruction_limit")
      still_works(s)
      s:close()
    end)

    it("finds plain substrings in linear time", function()
      local took = timed(function()
        assert.is_nil(ok(sb, "return string.find(string.rep('a', 1e7), string.rep('a', 1e5) .. 'b', 1, true)"))
      end)
      assert.is_true(took < 1, tostring(took))
    end)

    it("does not choke on ordinary patterns over large subjects", function()
      assert.equal(200000, ok(sb, "local s = string.rep('hello world ', 100000) return select(2, s:gsub('%s+', '_'))"))
      assert.equal(100000, ok(sb, [[
        local n = 0
        for _ in string.rep("k=v;", 100000):gmatch("(%w+)=(%w+)") do n = n + 1 end
        return n
      ]]))
    end)

    it("charges C loops whose length a script chooses", function()
      local s = assert(core.sandbox_new({ instructions = 1e12, seconds = 0.3 }))
      local cases = {
        'return table.concat(setmetatable({}, {__index = table.concat}), "", 1, 1e12)',
        "table.move({}, 1, 1e12, 2)",
        "table.move(setmetatable({}, {__index = rawlen}), 1, 1e12, 2, setmetatable({}, {__newindex = rawequal}))",
        "table.insert(setmetatable({}, {__len = function() return 2^62 end}), 1, 1)",
        "table.remove(setmetatable({}, {__len = function() return 2^62 end}), 1)",
        "local s = ('x'):rep(2^24) while true do local t = s .. s end",
      }
      for _, src in ipairs(cases) do
        local took = timed(function() fails(s, src, "script.timeout") end)
        assert.is_true(took < 1.5, src .. " took " .. took)
        still_works(s)
      end
      -- bounded by the memory cap instead: either way it ends
      for _, src in ipairs({
        "table.sort(setmetatable({}, {__len = function() return 2^31 - 2 end, __index = rawlen}))",
        "return load(os.time)",
      }) do
        local took = timed(function() s:run(src) end)
        assert.is_true(took < 1.5, src .. " took " .. took)
      end
      s:close()
    end)

    it("refuses __gc metamethods, so no finalizer can loop", function()
      local took = timed(function()
        fails(sb, "setmetatable({}, {__gc = function() while true do end end}); collectgarbage()", "script.error",
          "__gc")
        fails(sb, "setmetatable({}, {__gc = true})", "script.error", "__gc")
        -- a __gc added after setmetatable is never called (Lua registers finalizers at setmetatable)
        ok(sb, "local mt = {} setmetatable({}, mt) mt.__gc = function() while true do end end collectgarbage('step')")
        sb:close()
      end)
      assert.is_true(took < 1, tostring(took))
      sb = core.sandbox_new()
    end)

    it("handles a yield from inside a metamethod", function()
      assert.same({ true, 1, 2 }, { sb:run([[
        local co = coroutine.wrap(function()
          local t = setmetatable({}, {__index = function() coroutine.yield(1) return 2 end})
          return t.x
        end)
        return co(), co()
      ]]) })
      fails(sb, "local _ = setmetatable({}, {__index = function() coroutine.yield() end}).x", "script.error",
        "outside a coroutine")
      fails(sb, [[
        local co = coroutine.wrap(function()
          return string.gsub("a", "a", setmetatable({}, {__index = function() coroutine.yield() end}))
        end)
        co()
      ]], "script.error", "yield across")
      still_works(sb)
    end)

    it("keeps sandboxes independent", function()
      local other = core.sandbox_new()
      fails(sb, "local t = {} while true do t[#t + 1] = {} end", "script.memory_limit")
      fails(sb, "while true do end", "script.instruction_limit")
      assert.equal(3, ok(other, "return 1 + 2"))
      other:close()
    end)
  end)

  describe("patterns", function()
    -- The sandbox's matcher is a reimplementation: it must agree with Lua's own on the same cases.
    -- The generator is plain Lua so the host (real string library) and the sandbox run it alike.
    local generator = [[
      local seed = 12345
      local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n + 1 end
      local items = {"a", "b", "c", ".", "%a", "%d", "%s", "%W", "[ab]", "[^a]", "[a-c]", "[%d%s]", "[]a]",
        "(", ")", "()", "%1", "%b()", "%f[%w]", "%f[%W]", "$", "^", "%", "[", "%.", "-"}
      local quants = {"", "", "", "*", "+", "-", "?"}
      local chars = {"a", "b", "c", "1", " ", "(", ")", "."}
      local function pattern()
        local p = {}
        for _ = 1, rnd(5) do p[#p + 1] = items[rnd(#items)] .. quants[rnd(#quants)] end
        return table.concat(p)
      end
      local function subject()
        local s = {}
        for _ = 1, rnd(12) - 1 do s[#s + 1] = chars[rnd(#chars)] end
        return table.concat(s)
      end
      local function show(okc, ...)
        if not okc then return "error" end
        local out = {}
        for i = 1, select("#", ...) do out[i] = tostring((select(i, ...))) end
        return table.concat(out, ",")
      end
      local function all(f, ...)
        local okc, it = pcall(f, ...)
        if not okc then return "error" end
        local out = {}
        for _ = 1, 20 do
          local r = table.pack(pcall(it))
          if not r[1] then out[#out + 1] = "error" break end
          if r[2] == nil then break end
          out[#out + 1] = show(table.unpack(r, 1, r.n))
        end
        return table.concat(out, ";")
      end
      local results = {}
      for _ = 1, 3000 do
        local s, p, init = subject(), pattern(), rnd(17) - 9
        results[#results + 1] = table.concat({
          s, p, init,
          show(pcall(string.find, s, p, init)),
          show(pcall(string.find, s, p, init, true)),
          show(pcall(string.match, s, p, init)),
          show(pcall(string.gsub, s, p, "<%0|%1>")),
          show(pcall(string.gsub, s, p, function(a) return a and a:upper() end, 3)),
          show(pcall(string.gsub, s, p, {a = "A", [""] = false})),
          all(string.gmatch, s, p),
          all(string.gmatch, s, p, init),
        }, " \u{1}")
      end
      return table.concat(results, "\n")
    ]]

    local table_generator = [[
      local seed = 4242
      local function rnd(n) seed = (seed * 1103515245 + 12345) % 2147483648 return seed % n + 1 end
      local function list()
        local t = {}
        for i = 1, rnd(8) - 1 do t[i] = rnd(20) end
        return t
      end
      local function show(okc, ...)
        if not okc then return "error" end
        local out = {}
        for i = 1, select("#", ...) do
          local v = select(i, ...)
          if type(v) == "table" then
            local parts = {}
            for k = 1, 24 do parts[k] = tostring(rawget(v, k)) end
            out[i] = "{" .. table.concat(parts, ",") .. "}"
          else
            out[i] = tostring(v)
          end
        end
        return table.concat(out, ",")
      end
      local out = {}
      for _ = 1, 2000 do
        local a, b = rnd(12) - 4, rnd(12) - 4
        local t1, t2, t3, t4 = list(), list(), list(), list()
        local t5, t6 = list(), list()
        out[#out + 1] = table.concat({
          show(pcall(table.insert, t1, a, 99)), show(true, t1),
          show(pcall(table.insert, t2, 7)), show(true, t2),
          show(pcall(table.remove, t3, a)), show(true, t3),
          show(pcall(table.move, t4, a, b, rnd(10) - 3)), show(true, t4),
          show(pcall(table.move, t5, a, b, rnd(10) - 3, t6)), show(true, t6),
          show(pcall(table.concat, list(), ({"", ",", "--"})[rnd(3)], a, b)),
          show(pcall(table.concat, {1, "x", 2.5})),
          show(pcall(table.unpack, list(), a, b)),
          show(pcall(table.insert, {}, 1, 2, 3)),
        }, " | ")
      end
      local sorted = {}
      for i = 1, 500 do sorted[i] = rnd(1000) end
      table.sort(sorted)
      out[#out + 1] = table.concat(sorted, ",")
      table.sort(sorted, function(x, y) return x > y end)
      out[#out + 1] = table.concat(sorted, ",")
      return table.concat(out, "\n")
    ]]

    it("table functions agree with Lua's", function()
      local expected = assert(load(table_generator))()
      local big = core.sandbox_new({ instructions = 1e9, seconds = 60 })
      local actual = ok(big, table_generator)
      big:close()
      local e_lines, a_lines = {}, {}
      for line in (expected .. "\n"):gmatch("(.-)\n") do e_lines[#e_lines + 1] = line end
      for line in (actual .. "\n"):gmatch("(.-)\n") do a_lines[#a_lines + 1] = line end
      assert.equal(#e_lines, #a_lines)
      for i = 1, #e_lines do
        assert.equal(e_lines[i], a_lines[i])
      end
    end)

    it("agree with Lua's string library", function()
      local expected = assert(load(generator))()
      local big = core.sandbox_new({ instructions = 1e9, seconds = 60 })
      local actual = ok(big, generator)
      big:close()
      local e_lines, a_lines = {}, {}
      for line in (expected .. "\n"):gmatch("(.-)\n") do e_lines[#e_lines + 1] = line end
      for line in (actual .. "\n"):gmatch("(.-)\n") do a_lines[#a_lines + 1] = line end
      assert.equal(#e_lines, #a_lines)
      for i = 1, #e_lines do
        assert.equal(e_lines[i], a_lines[i])
      end
    end)
  end)
end)
