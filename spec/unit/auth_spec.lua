-- Access tokens, password hashes and refresh tokens (src/auth.c) through orrery.core. Hostile
-- tokens are forged here with the module's own HMAC and base64url, so each refusal below is the
-- verifier's doing and not a broken forgery (the "forger works" test proves the baseline).
local core = require("orrery.core")
local cjson = require("cjson")

local SECRET = "0123456789abcdef0123456789abcdef-test-secret"
local NOW = 1700000000
local USER = "0b7e1c2a-1234-4abc-8def-0123456789ab"

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

local function b64url_decode(s)
  local bits, out = 0, {}
  local acc = 0
  for i = 1, #s do
    local v = B64:find(s:sub(i, i), 1, true) - 1
    acc = (acc << 6) | v
    bits = bits + 6
    if bits >= 8 then
      bits = bits - 8
      out[#out + 1] = string.char((acc >> bits) & 0xff)
    end
  end
  return table.concat(out)
end

local function hex(raw)
  return (raw:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- A complete, valid claim set; tests change one thing at a time.
local function claims(over)
  local c = {
    sub = USER, role = "user", iat = NOW, nbf = NOW, exp = NOW + 900,
    jti = "00112233445566778899aabbccddeeff", iss = "orrery", aud = "orrery-api",
  }
  for k, v in pairs(over or {}) do
    if v == cjson.null then c[k] = nil else c[k] = v end
  end
  return c
end

-- header and payload: a table (encoded with cjson) or a raw JSON string.
local function forge(header, payload, alg, key)
  if type(header) == "table" then header = cjson.encode(header) end
  if type(payload) == "table" then payload = cjson.encode(payload) end
  local signing_input = core.auth_b64url(header) .. "." .. core.auth_b64url(payload)
  local sig = core.auth_hmac(alg or "sha256", key or SECRET, signing_input)
  return signing_input .. "." .. core.auth_b64url(sig)
end

local HS256 = { alg = "HS256", typ = "JWT" }

local function verify(token, now)
  return core.auth_token_verify(token, SECRET, now or NOW)
end

local function refused(token, now)
  local c, why = verify(token, now)
  assert.is_nil(c)
  assert.is_string(why)
  return why
end

describe("auth", function()
  describe("issue and verify", function()
    it("round-trips a token", function()
      local token, issued = core.auth_token_issue(SECRET, USER, "admin", NOW)
      assert.is_string(token)
      local c = assert(verify(token))
      assert.same(issued, c)
      assert.equal(USER, c.sub)
      assert.equal("admin", c.role)
    end)

    it("signs the claims we promise, with an HS256 JWT header", function()
      local token, issued = core.auth_token_issue(SECRET, USER, "user", NOW, 300)
      local h, p, s = token:match("^([%w_-]+)%.([%w_-]+)%.([%w_-]+)$")
      assert.is_string(s)
      assert.same({ alg = "HS256", typ = "JWT" }, cjson.decode(b64url_decode(h)))
      local payload = cjson.decode(b64url_decode(p))
      assert.same({ sub = USER, role = "user", iat = NOW, nbf = NOW, exp = NOW + 300, jti = issued.jti,
                    iss = "orrery", aud = "orrery-api" }, payload)
      assert.matches("^%x+$", issued.jti)
      assert.equal(32, #issued.jti)
      assert.equal(NOW, issued.iat)
      assert.equal(NOW + 300, issued.exp)
      assert.equal(43, #s)
    end)

    it("gives every token its own jti", function()
      local _, a = core.auth_token_issue(SECRET, USER, "user", NOW)
      local _, b = core.auth_token_issue(SECRET, USER, "user", NOW)
      assert.are_not.equal(a.jti, b.jti)
    end)

    it("refuses to sign what it would not accept", function()
      assert.is_nil(core.auth_token_issue(SECRET, "not-a-uuid", "user", NOW))
      assert.is_nil(core.auth_token_issue(SECRET, USER:upper(), "user", NOW))
      assert.is_nil(core.auth_token_issue(SECRET, USER, "root", NOW))
      assert.is_nil(core.auth_token_issue("short secret", USER, "user", NOW))
    end)

    it("refuses a secret shorter than 32 bytes when verifying", function()
      local token = forge(HS256, claims(), "sha256", "short")
      assert.is_nil(core.auth_token_verify(token, "short", NOW))
    end)

    it("accepts a token forged here with the right key (the forger works)", function()
      local c = assert(verify(forge(HS256, claims())))
      assert.equal(USER, c.sub)
      assert.equal("00112233445566778899aabbccddeeff", c.jti)
    end)

    it("ignores kid, jku and x5u headers", function()
      local h = { alg = "HS256", typ = "JWT", kid = "../../dev/null", jku = "https://evil.example/jwks.json",
                  x5u = "https://evil.example/cert.pem" }
      assert.is_table(verify(forge(h, claims())))
    end)

    it("accepts a header without typ", function()
      assert.is_table(verify(forge({ alg = "HS256" }, claims())))
    end)
  end)

  describe("refuses hostile tokens", function()
    it("alg none, with an empty and with a real signature", function()
      local input = core.auth_b64url(cjson.encode({ alg = "none", typ = "JWT" })) .. "." ..
                    core.auth_b64url(cjson.encode(claims({ role = "admin" })))
      refused(input .. ".")
      refused(input)
      refused(forge({ alg = "none" }, claims()))
      refused(forge({ alg = "None" }, claims()))
    end)

    it("HS512 and HS384 signed correctly with the same secret", function()
      assert.equal("alg not allowed", refused(forge({ alg = "HS512", typ = "JWT" }, claims(), "sha512")))
      refused(forge({ alg = "HS384", typ = "JWT" }, claims(), "sha384"))
    end)

    it("an RS256 header over an HS256 signature", function()
      refused(forge({ alg = "RS256", typ = "JWT" }, claims()))
    end)

    it("alg missing, not a string, or spelled differently", function()
      refused(forge({ typ = "JWT" }, claims()))
      refused(forge('{"alg":["HS256"]}', claims()))
      refused(forge('{"alg":null}', claims()))
      refused(forge({ alg = "hs256" }, claims()))
      refused(forge({ alg = "HS256 " }, claims()))
    end)

    it("duplicate keys in the header or the payload", function()
      refused(forge('{"alg":"none","alg":"HS256"}', claims()))
      local p = cjson.encode(claims()):gsub("^{", '{"role":"admin",')
      refused(forge(HS256, p))
    end)

    it("a crit header", function()
      refused(forge({ alg = "HS256", crit = { "exp" } }, claims()))
    end)

    it("a tampered payload with the signature kept", function()
      local token = core.auth_token_issue(SECRET, USER, "user", NOW)
      local h, _, s = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      local payload = cjson.decode(b64url_decode(token:match("^[^.]+%.([^.]+)")))
      payload.role = "admin"
      assert.equal("bad signature", refused(h .. "." .. core.auth_b64url(cjson.encode(payload)) .. "." .. s))
    end)

    it("a token signed with another secret", function()
      local token = core.auth_token_issue(SECRET .. "-other", USER, "user", NOW)
      assert.equal("bad signature", refused(token))
    end)

    it("a signature of the wrong length or spelled non-canonically", function()
      local token = forge(HS256, claims())
      refused(token:sub(1, -2))
      refused(token .. "A")
      refused(token .. "AAAA")
      -- The last of 43 characters carries 2 bits; flipping an unused low bit keeps the bytes a lax
      -- decoder would produce, so only a strict decoder refuses it.
      local last = token:sub(-1)
      local v = B64:find(last, 1, true) - 1
      refused(token:sub(1, -2) .. B64:sub((v ~ 1) + 1, (v ~ 1) + 1))
    end)

    it("expired tokens, with the skew at its edge", function()
      assert.equal("expired", refused(forge(HS256, claims({ exp = NOW - 3600, iat = NOW - 4500 }))))
      refused(forge(HS256, claims({ exp = NOW - 60 })))
      assert.is_table(verify(forge(HS256, claims({ exp = NOW - 59 }))))
      local token = core.auth_token_issue(SECRET, USER, "user", NOW)
      assert.is_table(verify(token, NOW + 900 + 59))
      refused(token, NOW + 900 + 60)
    end)

    it("nbf in the future (accepted within the skew)", function()
      assert.equal("not yet valid", refused(forge(HS256, claims({ nbf = NOW + 3600 }))))
      refused(forge(HS256, claims({ nbf = NOW + 61 })))
      assert.is_table(verify(forge(HS256, claims({ nbf = NOW + 60 }))))
      assert.is_table(verify(forge(HS256, claims({ nbf = cjson.null }))))
      refused(forge(HS256, claims({ nbf = tostring(NOW) })))
    end)

    it("iat in the future beyond the skew (accepted within it)", function()
      assert.equal("iat in the future", refused(forge(HS256, claims({ iat = NOW + 61 }))))
      assert.is_table(verify(forge(HS256, claims({ iat = NOW + 30 }))))
      assert.is_table(verify(forge(HS256, claims({ iat = NOW + 60 }))))
    end)

    it("missing or non-integer exp and iat", function()
      assert.equal("exp missing", refused(forge(HS256, claims({ exp = cjson.null }))))
      refused(forge(HS256, claims({ exp = tostring(NOW + 900) })))
      refused(forge(HS256, claims({ exp = true })))
      local p = cjson.encode(claims({ exp = 0 }))
      refused(forge(HS256, (p:gsub('"exp":0', '"exp":' .. (NOW + 900) .. ".0"))))
      refused(forge(HS256, (p:gsub('"exp":0', '"exp":1.7000009e9'))))
      refused(forge(HS256, (p:gsub('"exp":0', '"exp":99999999999999999999999'))))
      refused(forge(HS256, claims({ iat = cjson.null })))
      refused(forge(HS256, claims({ iat = tostring(NOW) })))
    end)

    it("wrong audience or issuer; an audience array must contain ours", function()
      assert.equal("wrong audience", refused(forge(HS256, claims({ aud = "other-api" }))))
      assert.equal("wrong issuer", refused(forge(HS256, claims({ iss = "evil" }))))
      refused(forge(HS256, claims({ aud = cjson.null })))
      refused(forge(HS256, claims({ iss = cjson.null })))
      refused(forge(HS256, claims({ aud = { "other-api", "more" } })))
      refused(forge(HS256, claims({ aud = 1 })))
      refused(forge(HS256, claims({ aud = "orrery-api-x" })))
      assert.is_table(verify(forge(HS256, claims({ aud = { "other-api", "orrery-api" } }))))
    end)

    it("a sub that is not a canonical lower-case UUID", function()
      for _, sub in ipairs({ "admin", USER:upper(), USER:gsub("-", ""), USER .. "0", "",
                             "0b7e1c2a-1234-4abc-8def-0123456789ag", "0b7e1c2a1-234-4abc-8def-0123456789ab" }) do
        refused(forge(HS256, claims({ sub = sub })))
      end
      refused(forge(HS256, claims({ sub = 42 })))
      refused(forge(HS256, claims({ sub = cjson.null })))
    end)

    it("a role other than user or admin", function()
      assert.equal("role not allowed", refused(forge(HS256, claims({ role = "root" }))))
      refused(forge(HS256, claims({ role = "Admin" })))
      refused(forge(HS256, claims({ role = { "admin" } })))
      refused(forge(HS256, claims({ role = cjson.null })))
      refused(forge(HS256, (cjson.encode(claims({ role = "X" })):gsub('"X"', '"admin\\u0000"'))))
    end)

    it("a missing, empty or oversized jti", function()
      refused(forge(HS256, claims({ jti = cjson.null })))
      refused(forge(HS256, claims({ jti = "" })))
      refused(forge(HS256, claims({ jti = string.rep("a", 33) })))
      refused(forge(HS256, claims({ jti = 7 })))
    end)

    it("the wrong number of segments, empty segments, empty input and garbage", function()
      local token = forge(HS256, claims())
      local h, p, s = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      refused(h .. "." .. p)
      refused(token .. "." .. s)
      refused(token .. ".")
      refused("." .. token)
      refused(h .. ".." .. s)
      refused("." .. p .. "." .. s)
      refused("")
      refused("..")
      refused("...")
      refused("garbage")
      refused("a.b.c")
      refused("Bearer " .. token)
      refused(token .. " ")
      refused(token .. "\n")
    end)

    it("a 100 KB string", function()
      assert.equal("token too long", refused(string.rep("A", 100 * 1024)))
      local token = forge(HS256, claims({ jti = "x" }))
      local h, p, s = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      refused(h .. "." .. p .. string.rep("A", 100 * 1024) .. "." .. s)
    end)

    it("characters outside base64url, and padding", function()
      local token = forge(HS256, claims())
      local h, p, s = token:match("^([^.]+)%.([^.]+)%.([^.]+)$")
      refused(token .. "=")
      refused(h .. "=." .. p .. "." .. s)
      refused(h .. "." .. p .. "." .. s:sub(1, 10) .. "/" .. s:sub(12))
      refused(h:sub(1, 5) .. "+" .. h:sub(7) .. "." .. p .. "." .. s)
      refused(h .. "." .. p .. "." .. s:sub(1, 10) .. "+" .. s:sub(12))
      refused(h .. "." .. p .. "." .. s:sub(1, 10) .. "\xff" .. s:sub(12))
      refused(h .. "." .. p .. "." .. s:sub(1, 10) .. "%" .. s:sub(12))
    end)

    it("a header that is not JSON or not an object, a payload that is not an object", function()
      refused(forge("not json", claims()))
      refused(forge('"HS256"', claims()))
      refused(forge('["HS256"]', claims()))
      refused(forge('{"alg":"HS256"} trailing', claims()))
      refused(forge(HS256, "[1,2,3]"))
      refused(forge(HS256, '"payload"'))
      refused(forge(HS256, "42"))
      refused(forge(HS256, "null"))
      refused(forge(HS256, "{not json"))
      refused(forge(HS256, ""))
    end)

    it("embedded NUL bytes", function()
      local token = forge(HS256, claims())
      refused(token .. "\0garbage")
      refused(token:sub(1, 20) .. "\0" .. token:sub(21))
      refused("\0" .. token)
    end)
  end)

  describe("passwords", function()
    local encoded

    setup(function()
      encoded = assert(core.auth_password_hash("correct horse battery staple"))
    end)

    it("hashes with argon2id and our parameters", function()
      assert.equal("$argon2id$v=19$m=19456,t=2,p=1$", encoded:sub(1, 31))
    end)

    it("verifies the right password and refuses others", function()
      assert.is_true(core.auth_password_verify(encoded, "correct horse battery staple"))
      assert.is_false(core.auth_password_verify(encoded, "correct horse battery stapl"))
      assert.is_false(core.auth_password_verify(encoded, "correct horse battery staple\0"))
      assert.is_false(core.auth_password_verify(encoded, ""))
    end)

    it("handles empty and binary passwords", function()
      local e = assert(core.auth_password_hash(""))
      assert.is_true(core.auth_password_verify(e, ""))
      assert.is_false(core.auth_password_verify(e, "\0"))
      local b = assert(core.auth_password_hash("a\0b"))
      assert.is_true(core.auth_password_verify(b, "a\0b"))
      assert.is_false(core.auth_password_verify(b, "a"))
    end)

    it("salts every hash", function()
      assert.are_not.equal(encoded, assert(core.auth_password_hash("correct horse battery staple")))
    end)

    it("answers false for malformed encoded strings", function()
      local prefix = "$argon2id$v=19$m=19456,t=2,p=1$"
      local salt, hash = encoded:match("%$([^$]+)%$([^$]+)$")
      for _, bad in ipairs({
        "", "$", "garbage", "$argon2id$", prefix, prefix .. "$", prefix .. salt, prefix .. salt .. "$",
        prefix .. "$" .. hash, prefix .. salt .. "$" .. hash:sub(1, 10), prefix .. salt .. "$" .. hash .. "=",
        prefix .. "!!!!$" .. hash, encoded:gsub("argon2id", "argon2i"), encoded:gsub("t=2", "t=0"),
        encoded:gsub("m=19456", "m=4194304"), encoded:gsub("v=19", "v=16"), encoded .. "$extra",
        encoded .. string.rep("A", 100000), encoded:sub(1, 40) .. "\0" .. encoded:sub(41),
      }) do
        assert.is_false(core.auth_password_verify(bad, "correct horse battery staple"), bad:sub(1, 80))
      end
    end)

    it("runs the dummy verification for unknown accounts", function()
      assert.has_no.errors(function()
        core.auth_password_dummy_verify("whatever")
        core.auth_password_dummy_verify("")
      end)
    end)
  end)

  describe("refresh tokens and digests", function()
    it("makes 43 base64url characters, different each time", function()
      local a, b = core.auth_refresh_new(), core.auth_refresh_new()
      assert.matches("^[A-Za-z0-9_-]+$", a)
      assert.equal(43, #a)
      assert.equal(43, #b)
      assert.are_not.equal(a, b)
    end)

    it("hashes with SHA-256 in lower-case hex", function()
      assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.auth_sha256_hex("abc"))
      assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", core.auth_sha256_hex(""))
    end)

    it("exposes HMAC and base64url for the specs (known vectors)", function()
      assert.equal("f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
                   hex(core.auth_hmac("sha256", "key", "The quick brown fox jumps over the lazy dog")))
      assert.equal(48, #core.auth_hmac("sha384", "k", "d"))
      assert.equal(64, #core.auth_hmac("sha512", "k", "d"))
      assert.has_error(function() core.auth_hmac("md5", "k", "d") end)
      assert.equal("", core.auth_b64url(""))
      assert.equal("Zg", core.auth_b64url("f"))
      assert.equal("Zm8", core.auth_b64url("fo"))
      assert.equal("Zm9v", core.auth_b64url("foo"))
      assert.equal("-_8", core.auth_b64url("\xfb\xff"))
    end)
  end)
end)
