-- iCalendar export and import end to end: feed tokens (stored hashed, rotated, revoked; a wrong
-- one is a bare 404), the public .ics feed parsed back with core.ics_parse and compared with the
-- events made through POST /api/events, isolation between users, the import of a real-world
-- export (local times across DST, all-day, recurrence, exdates, overrides, reminders, attendees),
-- all-or-nothing imports that name the bad event, and activity rows.
local h = require("helpers")
local cjson = require("cjson.safe")
local core = require("orrery.core")

local FIXTURE = h.root .. "/spec/fixtures/ics/google_export.ics"

local function call(port, method, path, token, json)
  return h.request(port, method, path, { json = json, headers = token and { Authorization = "Bearer " .. token } })
end

local function new_user(port, timezone, name)
  return h.new_user(port, "cal", { timezone = timezone, name = name })
end

local function create(port, user, body)
  local res = call(port, "POST", "/api/events", user.token, body)
  assert.equal(201, res.status, res.body)
  return res.json
end

local function rotate(port, user)
  local res = call(port, "POST", "/api/calendar/feed-token", user.token)
  assert.equal(201, res.status, res.body)
  return res.json
end

local function feed(port, token)
  return h.request(port, "GET", "/api/calendar.ics?token=" .. token)
end

local function parse(text)
  local out, err = core.ics_parse(text)
  assert.is_string(out, err)
  return cjson.decode(out)
end

local function window(port, user, from, to)
  local res = call(port, "GET", "/api/events?from=" .. from .. "&to=" .. to, user.token)
  assert.equal(200, res.status, res.body)
  return res.json.items
end

local function import(port, user, text)
  return call(port, "POST", "/api/calendar/import", user.token, { ics = text })
end

local function assert_not_found(res)
  assert.equal(404, res.status, res.body)
  assert.matches("^application/json", res.headers["content-type"] or "")
  assert.equal("not_found", res.json.error.code)
  assert.is_nil(res.body:find("BEGIN:", 1, true))
end

local assert_bad_field = h.assert_bad_field

local function unfolded(text)
  local out = {}
  for line in text:gsub("\r\n ", ""):gmatch("([^\r\n]*)\r\n") do out[#out + 1] = line end
  return out
end

local function has_line(text, wanted)
  for _, l in ipairs(unfolded(text)) do if l == wanted then return true end end
  return false
end

local function activity(port, user, object_type)
  local res = call(port, "GET", "/api/activity?limit=200&object_type=" .. object_type, user.token)
  assert.equal(200, res.status, res.body)
  return res.json.items
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding, as a browser's FileReader.readAsDataURL gives it.
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = (a << 16) | ((b or 0) << 8) | (c or 0)
    local chunk = {}
    for k = 3, 0, -1 do
      local v = (n >> (6 * k)) & 63
      chunk[#chunk + 1] = B64:sub(v + 1, v + 1)
    end
    if not b then chunk[3], chunk[4] = "=", "=" elseif not c then chunk[4] = "=" end
    out[#out + 1] = table.concat(chunk)
  end
  return table.concat(out)
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

describe("calendar feed and import", function()
  local srv, port

  setup(function()
    srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "100000" } })
    port = srv.port
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("feed tokens", function()
    it("need a bearer token to create, rotate or revoke", function()
      assert.equal(401, call(port, "POST", "/api/calendar/feed-token").status)
      assert.equal(401, call(port, "DELETE", "/api/calendar/feed-token").status)
      assert.equal(401, call(port, "POST", "/api/calendar/import", nil, { ics = "" }).status)
    end)

    it("are random, returned once with the feed URL, and stored only as a SHA-256", function()
      local u = new_user(port)
      local t = rotate(port, u)
      assert.matches("^[A-Za-z0-9_-]+$", t.token)
      assert.equal(43, #t.token)
      assert.equal("/api/calendar.ics?token=" .. t.token, t.url)
      assert.is_string(t.created_at)
      local stored = srv:sql("SELECT token_hash FROM calendar_feeds WHERE user_id = '" .. u.id .. "'")
      assert.equal(core.auth_sha256_hex(t.token), stored)
      assert.equal("0", srv:sql("SELECT count(*) FROM calendar_feeds WHERE token_hash = '" .. t.token .. "'"))
      assert.are_not.equal(t.token, rotate(port, u).token)
    end)

    it("rotate: the old token stops working at once and the new one works", function()
      local u = new_user(port)
      local first = rotate(port, u)
      assert.equal(200, feed(port, first.token).status)
      local second = rotate(port, u)
      assert_not_found(feed(port, first.token))
      assert.equal(200, feed(port, second.token).status)
      assert.equal("1", srv:sql("SELECT count(*) FROM calendar_feeds WHERE user_id = '" .. u.id .. "'"))
      local acts = activity(port, u, "calendar_feed")
      assert.equal(2, #acts)
      assert.equal("update", acts[1].action)
      assert.equal("create", acts[2].action)
      assert.is_nil(cjson.encode(acts):find(first.token, 1, true))
    end)

    it("revoke: DELETE ends the feed; a second DELETE is 404", function()
      local u = new_user(port)
      local t = rotate(port, u)
      assert.equal(204, call(port, "DELETE", "/api/calendar/feed-token", u.token).status)
      assert_not_found(feed(port, t.token))
      assert.equal(404, call(port, "DELETE", "/api/calendar/feed-token", u.token).status)
    end)

    it("a missing, malformed or unknown token is a 404 that reveals nothing", function()
      local u = new_user(port)
      rotate(port, u)
      assert_not_found(h.request(port, "GET", "/api/calendar.ics"))
      assert_not_found(feed(port, ""))
      assert_not_found(feed(port, "x"))
      assert_not_found(feed(port, string.rep("A", 43)))
      assert_not_found(feed(port, string.rep("A", 42) .. "%27"))
      assert_not_found(feed(port, "' OR 1=1 --"))
      -- An access token is not a feed token, in the query or as a bearer header.
      assert_not_found(feed(port, u.token))
      assert_not_found(h.request(port, "GET", "/api/calendar.ics",
        { headers = { Authorization = "Bearer " .. u.token } }))
    end)
  end)

  describe("export", function()
    local ana, events, text, res

    setup(function()
      ana = new_user(port, "Europe/Berlin", "Ana Example")
      events = {
        create(port, ana, {
          title = "Team standup", description = "Agenda: blockers, plans; notes\nSecond line",
          location = "Room 4.12, 4th floor", starts_at = "2026-03-02T08:30:00Z", ends_at = "2026-03-02T08:45:00Z",
          timezone = "Europe/Berlin", recurrence = "FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260401T095959",
          exdates = { "2026-03-04T08:30:00Z" }, reminders = { 10, 60 }, attendees = { "bob@example.org" },
        }),
        create(port, ana, {
          title = "Company offsite", all_day = true, starts_at = "2026-03-12", ends_at = "2026-03-14",
          recurrence = "FREQ=YEARLY;UNTIL=20290312", reminders = { 1440 },
        }),
        create(port, ana, {
          title = "Call with the New York office", starts_at = "2026-03-10T14:00:00Z",
          ends_at = "2026-03-10T15:00:00Z", timezone = "America/New_York",
        }),
        create(port, ana, {
          title = string.rep("Geburtstag von Jürgen 🎂 ", 6), starts_at = "2026-07-01T10:00:00Z",
          ends_at = "2026-07-01T11:00:00Z",
        }),
      }
      res = feed(port, rotate(port, ana).token)
      text = res.body
    end)

    it("answers text/calendar without a bearer token", function()
      assert.equal(200, res.status, res.body)
      assert.equal("text/calendar; charset=utf-8", res.headers["content-type"])
    end)

    it("is valid iCalendar: CRLF lines of at most 75 octets, the calendar properties, VTIMEZONE blocks", function()
      assert.equal("\r\n", text:sub(-2))
      for line in text:gmatch("([^\n]*)\n") do
        assert.equal("\r", line:sub(-1), "a line without CR")
        assert.is_true(#line - 1 <= 75, "line of " .. (#line - 1) .. " octets")
        assert.truthy(utf8.len(line:sub(1, 1) == " " and line:sub(2) or line), "a fold split a UTF-8 sequence")
      end
      local lines = unfolded(text)
      assert.equal("BEGIN:VCALENDAR", lines[1])
      assert.equal("END:VCALENDAR", lines[#lines])
      assert.is_true(has_line(text, "VERSION:2.0"))
      assert.is_true(has_line(text, "CALSCALE:GREGORIAN"))
      assert.is_true(has_line(text, "X-WR-CALNAME:Ana Example (Orrery)"))
      assert.is_true(has_line(text, "X-WR-TIMEZONE:Europe/Berlin"))
      assert.truthy(text:find("\r\nPRODID:", 1, true))
      assert.is_true(has_line(text, "TZID:Europe/Berlin"))
      assert.is_true(has_line(text, "TZID:America/New_York"))
      assert.is_true(has_line(text, "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU"))
      assert.is_true(has_line(text, "RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=2SU"))
    end)

    it("writes local times with TZID, all-day dates, UTC UNTIL, EXDATE, ATTENDEE and VALARMs", function()
      assert.is_true(has_line(text, "UID:" .. events[1].id .. "@orrery"))
      assert.is_true(has_line(text, "DTSTART;TZID=Europe/Berlin:20260302T093000"))
      assert.is_true(has_line(text, "DTEND;TZID=Europe/Berlin:20260302T094500"))
      assert.is_true(has_line(text, "RRULE:FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260401T075959Z"))
      assert.is_true(has_line(text, "EXDATE;TZID=Europe/Berlin:20260304T093000"))
      assert.is_true(has_line(text, "ATTENDEE:mailto:bob@example.org"))
      assert.is_true(has_line(text, "TRIGGER:-PT10M"))
      assert.is_true(has_line(text, "TRIGGER:-PT60M"))
      assert.is_true(has_line(text, "DESCRIPTION:Agenda: blockers\\, plans\\; notes\\nSecond line"))
      assert.is_true(has_line(text, "DTSTART;VALUE=DATE:20260312"))
      assert.is_true(has_line(text, "DTEND;VALUE=DATE:20260314"))
      assert.is_true(has_line(text, "RRULE:FREQ=YEARLY;UNTIL=20290312"))
      assert.is_true(has_line(text, "DTSTART;TZID=America/New_York:20260310T100000"))
      assert.equal(#events, select(2, text:gsub("BEGIN:VEVENT", "")))
    end)

    it("parses back into the same events", function()
      local back = parse(text)
      assert.equal(#events, #back)
      local by_uid = {}
      for _, e in ipairs(back) do by_uid[e.uid] = e end
      local s = by_uid[events[1].id .. "@orrery"]
      assert.equal("Team standup", s.title)
      assert.equal(events[1].description, s.description)
      assert.equal(events[1].location, s.location)
      assert.equal("2026-03-02T09:30:00", s.starts_at)
      assert.equal("2026-03-02T09:45:00", s.ends_at)
      assert.equal("Europe/Berlin", s.timezone)
      assert.equal("FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20260401T075959Z", s.recurrence)
      assert.same({ "2026-03-04T09:30:00" }, s.exdates)
      assert.same({ 10, 60 }, s.reminders)
      assert.same({ "bob@example.org" }, s.attendees)
      local o = by_uid[events[2].id .. "@orrery"]
      assert.is_true(o.all_day)
      assert.equal("2026-03-12", o.starts_at)
      assert.equal("2026-03-14", o.ends_at)
      assert.equal("FREQ=YEARLY;UNTIL=20290312", o.recurrence)
      assert.same({ 1440 }, o.reminders)
      local ny = by_uid[events[3].id .. "@orrery"]
      assert.equal("2026-03-10T10:00:00", ny.starts_at)
      assert.equal("America/New_York", ny.timezone)
      local b = by_uid[events[4].id .. "@orrery"]
      assert.equal(events[4].title, b.title)
      assert.equal("2026-07-01T12:00:00", b.starts_at) -- CEST
    end)

    it("imports back into another account as the same events (export → import round trip)", function()
      local other = new_user(port, "Asia/Tokyo")
      local r = import(port, other, text)
      assert.equal(201, r.status, r.body)
      assert.equal(#events, r.json.imported)
      for i, e in ipairs(r.json.events) do
        for _, k in ipairs({ "title", "description", "location", "all_day", "starts_at", "ends_at", "timezone",
          "recurrence", "exdates", "reminders", "attendees" }) do
          assert.same(events[i][k], e[k], k .. " of event " .. i)
        end
        assert.are_not.equal(events[i].id, e.id)
      end
    end)

    it("a feed shows only its own user's events", function()
      local bob = new_user(port, "UTC")
      create(port, bob,
        { title = "Bob's dentist", starts_at = "2026-03-03T09:00:00Z", ends_at = "2026-03-03T10:00:00Z" })
      local r = feed(port, rotate(port, bob).token)
      assert.equal(200, r.status)
      local back = parse(r.body)
      assert.equal(1, #back)
      assert.equal("Bob's dentist", back[1].title)
      assert.is_nil(r.body:find("Team standup", 1, true))
      -- And Ana's feed has none of Bob's.
      local again = feed(port, rotate(port, ana).token)
      assert.is_nil(again.body:find("Bob's dentist", 1, true))
    end)

    it("an account without events gets an empty, valid calendar", function()
      local r = feed(port, rotate(port, new_user(port)).token)
      assert.equal(200, r.status)
      assert.same({}, parse(r.body))
      assert.is_nil(r.body:find("BEGIN:VEVENT", 1, true))
    end)
  end)

  describe("import", function()
    -- The file as exported: one of its folds splits a UTF-8 sequence, so only its bytes (base64)
    -- carry it exactly; as JSON text it goes unfolded.
    local raw = read(FIXTURE)
    local fixture = raw:gsub("\r\n[ \t]", "")

    it("takes the file's bytes as ics_base64, even a fold that splits a UTF-8 sequence", function()
      assert.is_nil(utf8.len(raw))
      local u = new_user(port, "UTC")
      local r = call(port, "POST", "/api/calendar/import", u.token, { ics_base64 = base64(raw) })
      assert.equal(201, r.status, r.body)
      assert.equal(8, r.json.imported)
      assert.equal("Geburtstag von Jürgen (Nachbar aus dem 3. Stock, Haus B rechts) 🎂 – nicht vergessen: Kuchen, "
        .. "Kerzen und eine Karte besorgen", r.json.events[3].title)
      -- The URL-safe alphabet without padding works too.
      local v = new_user(port, "UTC")
      r = call(port, "POST", "/api/calendar/import", v.token, { ics_base64 = core.auth_b64url(raw) })
      assert.equal(201, r.status, r.body)
      assert.equal(8, r.json.imported)
    end)

    it("imports the fixture: events visible in the window with the right local times", function()
      local u = new_user(port, "UTC")
      local r = import(port, u, fixture)
      assert.equal(201, r.status, r.body)
      assert.equal(8, r.json.imported)
      assert.equal(8, #r.json.events)
      local items = window(port, u, "2026-03-01T00:00:00Z", "2026-04-05T00:00:00Z")
      local starts = {}
      for _, o in ipairs(items) do
        starts[o.title] = starts[o.title] or {}
        table.insert(starts[o.title], o.occurrence_start)
      end
      -- 09:30 in Berlin: 08:30Z in CET, 07:30Z in CEST (from 29 March); 4 and 11 March excluded;
      -- UNTIL 2026-04-01T07:59:59Z keeps 1 April.
      assert.same({ "2026-03-02T08:30:00Z", "2026-03-09T08:30:00Z", "2026-03-16T08:30:00Z",
        "2026-03-18T08:30:00Z", "2026-03-23T08:30:00Z", "2026-03-25T08:30:00Z", "2026-03-30T07:30:00Z",
        "2026-04-01T07:30:00Z" }, starts["Team standup"])
      assert.same({ "2026-03-10T14:00:00Z" }, starts["Call with the New York office"]) -- EDT since 8 March
      assert.same({ "2026-03-05T13:00:00Z" }, starts["Lunch with Sam"])
      assert.same({ "2026-03-17T14:00:00Z" }, starts["Dentist"])
      assert.same({ "2026-03-12" }, starts["Company offsite"])
      -- COUNT=5 from 23 March, the 25th moved to 08:00, the 26th cancelled.
      assert.same({ "2026-03-23T06:00:00Z", "2026-03-24T06:00:00Z", "2026-03-27T06:00:00Z" }, starts["Morning run"])
      assert.same({ "2026-03-25T07:00:00Z" }, starts["Morning run (later today)"])
      local by_title = {}
      for _, e in ipairs(r.json.events) do by_title[e.title] = e end
      local s = by_title["Team standup"]
      assert.equal("Europe/Berlin", s.timezone)
      assert.same({ 10 }, s.reminders)
      assert.same({ "ana@example.com", "bob@example.org" }, s.attendees)
      assert.equal("Room 4.12, 4th floor", s.location)
      assert.truthy(s.description:find("Daily sync; keep it short.\nAgenda:", 1, true))
      assert.equal("2026-03-12", by_title["Company offsite"].starts_at)
      assert.equal("2026-03-14", by_title["Company offsite"].ends_at)
      assert.is_true(by_title["Company offsite"].all_day)
      assert.same({ 60, 15 }, by_title["Call with the New York office"].reminders)
      assert.same({ "carol@example.com" }, by_title["Call with the New York office"].attendees)
      assert.equal("2026-03-17T14:45:00Z", by_title["Dentist"].ends_at)
      for _, e in ipairs(r.json.events) do
        if e.title:find("^Geburtstag") then
          assert.equal("FREQ=YEARLY", e.recurrence)
          assert.equal("2026-03-20", e.starts_at)
        end
      end
    end)

    it("writes one activity row per imported event", function()
      local u = new_user(port, "UTC")
      local r = import(port, u, fixture)
      assert.equal(201, r.status, r.body)
      local acts = activity(port, u, "event")
      assert.equal(8, #acts)
      local ids = {}
      for _, e in ipairs(r.json.events) do ids[e.id] = true end
      for _, a in ipairs(acts) do
        assert.equal("create", a.action)
        assert.equal("user", a.actor.type)
        assert.equal(u.id, a.actor.id)
        assert.is_true(ids[a.object_id])
      end
    end)

    it("takes floating times in the user's time zone", function()
      local u = new_user(port, "America/New_York")
      local r = import(port, u, table.concat({ "BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", "UID:f1",
        "SUMMARY:Floating", "DTSTART:20260105T090000", "DTEND:20260105T100000", "END:VEVENT", "END:VCALENDAR", "" },
        "\r\n"))
      assert.equal(201, r.status, r.body)
      assert.equal("2026-01-05T14:00:00Z", r.json.events[1].starts_at)
      assert.equal("America/New_York", r.json.events[1].timezone)
    end)

    local function nothing_imported(u)
      assert.same({}, window(port, u, "2026-01-01", "2026-12-31"))
      assert.same({}, activity(port, u, "event"))
    end

    it("refuses the whole import when one event is invalid, naming its index, UID and field", function()
      local u = new_user(port, "UTC")
      local bad = fixture:gsub("SUMMARY:Lunch with Sam", "SUMMARY:" .. string.rep("x", 501))
      local r = import(port, u, bad)
      assert_bad_field(r, "title")
      assert.equal(4, r.json.error.details.index)
      assert.equal("lunch-sam-5521@google.com", r.json.error.details.uid)
      assert.truthy(r.json.error.message:find("lunch-sam-5521@google.com", 1, true))
      nothing_imported(u)
      -- An end before the start.
      bad = fixture:gsub("DTEND:20260305T140000Z", "DTEND:20260305T120000Z")
      r = import(port, u, bad)
      assert_bad_field(r, "ends_at")
      assert.equal("lunch-sam-5521@google.com", r.json.error.details.uid)
      nothing_imported(u)
    end)

    it("refuses an unsupported RRULE part or an unknown zone, naming the UID", function()
      local u = new_user(port, "UTC")
      local bad = fixture:gsub("RRULE:FREQ=DAILY;COUNT=5", "RRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1")
      local r = import(port, u, bad)
      assert_bad_field(r, "recurrence")
      assert.equal("morning-run-series@google.com", r.json.error.details.uid)
      assert.equal(6, r.json.error.details.index)
      nothing_imported(u)
      bad = fixture:gsub("DTSTART;TZID=America/New_York:", "DTSTART;TZID=Mars/Olympus_Mons:")
      r = import(port, u, bad)
      assert_bad_field(r, "timezone")
      assert.equal("ny-call-20260310@google.com", r.json.error.details.uid)
      bad = fixture:gsub("DTSTART;TZID=America/New_York:", "DTSTART;TZID=Some Custom Zone:")
      r = import(port, u, bad)
      assert_bad_field(r, "timezone")
      assert.equal(3, r.json.error.details.index)
      nothing_imported(u)
    end)

    it("maps Windows time zone names", function()
      local u = new_user(port, "UTC")
      local r = import(port, u, table.concat({ "BEGIN:VCALENDAR", "VERSION:2.0", "BEGIN:VEVENT", "UID:w1",
        "SUMMARY:Outlook meeting", "DTSTART;TZID=W. Europe Standard Time:20260706T090000",
        "DTEND;TZID=W. Europe Standard Time:20260706T100000", "END:VEVENT", "END:VCALENDAR", "" }, "\r\n"))
      assert.equal(201, r.status, r.body)
      assert.equal("Europe/Berlin", r.json.events[1].timezone)
      assert.equal("2026-07-06T07:00:00Z", r.json.events[1].starts_at)
    end)

    it("refuses malformed iCalendar text and bad bodies with 400", function()
      local u = new_user(port, "UTC")
      for _, t in ipairs({ "", "garbage", "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20260101T000000Z\r\n",
        "BEGIN:VEVENT\r\nEND:VEVENT\r\n" }) do
        local r = import(port, u, t)
        assert_bad_field(r, "ics")
      end
      assert_bad_field(call(port, "POST", "/api/calendar/import", u.token, { ics = 5 }), "ics")
      assert_bad_field(call(port, "POST", "/api/calendar/import", u.token, { ics = fixture, ics_base64 = "QQ==" }),
        "ics")
      assert_bad_field(call(port, "POST", "/api/calendar/import", u.token, { ics_base64 = "not*base64" }),
        "ics_base64")
      assert_bad_field(call(port, "POST", "/api/calendar/import", u.token, { ics_base64 = base64("garbage") }),
        "ics_base64")
      assert_bad_field(call(port, "POST", "/api/calendar/import", u.token, {}), "ics")
      assert_bad_field(call(port, "POST", "/api/calendar/import", u.token, { ics = fixture, extra = 1 }), "extra")
      local r = h.request(port, "POST", "/api/calendar/import", { body = fixture,
        headers = { Authorization = "Bearer " .. u.token, ["Content-Type"] = "text/calendar" } })
      assert.equal(415, r.status)
      nothing_imported(u)
    end)

    it("caps an import at 5000 events", function()
      local u = new_user(port, "UTC")
      local parts = { "BEGIN:VCALENDAR\r\nVERSION:2.0\r\n" }
      for i = 1, 5001 do
        parts[#parts + 1] = string.format("BEGIN:VEVENT\r\nUID:%d\r\nSUMMARY:e\r\nDTSTART;VALUE=DATE:20260101\r\n"
          .. "END:VEVENT\r\n", i)
      end
      parts[#parts + 1] = "END:VCALENDAR\r\n"
      local r = import(port, u, table.concat(parts))
      assert_bad_field(r, "ics")
      assert.truthy(r.json.error.message:find("5000", 1, true))
      nothing_imported(u)
    end)

    it("an empty calendar imports nothing", function()
      local u = new_user(port, "UTC")
      local r = import(port, u, "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nEND:VCALENDAR\r\n")
      assert.equal(201, r.status, r.body)
      assert.equal(0, r.json.imported)
      assert.same({}, r.json.events)
    end)
  end)
end)
