-- The orrery.* table scripts see (log, json, time), through orrery.core's api().
local core = require("orrery.core")

describe("orrery API", function()
  local orrery

  before_each(function()
    orrery = core.api()
  end)

  it("gives a fresh table on each call", function()
    assert.are_not.equal(core.api(), core.api())
    assert.is_table(orrery.log)
    assert.is_table(orrery.json)
    assert.is_table(orrery.time)
  end)

  describe("json", function()
    it("round-trips nested values", function()
      local value = { name = "tea", tags = { "a", "b" }, n = 3, ok = true, nested = { x = 1.5 } }
      local back = orrery.json.decode(orrery.json.encode(value))
      assert.are.same(value, back)
    end)

    it("round-trips unicode and escapes", function()
      local s = "caf\u{e9} \"quoted\" \\ line\nnext \u{1F600}"
      assert.are.equal(s, orrery.json.decode(orrery.json.encode(s)))
    end)

    it("decodes whole numbers as integers and the rest as floats", function()
      assert.are.equal("integer", math.type(orrery.json.decode("3")))
      assert.are.equal("float", math.type(orrery.json.decode("3.5")))
      local doc = orrery.json.decode('{"n":2,"list":[1,-7,2.25,1e300],"deep":{"x":[[4]]},"big":9007199254740993}')
      assert.are.equal("2", tostring(doc.n))
      assert.are.equal("integer", math.type(doc.list[1]))
      assert.are.equal(-7, doc.list[2])
      assert.are.equal("float", math.type(doc.list[3]))
      assert.are.equal("float", math.type(doc.list[4]))
      assert.are.equal("integer", math.type(doc.deep.x[1][1]))
      assert.are.equal("float", math.type(doc.big)) -- beyond 2^53 a double is not exact
      assert.are.equal("-0.0", tostring(orrery.json.decode("-0.0")))
    end)

    it("decodes bare scalars (its fast path) exactly as cjson does", function()
      local cjson = require("cjson").new()
      local same = { "0", "7", "-7", "123456789012345", "true", "false", '"hi"', '""', '"a b/c"', '"\\u00e9"',
                     '"tab\\there"', "1234567890123456", "-0", "1.5", "1e3", " 1", "1 ", '"x' }
      for _, text in ipairs(same) do
        local want_ok, want = pcall(cjson.decode, text)
        local got, err = orrery.json.decode(text)
        if want_ok then
          assert.are.equal(want, got, text)
          assert.are.equal(math.type(want) == "float" and want == math.floor(want) and math.abs(want) < 2^53
            and not (want == 0 and 1 / want < 0) and "integer" or math.type(want), math.type(got), text)
        else
          assert.is_nil(got, text)
          assert.is_string(err, text)
        end
      end
      for _, text in ipairs({ "01", "-", "--1", "+1", '"a"b"', "tru", "falsey" }) do
        assert.is_nil((orrery.json.decode(text)), text)
      end
    end)

    it("returns nil and a message for invalid JSON", function()
      for _, text in ipairs({ "{", "[1,]", "nope", "", "{\"a\":}", "[0x10]", "NaN" }) do
        local value, err = orrery.json.decode(text)
        assert.is_nil(value, text)
        assert.is_string(err, text)
        assert.is_true(#err > 0)
      end
    end)

    it("raises when decode is given something that is not text", function()
      assert.has_error(function() orrery.json.decode({}) end)
      assert.has_error(function() orrery.json.decode(nil) end)
    end)

    it("raises when encoding what JSON cannot hold", function()
      assert.has_error(function() orrery.json.encode({ f = function() end }) end)
      assert.has_error(function() orrery.json.encode(0 / 0) end)
      assert.has_error(function() orrery.json.encode(math.huge) end)
    end)

    it("exposes null, which round-trips", function()
      assert.is_not_nil(orrery.json.null)
      assert.are.equal("null", orrery.json.encode(orrery.json.null))
      assert.are.equal(orrery.json.null, orrery.json.decode("null"))
      local t = orrery.json.decode('{"a":null}')
      assert.are.equal(orrery.json.null, t.a)
      assert.are.equal('{"a":null}', orrery.json.encode({ a = orrery.json.null }))
    end)

    it("limits nesting to 128 levels", function()
      local ok_text = string.rep("[", 128) .. string.rep("]", 128)
      assert.is_table(orrery.json.decode(ok_text))
      local value, err = orrery.json.decode(string.rep("[", 129) .. string.rep("]", 129))
      assert.is_nil(value)
      assert.matches("nested", err)

      local deep = {}
      local cur = deep
      for _ = 1, 200 do
        cur[1] = {}
        cur = cur[1]
      end
      assert.has_error(function() orrery.json.encode(deep) end)

      local cycle = {}
      cycle.self = cycle
      assert.has_error(function() orrery.json.encode(cycle) end)
    end)

    it("has settings of its own, apart from the cjson module", function()
      local cjson = require("cjson")
      assert.are.equal(1000, cjson.decode_max_depth())
      local deep = string.rep("[", 200) .. string.rep("]", 200)
      assert.is_table(cjson.decode(deep))
      assert.is_nil((orrery.json.decode(deep)))
    end)
  end)

  describe("time", function()
    it("now() is epoch seconds with a fraction, close to os.time()", function()
      local now = orrery.time.now()
      assert.are.equal("float", math.type(now))
      assert.is_true(math.abs(now - os.time()) <= 2)
      local a, b = orrery.time.now(), orrery.time.now()
      assert.is_true(b >= a)
    end)

    it("monotonic() never goes back", function()
      local a = orrery.time.monotonic()
      local b = orrery.time.monotonic()
      assert.are.equal("float", math.type(a))
      assert.is_true(b >= a)
    end)

    it("formats RFC 3339 in UTC by default", function()
      assert.are.equal("1970-01-01T00:00:00Z", orrery.time.format(0))
      assert.are.equal("2026-01-02T03:04:05Z", orrery.time.format(1767323045))
      assert.are.equal("2026-01-02T03:04:05Z", orrery.time.format(1767323045.999))
      assert.are.equal("1969-12-31T23:59:59Z", orrery.time.format(-0.5))
      assert.are.equal("2000-02-29T00:00:00Z", orrery.time.format(951782400))
    end)

    it("formats with a strftime format", function()
      assert.are.equal("2026-01-02", orrery.time.format(1767323045, "%Y-%m-%d"))
      assert.are.equal("03:04 100%", orrery.time.format(1767323045, "%H:%M 100%%"))
      assert.are.equal("+0000", orrery.time.format(0, "%z"))
      assert.are.equal("", orrery.time.format(0, ""))
    end)

    it("raises on times and formats it cannot format", function()
      for _, t in ipairs({ 0 / 0, math.huge, -math.huge, 1e300, -1e13 }) do
        assert.has_error(function() orrery.time.format(t) end)
      end
      assert.has_error(function() orrery.time.format("soon") end)
      assert.has_error(function() orrery.time.format() end)
      assert.has_error(function() orrery.time.format(0, "%Q") end)
      assert.has_error(function() orrery.time.format(0, "100%") end)
      assert.has_error(function() orrery.time.format(0, "%E") end)
    end)

    it("parses RFC 3339 with Z", function()
      assert.are.equal(0, orrery.time.parse("1970-01-01T00:00:00Z"))
      assert.are.equal(1767323045, orrery.time.parse("2026-01-02T03:04:05Z"))
      assert.are.equal("integer", math.type(orrery.time.parse("2026-01-02T03:04:05Z")))
      assert.are.equal(1767323045, orrery.time.parse("2026-01-02t03:04:05z"))
      assert.are.equal(1767323045, orrery.time.parse("2026-01-02 03:04:05Z"))
    end)

    it("parses offsets", function()
      assert.are.equal(1767323045, orrery.time.parse("2026-01-02T05:04:05+02:00"))
      assert.are.equal(1767323045, orrery.time.parse("2026-01-01T21:34:05-05:30"))
      assert.are.equal(1767323045, orrery.time.parse("2026-01-02T03:04:05+00:00"))
      assert.are.equal(1767323045, orrery.time.parse("2026-01-02T03:04:05-00:00"))
    end)

    it("parses fractional seconds", function()
      local t = orrery.time.parse("2026-01-02T03:04:05.25Z")
      assert.are.equal("float", math.type(t))
      assert.are.equal(1767323045.25, t)
      assert.is_true(math.abs(orrery.time.parse("2026-01-02T05:04:05.123456+02:00") - 1767323045.123456) < 1e-6)
      assert.is_true(math.abs(orrery.time.parse("1970-01-01T00:00:00.000000001Z") - 1e-9) < 1e-12)
    end)

    it("round-trips format and parse", function()
      for _, t in ipairs({ 0, 1, 951782400, 1767323045, 4102444799, -86400, 253402300799 }) do
        assert.are.equal(t, orrery.time.parse(orrery.time.format(t)))
      end
      local now = orrery.time.now()
      assert.are.equal(math.floor(now), orrery.time.parse(orrery.time.format(now)))
      for _, s in ipairs({ "2026-01-02T03:04:05Z", "2024-02-29T23:59:59Z", "0000-01-01T00:00:00Z" }) do
        assert.are.equal(s, orrery.time.format(orrery.time.parse(s)))
      end
    end)

    it("returns nil and a message for invalid input", function()
      local bad = {
        "", "now", "2026-01-02", "2026-01-02T03:04:05", "2026-01-02T03:04Z",
        "2026-13-02T03:04:05Z", "2026-00-02T03:04:05Z", "2026-02-29T03:04:05Z", "2026-04-31T00:00:00Z",
        "2026-01-02T24:00:00Z", "2026-01-02T03:60:00Z", "2026-01-02T03:04:61Z",
        "2026-01-02T03:04:05.Z", "2026-01-02T03:04:05+0200", "2026-01-02T03:04:05+24:00",
        "2026-01-02T03:04:05+02:60", "2026-01-02T03:04:05Z junk", " 2026-01-02T03:04:05Z",
        "26-01-02T03:04:05Z", "2026-1-02T03:04:05Z", "2026-01-02T03:04:05Z\0",
        string.rep("9", 1000),
      }
      for _, s in ipairs(bad) do
        local t, err = orrery.time.parse(s)
        assert.is_nil(t, s)
        assert.is_string(err, s)
        assert.matches("RFC 3339", err)
      end
    end)

    it("raises when parse is given something that is not text", function()
      assert.has_error(function() orrery.time.parse({}) end)
      assert.has_error(function() orrery.time.parse() end)
    end)
  end)

  describe("log", function()
    it("has debug, info, warn and error, and is callable", function()
      for _, level in ipairs({ "debug", "info", "warn", "error" }) do
        assert.is_function(orrery.log[level])
      end
      assert.is_table(getmetatable(orrery.log))
      assert.is_function(getmetatable(orrery.log).__call)
    end)

    it("accepts a message and optional fields of any kind", function()
      local cyclic = {}
      cyclic.again = cyclic
      local described = setmetatable({}, { __tostring = function() return "described" end })
      assert.has_no.errors(function()
        orrery.log.debug("debug line")
        orrery.log.info("info line", { user = "u1", n = 2, ratio = 0.5, ok = false })
        orrery.log.warn("warn line", { nested = { list = { 1, 2, 3 }, deeper = { x = "y" } } })
        orrery.log.error("error line", { f = print, cyclic = cyclic, obj = described, nan = 0 / 0,
                                          bytes = "\255\254", [1] = "one", [true] = "yes" })
        orrery.log("called", { null = orrery.json.null })
        orrery.log(42)
        orrery.log(described)
        orrery.log.info("nil fields", nil)
      end)
    end)

    it("raises on misuse", function()
      assert.has_error(function() orrery.log.info() end)
      assert.has_error(function() orrery.log.info("msg", "not a table") end)
      assert.has_error(function() orrery.log() end)
    end)

    it("passes on errors from __tostring", function()
      local broken = setmetatable({}, { __tostring = function() error("broken tostring") end })
      assert.has_error(function() orrery.log.error("x", { obj = broken }) end)
    end)
  end)
end)
