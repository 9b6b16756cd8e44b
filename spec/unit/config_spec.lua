-- The real configuration parser (src/config.c) through orrery.core.
local core = require("orrery.core")

describe("config", function()
  it("has laptop defaults", function()
    local c = assert(core.config_check({}))
    assert.equal("127.0.0.1", c.listen_host)
    assert.equal(8080, c.listen_port)
    assert.equal("development", c.env)
    assert.equal("info", c.log_level)
    assert.equal(10, c.db_pool)
    assert.is_true(c.workers >= 1)
    assert.equal(3145728, c.max_body)
    assert.is_false(c.llm_api_key_set)
  end)

  it("reads every variable", function()
    local c = assert(core.config_check({
      ORRERY_LISTEN = "0.0.0.0:9000", ORRERY_ENV = "production", ORRERY_LOG_LEVEL = "warn",
      ORRERY_DB_POOL = "4", ORRERY_WORKERS = "3", ORRERY_MAX_BODY_BYTES = "2048",
      ORRERY_CONNECTION_TIMEOUT = "7", ORRERY_SHUTDOWN_TIMEOUT = "0", OPENAI_API_KEY = "sk-x",
      ORRERY_JWT_SECRET = string.rep("s", 32), ORRERY_ACCESS_TOKEN_TTL = "60",
    }))
    assert.equal("0.0.0.0", c.listen_host)
    assert.equal(9000, c.listen_port)
    assert.equal("production", c.env)
    assert.equal("warn", c.log_level)
    assert.equal(4, c.db_pool)
    assert.equal(3, c.workers)
    assert.equal(2048, c.max_body)
    assert.equal(7, c.connection_timeout)
    assert.equal(0, c.shutdown_timeout)
    assert.is_true(c.llm_api_key_set)
    assert.is_true(c.jwt_secret_set)
    assert.equal(60, c.access_ttl)
  end)

  it("reads the agent runtime's variables, with defaults, and names a bad one", function()
    local d = assert(core.config_check({}))
    assert.same({ 4096, 64, 100000000, 5000, 300, 10000, 1 },
      { d.agent_mailbox, d.agent_memory_mb, d.agent_instructions, d.agent_slice_ms, d.agent_timeout,
        d.agent_max_runs, d.agents_watch })
    assert.is_true(d.agent_workers >= 1)
    local c = assert(core.config_check({
      ORRERY_AGENT_WORKERS = "3", ORRERY_AGENT_MAILBOX = "10", ORRERY_AGENT_MEMORY_MB = "8",
      ORRERY_AGENT_INSTRUCTIONS = "5000", ORRERY_AGENT_SLICE_MS = "250", ORRERY_AGENT_TIMEOUT = "9",
      ORRERY_AGENT_MAX_RUNS = "7", ORRERY_AGENTS_WATCH = "0",
    }))
    assert.same({ 3, 10, 8, 5000, 250, 9, 7, 0 },
      { c.agent_workers, c.agent_mailbox, c.agent_memory_mb, c.agent_instructions, c.agent_slice_ms,
        c.agent_timeout, c.agent_max_runs, c.agents_watch })
    assert.equal(0, assert(core.config_check({ ORRERY_ENV = "test" })).agents_watch)
    for name, bad in pairs({ ORRERY_AGENT_MAX_RUNS = "0", ORRERY_AGENT_MAILBOX = "x", ORRERY_AGENTS_WATCH = "2",
                             ORRERY_INSTANCE_ID = "not-a-uuid" }) do
      local none, err = core.config_check({ [name] = bad })
      assert.is_nil(none)
      assert.matches(name, err, 1, true)
    end
  end)

  it("requires a JWT secret of at least 32 bytes, and one in production", function()
    local c, err = core.config_check({ ORRERY_JWT_SECRET = string.rep("s", 31) })
    assert.is_nil(c)
    assert.matches("^ORRERY_JWT_SECRET: must be at least 32 bytes", err)
    c, err = core.config_check({ ORRERY_ENV = "production" })
    assert.is_nil(c)
    assert.matches("^ORRERY_JWT_SECRET: required in production", err)
    assert.is_table(core.config_check({ ORRERY_ENV = "development" }))
  end)

  it("needs the admin email and password together", function()
    local c, err = core.config_check({ ORRERY_ADMIN_EMAIL = "a@b.c" })
    assert.is_nil(c)
    assert.matches("^ORRERY_ADMIN_PASSWORD:", err)
  end)

  it("accepts IPv6 listen addresses", function()
    local c = assert(core.config_check({ ORRERY_LISTEN = "[::1]:8081" }))
    assert.equal("::1", c.listen_host)
    assert.equal(8081, c.listen_port)
  end)

  local bad = {
    { "ORRERY_LISTEN", "127.0.0.1:abc" },
    { "ORRERY_LISTEN", "127.0.0.1:70000" },
    { "ORRERY_LISTEN", "127.0.0.1:-1" },
    { "ORRERY_LISTEN", "8080" },
    { "ORRERY_LISTEN", "example.com:80" },
    { "ORRERY_DB_POOL", "-3" },
    { "ORRERY_DB_POOL", "0" },
    { "ORRERY_DB_POOL", "ten" },
    { "ORRERY_WORKERS", "2x" },
    { "ORRERY_MAX_BODY_BYTES", "-1" },
    { "ORRERY_CONNECTION_TIMEOUT", "0" },
    { "ORRERY_ENV", "staging" },
    { "ORRERY_LOG_LEVEL", "loud" },
    { "DATABASE_URL", "mysql://x" },
    { "ORRERY_LLM_BASE_URL", "ftp://x" },
    { "ORRERY_ACCESS_TOKEN_TTL", "5" },
    { "ORRERY_AUTH_RATE_PER_IP", "0" },
    { "ORRERY_MIGRATION_DATABASE_URL", "sqlite:x" },
  }
  for _, case in ipairs(bad) do
    it("refuses " .. case[1] .. "=" .. case[2] .. " naming the variable", function()
      local c, err = core.config_check({ [case[1]] = case[2] })
      assert.is_nil(c)
      assert.equal(case[1], err:match("^([%w_]+):"))
      assert.is_nil(err:find("\n"), "one line")
    end)
  end
end)
