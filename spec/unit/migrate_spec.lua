-- migrate: Flyway's checksum, file names and version order, through orrery.core (the C code the
-- `orrery migrate` command runs). Needs LUA_CPATH to include build/lua/?.so.
local core = require("orrery.core")

describe("migrate_checksum", function()
  -- Expected values were computed independently with Python's zlib, the way Flyway does it
  -- (BufferedReader lines, BOM dropped from the first line, CRC32 updated with each line's bytes,
  -- the result cast to a signed int32):
  --   c = 0
  --   for line in re.split(rb'\r\n|\r|\n', data): c = zlib.crc32(line, c)
  --   c - 2**32 if c >= 2**31 else c
  local two_lines = 169406234

  it("matches Flyway for a one-line script", function()
    assert.are.equal(78787420, core.migrate_checksum("SELECT 1;\n"))
  end)

  it("gives the same value for \\n, \\r\\n and \\r line endings", function()
    assert.are.equal(two_lines, core.migrate_checksum("CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n"))
    assert.are.equal(two_lines, core.migrate_checksum("CREATE TABLE t (id int);\r\nINSERT INTO t VALUES (1);\r\n"))
    assert.are.equal(two_lines, core.migrate_checksum("CREATE TABLE t (id int);\rINSERT INTO t VALUES (1);\r"))
  end)

  it("ignores a missing final line terminator", function()
    assert.are.equal(two_lines, core.migrate_checksum("CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);"))
  end)

  it("drops a leading UTF-8 BOM but not one later in the file", function()
    assert.are.equal(two_lines,
      core.migrate_checksum("\239\187\191CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n"))
    assert.are.equal(-444179588, core.migrate_checksum("a\n\239\187\191b"))
  end)

  it("is 0 for an empty file, a lone BOM and bare line terminators", function()
    assert.are.equal(0, core.migrate_checksum(""))
    assert.are.equal(0, core.migrate_checksum("\239\187\191"))
    assert.are.equal(0, core.migrate_checksum("\n\r\n\r"))
  end)

  it("returns a negative int32 when the CRC has its top bit set", function()
    local c = core.migrate_checksum("a\nb\n")
    assert.are.equal(-1635563411, c)
    assert.is_true(c >= -2147483648 and c < 0)
  end)

  it("covers the UTF-8 bytes of each line", function()
    assert.are.equal(139021238, core.migrate_checksum("-- café\nSELECT 1;\n"))
  end)

  it("changes when the content changes", function()
    assert.are_not.equal(core.migrate_checksum("SELECT 1;\n"), core.migrate_checksum("SELECT 2;\n"))
  end)
end)

describe("migrate_parse_name", function()
  it("splits version and description, underscores in the description becoming spaces", function()
    local v, d = core.migrate_parse_name("V1__init.sql")
    assert.are.equal("1", v)
    assert.are.equal("init", d)
    v, d = core.migrate_parse_name("V10__add_user_preferences.sql")
    assert.are.equal("10", v)
    assert.are.equal("add user preferences", d)
  end)

  it("accepts dotted versions and Flyway's underscore form", function()
    assert.are.same({ "2.1", "x" }, { core.migrate_parse_name("V2.1__x.sql") })
    assert.are.same({ "1.2.3", "x" }, { core.migrate_parse_name("V1_2_3__x.sql") })
  end)

  it("splits at the first double underscore", function()
    assert.are.same({ "3", " odd" }, { core.migrate_parse_name("V3___odd.sql") })
  end)

  it("returns nil and a reason naming the file for names that are not V<version>__<description>.sql", function()
    local bad = {
      "init.sql", "v1__init.sql", "V1_init.sql", "V__init.sql", "V1__init.txt", "V1__init.SQL",
      "Vx__init.sql", "V1..2__init.sql", "V.1__init.sql", "V1.__init.sql", "V-1__init.sql",
      "R__view.sql", "U1__undo.sql", "V1__init.sql.bak", "",
    }
    for _, name in ipairs(bad) do
      local v, err = core.migrate_parse_name(name)
      assert.is_nil(v, name)
      assert.is_string(err, name)
      assert.matches("'" .. name .. "'", err, 1, true)
    end
  end)

  it("refuses names that would not fit flyway_schema_history", function()
    local v, err = core.migrate_parse_name("V" .. string.rep("1", 51) .. "__x.sql")
    assert.is_nil(v)
    assert.matches("too long", err, 1, true)
    v = core.migrate_parse_name("V1__" .. string.rep("d", 201) .. ".sql")
    assert.is_nil(v)
    assert.is_not_nil(core.migrate_parse_name("V1__" .. string.rep("d", 200) .. ".sql"))
  end)
end)

describe("migrate_version_cmp", function()
  it("compares parts as numbers, not text", function()
    assert.are.equal(1, core.migrate_version_cmp("1.10", "1.9"))
    assert.are.equal(-1, core.migrate_version_cmp("2", "10"))
    assert.are.equal(1, core.migrate_version_cmp("10", "9"))
    assert.are.equal(-1, core.migrate_version_cmp("1.2", "1.2.1"))
  end)

  it("treats missing trailing parts and leading zeros as zero", function()
    assert.are.equal(0, core.migrate_version_cmp("1", "1.0"))
    assert.are.equal(0, core.migrate_version_cmp("1.0.0", "1"))
    assert.are.equal(0, core.migrate_version_cmp("007", "7"))
    assert.are.equal(0, core.migrate_version_cmp("1_1", "1.1"))
  end)

  it("orders numbers longer than any machine integer", function()
    assert.are.equal(1, core.migrate_version_cmp("123456789012345678901234567890", "99999999999999999999"))
  end)

  it("raises on something that is not a version", function()
    assert.has_error(function() core.migrate_version_cmp("1.x", "1") end)
    assert.has_error(function() core.migrate_version_cmp("1", "") end)
  end)
end)
