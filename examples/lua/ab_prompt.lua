-- An A/B prompt experiment: each consumer gets one variant of a stored
-- prompt, always the same one, and the variant goes into the access log
-- (ctx.vars) so answers can be compared later. A counter per variant is
-- kept in the route's key-value store.
--
-- Template: "greeting" in $.prompts with versions "a" and "b".
-- The consumer: set by an auth plugin, else the x-user header.

local M = {}

-- A small stable hash (djb2), so a consumer keeps its variant across
-- requests, workers and restarts.
local function hash(s)
  local h = 5381
  for i = 1, #s do
    h = (h * 33 + s:byte(i)) % 4294967296
  end
  return h
end

function M.on_request(ctx)
  local who = ctx.consumer or ctx.headers["x-user"] or "anonymous"
  local variant = hash(who) % 2 == 0 and "a" or "b"
  local system = assert(sluice.prompt.render("greeting", {user = who}, variant))
  table.insert(ctx.request.messages, 1, {role = "system", content = system})

  ctx.vars.experiment = "greeting"
  ctx.vars.variant = variant
  ctx.vars.seen = sluice.kv.incr("variant:" .. variant)
end

return M
