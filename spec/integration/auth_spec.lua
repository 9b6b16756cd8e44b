-- Accounts and JWT authentication of the real `orrery serve`, end to end: register, login,
-- refresh rotation with reuse detection, logout, /api/me, admin role changes, hostile tokens,
-- rate limits, timing, what reaches the logs, and row-level security in the database itself.
local h = require("helpers")
local cjson = require("cjson.safe")

-- orrery.core forges the tokens (scripts/test.sh points integration specs at the plain build's module:
-- the server binary is what the sanitizer run examines).
local core = require("orrery.core")

local SECRET = "test-secret-test-secret-test-secret-0123"
local PASSWORD = "correct horse battery staple"

local counter = 0
local function new_email(tag)
  counter = counter + 1
  return string.format("%s-%d-%d-%d@example.com", tag or "user", os.time(), math.random(1, 1e6), counter)
end

local function bearer(token) return { Authorization = "Bearer " .. token } end

-- method/path with an optional bearer token and JSON body.
local function call(port, method, path, token, json)
  return h.request(port, method, path, { json = json, headers = token and bearer(token) or nil })
end

local function assert_error(res, status, code)
  assert.equal(status, res.status, res.body)
  assert.matches("^application/json", res.headers["content-type"] or "")
  assert.is_table(res.json, "JSON error body")
  assert.is_table(res.json.error, res.body)
  assert.equal(code, res.json.error.code, res.body)
  assert.is_string(res.json.error.message)
end

local function assert_bad_field(res, field)
  assert_error(res, 400, "invalid_field")
  assert.is_table(res.json.error.details, res.body)
  assert.equal(field, res.json.error.details.field, res.body)
end

-- 401 with a Bearer challenge, the generic error, and nothing of the user's data.
local function assert_unauthorized(res, user, what)
  local label = (what or "") .. ": " .. tostring(res.body)
  assert.equal(401, res.status, label)
  assert.matches("^Bearer", res.headers["www-authenticate"] or "", 1, false, label)
  assert.is_table(res.json, label)
  assert.equal("unauthorized", res.json.error and res.json.error.code, label)
  assert.is_nil(res.json.id, label)
  assert.is_nil(res.json.email, label)
  if user then
    assert.is_nil(res.body:find(user.email, 1, true), label)
    assert.is_nil(res.body:find(user.id, 1, true), label)
  end
end

local function register(port, email, password, extra)
  local body = { email = email, password = password or PASSWORD }
  for k, v in pairs(extra or {}) do body[k] = v end
  return h.request(port, "POST", "/api/auth/register", { json = body })
end

local function login(port, email, password)
  return h.request(port, "POST", "/api/auth/login", { json = { email = email, password = password or PASSWORD } })
end

local function refresh(port, token)
  return h.request(port, "POST", "/api/auth/refresh", { json = { refresh_token = token } })
end

-- Registers a fresh account; returns {id, email, password, access, refresh, user}.
local function new_account(port, tag, password)
  local email = new_email(tag)
  local res = register(port, email, password)
  assert.equal(201, res.status, res.body)
  return {
    id = res.json.user.id, email = email, password = password or PASSWORD,
    access = res.json.access_token, refresh = res.json.refresh_token, user = res.json.user,
  }
end

local function median(xs)
  local s = { table.unpack(xs) }
  table.sort(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- ---- token forgery ----

local function b64json(v) return core.auth_b64url(type(v) == "string" and v or cjson.encode(v)) end

-- header and payload are tables or raw JSON strings; alg is the HMAC used ("sha256", ...).
local function forge(header, payload, alg, key)
  local input = b64json(header) .. "." .. b64json(payload)
  return input .. "." .. core.auth_b64url(core.auth_hmac(alg or "sha256", key or SECRET, input))
end

local HS256 = { alg = "HS256", typ = "JWT" }

-- Claims as the server signs them, with overrides (false removes a claim).
local function claims(sub, over)
  local now = os.time()
  local c = {
    sub = sub, role = "user", iat = now, nbf = now, exp = now + 600,
    jti = string.format("%08x%08x%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff),
      math.random(0, 0x7fffffff), math.random(0, 0x7fffffff)),
    iss = "orrery", aud = "orrery-api",
  }
  for k, v in pairs(over or {}) do
    if v == false then c[k] = nil else c[k] = v end
  end
  return c
end

local B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

-- base64url without padding -> raw bytes (for reading a real token's payload).
local function b64url_decode(s)
  local out, acc, bits = {}, 0, 0
  for ch in s:gmatch(".") do
    acc = (acc << 6) | (B64URL:find(ch, 1, true) - 1)
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((acc >> bits) & 0xff)
    end
  end
  return table.concat(out)
end

local function segments(token)
  local a, b, c = token:match("^([^.]*)%.([^.]*)%.([^.]*)$")
  return a, b, c
end

describe("auth", function()
  local srv
  -- Every password and token the server handed out or was given: none may reach its logs.
  local secrets = {}
  local function remember(...)
    for _, s in ipairs({ ... }) do
      if type(s) == "string" and #s > 0 then secrets[#secrets + 1] = s end
    end
  end
  local function account(tag, password)
    local a = new_account(srv.port, tag, password)
    remember(a.password, a.access, a.refresh)
    return a
  end

  setup(function()
    srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "100000", ORRERY_AUTH_RATE_PER_ACCOUNT = "1000",
      ORRERY_LOG_LEVEL = "debug" } })
  end)
  teardown(function() srv:stop() end)

  describe("register", function()
    it("creates an account and answers 201 with the user and a token pair", function()
      local email = new_email("reg")
      local res = register(srv.port, "  " .. email:upper() .. "  ", PASSWORD,
        { name = "Ana", timezone = "Europe/Berlin" })
      assert.equal(201, res.status, res.body)
      assert.matches("^application/json", res.headers["content-type"])
      local b = res.json
      remember(b.access_token, b.refresh_token)
      assert.equal("Bearer", b.token_type)
      assert.equal(900, b.expires_in)
      assert.is_number(b.refresh_expires_in)
      assert.is_true(b.refresh_expires_in > b.expires_in)
      assert.is_string(b.access_token)
      assert.is_not_nil(segments(b.access_token))
      assert.matches("^[%w_-]+$", b.refresh_token)
      assert.equal(43, #b.refresh_token)
      assert.equal(email, b.user.email) -- trimmed and lower-cased
      assert.equal("Ana", b.user.name)
      assert.equal("Europe/Berlin", b.user.timezone)
      assert.equal("user", b.user.role)
      assert.same({}, b.user.preferences)
      assert.matches("^%x+%-%x+%-%x+%-%x+%-%x+$", b.user.id)
      assert.is_string(b.user.created_at)
      assert.is_nil(b.user.password_hash)
      assert.is_nil(b.user.password)
      assert.is_nil(res.body:find(PASSWORD, 1, true))
      -- the access token it returned works right away
      local me = call(srv.port, "GET", "/api/me", b.access_token)
      assert.equal(200, me.status, me.body)
      assert.equal(b.user.id, me.json.id)
    end)

    it("defaults the time zone to UTC and the name to empty", function()
      local a = account("tz-default")
      assert.equal("UTC", a.user.timezone)
      assert.equal("", a.user.name)
    end)

    it("answers 409 email_taken for a duplicate email, whatever its case or surrounding spaces", function()
      local a = account("dup")
      local res = register(srv.port, a.email, "another password 123")
      assert_error(res, 409, "email_taken")
      assert.equal("email", res.json.error.details.field)
      res = register(srv.port, "  " .. a.email:upper() .. "\t", "another password 123")
      assert_error(res, 409, "email_taken")
      -- the original password still logs in, the attempted one does not
      assert.equal(200, login(srv.port, a.email).status)
      assert_error(login(srv.port, a.email, "another password 123"), 401, "invalid_credentials")
    end)

    it("refuses a 9-character password and accepts 10", function()
      assert_bad_field(register(srv.port, new_email("weak"), "123456789"), "password")
      assert_bad_field(register(srv.port, new_email("weak"), ""), "password")
      local res = register(srv.port, new_email("ten"), "0123456789")
      assert.equal(201, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
    end)

    it("refuses a 1025-character password and accepts 1024", function()
      local long = string.rep("p", 1025)
      assert_bad_field(register(srv.port, new_email("long"), long), "password")
      local email = new_email("max")
      local res = register(srv.port, email, long:sub(1, 1024))
      assert.equal(201, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
      assert.equal(200, login(srv.port, email, long:sub(1, 1024)).status)
    end)

    it("refuses a password that is not a string", function()
      assert_bad_field(register(srv.port, new_email("num"), 12345678901), "password")
    end)

    it("refuses an unknown time zone and accepts an IANA one", function()
      assert_bad_field(register(srv.port, new_email("mars"), PASSWORD, { timezone = "Mars/Olympus" }), "timezone")
      assert_bad_field(register(srv.port, new_email("mars"), PASSWORD, { timezone = "" }), "timezone")
      local res = register(srv.port, new_email("ny"), PASSWORD, { timezone = "America/New_York" })
      assert.equal(201, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
      assert.equal("America/New_York", res.json.user.timezone)
    end)

    it("refuses unknown fields, naming them (no role or id from the client)", function()
      local res = register(srv.port, new_email("unk"), PASSWORD, { nickname = "x" })
      assert_bad_field(res, "nickname")
      assert.matches("nickname", res.json.error.message)
      assert_bad_field(register(srv.port, new_email("unk"), PASSWORD, { role = "admin" }), "role")
      assert_bad_field(register(srv.port, new_email("unk"), PASSWORD, { id = "00000000-0000-0000-0000-000000000000" }),
        "id")
    end)

    it("refuses malformed emails", function()
      for _, e in ipairs({ "", "no-at-sign", "a@b", "@example.com", "a@@example.com", "a b@example.com",
        "a@example.com.", string.rep("x", 250) .. "@example.com" }) do
        assert_bad_field(register(srv.port, e, PASSWORD), "email")
      end
    end)

    it("lower-cases non-ASCII capitals in emails the way the database does", function()
      local local_part = "lise-" .. os.time() .. math.random(1, 1e6) .. "@example.com"
      local res = register(srv.port, "\195\137" .. local_part, PASSWORD) -- "Élise-..."
      assert.equal(201, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
      assert.equal("\195\169" .. local_part, res.json.user.email) -- "élise-..."
      -- Either spelling logs in, and registering the other spelling is a duplicate.
      assert.equal(200, login(srv.port, "\195\169" .. local_part, PASSWORD).status)
      assert.equal(200, login(srv.port, "\195\137" .. local_part, PASSWORD).status)
      assert.equal(409, register(srv.port, "\195\169" .. local_part, PASSWORD).status)
    end)
  end)

  describe("login", function()
    it("answers 200 with the user and a fresh token pair; the email is matched case-insensitively", function()
      local a = account("login")
      local res = login(srv.port, "  " .. a.email:upper() .. " ", a.password)
      assert.equal(200, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
      assert.equal(a.id, res.json.user.id)
      assert.equal(a.email, res.json.user.email)
      assert.equal("user", res.json.user.role)
      assert.equal("Bearer", res.json.token_type)
      assert.equal(900, res.json.expires_in)
      assert.is_number(res.json.refresh_expires_in)
      assert.is_nil(res.json.user.password_hash)
      assert.are_not.equal(a.access, res.json.access_token)
      assert.are_not.equal(a.refresh, res.json.refresh_token)
      -- both sessions work side by side
      assert.equal(200, call(srv.port, "GET", "/api/me", res.json.access_token).status)
      assert.equal(200, call(srv.port, "GET", "/api/me", a.access).status)
    end)

    it("answers a wrong password and an unknown email with the same 401", function()
      local a = account("creds")
      local wrong = login(srv.port, a.email, "wrong password 123")
      local unknown = login(srv.port, new_email("nobody"), "wrong password 123")
      assert_error(wrong, 401, "invalid_credentials")
      assert_error(unknown, 401, "invalid_credentials")
      assert.same(wrong.json, unknown.json)
      assert.equal(wrong.headers["www-authenticate"], unknown.headers["www-authenticate"])
      assert.is_nil(wrong.json.access_token)
      assert.is_nil(wrong.json.user)
      -- a password that differs only in case or by a trailing space is wrong too
      assert_error(login(srv.port, a.email, a.password:upper()), 401, "invalid_credentials")
      assert_error(login(srv.port, a.email, a.password .. " "), 401, "invalid_credentials")
    end)

    it("refuses unknown fields and missing ones", function()
      assert_bad_field(h.request(srv.port, "POST", "/api/auth/login",
        { json = { email = new_email(), password = PASSWORD, remember = true } }), "remember")
      assert_bad_field(h.request(srv.port, "POST", "/api/auth/login", { json = { email = new_email() } }), "password")
    end)

    it("takes as long for an unknown email as for a wrong password", function()
      local a = account("timing")
      login(srv.port, new_email("warmup"), "wrong password 123") -- the dummy hash is built on first use
      login(srv.port, a.email, "wrong password 123")
      local unknown, wrong = {}, {}
      for i = 1, 5 do
        local t0 = h.now()
        assert.equal(401, login(srv.port, new_email("ghost" .. i), "wrong password 123").status)
        unknown[#unknown + 1] = h.now() - t0
        t0 = h.now()
        assert.equal(401, login(srv.port, a.email, "wrong password 123").status)
        wrong[#wrong + 1] = h.now() - t0
      end
      local mu, mw = median(unknown), median(wrong)
      local ratio = math.max(mu, mw) / math.min(mu, mw)
      assert.is_true(ratio < 2, string.format("unknown email %.1f ms vs wrong password %.1f ms",
        mu * 1000, mw * 1000))
    end)
  end)

  describe("refresh", function()
    it("rotates: a refresh token gives a new pair once", function()
      local a = account("refresh")
      local res = refresh(srv.port, a.refresh)
      assert.equal(200, res.status, res.body)
      local b = res.json
      remember(b.access_token, b.refresh_token)
      assert.equal("Bearer", b.token_type)
      assert.equal(900, b.expires_in)
      assert.is_number(b.refresh_expires_in)
      assert.are_not.equal(a.refresh, b.refresh_token)
      assert.are_not.equal(a.access, b.access_token)
      assert.equal(43, #b.refresh_token)
      local me = call(srv.port, "GET", "/api/me", b.access_token)
      assert.equal(200, me.status, me.body)
      assert.equal(a.id, me.json.id)
      -- the new refresh token rotates again
      res = refresh(srv.port, b.refresh_token)
      assert.equal(200, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
    end)

    it("revokes the whole family when a rotated token comes back", function()
      local a = account("reuse")
      local other = login(srv.port, a.email) -- a second, independent session
      assert.equal(200, other.status)
      remember(other.json.access_token, other.json.refresh_token)
      local r1 = a.refresh
      local res = refresh(srv.port, r1)
      assert.equal(200, res.status, res.body)
      local r2 = res.json.refresh_token
      res = refresh(srv.port, r2)
      assert.equal(200, res.status, res.body)
      local r3 = res.json.refresh_token
      remember(r2, r3, res.json.access_token)
      -- r1 was rotated already: someone holds a copy
      assert_error(refresh(srv.port, r1), 401, "invalid_token")
      -- the newest token of the family is dead too, and so is every other one
      assert_error(refresh(srv.port, r3), 401, "invalid_token")
      assert_error(refresh(srv.port, r2), 401, "invalid_token")
      assert_error(refresh(srv.port, r1), 401, "invalid_token")
      -- the other login's family is untouched
      res = refresh(srv.port, other.json.refresh_token)
      assert.equal(200, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
    end)

    it("answers 401 invalid_token for unknown or malformed refresh tokens, 400 without one", function()
      for _, t in ipairs({ core.auth_refresh_new(), "x", string.rep("A", 43), string.rep("!", 43),
        string.rep("a", 44), "' OR 1=1 --" }) do
        assert_error(refresh(srv.port, t), 401, "invalid_token")
      end
      local a = account("acc-as-refresh")
      assert_error(refresh(srv.port, a.access), 401, "invalid_token") -- an access token is not a refresh token
      assert_bad_field(h.request(srv.port, "POST", "/api/auth/refresh", { json = { token = "x" } }), "token")
      assert_bad_field(h.request(srv.port, "POST", "/api/auth/refresh", { json = { refresh_token = 42 } }),
        "refresh_token")
    end)
  end)

  describe("logout", function()
    it("answers 204, ends the refresh token and revokes the access token used", function()
      local a = account("logout")
      local other = login(srv.port, a.email)
      assert.equal(200, other.status)
      remember(other.json.access_token, other.json.refresh_token)
      local res = call(srv.port, "POST", "/api/auth/logout", a.access, { refresh_token = a.refresh })
      assert.equal(204, res.status, res.body)
      assert_error(refresh(srv.port, a.refresh), 401, "invalid_token")
      assert_unauthorized(call(srv.port, "GET", "/api/me", a.access), a.user, "revoked access token")
      assert_unauthorized(call(srv.port, "POST", "/api/auth/logout", a.access, { refresh_token = a.refresh }),
        a.user, "logout twice")
      -- the other session survives
      assert.equal(200, call(srv.port, "GET", "/api/me", other.json.access_token).status)
      res = refresh(srv.port, other.json.refresh_token)
      assert.equal(200, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
    end)

    it("cannot revoke another user's refresh token", function()
      local a, b = account("logout-a"), account("logout-b")
      local res = call(srv.port, "POST", "/api/auth/logout", a.access, { refresh_token = b.refresh })
      assert.equal(204, res.status, res.body)
      res = refresh(srv.port, b.refresh)
      assert.equal(200, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
    end)

    it("needs a bearer token", function()
      local a = account("logout-anon")
      assert_unauthorized(h.request(srv.port, "POST", "/api/auth/logout", { json = { refresh_token = a.refresh } }))
      local res = refresh(srv.port, a.refresh) -- nothing was revoked
      assert.equal(200, res.status, res.body)
      remember(res.json.access_token, res.json.refresh_token)
    end)
  end)

  describe("/api/me", function()
    it("GET answers the caller's own account", function()
      local a = account("me")
      local res = call(srv.port, "GET", "/api/me", a.access)
      assert.equal(200, res.status, res.body)
      assert.same(a.user, res.json)
    end)

    it("PATCH changes name, time zone and preferences and keeps what is absent", function()
      local a = account("patch")
      local res = call(srv.port, "PATCH", "/api/me", a.access,
        { name = "Zoë", timezone = "Asia/Tokyo", preferences = { theme = "dark", week_starts = 1 } })
      assert.equal(200, res.status, res.body)
      assert.equal("Zoë", res.json.name)
      assert.equal("Asia/Tokyo", res.json.timezone)
      assert.same({ theme = "dark", week_starts = 1 }, res.json.preferences)
      assert.equal(a.email, res.json.email)
      assert.equal("user", res.json.role)
      res = call(srv.port, "PATCH", "/api/me", a.access, { name = "Zoe" })
      assert.equal(200, res.status, res.body)
      assert.equal("Zoe", res.json.name)
      assert.equal("Asia/Tokyo", res.json.timezone)
      assert.same({ theme = "dark", week_starts = 1 }, res.json.preferences)
      local me = call(srv.port, "GET", "/api/me", a.access)
      assert.same(res.json, me.json)
    end)

    it("PATCH refuses bad values, unknown fields (role, email) and an empty change", function()
      local a = account("patch-bad")
      assert_bad_field(call(srv.port, "PATCH", "/api/me", a.access, { timezone = "Mars/Olympus" }), "timezone")
      assert_bad_field(call(srv.port, "PATCH", "/api/me", a.access, { preferences = { 1, 2 } }), "preferences")
      assert_bad_field(call(srv.port, "PATCH", "/api/me", a.access, { preferences = "dark" }), "preferences")
      assert_bad_field(call(srv.port, "PATCH", "/api/me", a.access, { name = string.rep("n", 201) }), "name")
      assert_bad_field(call(srv.port, "PATCH", "/api/me", a.access, { role = "admin" }), "role")
      assert_bad_field(call(srv.port, "PATCH", "/api/me", a.access, { email = "x@example.com" }), "email")
      assert_bad_field(call(srv.port, "PATCH", "/api/me", a.access, { id = a.id }), "id")
      assert_bad_field(call(srv.port, "PATCH", "/api/me", a.access, {}), "body")
      local me = call(srv.port, "GET", "/api/me", a.access)
      assert.same(a.user, me.json)
    end)

    it("DELETE needs the password, then removes the account and ends every token", function()
      local a = account("delete")
      local other = login(srv.port, a.email)
      assert.equal(200, other.status)
      remember(other.json.access_token, other.json.refresh_token)
      local res = call(srv.port, "DELETE", "/api/me", a.access, { password = "not my password" })
      assert_bad_field(res, "password")
      assert.equal(200, call(srv.port, "GET", "/api/me", a.access).status)
      assert_bad_field(call(srv.port, "DELETE", "/api/me", a.access, {}), "password")

      res = call(srv.port, "DELETE", "/api/me", a.access, { password = a.password })
      assert.equal(204, res.status, res.body)
      assert_unauthorized(call(srv.port, "GET", "/api/me", a.access), a.user, "deleted user")
      assert_unauthorized(call(srv.port, "GET", "/api/me", other.json.access_token), a.user, "deleted user, 2nd")
      assert_unauthorized(call(srv.port, "PATCH", "/api/me", a.access, { name = "ghost" }), a.user, "deleted patch")
      -- a correctly signed, unexpired token for the deleted id
      local forged = core.auth_token_issue(SECRET, a.id, "user", os.time())
      assert_unauthorized(call(srv.port, "GET", "/api/me", forged), a.user, "token for deleted user")
      assert_error(login(srv.port, a.email, a.password), 401, "invalid_credentials")
      assert_error(refresh(srv.port, a.refresh), 401, "invalid_token")
      assert_error(refresh(srv.port, other.json.refresh_token), 401, "invalid_token")
      -- the address is free again
      local again = account("again")
      assert.are_not.equal(a.id, again.id)
    end)
  end)

  describe("between two users", function()
    local a, b
    setup(function()
      a = account("alice")
      b = account("bob")
    end)

    it("A's /api/me only ever shows A", function()
      for _ = 1, 3 do
        local ra = call(srv.port, "GET", "/api/me", a.access)
        local rb = call(srv.port, "GET", "/api/me", b.access)
        assert.equal(a.id, ra.json.id)
        assert.equal(b.id, rb.json.id)
        assert.is_nil(ra.body:find(b.email, 1, true))
        assert.is_nil(ra.body:find(b.id, 1, true))
      end
      local res = call(srv.port, "PATCH", "/api/me", a.access, { name = "Alice" })
      assert.equal(a.id, res.json.id)
      assert.equal("", call(srv.port, "GET", "/api/me", b.access).json.name)
    end)

    it("A cannot change B's role, even with a correctly signed token that claims admin", function()
      local res = call(srv.port, "PATCH", "/api/users/" .. b.id, a.access, { role = "admin" })
      assert_error(res, 403, "forbidden")
      res = call(srv.port, "PATCH", "/api/users/" .. a.id, a.access, { role = "admin" })
      assert_error(res, 403, "forbidden")
      res = call(srv.port, "PATCH", "/api/users/not-a-uuid", a.access, { role = "admin" })
      assert_error(res, 403, "forbidden")
      -- the role comes from the database, not from the token
      local admin_claim = core.auth_token_issue(SECRET, a.id, "admin", os.time())
      res = call(srv.port, "PATCH", "/api/users/" .. b.id, admin_claim, { role = "admin" })
      assert_error(res, 403, "forbidden")
      assert.equal("user", call(srv.port, "GET", "/api/me", b.access).json.role)
      assert.equal("user", call(srv.port, "GET", "/api/me", a.access).json.role)
    end)

    it("A cannot delete B with B's password", function()
      assert_bad_field(call(srv.port, "DELETE", "/api/me", a.access, { password = b.password .. "!" }), "password")
      local a2 = account("alice2", "alice's own password")
      assert_bad_field(call(srv.port, "DELETE", "/api/me", a2.access, { password = b.password }), "password")
      assert.equal(200, call(srv.port, "GET", "/api/me", b.access).status)
      assert.equal(200, call(srv.port, "GET", "/api/me", a2.access).status)
    end)
  end)

  describe("hostile tokens", function()
    local a
    setup(function() a = account("victim") end)

    it("accepts a correctly forged token (so the refusals below are about what they change)", function()
      local res = call(srv.port, "GET", "/api/me", forge(HS256, claims(a.id)))
      assert.equal(200, res.status, res.body)
      assert.equal(a.id, res.json.id)
    end)

    local function refused(token, what)
      assert_unauthorized(call(srv.port, "GET", "/api/me", token), a, what)
      assert_unauthorized(call(srv.port, "PATCH", "/api/me", token, { name = "pwned" }), a, what .. " (PATCH)")
    end

    it("refuses alg none, with and without a signature", function()
      local c = claims(a.id)
      local none = { alg = "none", typ = "JWT" }
      refused(b64json(none) .. "." .. b64json(c) .. ".", "alg none, empty signature")
      refused(b64json(none) .. "." .. b64json(c), "alg none, two segments")
      refused(forge(none, c), "alg none, HS256 signature")
      refused(forge({ alg = "None" }, c), "alg None")
      refused(b64json({ alg = "NONE" }) .. "." .. b64json(c) .. ".", "alg NONE")
    end)

    it("refuses HS512, HS384, RS256 and lower-case headers signed with the same secret", function()
      local c = claims(a.id)
      refused(forge({ alg = "HS512", typ = "JWT" }, c, "sha512"), "HS512")
      refused(forge({ alg = "HS384", typ = "JWT" }, c, "sha384"), "HS384")
      refused(forge({ alg = "RS256", typ = "JWT" }, c, "sha256"), "RS256 with HMAC")
      refused(forge({ alg = "ES256", typ = "JWT" }, c, "sha256"), "ES256 with HMAC")
      refused(forge({ alg = "hs256", typ = "JWT" }, c, "sha256"), "hs256")
      refused(forge({ typ = "JWT" }, c, "sha256"), "no alg")
      refused(forge({ alg = "HS256", crit = { "exp" } }, c, "sha256"), "crit")
      refused(forge('{"alg":"HS256","alg":"none"}', c), "duplicate alg")
      refused(forge({ alg = "HS256", kid = "../../../../dev/null" }, c, "sha256", ""), "kid /dev/null, empty key")
    end)

    it("refuses a tampered payload with the original signature", function()
      local h64, _, s64 = segments(a.access)
      local original = cjson.decode(b64url_decode((select(2, segments(a.access)))))
      assert.equal(a.id, original.sub)
      local as_admin = {}
      for k, v in pairs(original) do as_admin[k] = v end
      as_admin.role = "admin"
      refused(h64 .. "." .. b64json(as_admin) .. "." .. s64, "role admin, old signature")
      local longer = {}
      for k, v in pairs(original) do longer[k] = v end
      longer.exp = original.exp + 86400
      refused(h64 .. "." .. b64json(longer) .. "." .. s64, "exp extended, old signature")
      -- a flipped signature character
      local last = a.access:sub(-2, -2)
      refused(a.access:sub(1, -3) .. (last == "A" and "B" or "A") .. a.access:sub(-1), "signature changed")
      refused(h64 .. "." .. b64json(original) .. ".", "signature removed")
    end)

    it("refuses a token signed with another secret", function()
      refused(forge(HS256, claims(a.id), "sha256", "another-secret-another-secret-0123456"), "wrong secret")
      refused(forge(HS256, claims(a.id), "sha256", ""), "empty secret")
      refused(forge(HS256, claims(a.id), "sha256", SECRET .. "x"), "secret plus a byte")
      refused(core.auth_token_issue("another-secret-another-secret-0123456", a.id, "user", os.time()),
        "wrong secret via auth_token_issue")
    end)

    it("refuses expired, not-yet-valid and future-issued tokens", function()
      local now = os.time()
      refused(core.auth_token_issue(SECRET, a.id, "user", now - 3600, 60), "expired")
      refused(forge(HS256, claims(a.id, { iat = now - 7200, nbf = now - 7200, exp = now - 3600 })), "expired, forged")
      refused(forge(HS256, claims(a.id, { nbf = now + 3600 })), "nbf in the future")
      refused(forge(HS256, claims(a.id, { iat = now + 3600, nbf = now + 3600, exp = now + 7200 })),
        "issued in the future")
      refused(forge(HS256, claims(a.id, { exp = false })), "no exp")
      refused(forge(HS256, claims(a.id, { exp = tostring(now + 600) })), "exp as a string")
      refused(forge(HS256, claims(a.id, { exp = (now + 600) + 0.5 })), "exp as a fraction")
      refused(forge(HS256, claims(a.id, { iat = false })), "no iat")
    end)

    it("refuses a wrong audience or issuer", function()
      refused(forge(HS256, claims(a.id, { aud = "someone-else" })), "wrong aud")
      refused(forge(HS256, claims(a.id, { aud = { "someone-else" } })), "aud array without ours")
      refused(forge(HS256, claims(a.id, { aud = false })), "no aud")
      refused(forge(HS256, claims(a.id, { aud = "ORRERY-API" })), "aud in upper case")
      refused(forge(HS256, claims(a.id, { iss = "evil" })), "wrong iss")
      refused(forge(HS256, claims(a.id, { iss = false })), "no iss")
      refused(forge(HS256, claims(a.id, { iss = "orrery " })), "iss with a space")
    end)

    it("refuses bad subjects, roles and ids in a correctly signed token", function()
      refused(forge(HS256, claims(a.id:upper())), "sub upper case")
      refused(forge(HS256, claims(a.id, { sub = false })), "no sub")
      refused(forge(HS256, claims("00000000-0000-4000-8000-000000000000")), "sub of nobody")
      refused(forge(HS256, claims(a.id .. "' OR '1'='1")), "sub with SQL")
      refused(forge(HS256, claims(a.id, { role = "root" })), "role root")
      refused(forge(HS256, claims(a.id, { jti = false })), "no jti")
      refused(forge(HS256, claims(a.id, { jti = string.rep("j", 65) })), "long jti")
      local dup = string.format('{"sub":"%s","role":"user","role":"admin","iat":%d,"nbf":%d,"exp":%d,' ..
        '"jti":"abc","iss":"orrery","aud":"orrery-api"}', a.id, os.time(), os.time(), os.time() + 600)
      refused(forge(HS256, dup), "duplicate role claim")
      refused(forge(HS256, "[1,2,3]"), "payload not an object")
    end)

    it("refuses garbage and the wrong scheme", function()
      local garbage = { "garbage", "a.b.c", "..", "...", "a..c", a.access .. ".x", a.access .. "x",
        a.access .. "=", "x" .. a.access, a.access:gsub("%.", " ", 1), "eyJhbGciOiJIUzI1NiJ9",
        string.rep("A", 9000), "%00", "null", "undefined", "Bearer " .. a.access }
      for i, t in ipairs(garbage) do refused(t, "garbage #" .. i) end
      for _, hv in ipairs({ "Bearer", "Bearer ", "Basic xyz", "Basic " .. a.access, "Token " .. a.access,
        a.access, "Bearer" .. a.access, "Bearer\t" .. a.access .. "x" }) do
        local res = h.request(srv.port, "GET", "/api/me", { headers = { Authorization = hv } })
        assert_unauthorized(res, a, "header " .. hv:sub(1, 20))
      end
      -- the token in the query string is not a credential
      assert_unauthorized(h.get(srv.port, "/api/me?access_token=" .. a.access), a, "query string")
    end)

    it("refuses a 100 KB Authorization header without falling over", function()
      local res = h.get(srv.port, "/api/me", { headers = { Authorization = "Bearer " .. string.rep("a", 100 * 1024) } })
      assert.are_not.equal(200, res.status)
      assert.is_true(res.status == 431 or res.status == 413 or res.status == 400, tostring(res.status))
      assert.is_nil((res.body or ""):find(a.email, 1, true))
      assert.equal(200, call(srv.port, "GET", "/api/me", a.access).status)
    end)

    it("still accepts the victim's real token afterwards", function()
      local res = call(srv.port, "GET", "/api/me", a.access)
      assert.equal(200, res.status, res.body)
      assert.equal("", res.json.name) -- none of the hostile PATCHes landed
    end)
  end)

  it("answers 401 with a Bearer challenge on every non-public route without a token", function()
    local uuid = "00000000-0000-4000-8000-000000000000"
    local routes = {
      { "GET", "/api/me" }, { "PATCH", "/api/me", { name = "x" } }, { "DELETE", "/api/me", { password = PASSWORD } },
      { "POST", "/api/auth/logout", { refresh_token = "x" } }, { "PATCH", "/api/users/" .. uuid, { role = "admin" } },
      { "PATCH", "/api/me" }, { "DELETE", "/api/me" }, { "POST", "/api/auth/logout" },
    }
    for _, r in ipairs(routes) do
      local res = h.request(srv.port, r[1], r[2], { json = r[3] })
      assert_unauthorized(res, nil, r[1] .. " " .. r[2])
      assert.is_not_nil(res.json.error.message)
    end
  end)

  it("stores argon2id password hashes, never the password", function()
    local a = account("hash")
    local code, out, err = h.psql(srv.owner_url, "SET orrery.ctx = 'auth'; SELECT password_hash FROM users " ..
      "WHERE email = '" .. a.email .. "'")
    assert.equal(0, code, err)
    local hash = out:match("([^\n]+)\n?$")
    assert.matches("^%$argon2id%$", hash)
    assert.is_nil(hash:find(a.password, 1, true))
    -- no row anywhere holds a password or a raw refresh token
    code, out, err = h.psql(srv.owner_url, "SET orrery.ctx = 'auth'; SELECT count(*) FROM users " ..
      "WHERE password_hash NOT LIKE '$argon2id$v=19$%'")
    assert.equal(0, code, err)
    assert.equal("0", out:match("([^\n]+)\n?$"))
    code, out, err = h.psql(srv.owner_url, "SET orrery.ctx = 'auth'; SELECT count(*) FROM refresh_tokens " ..
      "WHERE token_hash = '" .. a.refresh .. "'")
    assert.equal(0, code, err)
    assert.equal("0", out:match("([^\n]+)\n?$"))
    code, out, err = h.psql(srv.owner_url, "SET orrery.ctx = 'auth'; SELECT count(*) FROM refresh_tokens " ..
      "WHERE token_hash = '" .. core.auth_sha256_hex(a.refresh) .. "'")
    assert.equal(0, code, err)
    assert.equal("1", out:match("([^\n]+)\n?$"))
  end)

  describe("row-level security", function()
    local function last_line(out) return (out or ""):match("([^\n]*)\n?$") end

    it("shows the app role no users without orrery.user_id and only its own with it", function()
      local a = account("rls")
      local code, out, err = h.psql(srv.database_url, "SELECT count(*) FROM users")
      assert.equal(0, code, err)
      assert.equal("0", last_line(out))
      code, out, err = h.psql(srv.database_url, "SELECT count(*) FROM refresh_tokens")
      assert.equal(0, code, err)
      assert.equal("0", last_line(out))
      code, out, err = h.psql(srv.database_url, "SELECT set_config('orrery.user_id', '" .. a.id .. "', false); " ..
        "SELECT count(*) FROM users")
      assert.equal(0, code, err)
      assert.equal("1", last_line(out))
      code, out, err = h.psql(srv.database_url, "SELECT set_config('orrery.user_id', '" .. a.id .. "', false); " ..
        "SELECT id FROM users")
      assert.equal(0, code, err)
      assert.equal(a.id, last_line(out))
      -- writes outside one's own row touch nothing
      code, out, err = h.psql(srv.database_url, "SELECT set_config('orrery.user_id', '" .. a.id .. "', false); " ..
        "UPDATE users SET role = 'admin' WHERE id <> '" .. a.id .. "'")
      assert.equal(0, code, err)
      assert.equal(a.id, last_line(out)) -- psql prints the set_config result; UPDATE prints nothing
      code, out, err = h.psql(srv.owner_url, "SET orrery.ctx = 'auth'; SELECT count(*) FROM users WHERE role = 'admin'")
      assert.equal(0, code, err)
      assert.equal("0", last_line(out))
    end)

    it("runs the server as a role that is not superuser, does not bypass RLS and owns no table", function()
      local code, out, err = h.psql(srv.database_url,
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
      assert.equal(0, code, err)
      assert.equal("f|f", last_line(out))
      code, out, err = h.psql(srv.database_url,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = current_user")
      assert.equal(0, code, err)
      assert.equal("0", last_line(out))
      code, out, err = h.psql(srv.database_url,
        "SELECT count(*) FROM pg_class WHERE relname IN ('users', 'refresh_tokens', 'revoked_access_tokens') " ..
        "AND relrowsecurity AND relforcerowsecurity")
      assert.equal(0, code, err)
      assert.equal("3", last_line(out))
      -- and it cannot turn RLS off
      code = h.psql(srv.database_url, "ALTER TABLE users DISABLE ROW LEVEL SECURITY")
      assert.are_not.equal(0, code)
    end)
  end)

  it("writes no password and no token to its logs", function()
    h.sleep(0.2)
    local logs = srv:logs()
    assert.is_true(#logs > 0)
    assert.is_true(#secrets > 20, "collected " .. #secrets)
    for _, s in ipairs(secrets) do
      assert.is_nil(logs:find(s, 1, true), "log contains a secret starting " .. s:sub(1, 12))
    end
    -- nor the signature or payload segment of any access token
    for _, s in ipairs(secrets) do
      local _, p, sig = segments(s)
      if sig then
        assert.is_nil(logs:find(sig, 1, true))
        assert.is_nil(logs:find(p, 1, true))
      end
    end
  end)
end)

describe("auth admin bootstrap", function()
  local ADMIN_EMAIL, ADMIN_PASSWORD = "Root-Admin@Example.COM", "the admin's own password 42"
  local env = { ORRERY_ADMIN_EMAIL = ADMIN_EMAIL, ORRERY_ADMIN_PASSWORD = ADMIN_PASSWORD,
    ORRERY_AUTH_RATE_PER_IP = "100000" }
  local srv, db_name, owner_url

  setup(function()
    srv = h.start_server({ env = env })
    db_name, owner_url = srv.db_name, srv.owner_url
  end)
  teardown(function()
    srv.db_name = nil
    srv:stop()
    h.drop_database(db_name)
  end)

  local function admin_login()
    local res = login(srv.port, ADMIN_EMAIL:lower(), ADMIN_PASSWORD)
    assert.equal(200, res.status, res.body)
    return res.json
  end

  it("creates the admin, who logs in with role admin", function()
    local b = admin_login()
    assert.equal("admin", b.user.role)
    assert.equal(ADMIN_EMAIL:lower(), b.user.email)
    local me = call(srv.port, "GET", "/api/me", b.access_token)
    assert.equal("admin", me.json.role)
  end)

  it("lets the admin promote and demote a user; the user's own token follows the database", function()
    local admin = admin_login()
    local u = new_account(srv.port, "promoted")
    assert_error(call(srv.port, "PATCH", "/api/users/" .. admin.user.id, u.access, { role = "user" }), 403, "forbidden")
    local res = call(srv.port, "PATCH", "/api/users/" .. u.id, admin.access_token, { role = "admin" })
    assert.equal(200, res.status, res.body)
    assert.equal("admin", res.json.role)
    assert.equal(u.id, res.json.id)
    assert.equal("admin", call(srv.port, "GET", "/api/me", u.access).json.role)
    -- now an admin, u can change another account
    local v = new_account(srv.port, "other")
    res = call(srv.port, "PATCH", "/api/users/" .. v.id, u.access, { role = "admin" })
    assert.equal(200, res.status, res.body)
    res = call(srv.port, "PATCH", "/api/users/" .. v.id, u.access, { role = "user" })
    assert.equal(200, res.status, res.body)
    assert.equal("user", res.json.role)
    -- demoted, u loses it at once, whatever its token says
    res = call(srv.port, "PATCH", "/api/users/" .. u.id, admin.access_token, { role = "user" })
    assert.equal(200, res.status, res.body)
    assert_error(call(srv.port, "PATCH", "/api/users/" .. v.id, u.access, { role = "admin" }), 403, "forbidden")
    assert.equal("user", call(srv.port, "GET", "/api/me", v.access).json.role)
  end)

  it("answers the admin 404 for unknown or malformed ids and 400 for bad roles", function()
    local admin = admin_login()
    local u = new_account(srv.port, "target")
    for _, id in ipairs({ "00000000-0000-4000-8000-000000000000", "not-a-uuid", u.id:upper(), u.id .. "0",
      "'%20OR%201=1" }) do
      assert_error(call(srv.port, "PATCH", "/api/users/" .. id, admin.access_token, { role = "admin" }), 404,
        "not_found")
    end
    assert_bad_field(call(srv.port, "PATCH", "/api/users/" .. u.id, admin.access_token, { role = "root" }), "role")
    assert_bad_field(call(srv.port, "PATCH", "/api/users/" .. u.id, admin.access_token, { role = "Admin" }), "role")
    assert_bad_field(call(srv.port, "PATCH", "/api/users/" .. u.id, admin.access_token, { role = "admin",
      email = "x@example.com" }), "email")
    assert_bad_field(call(srv.port, "PATCH", "/api/users/" .. u.id, admin.access_token, {}), "role")
    assert.equal("user", call(srv.port, "GET", "/api/me", u.access).json.role)
  end)

  it("does not duplicate the admin on restart and keeps its password out of the logs", function()
    local function count(where)
      local code, out, err = h.psql(owner_url, "SET orrery.ctx = 'auth'; SELECT count(*) FROM users WHERE " .. where)
      assert.equal(0, code, err)
      return tonumber(out:match("([^\n]+)\n?$"))
    end
    local total, admins = count("true"), count("role = 'admin'")
    assert.equal(1, count("email = '" .. ADMIN_EMAIL:lower() .. "'"))
    assert.is_nil(srv:logs():find(ADMIN_PASSWORD, 1, true))
    local url = srv.database_url
    srv.db_name = nil -- keep the database across the restart
    srv:stop()
    srv = h.start_server({ env = env, database_url = url, migrate = false })
    assert.equal(total, count("true"))
    assert.equal(admins, count("role = 'admin'"))
    assert.equal(1, count("email = '" .. ADMIN_EMAIL:lower() .. "'"))
    local b = admin_login()
    assert.equal("admin", b.user.role)
    h.sleep(0.1)
    assert.is_nil(srv:logs():find("admin account created", 1, true))
    assert.is_nil(srv:logs():find(ADMIN_PASSWORD, 1, true))
  end)
end)

describe("auth rate limits", function()
  it("limits login and register attempts per IP with 429 and Retry-After", function()
    local srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "3", ORRERY_AUTH_RATE_PER_ACCOUNT = "1000" } })
    local ok, err = pcall(function()
      for _ = 1, 3 do
        assert_error(login(srv.port, new_email("flood"), "wrong password 1"), 401, "invalid_credentials")
      end
      local res = login(srv.port, new_email("flood"), "wrong password 1")
      assert_error(res, 429, "rate_limited")
      local retry = tonumber(res.headers["retry-after"])
      assert.is_not_nil(retry, "Retry-After")
      assert.is_true(retry >= 1 and retry <= 60, tostring(retry))
      -- register shares the per-IP budget
      res = register(srv.port, new_email("flood"), PASSWORD)
      assert_error(res, 429, "rate_limited")
      assert.is_not_nil(tonumber(res.headers["retry-after"]))
    end)
    srv:stop()
    assert(ok, err)
  end)

  it("limits failed logins per account with 429 and Retry-After, leaving other accounts alone", function()
    local srv = h.start_server({ env = { ORRERY_AUTH_RATE_PER_IP = "1000", ORRERY_AUTH_RATE_PER_ACCOUNT = "3" } })
    local ok, err = pcall(function()
      local a = new_account(srv.port, "locked")
      local b = new_account(srv.port, "bystander")
      for _ = 1, 3 do assert_error(login(srv.port, a.email, "wrong password 1"), 401, "invalid_credentials") end
      local res = login(srv.port, a.email, "wrong password 1")
      assert_error(res, 429, "rate_limited")
      local retry = tonumber(res.headers["retry-after"])
      assert.is_not_nil(retry, "Retry-After")
      assert.is_true(retry >= 1 and retry <= 900, tostring(retry))
      -- the same address spelled differently is the same account
      assert_error(login(srv.port, " " .. a.email:upper(), "wrong password 1"), 429, "rate_limited")
      -- locked: even the right password waits
      assert_error(login(srv.port, a.email, a.password), 429, "rate_limited")
      -- another account is unaffected
      assert.equal(200, login(srv.port, b.email, b.password).status)
      -- and existing sessions keep working
      assert.equal(200, call(srv.port, "GET", "/api/me", a.access).status)
    end)
    srv:stop()
    assert(ok, err)
  end)
end)
