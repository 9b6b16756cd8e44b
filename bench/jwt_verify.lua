-- Micro-benchmark: HS256 access-token verification through orrery.core (src/auth.c), the work
-- every authenticated request does. Prints one line for scripts to capture; target under 5 us/op.
--   LUA_CPATH='build/lua/?.so;;' lua5.4 bench/jwt_verify.lua [N]
local core = require("orrery.core")

local SECRET = "bench-secret-0123456789abcdef0123456789"
local USER = "0b7e1c2a-1234-4abc-8def-0123456789ab"
local NOW = 1700000000

local n = math.tointeger(tonumber(arg[1] or "200000"))
if not n or n < 1 then
  io.stderr:write("usage: lua5.4 bench/jwt_verify.lua [N]\n")
  os.exit(2)
end

local token = assert(core.auth_token_issue(SECRET, USER, "user", NOW))
local verify = core.auth_token_verify
assert(verify(token, SECRET, NOW), "the benchmark token does not verify")

for _ = 1, math.min(n, 1000) do verify(token, SECRET, NOW) end -- warm-up

local t0 = os.clock()
for _ = 1, n do
  if not verify(token, SECRET, NOW) then error("verification failed during the run") end
end
local elapsed = os.clock() - t0

print(string.format("jwt verify: %.2f us/op (%d ops)", elapsed / n * 1e6, n))
