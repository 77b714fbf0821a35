-- The benchmark's "Lua transform" route: the prompt is edited on the way
-- in and the answer on the way out, so both conversions (request and
-- answer, JSON to Lua and back) are measured.
local M = {}

function M.on_request(ctx)
  local m = ctx.request.messages
  m[#m].content = "Answer briefly. " .. m[#m].content
end

function M.on_response(ctx)
  local msg = ctx.response.choices[1].message
  msg.content = msg.content .. " [checked]"
end

return M
