std = "lua54"
max_line_length = 120
files["spec/"] = { std = "+busted" }
exclude_files = { "ui/node_modules/" }
-- Agents and the Lua library run in the sandbox, where `orrery` is a read-only global.
files["lib/"] = { read_globals = { "orrery" } }
files["agents/"] = { read_globals = { "orrery" } }
