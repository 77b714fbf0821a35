-- A streaming transform: words from a deny list are masked in each event
-- as it passes, and a footer is added at the end of the answer. Works on
-- plain answers too (on_response).
--
-- Route config (lua_config):
--   words   the words to mask (default {"secret", "password"})
--   footer  text added at the end (default none)

local M = {}

local function mask(ctx, text)
  for _, w in ipairs(ctx.route.config.words or {"secret", "password"}) do
    text = text:gsub(w, string.rep("*", #w))
  end
  return text
end

function M.on_chunk(ctx, chunk, text)
  if chunk == nil then
    -- The end of the stream: one more piece of text, or nothing.
    return ctx.route.config.footer
  end
  if text then
    ctx.vars.chunks = (ctx.vars.chunks or 0) + 1
    return mask(ctx, text)
  end
end

function M.on_response(ctx)
  if ctx.status ~= 200 then return end
  local msg = ctx.response.choices[1].message
  if type(msg.content) == "string" then
    msg.content = mask(ctx, msg.content) .. (ctx.route.config.footer or "")
  end
end

return M
