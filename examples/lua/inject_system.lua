-- A system prompt from a stored template, put in front of every
-- conversation (replacing one the client sent, unless allowed).
--
-- Template: "system" in $.prompts (or the store's prompts database), with
-- {{product}}, {{consumer}} and {{date}}.
-- Route config (lua_config):
--   product              fills {{product}}
--   keep_client_system   true: keep the client's system message too

local M = {}

function M.on_request(ctx)
  local conf = ctx.route.config
  local text, err = sluice.prompt.render("system", {
    product = conf.product or "our product",
    consumer = ctx.consumer or ctx.headers["x-user"] or "a customer",
    date = os.date("!%Y-%m-%d"),
  })
  if not text then
    error("cannot render the system prompt: " .. err)
  end

  local out = {{role = "system", content = text}}
  for _, m in ipairs(ctx.request.messages) do
    if m.role ~= "system" or conf.keep_client_system then
      out[#out + 1] = m
    end
  end
  ctx.request.messages = out
end

return M
