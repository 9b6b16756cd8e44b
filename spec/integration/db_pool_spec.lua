-- The pool's sessions (src/db.c), opened exactly as `orrery serve` opens them: one slow request
-- cannot hold a connection, because every session carries statement_timeout and
-- idle_in_transaction_session_timeout.
local h = require("helpers")
local core = require("orrery.core")

describe("pooled PostgreSQL sessions", function()
  local db, url
  setup(function() db, url = h.create_database() end)
  teardown(function() h.drop_database(db) end)

  it("carry the statement and idle-in-transaction timeouts and the application name", function()
    local s = assert(core.db_session(url, 1500))
    assert.equal("1500ms", s.statement_timeout)
    assert.equal("1500ms", s.idle_in_transaction_session_timeout)
    assert.equal("orrery", s.application_name)
  end)

  it("cancel a statement that runs past the timeout", function()
    local t0 = h.now()
    local s = assert(core.db_session(url, 300, "SELECT pg_sleep(5)"))
    assert.equal("57014", s.sqlstate) -- query_canceled
    assert.is_true(h.now() - t0 < 3)
  end)

  it("answer with a reason, not a crash, when the server cannot be reached", function()
    local s, err = core.db_session("postgresql://nobody@127.0.0.1:1/none", 500)
    assert.is_nil(s)
    assert.matches("database unavailable", err)
  end)
end)
