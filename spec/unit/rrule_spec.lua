-- Recurrence rules (src/rrule.c) through orrery.core: parsing, expansion in local wall-clock time,
-- and the next occurrence. Times are civil ("YYYY-MM-DDTHH:MM:SS", no zone).
local core = require("orrery.core")

local function expand(rule, dtstart, from, to, exdates, max)
  local list, more = core.rrule_expand(rule, dtstart, from, to, exdates, max)
  assert(list, more)
  return list, more
end

local function dates(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = s:sub(1, 10) end
  return out
end

describe("rrule_parse", function()
  local function bad(rule, part)
    local ok, msg = core.rrule_parse(rule)
    assert.is_nil(ok, rule .. " should be refused")
    assert.is_truthy(msg:find(part, 1, true), ("%q: %q should name %s"):format(rule, msg, part))
  end

  it("reads the supported parts and writes them back canonically", function()
    assert.equal("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE;COUNT=10",
      core.rrule_parse("FREQ=WEEKLY;INTERVAL=2;BYDAY=WE,MO;COUNT=10"))
    assert.equal("FREQ=MONTHLY;BYDAY=2TU,-1FR", core.rrule_parse("RRULE:FREQ=MONTHLY;BYDAY=-1FR,+2TU"))
    assert.equal("FREQ=MONTHLY;BYMONTHDAY=31,-1", core.rrule_parse("BYMONTHDAY=31,-1;FREQ=MONTHLY"))
    assert.equal("FREQ=DAILY;UNTIL=20260301T093000", core.rrule_parse("FREQ=DAILY;UNTIL=20260301T093000Z"))
    assert.equal("FREQ=DAILY;UNTIL=20260301", core.rrule_parse("FREQ=DAILY;UNTIL=20260301"))
    assert.equal("FREQ=YEARLY", core.rrule_parse("FREQ=YEARLY;INTERVAL=1"))
  end)

  it("refuses an unknown part", function()
    bad("FREQ=DAILY;BYHOUR=9", "BYHOUR")
    bad("FREQ=DAILY;WKST=MO", "WKST")
    bad("FREQ=DAILY;garbage", "garbage")
  end)

  it("requires FREQ and knows its values", function()
    bad("INTERVAL=2;COUNT=3", "FREQ")
    bad("FREQ=HOURLY", "FREQ")
    bad("FREQ=daily", "FREQ")
    bad("", "empty")
  end)

  it("refuses INTERVAL=0 and other bad numbers", function()
    bad("FREQ=DAILY;INTERVAL=0", "INTERVAL")
    bad("FREQ=DAILY;INTERVAL=-1", "INTERVAL")
    bad("FREQ=DAILY;INTERVAL=x", "INTERVAL")
    bad("FREQ=DAILY;COUNT=0", "COUNT")
    bad("FREQ=DAILY;COUNT=", "COUNT")
  end)

  it("refuses bad weekdays and positions", function()
    bad("FREQ=WEEKLY;BYDAY=XX", "BYDAY")
    bad("FREQ=WEEKLY;BYDAY=MO,MO", "BYDAY")
    bad("FREQ=WEEKLY;BYDAY=MO,", "BYDAY")
    bad("FREQ=WEEKLY;BYDAY=1MO", "BYDAY")  -- a position needs MONTHLY or YEARLY
    bad("FREQ=MONTHLY;BYDAY=6MO", "BYDAY")
    bad("FREQ=MONTHLY;BYDAY=0MO", "BYDAY")
  end)

  it("refuses BYMONTHDAY=32 and 0", function()
    bad("FREQ=MONTHLY;BYMONTHDAY=32", "BYMONTHDAY")
    bad("FREQ=MONTHLY;BYMONTHDAY=0", "BYMONTHDAY")
    bad("FREQ=MONTHLY;BYMONTHDAY=-32", "BYMONTHDAY")
  end)

  it("refuses COUNT and UNTIL together, and a bad UNTIL", function()
    bad("FREQ=DAILY;COUNT=3;UNTIL=20260301", "COUNT and UNTIL")
    bad("FREQ=DAILY;UNTIL=20260230", "UNTIL")
    bad("FREQ=DAILY;UNTIL=2026-03-01", "UNTIL")
  end)

  it("refuses a repeated part", function()
    bad("FREQ=DAILY;FREQ=WEEKLY", "FREQ")
    bad("FREQ=DAILY;COUNT=2;COUNT=3", "COUNT")
  end)
end)

describe("rrule_expand", function()
  it("repeats DAILY with INTERVAL", function()
    local l = expand("FREQ=DAILY;INTERVAL=2", "2026-03-01T09:00:00", "2026-03-01", "2026-03-08")
    assert.same({ "2026-03-01T09:00:00", "2026-03-03T09:00:00", "2026-03-05T09:00:00", "2026-03-07T09:00:00" }, l)
  end)

  it("filters DAILY by BYDAY", function()
    local l = expand("FREQ=DAILY;BYDAY=SA,SU", "2026-03-02T08:00:00", "2026-03-01", "2026-03-16")
    -- DTSTART (a Monday) is the first occurrence even though it is not a weekend day
    assert.same({ "2026-03-02", "2026-03-07", "2026-03-08", "2026-03-14", "2026-03-15" }, dates(l))
  end)

  it("repeats WEEKLY on DTSTART's weekday, and on the BYDAY days", function()
    assert.same({ "2026-03-04", "2026-03-11", "2026-03-18" },
      dates(expand("FREQ=WEEKLY", "2026-03-04T09:00:00", "2026-03-01", "2026-03-20")))
    assert.same({ "2026-03-02", "2026-03-04", "2026-03-06", "2026-03-16", "2026-03-18", "2026-03-20" },
      dates(expand("FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE,FR", "2026-03-02T09:00:00", "2026-03-01", "2026-03-23")))
  end)

  it("skips the months without day 31 (never moves them)", function()
    local l = expand("FREQ=MONTHLY;BYMONTHDAY=31", "2026-01-31T10:00:00", "2026-01-01", "2027-01-01")
    assert.same({ "2026-01-31", "2026-03-31", "2026-05-31", "2026-07-31", "2026-08-31", "2026-10-31", "2026-12-31" },
      dates(l))
    -- without BYMONTHDAY the day of DTSTART is used, with the same rule
    assert.same({ "2026-01-31", "2026-03-31", "2026-05-31" },
      dates(expand("FREQ=MONTHLY", "2026-01-31T10:00:00", "2026-01-01", "2026-07-01")))
  end)

  it("counts BYMONTHDAY=-1 from the end of each month", function()
    assert.same({ "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30" },
      dates(expand("FREQ=MONTHLY;BYMONTHDAY=-1", "2026-01-31T10:00:00", "2026-01-01", "2026-05-01")))
  end)

  it("finds the last Friday with BYDAY=-1FR and the second Tuesday with 2TU", function()
    assert.same({ "2026-01-30", "2026-02-27", "2026-03-27", "2026-04-24", "2026-05-29" },
      dates(expand("FREQ=MONTHLY;BYDAY=-1FR", "2026-01-30T17:00:00", "2026-01-01", "2026-06-01")))
    assert.same({ "2026-01-13", "2026-02-10", "2026-03-10" },
      dates(expand("FREQ=MONTHLY;BYDAY=2TU", "2026-01-13T17:00:00", "2026-01-01", "2026-04-01")))
  end)

  it("keeps a YEARLY Feb 29 to leap years", function()
    assert.same({ "2024-02-29", "2028-02-29", "2032-02-29" },
      dates(expand("FREQ=YEARLY", "2024-02-29", "2024-01-01", "2035-01-01")))
    -- 2100 is not a leap year
    assert.same({ "2096-02-29", "2104-02-29" },
      dates(expand("FREQ=YEARLY", "2024-02-29", "2095-01-01", "2105-01-01")))
  end)

  it("counts COUNT from DTSTART, even before the window", function()
    local l = expand("FREQ=DAILY;COUNT=5", "2026-03-01T09:00:00", "2026-03-03", "2026-04-01")
    assert.same({ "2026-03-03", "2026-03-04", "2026-03-05" }, dates(l))
    -- DTSTART counts even when BYDAY does not select it
    assert.same({ "2026-03-04", "2026-03-09", "2026-03-11" },
      dates(expand("FREQ=WEEKLY;BYDAY=MO,WE;COUNT=3", "2026-03-04T09:00:00", "2026-01-01", "2027-01-01")))
    assert.same({ "2026-03-03", "2026-03-04", "2026-03-09" },
      dates(expand("FREQ=WEEKLY;BYDAY=MO,WE;COUNT=3", "2026-03-03T09:00:00", "2026-01-01", "2027-01-01")))
  end)

  it("includes UNTIL itself", function()
    assert.same({ "2026-03-01", "2026-03-02", "2026-03-03" },
      dates(expand("FREQ=DAILY;UNTIL=20260303T090000", "2026-03-01T09:00:00", "2026-01-01", "2027-01-01")))
    assert.same({ "2026-03-01", "2026-03-02" },
      dates(expand("FREQ=DAILY;UNTIL=20260303T085959", "2026-03-01T09:00:00", "2026-01-01", "2027-01-01")))
    -- a date-only UNTIL covers that whole day
    assert.same({ "2026-03-01", "2026-03-02", "2026-03-03" },
      dates(expand("FREQ=DAILY;UNTIL=20260303", "2026-03-01T23:00:00", "2026-01-01", "2027-01-01")))
  end)

  it("skips EXDATEs (which still count towards COUNT)", function()
    local l = expand("FREQ=DAILY;COUNT=4", "2026-03-01T09:00:00", "2026-03-01", "2026-04-01",
      { "2026-03-02T09:00:00", "2026-03-03T10:00:00" })
    assert.same({ "2026-03-01T09:00:00", "2026-03-03T09:00:00", "2026-03-04T09:00:00" }, l)
    assert.same({ "2026-03-02" }, dates(expand("FREQ=DAILY;COUNT=2", "2026-03-01", "2026-01-01", "2027-01-01",
      { "2026-03-01" })))
  end)

  it("treats the window as [from, to)", function()
    local rule, dt = "FREQ=DAILY", "2026-03-01T09:00:00"
    assert.same({ "2026-03-02T09:00:00" }, expand(rule, dt, "2026-03-02T09:00:00", "2026-03-03T09:00:00"))
    assert.same({ "2026-03-03T09:00:00" }, expand(rule, dt, "2026-03-02T09:00:01", "2026-03-03T09:00:01"))
    assert.same({}, expand(rule, dt, "2026-02-01", "2026-03-01T09:00:00"))
    assert.same({}, expand(rule, dt, "2026-03-05", "2026-03-05"))
  end)

  it("reaches a window long after DTSTART", function()
    local l = expand("FREQ=WEEKLY;BYDAY=TU", "1990-01-02T07:30:00", "2026-03-01", "2026-03-15")
    assert.same({ "2026-03-03T07:30:00", "2026-03-10T07:30:00" }, l)
  end)

  it("caps the result and says there was more", function()
    local l, more = expand("FREQ=DAILY", "2026-01-01", "2026-01-01", "2027-01-01", nil, 10)
    assert.equal(10, #l)
    assert.is_true(more)
    local _, more2 = expand("FREQ=DAILY;COUNT=10", "2026-01-01", "2026-01-01", "2027-01-01", nil, 10)
    assert.is_false(more2)
  end)

  it("answers nil and a message for a bad rule", function()
    local l, msg = core.rrule_expand("FREQ=SOMETIMES", "2026-01-01", "2026-01-01", "2026-02-01")
    assert.is_nil(l)
    assert.is_truthy(msg:find("FREQ"))
  end)
end)

describe("rrule_next", function()
  it("finds the first occurrence strictly after a time", function()
    assert.equal("2026-03-03T09:00:00", core.rrule_next("FREQ=DAILY", "2026-03-01T09:00:00", "2026-03-02T09:00:00"))
    assert.equal("2026-03-01T09:00:00", core.rrule_next("FREQ=DAILY", "2026-03-01T09:00:00", "2026-02-01"))
    assert.equal("2026-05-29T17:00:00",
      core.rrule_next("FREQ=MONTHLY;BYDAY=-1FR", "2026-01-30T17:00:00", "2026-04-24T17:00:00"))
    assert.equal("2028-02-29T00:00:00", core.rrule_next("FREQ=YEARLY", "2024-02-29", "2024-02-29"))
  end)

  it("honours COUNT and UNTIL", function()
    assert.equal("2026-03-03T09:00:00",
      core.rrule_next("FREQ=DAILY;COUNT=3", "2026-03-01T09:00:00", "2026-03-02T12:00:00"))
    assert.is_nil(core.rrule_next("FREQ=DAILY;COUNT=3", "2026-03-01T09:00:00", "2026-03-03T09:00:00"))
    assert.is_nil(core.rrule_next("FREQ=DAILY;UNTIL=20260303", "2026-03-01T09:00:00", "2026-03-03T09:00:00"))
  end)

  it("ends for a rule that never selects another day", function()
    assert.is_nil(core.rrule_next("FREQ=MONTHLY;INTERVAL=12;BYMONTHDAY=31", "2026-02-01", "2026-02-01"))
  end)
end)

describe("civil helpers", function()
  it("adds seconds across month and year ends and knows weekdays", function()
    assert.equal("2027-01-01T00:30:00", core.civil_add_seconds("2026-12-31T23:30:00", 3600))
    assert.equal("2024-02-29T00:00:00", core.civil_add_seconds("2024-03-01", -86400))
    assert.equal(0, core.civil_weekday("2026-03-02"))
    assert.equal(6, core.civil_weekday("2026-03-29"))
  end)
end)
