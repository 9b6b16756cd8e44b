-- iCalendar writer and parser (src/ics.c) through orrery.core: folding at 75 octets without
-- splitting UTF-8, TEXT escaping both ways, the fixture exported the way Google Calendar and
-- Thunderbird write it, what the parser maps or refuses (time zones, RRULE parts, alarms), and
-- malformed input, which must give nil, err and never a crash.
local core = require("orrery.core")
local cjson = require("cjson")

local ROOT = os.getenv("ORRERY_TEST_ROOT") or "."
local FIXTURE = ROOT .. "/spec/fixtures/ics/google_export.ics"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

local function parse(text, max)
  local out, err, details = core.ics_parse(text, max)
  if not out then return nil, err, details end
  return cjson.decode(out)
end

local function write(events, name, opts)
  return core.ics_write(cjson.encode(events), name or "Test", opts and cjson.encode(opts) or nil)
end

-- Physical lines of a written calendar (it must end in CRLF and contain no bare CR or LF).
local function physical_lines(text)
  assert.equal("\r\n", text:sub(-2), "ends with CRLF")
  local body = text:sub(1, -3)
  local lines = {}
  for line in (body .. "\r\n"):gmatch("(.-)\r\n") do
    assert.is_nil(line:find("[\r\n]"), "bare CR or LF in: " .. line)
    lines[#lines + 1] = line
  end
  return lines
end

-- Content lines: continuation lines (leading space) joined back.
local function unfold(text)
  local out = {}
  for _, line in ipairs(physical_lines(text)) do
    if line:sub(1, 1) == " " then out[#out] = out[#out] .. line:sub(2) else out[#out + 1] = line end
  end
  return out
end

local function has_line(text, wanted)
  for _, l in ipairs(unfold(text)) do if l == wanted then return true end end
  return false
end

local function lines_matching(text, pattern)
  local found = {}
  for _, l in ipairs(unfold(text)) do if l:find(pattern) then found[#found + 1] = l end end
  return found
end

-- A calendar around the given lines (LF line ends: the parser takes them as well as CRLF).
local function cal(...)
  return table.concat({ "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//spec//EN", ... }, "\n")
    .. "\nEND:VCALENDAR\n"
end

local function vevent(props)
  local lines = { "BEGIN:VEVENT", "UID:e1@spec", "DTSTAMP:20260101T000000Z", "SUMMARY:Thing" }
  for _, p in ipairs(props) do lines[#lines + 1] = p end
  lines[#lines + 1] = "END:VEVENT"
  return table.concat(lines, "\n")
end

local function one(props, prelude)
  local evs, err, details = parse(cal(prelude or "X-SPEC:1", vevent(props)))
  if not evs then return nil, err, details end
  assert.equal(1, #evs)
  return evs[1]
end

local BASE_EVENT = {
  id = "5f0c7f4e-1b2a-4c3d-8e9f-0a1b2c3d4e5f", title = "Planning", description = "", location = "",
  all_day = false, starts_at = "2026-03-02T09:30:00", ends_at = "2026-03-02T10:00:00",
  timezone = "Europe/Berlin", recurrence = cjson.null, exdates = {}, reminders = {}, attendees = {},
  version = 1, created_at = "2026-02-01T08:00:00.000Z", updated_at = "2026-02-03T09:15:30.250Z",
}

local function event(over)
  local e = {}
  for k, v in pairs(BASE_EVENT) do e[k] = v end
  for k, v in pairs(over or {}) do e[k] = v end
  return e
end

describe("ics_write", function()
  it("writes a VCALENDAR with VERSION, PRODID, CALSCALE, X-WR-CALNAME and CRLF line ends", function()
    local text = assert(write({ event() }, "Ana's calendar", { timezone = "Europe/Berlin" }))
    local lines = unfold(text)
    assert.equal("BEGIN:VCALENDAR", lines[1])
    assert.equal("END:VCALENDAR", lines[#lines])
    assert.is_true(has_line(text, "VERSION:2.0"))
    assert.equal(1, #lines_matching(text, "^PRODID:%-//Orrery//"))
    assert.is_true(has_line(text, "CALSCALE:GREGORIAN"))
    assert.is_true(has_line(text, "X-WR-CALNAME:Ana's calendar"))
    assert.is_true(has_line(text, "X-WR-TIMEZONE:Europe/Berlin"))
    assert.equal(1, #lines_matching(text, "^BEGIN:VEVENT$"))
    assert.equal(1, #lines_matching(text, "^END:VEVENT$"))
  end)

  it("writes an event's fields: UID, DTSTAMP, TZID local times, RRULE, EXDATE, ATTENDEE, one VALARM per reminder",
    function()
      local text = assert(write({ event({
        recurrence = "FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260401T075959Z",
        exdates = { "2026-03-04T09:30:00", "2026-03-11T09:30:00" },
        reminders = { 15, 0, 1440 }, attendees = { "ana@example.com", "bob@example.org" },
        location = "Room 4", description = "Agenda",
      }) }))
      assert.is_true(has_line(text, "UID:" .. BASE_EVENT.id .. "@orrery"))
      assert.is_true(has_line(text, "DTSTAMP:20260203T091530Z"))
      assert.is_true(has_line(text, "CREATED:20260201T080000Z"))
      assert.is_true(has_line(text, "DTSTART;TZID=Europe/Berlin:20260302T093000"))
      assert.is_true(has_line(text, "DTEND;TZID=Europe/Berlin:20260302T100000"))
      assert.is_true(has_line(text, "SUMMARY:Planning"))
      assert.is_true(has_line(text, "DESCRIPTION:Agenda"))
      assert.is_true(has_line(text, "LOCATION:Room 4"))
      assert.is_true(has_line(text, "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260401T075959Z"))
      assert.is_true(has_line(text, "EXDATE;TZID=Europe/Berlin:20260304T093000,20260311T093000"))
      assert.is_true(has_line(text, "ATTENDEE:mailto:ana@example.com"))
      assert.is_true(has_line(text, "ATTENDEE:mailto:bob@example.org"))
      assert.equal(3, #lines_matching(text, "^BEGIN:VALARM$"))
      assert.equal(3, #lines_matching(text, "^ACTION:DISPLAY$"))
      assert.same({ "TRIGGER:-PT15M", "TRIGGER:-PT0M", "TRIGGER:-PT1440M" }, lines_matching(text, "^TRIGGER:"))
    end)

  it("writes all-day events as VALUE=DATE and UTC times with Z", function()
    local text = assert(write({
      event({ id = "a", all_day = true, starts_at = "2026-03-12", ends_at = "2026-03-14", exdates = { "2026-03-13" } }),
      event({ id = "b", starts_at = "2026-03-05T13:00:00Z", ends_at = "2026-03-05T14:00:00.000Z",
        timezone = cjson.null }),
    }))
    assert.is_true(has_line(text, "DTSTART;VALUE=DATE:20260312"))
    assert.is_true(has_line(text, "DTEND;VALUE=DATE:20260314"))
    assert.is_true(has_line(text, "EXDATE;VALUE=DATE:20260313"))
    assert.is_true(has_line(text, "DTSTART:20260305T130000Z"))
    assert.is_true(has_line(text, "DTEND:20260305T140000Z"))
  end)

  it("folds lines at 75 octets, continuation lines starting with one space", function()
    local long = string.rep("abcdefghij", 30)
    local text = assert(write({ event({ description = long }) }))
    local folded = false
    for _, line in ipairs(physical_lines(text)) do
      assert.is_true(#line <= 75, "line of " .. #line .. " octets: " .. line)
      if line:sub(1, 1) == " " then folded = true end
    end
    assert.is_true(folded)
    assert.is_true(has_line(text, "DESCRIPTION:" .. long))
    -- The first physical line of the description is exactly 75 octets.
    local first = text:match("\r\n(DESCRIPTION:[^\r]*)\r\n")
    assert.equal(75, #first)
  end)

  it("never splits a multi-byte UTF-8 sequence when folding", function()
    for _, unit in ipairs({ "é", "€", "🎂", "a€", "ab🎂" }) do
      local title = string.rep(unit, 90)
      local text = assert(write({ event({ title = title }) }))
      for _, line in ipairs(physical_lines(text)) do
        assert.is_true(#line <= 75, "line of " .. #line .. " octets")
        local content = line:sub(1, 1) == " " and line:sub(2) or line
        assert.truthy(utf8.len(content), "a physical line is not valid UTF-8 on its own: " .. unit)
      end
      assert.is_true(has_line(text, "SUMMARY:" .. title), unit)
      local back = parse(text)
      assert.equal(title, back[1].title)
    end
  end)

  it("escapes backslash, semicolon, comma and newlines in TEXT and the parser reverses it", function()
    local title = [[a\b;c,d]] .. "\n" .. "e"
    local desc = "line 1\r\nline 2\rline 3\n\\n is not a newline; C:\\temp, done"
    local text = assert(write({ event({ title = title, description = desc, location = "Room 1, floor 2; east" }) }))
    assert.is_true(has_line(text, [[SUMMARY:a\\b\;c\,d\ne]]))
    assert.is_true(has_line(text, [[LOCATION:Room 1\, floor 2\; east]]))
    local back = parse(text)[1]
    assert.equal(title, back.title)
    assert.equal("line 1\nline 2\nline 3\n\\n is not a newline; C:\\temp, done", back.description)
    assert.equal("Room 1, floor 2; east", back.location)
  end)

  it("drops control characters that TEXT cannot carry", function()
    local text = assert(write({ event({ title = "a\1b\127c\td" }) }))
    assert.is_true(has_line(text, "SUMMARY:abc\td"))
  end)

  it("writes VTIMEZONE blocks from the zone offsets it is given", function()
    local zones = {
      ["Europe/Berlin"] = { offset = 3600, name = "CET", transitions = {
        { start = "2026-03-29T02:00:00", from = 3600, to = 7200, name = "CEST" },
        { start = "2026-10-25T03:00:00", from = 7200, to = 3600, name = "CET" },
      } },
      ["America/New_York"] = { offset = -18000, name = "EST", transitions = {
        { start = "2026-03-08T02:00:00", from = -18000, to = -14400, name = "EDT" },
        { start = "2026-11-01T02:00:00", from = -14400, to = -18000, name = "EST" },
      } },
      ["Asia/Kolkata"] = { offset = 19800, name = "IST", transitions = {} },
    }
    local text = assert(write({
      event({ id = "a" }),
      event({ id = "b", timezone = "America/New_York" }),
      event({ id = "c", timezone = "Asia/Kolkata" }),
    }, "Zones", { zones = zones }))
    assert.equal(3, #lines_matching(text, "^BEGIN:VTIMEZONE$"))
    local lines = unfold(text)
    local joined = table.concat(lines, "\n")
    assert.truthy(joined:find("TZID:Europe/Berlin\n", 1, true))
    assert.truthy(joined:find(table.concat({ "BEGIN:DAYLIGHT", "TZOFFSETFROM:+0100", "TZOFFSETTO:+0200",
      "TZNAME:CEST", "DTSTART:19700329T020000", "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU" }, "\n"), 1, true))
    assert.truthy(joined:find(table.concat({ "BEGIN:STANDARD", "TZOFFSETFROM:+0200", "TZOFFSETTO:+0100",
      "TZNAME:CET", "DTSTART:19701025T030000", "RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU" }, "\n"), 1, true))
    assert.truthy(joined:find("DTSTART:19700308T020000\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU", 1, true))
    assert.truthy(joined:find("DTSTART:19701101T020000\nRRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=1SU", 1, true))
    assert.truthy(joined:find(table.concat({ "BEGIN:STANDARD", "TZOFFSETFROM:+0530", "TZOFFSETTO:+0530",
      "TZNAME:IST", "DTSTART:19700101T000000" }, "\n"), 1, true))
    -- The blocks come before the events.
    assert.is_true(joined:find("BEGIN:VTIMEZONE", 1, true) < joined:find("BEGIN:VEVENT", 1, true))
  end)

  it("writes no VTIMEZONE for a zone it has no offsets for, nor for all-day events", function()
    local text = assert(write({ event(), event({ id = "x", all_day = true, starts_at = "2026-01-01",
      ends_at = "2026-01-02" }) }))
    assert.equal(0, #lines_matching(text, "VTIMEZONE"))
  end)

  it("refuses what it cannot write with nil, err", function()
    local out, err = core.ics_write("{}", "x")
    assert.is_nil(out)
    assert.matches("array", err)
    out, err = core.ics_write("[", "x")
    assert.is_nil(out)
    assert.matches("JSON", err)
    out, err = write({ event({ starts_at = "tomorrow" }) })
    assert.is_nil(out)
    assert.matches("starts_at", err)
    out, err = write({ event({ id = cjson.null }) })
    assert.is_nil(out)
    assert.matches("id", err)
    out, err = write({ event({ reminders = { "soon" } }) })
    assert.is_nil(out)
    assert.matches("reminders", err)
  end)
end)

describe("ics_parse of a Google Calendar / Thunderbird export", function()
  local text = read(FIXTURE)
  local evs = assert(parse(text))
  local by_title = {}
  for _, e in ipairs(evs) do by_title[e.title] = e end

  it("finds every event (an override of one occurrence stays, a cancelled one does not; VTODO ignored)", function()
    assert.equal(8, #evs)
    local titles = {}
    for _, e in ipairs(evs) do titles[#titles + 1] = e.title end
    assert.same({
      "Team standup", "Company offsite",
      "Geburtstag von Jürgen (Nachbar aus dem 3. Stock, Haus B rechts) 🎂 – nicht vergessen: Kuchen, Kerzen "
        .. "und eine Karte besorgen",
      "Call with the New York office", "Lunch with Sam", "Dentist", "Morning run", "Morning run (later today)",
    }, titles)
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7 }, (function()
      local t = {}
      for i, e in ipairs(evs) do t[i] = e.index end
      return t
    end)())
  end)

  it("keeps only the fields of an event (X- properties, SEQUENCE, ORGANIZER... are ignored)", function()
    local allowed = {
      uid = true, index = true, title = true, description = true, location = true, all_day = true,
      starts_at = true, ends_at = true, timezone = true, recurrence = true, exdates = true, reminders = true,
      attendees = true,
    }
    for _, e in ipairs(evs) do
      for k in pairs(e) do assert.is_true(allowed[k] == true, "unexpected key " .. k) end
    end
  end)

  it("keeps TZID local times with their zone, UTC times in UTC, and X-WR-TIMEZONE as the default zone", function()
    local s = by_title["Team standup"]
    assert.equal("4kq1v0f3u2b1c9s7c4m8d2a6pe@google.com", s.uid)
    assert.equal("2026-03-02T09:30:00", s.starts_at)
    assert.equal("2026-03-02T09:45:00", s.ends_at)
    assert.equal("Europe/Berlin", s.timezone)
    assert.is_false(s.all_day)
    local ny = by_title["Call with the New York office"]
    assert.equal("2026-03-10T10:00:00", ny.starts_at)
    assert.equal("America/New_York", ny.timezone)
    local lunch = by_title["Lunch with Sam"]
    assert.equal("2026-03-05T13:00:00Z", lunch.starts_at)
    assert.equal("2026-03-05T14:00:00Z", lunch.ends_at)
    assert.equal("Europe/Berlin", lunch.timezone)
  end)

  it("reads all-day events as dates with an exclusive end", function()
    local o = by_title["Company offsite"]
    assert.is_true(o.all_day)
    assert.equal("2026-03-12", o.starts_at)
    assert.equal("2026-03-14", o.ends_at)
    local b = evs[3]
    assert.is_true(b.all_day)
    assert.equal("2026-03-20", b.starts_at)
    assert.equal("2026-03-21", b.ends_at)
    assert.equal("FREQ=YEARLY", b.recurrence)
  end)

  it("passes RRULE through (UNTIL kept, a WKST that cannot matter dropped) with the EXDATE list", function()
    local s = by_title["Team standup"]
    assert.equal("FREQ=WEEKLY;UNTIL=20260401T075959Z;BYDAY=MO,WE", s.recurrence)
    assert.same({ "2026-03-04T09:30:00", "2026-03-11T09:30:00" }, s.exdates)
    local run = by_title["Morning run"]
    assert.equal("FREQ=DAILY;COUNT=5", run.recurrence)
  end)

  it("turns overridden and cancelled occurrences into EXDATEs of their series", function()
    local run = by_title["Morning run"]
    assert.same({ "2026-03-25T07:00:00", "2026-03-26T07:00:00" }, run.exdates)
    local moved = by_title["Morning run (later today)"]
    assert.equal("morning-run-series@google.com", moved.uid)
    assert.equal("2026-03-25T08:00:00", moved.starts_at)
    assert.is_nil(moved.recurrence)
  end)

  it("turns VALARM triggers into reminder minutes", function()
    assert.same({ 10 }, by_title["Team standup"].reminders)
    assert.same({ 1440 }, by_title["Company offsite"].reminders)
    assert.same({ 60, 15 }, by_title["Call with the New York office"].reminders)
    assert.same({ 30 }, by_title["Dentist"].reminders)
    assert.same({}, by_title["Lunch with Sam"].reminders)
  end)

  it("keeps mailto: attendees only", function()
    assert.same({ "ana@example.com", "bob@example.org" }, by_title["Team standup"].attendees)
    assert.same({ "Carol@Example.com" }, by_title["Call with the New York office"].attendees)
    assert.same({}, by_title["Dentist"].attendees)
  end)

  it("unescapes TEXT and unfolds lines, even a fold that split a UTF-8 sequence", function()
    local s = by_title["Team standup"]
    assert.equal("Daily sync; keep it short.\nAgenda:\n1. Blockers, risks\n2. Plans for the day\n\n"
      .. "Join with Google Meet: https://meet.google.com/abc-defg-hij\nOr dial: (DE) +49 30 123456 PIN: 123456789#",
      s.description)
    assert.equal("Room 4.12, 4th floor", s.location)
    assert.equal("Hotel Adlon, Unter den Linden 77, 10117 Berlin, Germany", by_title["Company offsite"].location)
    assert.equal("Bring the insurance card.\nPath: C:\\Users\\ana\\Documents\\x-ray.pdf",
      by_title["Dentist"].description)
    assert.truthy(evs[3].title:find("🎂", 1, true))
  end)

  it("computes the end from DURATION", function()
    local d = by_title["Dentist"]
    assert.equal("2026-03-17T15:00:00", d.starts_at)
    assert.equal("2026-03-17T15:45:00", d.ends_at)
  end)

  it("reads the same events whatever the line ends (CRLF, LF, CR) and with a BOM", function()
    local lf = text:gsub("\r\n", "\n")
    local cr = text:gsub("\r\n", "\r")
    assert.same(evs, parse(lf))
    assert.same(evs, parse(cr))
    assert.same(evs, parse("\239\187\191" .. text))
  end)

  it("round-trips through the writer", function()
    local copy = {}
    for i, e in ipairs(evs) do
      local c = {}
      for k, v in pairs(e) do c[k] = v end
      c.id, c.uid, c.index = "id-" .. i, nil, nil
      copy[i] = c
    end
    local out = assert(write(copy, "Round trip", { timezone = "Europe/Berlin" }))
    local back = assert(parse(out))
    assert.equal(#evs, #back)
    for i, e in ipairs(back) do
      assert.equal("id-" .. i .. "@orrery", e.uid)
      for _, k in ipairs({ "title", "all_day", "starts_at", "ends_at", "timezone", "recurrence", "exdates",
        "reminders", "attendees" }) do
        assert.same(evs[i][k], e[k], k .. " of event " .. i)
      end
      assert.equal(evs[i].description or "", e.description or "")
      assert.equal(evs[i].location or "", e.location or "")
    end
  end)
end)

describe("ics_parse mapping", function()
  it("maps Windows time zone names and vendor-prefixed TZIDs to IANA names", function()
    local e = assert(one({ "DTSTART;TZID=W. Europe Standard Time:20260302T093000",
      "DTEND;TZID=W. Europe Standard Time:20260302T100000" }))
    assert.equal("Europe/Berlin", e.timezone)
    assert.equal("2026-03-02T09:30:00", e.starts_at)
    e = assert(one({ "DTSTART;TZID=\"Pacific Standard Time\":20260302T093000", "DURATION:PT1H" }))
    assert.equal("America/Los_Angeles", e.timezone)
    assert.equal("2026-03-02T10:30:00", e.ends_at)
    e = assert(one({ "DTSTART;TZID=/mozilla.org/20070129_1/Europe/Paris:20260302T093000", "DURATION:PT1H" }))
    assert.equal("Europe/Paris", e.timezone)
  end)

  it("refuses a Windows-style zone it does not know, naming the UID and the field", function()
    local e, err, d = one({ "DTSTART;TZID=Customized Time Zone:20260302T093000", "DURATION:PT1H" })
    assert.is_nil(e)
    assert.matches("e1@spec", err, 1, true)
    assert.equal("timezone", d.field)
    assert.equal("e1@spec", d.uid)
    assert.equal(0, d.index)
  end)

  it("marks a time in another zone than DTSTART's with a [zone] suffix", function()
    local e = assert(one({ "DTSTART;TZID=Europe/Berlin:20260302T093000",
      "DTEND;TZID=America/New_York:20260302T120000" }))
    assert.equal("2026-03-02T12:00:00[America/New_York]", e.ends_at)
  end)

  it("leaves floating times without a zone when the calendar names none", function()
    local e = assert(one({ "DTSTART:20260302T093000", "DTEND:20260302T100000" }))
    assert.equal("2026-03-02T09:30:00", e.starts_at)
    assert.is_nil(e.timezone)
  end)

  it("gives an all-day event without DTEND one day, and a timed one without DTEND no length", function()
    local e = assert(one({ "DTSTART;VALUE=DATE:20260302" }))
    assert.equal("2026-03-03", e.ends_at)
    e = assert(one({ "DTSTART:20260302" }))
    assert.is_true(e.all_day)
    e = assert(one({ "DTSTART:20260302T093000Z" }))
    assert.equal(e.starts_at, e.ends_at)
    e = assert(one({ "DTSTART;VALUE=DATE:20260302", "DURATION:P2D" }))
    assert.equal("2026-03-04", e.ends_at)
    e = assert(one({ "DTSTART:20261231T233000Z", "DURATION:P1DT1H" }))
    assert.equal("2027-01-02T00:30:00Z", e.ends_at)
  end)

  it("titles an event without SUMMARY '(no title)'", function()
    local evs = assert(parse(cal("BEGIN:VEVENT", "UID:x", "DTSTART:20260302T093000Z", "DURATION:PT1H", "END:VEVENT")))
    assert.equal("(no title)", evs[1].title)
    assert.equal(cjson.null, (evs[1].description or cjson.null))
  end)

  it("drops BYMONTH that only restates a yearly rule's start, WKST=MO, WKST when INTERVAL is 1", function()
    local e = assert(one({ "DTSTART;VALUE=DATE:20260320", "RRULE:FREQ=YEARLY;BYMONTH=3;BYMONTHDAY=20" }))
    assert.equal("FREQ=YEARLY", e.recurrence)
    e = assert(one({ "DTSTART:20260302T090000Z", "DURATION:PT1H", "RRULE:freq=weekly;wkst=su;byday=mo,tu" }))
    assert.equal("FREQ=WEEKLY;BYDAY=MO,TU", e.recurrence)
    e = assert(one({ "DTSTART:20260302T090000Z", "DURATION:PT1H", "RRULE:FREQ=WEEKLY;INTERVAL=2;WKST=MO;BYDAY=TU,TH" }))
    assert.equal("FREQ=WEEKLY;INTERVAL=2;BYDAY=TU,TH", e.recurrence)
  end)

  it("refuses RRULE parts Orrery does not support, naming the UID, and never guesses", function()
    local cases = {
      "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
      "RRULE:FREQ=HOURLY;INTERVAL=4",
      "RRULE:FREQ=WEEKLY;INTERVAL=2;WKST=SU;BYDAY=TU,TH",
      "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2TU",
      "RRULE:FREQ=YEARLY;BYWEEKNO=20",
      "RRULE:INTERVAL=2",
      "RRULE:FREQ=DAILY;COUNT=3;COUNT=4",
    }
    for _, rule in ipairs(cases) do
      local e, err, d = one({ "DTSTART:20260302T090000Z", "DURATION:PT1H", rule })
      assert.is_nil(e, rule)
      assert.equal("recurrence", d.field, rule)
      assert.equal("e1@spec", d.uid, rule)
      assert.matches("UID e1@spec", err, 1, true)
    end
    local e, _, d = one({ "DTSTART:20260302T090000Z", "DURATION:PT1H", "RRULE:FREQ=DAILY", "RDATE:20260310T090000Z" })
    assert.is_nil(e)
    assert.equal("recurrence", d.field)
    e, _, d = one({ "DTSTART:20260302T090000Z", "DURATION:PT1H", "RRULE:FREQ=DAILY", "RRULE:FREQ=WEEKLY" })
    assert.is_nil(e)
    assert.equal("recurrence", d.field)
  end)

  it("reads alarms: RELATED=END, a UTC trigger, ACTION:NONE skipped, duplicates once", function()
    local e = assert(one({ "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z",
      "BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER;RELATED=END:-PT90M", "END:VALARM",
      "BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER;VALUE=DATE-TIME:20260302T084500Z", "END:VALARM",
      "BEGIN:VALARM", "ACTION:NONE", "TRIGGER;VALUE=DATE-TIME:19760401T005545Z", "END:VALARM",
      "BEGIN:VALARM", "ACTION:AUDIO", "TRIGGER:-PT15M", "END:VALARM",
      "BEGIN:VALARM", "ACTION:DISPLAY", "TRIGGER:-P1W", "END:VALARM",
    }))
    assert.same({ 30, 15, 10080 }, e.reminders)
  end)

  it("refuses an alarm after the start, or a malformed trigger, naming reminders", function()
    for _, trig in ipairs({ "TRIGGER:PT9H", "TRIGGER:-PT", "TRIGGER:soon", "TRIGGER;RELATED=END:PT0M" }) do
      local e, _, d = one({ "DTSTART:20260302T090000Z", "DTEND:20260302T100000Z",
        "BEGIN:VALARM", "ACTION:DISPLAY", trig, "END:VALARM" })
      assert.is_nil(e, trig)
      assert.equal("reminders", d.field, trig)
    end
  end)

  it("reads EXDATE lists of several properties and forms", function()
    local e = assert(one({ "DTSTART;TZID=Europe/Berlin:20260302T093000", "DURATION:PT30M", "RRULE:FREQ=DAILY",
      "EXDATE;TZID=Europe/Berlin:20260303T093000,20260304T093000", "EXDATE:20260305T083000Z",
      "EXDATE;VALUE=DATE:20260306", "EXDATE;TZID=Europe/Berlin:20260303T093000" }))
    assert.same({ "2026-03-03T09:30:00", "2026-03-04T09:30:00", "2026-03-05T08:30:00Z", "2026-03-06T09:30:00" },
      e.exdates)
    e = assert(one({ "DTSTART;VALUE=DATE:20260302", "RRULE:FREQ=DAILY", "EXDATE;VALUE=DATE:20260303,20260305" }))
    assert.same({ "2026-03-03", "2026-03-05" }, e.exdates)
  end)

  it("decodes quoted and RFC 6868 parameter values", function()
    local e = assert(one({ "DTSTART:20260302T090000Z", "DURATION:PT1H",
      "ATTENDEE;CN=\"Doe, Jane; PhD: ^'Dr^'\";ROLE=REQ-PARTICIPANT:mailto:jane@example.com" }))
    assert.same({ "jane@example.com" }, e.attendees)
  end)

  it("caps the number of events", function()
    local text = cal(vevent({ "DTSTART:20260302T090000Z" }), vevent({ "DTSTART:20260303T090000Z" }),
      vevent({ "DTSTART:20260304T090000Z" }))
    assert.equal(3, #assert(parse(text)))
    assert.equal(3, #assert(parse(text, 3)))
    local evs, err = parse(text, 2)
    assert.is_nil(evs)
    assert.matches("more than 2 events", err)
  end)
end)

describe("ics_parse of malformed input", function()
  local cases = {
    { "an empty text", "" },
    { "only blank lines", "\r\n\r\n  \r\n" },
    { "plain text", "hello, this is not a calendar\n" },
    { "JSON", '{"events": []}' },
    { "no VCALENDAR", "BEGIN:VEVENT\nUID:x\nDTSTART:20260302T090000Z\nEND:VEVENT\n" },
    { "an unterminated VEVENT", "BEGIN:VCALENDAR\nVERSION:2.0\nBEGIN:VEVENT\nUID:x\nDTSTART:20260302T090000Z\n" },
    { "an unterminated VCALENDAR", "BEGIN:VCALENDAR\nVERSION:2.0\n" },
    { "END that closes the wrong component",
      "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:20260302T090000Z\nEND:VCALENDAR\nEND:VEVENT\n" },
    { "END without BEGIN", "END:VCALENDAR\n" },
    { "a garbage line inside an event",
      "BEGIN:VCALENDAR\nBEGIN:VEVENT\nthis line has no colon\nEND:VEVENT\nEND:VCALENDAR\n" },
    { "garbage after the calendar", "BEGIN:VCALENDAR\nEND:VCALENDAR\nrubbish: yes\n" },
    { "a continuation line first", " BEGIN:VCALENDAR\nEND:VCALENDAR\n" },
    { "an unterminated quoted parameter",
      "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;TZID=\"Europe/Berlin:20260302T090000\nEND:VEVENT\nEND:VCALENDAR\n" },
    { "invalid UTF-8", "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:\255\254\nDTSTART:20260302T090000Z\nEND:VEVENT\n"
      .. "END:VCALENDAR\n" },
    { "an overlong UTF-8 encoding", "BEGIN:VCALENDAR\nX-A:\192\175\nEND:VCALENDAR\n" },
    { "a NUL byte", "BEGIN:VCALENDAR\nX-A:a\0b\nEND:VCALENDAR\n" },
    { "components nested too deeply", "BEGIN:VCALENDAR\n" .. string.rep("BEGIN:X-A\n", 40)
      .. string.rep("END:X-A\n", 40) .. "END:VCALENDAR\n" },
    { "binary noise", string.rep("\0\1\2\255\254", 200) },
  }
  for _, c in ipairs(cases) do
    it("refuses " .. c[1] .. " with nil, err", function()
      local out, err, details = core.ics_parse(c[2])
      assert.is_nil(out)
      assert.is_string(err)
      assert.is_true(#err > 0)
      assert.equal("ics", details.field)
    end)
  end

  it("names the line of the problem", function()
    local _, err, d = core.ics_parse("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nnonsense\r\nEND:VEVENT\r\n")
    assert.equal(4, d.line)
    assert.matches("line 4", err)
  end)

  it("refuses an event without DTSTART or with an impossible date, naming the field", function()
    local e, _, d = one({})
    assert.is_nil(e)
    assert.equal("starts_at", d.field)
    for _, v in ipairs({ "DTSTART:20260230T090000Z", "DTSTART:20260302T250000Z", "DTSTART:2026-03-02",
      "DTSTART:tomorrow", "DTSTART;VALUE=DATE:2026030" }) do
      e, _, d = one({ v })
      assert.is_nil(e, v)
      assert.equal("starts_at", d.field, v)
    end
    e, _, d = one({ "DTSTART:20260302T090000Z", "DTEND;VALUE=DATE:20260303" })
    assert.is_nil(e)
    assert.equal("ends_at", d.field)
    e, _, d = one({ "DTSTART;VALUE=DATE:20260302", "DURATION:PT5H" })
    assert.is_nil(e)
    assert.equal("ends_at", d.field)
  end)

  it("survives random damage to the fixture: nil, err or events, never a crash", function()
    local text = read(FIXTURE)
    math.randomseed(7)
    for _ = 1, 300 do
      local pos = math.random(1, #text)
      local cut = text:sub(1, pos) .. string.char(math.random(0, 255)) .. text:sub(pos + math.random(0, 40))
      local out, err = core.ics_parse(cut)
      assert.is_true(out ~= nil or type(err) == "string")
    end
  end)
end)
