-- The real router (src/router.c) through orrery.core.
local core = require("orrery.core")

describe("router", function()
  local r = assert(core.router_new({
    { "GET", "/healthz" },
    { "GET", "/api/tasks" },
    { "POST", "/api/tasks" },
    { "GET", "/api/tasks/{id}" },
    { "PATCH", "/api/tasks/{id}" },
    { "DELETE", "/api/tasks/{id}" },
    { "GET", "/api/events/{id}" },
    { "GET", "/api/events/conflicts" },
    { "GET", "/api/workflows/{id}/runs" },
    { "POST", "/api/workflows/{id}/run" },
    { "GET", "/api/a/{x}/b/{y}" },
  }))

  it("matches literal routes", function()
    local m = r:match("GET", "/healthz")
    assert.equal(0, m.status)
    assert.equal(1, m.index)
  end)

  it("extracts path parameters", function()
    local m = r:match("PATCH", "/api/tasks/0b7e-42")
    assert.equal(0, m.status)
    assert.equal(5, m.index)
    assert.equal("0b7e-42", m.params.id)
    m = r:match("GET", "/api/a/1/b/two")
    assert.same({ x = "1", y = "two" }, m.params)
  end)

  it("prefers literal segments over parameters", function()
    assert.equal(8, r:match("GET", "/api/events/conflicts").index)
    assert.equal(7, r:match("GET", "/api/events/e1").index)
  end)

  it("matches nested routes under a parameter", function()
    assert.equal(9, r:match("GET", "/api/workflows/w1/runs").index)
    assert.equal(10, r:match("POST", "/api/workflows/w1/run").index)
  end)

  it("answers 404 for unknown paths", function()
    for _, p in ipairs({ "/", "/nope", "/api/tasks/1/extra", "/api/tasks/", "//healthz", "/api//tasks",
                         "healthz", "/HEALTHZ", "/api/workflows/w1" }) do
      local m = r:match("GET", p)
      assert.equal(404, m.status, p)
      assert.is_nil(m.index, p)
    end
  end)

  it("answers 405 with the allowed methods when only the method is wrong", function()
    local m = r:match("PUT", "/api/tasks/1")
    assert.equal(405, m.status)
    assert.equal("GET, HEAD, PATCH, DELETE", m.allow)
    m = r:match("DELETE", "/api/tasks")
    assert.equal(405, m.status)
    assert.equal("GET, HEAD, POST", m.allow)
  end)

  it("serves HEAD from GET routes", function()
    local m = r:match("HEAD", "/api/tasks/9")
    assert.equal(0, m.status)
    assert.equal(4, m.index)
  end)

  it("refuses parameters longer than the limit", function()
    assert.equal(404, r:match("GET", "/api/tasks/" .. string.rep("x", 300)).status)
  end)

  it("rejects bad patterns", function()
    local bad, err = core.router_new({ { "GET", "no-slash" } })
    assert.is_nil(bad)
    assert.matches("must start with '/'", err)
    bad, err = core.router_new({ { "GET", "/a/{unclosed" } })
    assert.is_nil(bad)
    assert.matches("bad parameter", err)
    bad = core.router_new({ { "GET", "/a/{b}/{c}/{d}/{e}/{f}" } })
    assert.is_nil(bad)
    bad = core.router_new({ { "GET", "/a//b" } })
    assert.is_nil(bad)
  end)
end)
