-- The benchmark's "Lua transform" route: the prompt is edited on the way
-- in and the answer on the way out, through ctx.prompt and ctx.answer (the
-- way to edit text; see docs/lua.md for what whole tables cost).
local M = {}

function M.on_request(ctx)
  ctx.prompt = "Answer briefly. " .. ctx.prompt
end

function M.on_response(ctx)
  ctx.answer = ctx.answer .. " [checked]"
end

return M
