-- Events end to end against the real server and PostgreSQL: CRUD with ETags, recurrence expanded
-- in each event's local time across DST (Europe/Berlin, America/New_York), month ends, COUNT,
-- UNTIL, EXDATE, all-day events, window limits, conflicts, free/busy in working hours, bad input,
-- isolation between users and activity rows.
local h = require("helpers")

local function call(port, method, path, token, json, headers)
  local hd = { Authorization = "Bearer " .. token }
  for k, v in pairs(headers or {}) do hd[k] = v end
  return h.request(port, method, path, { json = json, headers = hd })
end

local function new_user(port, timezone) return h.new_user(port, "ev", { timezone = timezone }) end

local assert_bad_field = h.assert_bad_field

local function create(port, user, body)
  local res = call(port, "POST", "/api/events", user.token, body)
  assert.equal(201, res.status, res.body)
  return res.json, res
end

local function window(port, user, from, to, extra)
  local res = call(port, "GET", "/api/events?from=" .. from .. "&to=" .. to .. (extra or ""), user.token)
  assert.equal(200, res.status, res.body)
  return res.json.items, res.json
end

-- The occurrence starts of one series in a window.
local function starts_of(port, user, id, from, to)
  local out = {}
  for _, o in ipairs(window(port, user, from, to)) do
    if o.series_id == id then out[#out + 1] = o.occurrence_start end
  end
  return out
end

describe("events API", function()
  local srv, port

  setup(function()
    srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "100000" } })
    port = srv.port
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  describe("CRUD", function()
    local u
    setup(function() u = new_user(port, "Europe/Berlin") end)

    it("creates, reads, patches with If-Match and deletes an event", function()
      local ev, res = create(port, u, {
        title = "Dentist", description = "Bring the card", location = "Main St 1",
        starts_at = "2026-03-10T14:00:00+01:00", ends_at = "2026-03-10T15:00:00+01:00",
        reminders = { 30, 10 }, attendees = { " Ana@Example.com ", "bo@example.com", "ana@example.com" },
      })
      assert.equal('"1"', res.headers["etag"])
      assert.equal("/api/events/" .. ev.id, res.headers["location"])
      assert.equal("Dentist", ev.title)
      assert.equal("2026-03-10T13:00:00Z", ev.starts_at)
      assert.equal("2026-03-10T14:00:00Z", ev.ends_at)
      assert.equal("Europe/Berlin", ev.timezone) -- the user's zone by default
      assert.is_false(ev.all_day)
      assert.same({ 30, 10 }, ev.reminders)
      assert.same({ "ana@example.com", "bo@example.com" }, ev.attendees)
      assert.same({}, ev.exdates)
      assert.same({}, ev.conflicts)
      assert.equal(1, ev.version)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", ev.created_at)

      local got = call(port, "GET", "/api/events/" .. ev.id, u.token)
      assert.equal(200, got.status, got.body)
      assert.equal('"1"', got.headers["etag"])
      assert.equal("Dentist", got.json.title)
      assert.is_nil(got.json.conflicts)

      local stale = call(port, "PATCH", "/api/events/" .. ev.id, u.token, { title = "x" }, { ["If-Match"] = '"7"' })
      assert.equal(412, stale.status, stale.body)
      assert.equal("precondition_failed", stale.json.error.code)

      local p = call(port, "PATCH", "/api/events/" .. ev.id, u.token, { title = "Dentist (moved)",
        starts_at = "2026-03-11T09:00:00Z" }, { ["If-Match"] = '"1"' })
      assert.equal(200, p.status, p.body)
      assert.equal('"2"', p.headers["etag"])
      assert.equal("Dentist (moved)", p.json.title)
      assert.equal("2026-03-11T09:00:00Z", p.json.starts_at)
      assert.equal("2026-03-11T10:00:00Z", p.json.ends_at) -- moving the start keeps the length
      assert.equal("Bring the card", p.json.description) -- untouched fields stay

      -- null clears an optional field
      local cleared = h.request(port, "PATCH", "/api/events/" .. ev.id, { body = '{"description": null}',
        headers = { Authorization = "Bearer " .. u.token, ["Content-Type"] = "application/json" } })
      assert.equal(200, cleared.status, cleared.body)
      assert.equal("", cleared.json.description)

      local del_stale = call(port, "DELETE", "/api/events/" .. ev.id, u.token, nil, { ["If-Match"] = '"1"' })
      assert.equal(412, del_stale.status)
      local del = call(port, "DELETE", "/api/events/" .. ev.id, u.token)
      assert.equal(204, del.status, del.body)
      assert.equal(404, call(port, "GET", "/api/events/" .. ev.id, u.token).status)
      assert.equal(404, call(port, "DELETE", "/api/events/" .. ev.id, u.token).status)
    end)

    it("answers 404 for a malformed or unknown id", function()
      assert.equal(404, call(port, "GET", "/api/events/not-a-uuid", u.token).status)
      assert.equal(404, call(port, "GET", "/api/events/00000000-0000-4000-8000-000000000000", u.token).status)
      assert.equal(404, call(port, "PATCH", "/api/events/'; DROP TABLE events;--", u.token, { title = "x" }).status)
    end)

    it("takes an explicit time zone and defaults the end", function()
      local ev = create(port, u, { title = "Call", starts_at = "2026-07-01T09:00:00-04:00",
        timezone = "America/New_York" })
      assert.equal("America/New_York", ev.timezone)
      assert.equal("2026-07-01T13:00:00Z", ev.starts_at)
      assert.equal("2026-07-01T14:00:00Z", ev.ends_at)
    end)
  end)

  describe("recurrence across DST", function()
    it("keeps a weekly 09:00 in Europe/Berlin at 09:00 local (2026-03-29)", function()
      local u = new_user(port, "Europe/Berlin")
      local ev = create(port, u, { title = "Standup", starts_at = "2026-03-16T09:00:00+01:00",
        ends_at = "2026-03-16T09:30:00+01:00", recurrence = "FREQ=WEEKLY;BYDAY=MO" })
      local items = window(port, u, "2026-03-16", "2026-04-14")
      local starts, ends = {}, {}
      for _, o in ipairs(items) do
        starts[#starts + 1] = o.occurrence_start
        ends[#ends + 1] = o.occurrence_end
        assert.equal(ev.id, o.series_id)
        assert.equal("Standup", o.title)
      end
      assert.same({ "2026-03-16T08:00:00Z", "2026-03-23T08:00:00Z", "2026-03-30T07:00:00Z",
        "2026-04-06T07:00:00Z", "2026-04-13T07:00:00Z" }, starts)
      assert.same({ "2026-03-16T08:30:00Z", "2026-03-23T08:30:00Z", "2026-03-30T07:30:00Z",
        "2026-04-06T07:30:00Z", "2026-04-13T07:30:00Z" }, ends)
    end)

    it("keeps a weekly 09:00 in America/New_York at 09:00 local (2026-03-08 and 2026-11-01)", function()
      local u = new_user(port, "America/New_York")
      local ev = create(port, u, { title = "Sync", starts_at = "2026-03-02T09:00:00-05:00",
        ends_at = "2026-03-02T10:00:00-05:00", recurrence = "FREQ=WEEKLY" })
      assert.same({ "2026-03-02T14:00:00Z", "2026-03-09T13:00:00Z", "2026-03-16T13:00:00Z" },
        starts_of(port, u, ev.id, "2026-03-01T00:00:00Z", "2026-03-20T00:00:00Z"))
      assert.same({ "2026-10-26T13:00:00Z", "2026-11-02T14:00:00Z", "2026-11-09T14:00:00Z" },
        starts_of(port, u, ev.id, "2026-10-25", "2026-11-10"))
      -- the hour itself: the first Sunday of each change, daily at 09:00
      local d = create(port, u, { title = "Daily", starts_at = "2026-10-30T09:00:00-04:00",
        ends_at = "2026-10-30T09:15:00-04:00", recurrence = "FREQ=DAILY;COUNT=4" })
      assert.same({ "2026-10-30T13:00:00Z", "2026-10-31T13:00:00Z", "2026-11-01T14:00:00Z", "2026-11-02T14:00:00Z" },
        starts_of(port, u, d.id, "2026-10-01", "2026-12-01"))
    end)
  end)

  describe("recurrence rules", function()
    local u
    setup(function() u = new_user(port, "UTC") end)

    it("skips the months without day 31", function()
      local ev = create(port, u, { title = "Month end", starts_at = "2026-01-31T18:00:00Z",
        ends_at = "2026-01-31T19:00:00Z", recurrence = "FREQ=MONTHLY;BYMONTHDAY=31" })
      assert.same({ "2026-01-31T18:00:00Z", "2026-03-31T18:00:00Z", "2026-05-31T18:00:00Z", "2026-07-31T18:00:00Z" },
        starts_of(port, u, ev.id, "2026-01-01", "2026-08-01"))
    end)

    it("ends with COUNT and with UNTIL (inclusive)", function()
      local c = create(port, u, { title = "Course", starts_at = "2026-02-02T17:00:00Z",
        ends_at = "2026-02-02T18:00:00Z", recurrence = "FREQ=WEEKLY;BYDAY=MO,TH;COUNT=4" })
      assert.same({ "2026-02-02T17:00:00Z", "2026-02-05T17:00:00Z", "2026-02-09T17:00:00Z", "2026-02-12T17:00:00Z" },
        starts_of(port, u, c.id, "2026-01-01", "2026-06-01"))
      -- COUNT counts from the series start, not from the window
      assert.same({ "2026-02-12T17:00:00Z" }, starts_of(port, u, c.id, "2026-02-10", "2026-06-01"))
      local un = create(port, u, { title = "Until", starts_at = "2026-02-01T08:00:00Z",
        ends_at = "2026-02-01T08:30:00Z", recurrence = "FREQ=DAILY;INTERVAL=2;UNTIL=20260207T080000Z" })
      assert.equal("FREQ=DAILY;INTERVAL=2;UNTIL=20260207T080000", un.recurrence)
      assert.same({ "2026-02-01T08:00:00Z", "2026-02-03T08:00:00Z", "2026-02-05T08:00:00Z", "2026-02-07T08:00:00Z" },
        starts_of(port, u, un.id, "2026-01-01", "2026-03-01"))
    end)

    it("converts a UTC UNTIL into the series' local time", function()
      local v = new_user(port, "Europe/Berlin")
      local ev = create(port, v, { title = "Until local", starts_at = "2026-02-01T09:00:00+01:00",
        ends_at = "2026-02-01T09:30:00+01:00", recurrence = "FREQ=DAILY;UNTIL=20260203T080000Z" })
      assert.equal("FREQ=DAILY;UNTIL=20260203T090000", ev.recurrence)
      assert.equal(3, #starts_of(port, v, ev.id, "2026-01-01", "2026-03-01"))
    end)

    it("skips EXDATEs", function()
      local ev = create(port, u, { title = "Gym", starts_at = "2026-04-01T06:00:00Z", ends_at = "2026-04-01T07:00:00Z",
        recurrence = "FREQ=DAILY;COUNT=5", exdates = { "2026-04-02T06:00:00Z", "2026-04-04T08:00:00+02:00" } })
      assert.same({ "2026-04-02T06:00:00Z", "2026-04-04T06:00:00Z" }, ev.exdates)
      assert.same({ "2026-04-01T06:00:00Z", "2026-04-03T06:00:00Z", "2026-04-05T06:00:00Z" },
        starts_of(port, u, ev.id, "2026-03-01", "2026-05-01"))
    end)

    it("lists occurrences overlapping [from, to), sorted by start, each with the event's fields", function()
      local v = new_user(port, "UTC")
      create(port, v, { title = "B", starts_at = "2026-05-04T10:00:00Z", ends_at = "2026-05-04T11:00:00Z",
        recurrence = "FREQ=DAILY" })
      create(port, v, { title = "A", starts_at = "2026-05-05T09:00:00Z", ends_at = "2026-05-05T09:30:00Z",
        reminders = { 5 } })
      local items = window(port, v, "2026-05-05T00:00:00Z", "2026-05-06T10:30:00Z")
      local got = {}
      for _, o in ipairs(items) do got[#got + 1] = o.title .. "@" .. o.occurrence_start end
      assert.same({ "A@2026-05-05T09:00:00Z", "B@2026-05-05T10:00:00Z", "B@2026-05-06T10:00:00Z" }, got)
      assert.same({ 5 }, items[1].reminders)
      assert.equal(items[1].id, items[1].series_id)
      -- an occurrence that started before the window but overlaps it is in; one ending at from is not
      local edge = window(port, v, "2026-05-05T10:30:00Z", "2026-05-05T11:00:00Z")
      assert.equal(1, #edge)
      assert.equal(0, #window(port, v, "2026-05-05T11:00:00Z", "2026-05-05T11:30:00Z"))
      assert.equal(0, #window(port, v, "2026-05-05T09:30:00Z", "2026-05-05T10:00:00Z"))
    end)

    it("caps the occurrences and says so", function()
      local v = new_user(port, "UTC")
      create(port, v, { title = "Often", starts_at = "2026-01-01T08:00:00Z", ends_at = "2026-01-01T08:05:00Z",
        recurrence = "FREQ=DAILY" })
      local items, body = window(port, v, "2026-01-01", "2027-01-01")
      assert.equal(365, #items)
      assert.is_false(body.truncated)
      local few, b2 = window(port, v, "2026-01-01", "2027-01-01", "&limit=10")
      assert.equal(10, #few)
      assert.is_true(b2.truncated)
    end)
  end)

  describe("all-day events", function()
    it("are dates, with an exclusive end, in the event's zone", function()
      local u = new_user(port, "Asia/Tokyo")
      local ev = create(port, u, { title = "Trip", starts_at = "2026-03-10", ends_at = "2026-03-12" })
      assert.is_true(ev.all_day)
      assert.equal("2026-03-10", ev.starts_at)
      assert.equal("2026-03-12", ev.ends_at)
      local items = window(port, u, "2026-03-01", "2026-04-01")
      assert.equal(1, #items)
      assert.equal("2026-03-10", items[1].occurrence_start)
      assert.equal("2026-03-12", items[1].occurrence_end)
      -- local midnight in Tokyo is 15:00 UTC the day before
      assert.equal(1, #window(port, u, "2026-03-09T15:00:00Z", "2026-03-09T16:00:00Z"))
      assert.equal(0, #window(port, u, "2026-03-09T14:00:00Z", "2026-03-09T15:00:00Z"))

      local bd = create(port, u, { title = "Birthday", starts_at = "2024-02-29", all_day = true,
        recurrence = "FREQ=YEARLY", exdates = { "2028-02-29" } })
      assert.equal("2024-03-01", bd.ends_at)
      local got = {}
      for _, o in ipairs(window(port, u, "2028-01-01", "2028-12-31")) do got[#got + 1] = o.occurrence_start end
      assert.same({}, got)
      got = {}
      for _, o in ipairs(window(port, u, "2032-01-01", "2032-12-31")) do
        got[#got + 1] = o.occurrence_start .. "/" .. o.occurrence_end
      end
      assert.same({ "2032-02-29/2032-03-01" }, got)
    end)
  end)

  describe("windows", function()
    local u
    setup(function() u = new_user(port, "UTC") end)

    it("need from and to, valid, in order, at most 366 days apart", function()
      assert_bad_field(call(port, "GET", "/api/events?to=2026-02-01", u.token), "from")
      assert_bad_field(call(port, "GET", "/api/events?from=2026-01-01", u.token), "to")
      assert_bad_field(call(port, "GET", "/api/events?from=tomorrow&to=2026-02-01", u.token), "from")
      assert_bad_field(call(port, "GET", "/api/events?from=2026-02-30&to=2026-03-01", u.token), "from")
      assert_bad_field(call(port, "GET", "/api/events?from=2026-01-01&to=2026-01-01", u.token), "to")
      assert_bad_field(call(port, "GET", "/api/events?from=2026-01-01&to=2027-01-03", u.token), "to")
      assert_bad_field(call(port, "GET", "/api/events?from=2026-01-01&to=2026-02-01&limit=100000", u.token), "limit")
      assert.equal(200, call(port, "GET", "/api/events?from=2026-01-01&to=2027-01-02", u.token).status)
      assert.equal(200, call(port, "GET", "/api/events?from=2026-01-01T00:00:00%2B05:00&to=2026-01-02", u.token).status)
      assert_bad_field(call(port, "GET", "/api/events/conflicts?from=2026-01-01&to=2028-01-01", u.token), "to")
    end)
  end)

  describe("conflicts", function()
    local u
    setup(function() u = new_user(port, "UTC") end)

    it("reports overlapping pairs, not touching ones", function()
      local a = create(port, u, { title = "A", starts_at = "2026-06-01T10:00:00Z", ends_at = "2026-06-01T11:00:00Z" })
      create(port, u, { title = "B", starts_at = "2026-06-01T11:00:00Z", ends_at = "2026-06-01T12:00:00Z" })
      local c = call(port, "POST", "/api/events", u.token, { title = "C", starts_at = "2026-06-01T10:30:00Z",
        ends_at = "2026-06-01T10:45:00Z" })
      assert.equal(201, c.status, c.body)
      assert.equal(1, #c.json.conflicts)
      assert.equal(a.id, c.json.conflicts[1].series_id)
      assert.equal("2026-06-01T10:00:00Z", c.json.conflicts[1].occurrence_start)

      local res = call(port, "GET", "/api/events/conflicts?from=2026-06-01&to=2026-06-02", u.token)
      assert.equal(200, res.status, res.body)
      assert.equal(1, #res.json.items)
      local pair = res.json.items[1]
      assert.same({ "A", "C" }, { pair.a.title, pair.b.title })
      assert.equal("2026-06-01T10:30:00Z", pair.b.occurrence_start)
    end)

    it("finds overlaps between occurrences of recurring series", function()
      local v = new_user(port, "Europe/Berlin")
      create(port, v, { title = "Weekly", starts_at = "2026-06-01T09:00:00+02:00",
        ends_at = "2026-06-01T10:00:00+02:00",
        recurrence = "FREQ=WEEKLY;BYDAY=MO" })
      create(port, v, { title = "Monthly", starts_at = "2026-06-15T09:30:00+02:00",
        ends_at = "2026-06-15T09:45:00+02:00", recurrence = "FREQ=MONTHLY;BYDAY=3MO" })
      local res = call(port, "GET", "/api/events/conflicts?from=2026-06-01&to=2026-08-01", v.token)
      assert.equal(200, res.status, res.body)
      local got = {}
      for _, p in ipairs(res.json.items) do got[#got + 1] = p.a.occurrence_start .. "|" .. p.b.title end
      assert.same({ "2026-06-15T07:00:00Z|Monthly", "2026-07-20T07:00:00Z|Monthly" }, got)
    end)

    it("refuses with 409 and creates nothing when check_conflicts is set", function()
      local v = new_user(port, "UTC")
      local b = create(port, v, { title = "Busy", starts_at = "2026-06-02T11:00:00Z",
        ends_at = "2026-06-02T12:00:00Z" })
      local before = srv:sql("SELECT count(*) FROM events")
      local res = call(port, "POST", "/api/events", v.token, { title = "Clash", starts_at = "2026-06-02T11:30:00Z",
        ends_at = "2026-06-02T11:45:00Z", check_conflicts = true })
      assert.equal(409, res.status, res.body)
      assert.equal("conflict", res.json.error.code)
      assert.equal(1, #res.json.error.details.conflicts)
      assert.equal(b.id, res.json.error.details.conflicts[1].series_id)
      assert.equal("2026-06-02T11:30:00Z", res.json.error.details.conflicts[1].with.occurrence_start)
      assert.equal(before, srv:sql("SELECT count(*) FROM events"))
      assert.equal(0, #window(port, v, "2026-06-02T11:30:00Z", "2026-06-02T11:31:00Z") - 1)
      -- touching is fine
      local ok = call(port, "POST", "/api/events", v.token, { title = "After", starts_at = "2026-06-02T12:00:00Z",
        ends_at = "2026-06-02T12:30:00Z", check_conflicts = true })
      assert.equal(201, ok.status, ok.body)
      assert.same({}, ok.json.conflicts)
      assert_bad_field(call(port, "POST", "/api/events", v.token, { title = "x", starts_at = "2026-06-02T12:00:00Z",
        check_conflicts = "yes" }), "check_conflicts")
    end)
  end)

  describe("free/busy", function()
    it("proposes quarter-hour aligned slots inside the working hours from the preferences", function()
      local u = new_user(port, "Europe/Berlin")
      local me = call(port, "PATCH", "/api/me", u.token,
        { preferences = { working_hours = { start = "10:00", ["end"] = "12:00", days = { 1 } } } })
      assert.equal(200, me.status, me.body)
      create(port, u, { title = "Busy", starts_at = "2026-03-02T10:30:00+01:00",
        ends_at = "2026-03-02T11:00:00+01:00" })
      -- 2026-03-02 is a Monday; Tuesday is not a working day
      local res = call(port, "GET", "/api/freebusy?from=2026-03-02&to=2026-03-04&duration=30", u.token)
      assert.equal(200, res.status, res.body)
      assert.same({ { start = "2026-03-02T09:30:00Z", ["end"] = "2026-03-02T10:00:00Z" } }, res.json.busy)
      assert.same({
        { start = "2026-03-02T09:00:00Z", ["end"] = "2026-03-02T09:30:00Z" },
        { start = "2026-03-02T10:00:00Z", ["end"] = "2026-03-02T10:30:00Z" },
        { start = "2026-03-02T10:30:00Z", ["end"] = "2026-03-02T11:00:00Z" },
      }, res.json.free)
      -- 20 minutes: slots start on quarter hours
      local r20 = call(port, "GET", "/api/freebusy?from=2026-03-02T09:05:00Z&to=2026-03-03&duration=20", u.token)
      assert.equal(200, r20.status, r20.body)
      local starts = {}
      for _, s in ipairs(r20.json.free) do starts[#starts + 1] = s.start end
      assert.same({ "2026-03-02T10:00:00Z", "2026-03-02T10:30:00Z" }, starts)
    end)

    it("defaults to 09:00-17:00 Monday to Friday in the user's zone", function()
      local u = new_user(port, "America/New_York")
      create(port, u, { title = "Lunch", starts_at = "2026-03-06T12:00:00-05:00",
        ends_at = "2026-03-06T13:00:00-05:00" })
      -- Friday 2026-03-06 to Monday 2026-03-09 (DST starts on Sunday the 8th)
      local res = call(port, "GET", "/api/freebusy?from=2026-03-06&to=2026-03-10&duration=240", u.token)
      assert.equal(200, res.status, res.body)
      local got = {}
      for _, s in ipairs(res.json.free) do got[#got + 1] = s.start .. "/" .. s["end"] end
      -- Friday: 14:00-17:00Z is too short before lunch; Monday is EDT (UTC-4), eight free hours
      assert.same({ "2026-03-06T18:00:00Z/2026-03-06T22:00:00Z", "2026-03-09T13:00:00Z/2026-03-09T17:00:00Z",
        "2026-03-09T17:00:00Z/2026-03-09T21:00:00Z" }, got)
    end)

    it("checks duration and the window", function()
      local u = new_user(port, "UTC")
      assert_bad_field(call(port, "GET", "/api/freebusy?from=2026-03-02&to=2026-03-04&duration=4", u.token), "duration")
      assert_bad_field(call(port, "GET", "/api/freebusy?from=2026-03-02&to=2026-03-04&duration=1441", u.token),
        "duration")
      assert_bad_field(call(port, "GET", "/api/freebusy?from=2026-03-01&to=2026-04-02&duration=30", u.token), "to")
      assert_bad_field(call(port, "GET", "/api/freebusy?to=2026-04-02&duration=30", u.token), "from")
    end)
  end)

  describe("bad input", function()
    local u
    setup(function() u = new_user(port, "UTC") end)

    local base = { title = "T", starts_at = "2026-03-01T10:00:00Z", ends_at = "2026-03-01T11:00:00Z" }
    local function with(over)
      local b = {}
      for k, v in pairs(base) do b[k] = v end
      for k, v in pairs(over) do b[k] = v end
      return b
    end

    local cases = {
      { "unknown field", { colour = "red" }, "colour" },
      { "id is not writable", { id = "00000000-0000-4000-8000-000000000000" }, "id" },
      { "missing title", { title = "" }, "title" },
      { "too long title", { title = string.rep("x", 501) }, "title" },
      { "title not a string", { title = 5 }, "title" },
      { "invalid date", { starts_at = "2026-02-30T10:00:00Z" }, "starts_at" },
      { "words for a date", { starts_at = "tomorrow" }, "starts_at" },
      { "no offset", { starts_at = "2026-03-01T10:00:00" }, "starts_at" },
      { "year 0", { starts_at = "0000-01-01T10:00:00Z" }, "starts_at" },
      { "invalid end", { ends_at = "2026-13-01T10:00:00Z" }, "ends_at" },
      { "end before start", { ends_at = "2026-03-01T09:00:00Z" }, "ends_at" },
      { "end equal to start", { ends_at = "2026-03-01T10:00:00Z" }, "ends_at" },
      { "a date end for a timed event", { ends_at = "2026-03-02" }, "ends_at" },
      { "over a year long", { ends_at = "2027-03-03T10:00:00Z" }, "ends_at" },
      { "all_day with a time", { all_day = true }, "starts_at" },
      { "all_day not a boolean", { all_day = "yes" }, "all_day" },
      { "bad time zone", { timezone = "Mars/Olympus" }, "timezone" },
      { "SQL in time zone", { timezone = "UTC'; DROP TABLE events;--" }, "timezone" },
      { "invalid RRULE", { recurrence = "FREQ=SOMETIMES" }, "recurrence" },
      { "RRULE with unknown part", { recurrence = "FREQ=DAILY;BYHOUR=3" }, "recurrence" },
      { "RRULE COUNT and UNTIL", { recurrence = "FREQ=DAILY;COUNT=2;UNTIL=20260401" }, "recurrence" },
      { "UNTIL before the start", { recurrence = "FREQ=DAILY;UNTIL=20260201" }, "recurrence" },
      { "recurrence not a string", { recurrence = { "FREQ=DAILY" } }, "recurrence" },
      { "reminders not ints", { reminders = { 10.5 } }, "reminders" },
      { "reminders strings", { reminders = { "10" } }, "reminders" },
      { "reminders negative", { reminders = { -1 } }, "reminders" },
      { "reminders not an array", { reminders = 10 }, "reminders" },
      { "attendees not emails", { attendees = { "not an email" } }, "attendees" },
      { "exdates not times", { exdates = { "soon" } }, "exdates" },
      { "exdates dates for a timed event", { exdates = { "2026-03-02" } }, "exdates" },
    }
    for _, c in ipairs(cases) do
      it("refuses " .. c[1] .. " with 400 naming " .. c[3] .. ", writing nothing", function()
        local res = call(port, "POST", "/api/events", u.token, with(c[2]))
        assert_bad_field(res, c[3])
        assert.equal("0", srv:sql("SELECT count(*) FROM events WHERE user_id = '" .. u.id .. "'"))
        assert.equal("0", srv:sql("SELECT count(*) FROM activity_log WHERE user_id = '" .. u.id .. "'"))
      end)
    end

    it("refuses bad patches, changing nothing", function()
      local ev = create(port, u, with({ title = "Keep" }))
      local bads = {
        { { colour = "red" }, "colour" }, { { ends_at = "2026-03-01T09:00:00Z" }, "ends_at" },
        { { recurrence = "FREQ=WEEKLY;BYDAY=XX" }, "recurrence" }, { { title = string.rep("y", 501) }, "title" },
        { { version = 3 }, "version" }, { {}, "body" }, { { check_conflicts = true }, "check_conflicts" },
      }
      for _, b in ipairs(bads) do
        assert_bad_field(call(port, "PATCH", "/api/events/" .. ev.id, u.token, b[1]), b[2])
      end
      local got = call(port, "GET", "/api/events/" .. ev.id, u.token)
      assert.equal("Keep", got.json.title)
      assert.equal(1, got.json.version)
      srv:sql("DELETE FROM events WHERE user_id = '" .. u.id .. "'")
      srv:sql("DELETE FROM activity_log WHERE user_id = '" .. u.id .. "'")
    end)

    it("refuses a body that is not an object", function()
      local res = h.request(port, "POST", "/api/events", { body = "[1, 2]",
        headers = { Authorization = "Bearer " .. u.token, ["Content-Type"] = "application/json" } })
      assert.equal(400, res.status, res.body)
    end)
  end)

  describe("isolation", function()
    it("hides one user's events from another", function()
      local a, b = new_user(port, "UTC"), new_user(port, "UTC")
      local ev = create(port, a, { title = "Secret", starts_at = "2026-09-01T10:00:00Z",
        ends_at = "2026-09-01T11:00:00Z", recurrence = "FREQ=DAILY" })
      create(port, b, { title = "Mine", starts_at = "2026-09-01T10:30:00Z", ends_at = "2026-09-01T11:30:00Z" })
      assert.equal(404, call(port, "GET", "/api/events/" .. ev.id, b.token).status)
      assert.equal(404, call(port, "PATCH", "/api/events/" .. ev.id, b.token, { title = "pwned" }).status)
      assert.equal(404, call(port, "DELETE", "/api/events/" .. ev.id, b.token).status)
      local items = window(port, b, "2026-09-01", "2026-09-03")
      assert.equal(1, #items)
      assert.equal("Mine", items[1].title)
      local conf = call(port, "GET", "/api/events/conflicts?from=2026-09-01&to=2026-09-03", b.token)
      assert.equal(0, #conf.json.items)
      local fb = call(port, "GET", "/api/freebusy?from=2026-09-01&to=2026-09-02&duration=30", b.token)
      assert.same({ { start = "2026-09-01T10:30:00Z", ["end"] = "2026-09-01T11:30:00Z" } }, fb.json.busy)
      local created = call(port, "POST", "/api/events", b.token, { title = "Also mine",
        starts_at = "2026-09-02T10:00:00Z", ends_at = "2026-09-02T11:00:00Z", check_conflicts = true })
      assert.equal(201, created.status, created.body)
      local still = call(port, "GET", "/api/events/" .. ev.id, a.token)
      assert.equal("Secret", still.json.title)
      assert.equal(1, still.json.version)
    end)
  end)

  describe("activity", function()
    it("records create, update and delete", function()
      local u = new_user(port, "UTC")
      local ev = create(port, u, { title = "Logged", starts_at = "2026-10-01T10:00:00Z" })
      assert.equal(200, call(port, "PATCH", "/api/events/" .. ev.id, u.token, { title = "Logged 2" }).status)
      assert.equal(204, call(port, "DELETE", "/api/events/" .. ev.id, u.token).status)
      local res = call(port, "GET", "/api/activity?object_type=event", u.token)
      assert.equal(200, res.status, res.body)
      local got = {}
      for _, it_ in ipairs(res.json.items) do
        got[#got + 1] = it_.action
        assert.equal(ev.id, it_.object_id)
        assert.equal("user", it_.actor.type)
      end
      assert.same({ "delete", "update", "create" }, got)
      assert.same({ from = "Logged", to = "Logged 2" }, res.json.items[2].diff.title)
    end)
  end)

  describe("schema", function()
    it("keeps row-level security forced and the window indexes in place", function()
      assert.equal("t|t", srv:sql("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'events'"))
      local idx = srv:sql("SELECT string_agg(indexdef, E'\\n') FROM pg_indexes WHERE tablename = 'events'")
      assert.matches("%(user_id, starts_at%)", idx)
      assert.matches("recurrence IS NOT NULL", idx)
    end)

    it("refuses what the C checks refuse, in the schema too", function()
      local url = h.admin_url:gsub("/postgres%?", "/" .. srv.db_name .. "?")
      local code = h.psql(url, "INSERT INTO events (user_id, title, timezone, local_start, duration_s, "
        .. "starts_at, ends_at) SELECT id, 'x', 'UTC', '2026-01-01', 3600, '2026-01-01 10:00Z', '2026-01-01 09:00Z' "
        .. "FROM users LIMIT 1")
      assert.is_not.equal(0, code)
    end)
  end)
end)
