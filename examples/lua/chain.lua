-- Prompt chaining: a cheap model condenses the user's question first, and
-- the strong model the client asked for answers from that summary.
--
-- Route config (lua_config):
--   cheap_model   the model that summarises           (default "cheap")
--   strong_model  the model that answers              (default: as sent)
--   min_chars     shorter questions go straight through (default 0)

local M = {}

local function last_user(messages)
  for i = #messages, 1, -1 do
    if messages[i].role == "user" and type(messages[i].content) == "string" then
      return i, messages[i].content
    end
  end
end

function M.on_request(ctx)
  local conf = ctx.route.config
  local req = ctx.request
  local i, question = last_user(req.messages)
  if not i or #question < (conf.min_chars or 0) then
    return
  end

  -- This waits for the cheap model without blocking the gateway.
  local summary, err = sluice.llm.chat{
    model = conf.cheap_model or "cheap",
    system = "Summarise the user's request in one or two sentences.",
    prompt = question,
    max_tokens = 200,
  }
  if not summary then
    -- Expected failures come back as nil, err: go on without a summary.
    sluice.log.warn("summary failed, answering the question as sent:", err)
    return
  end

  req.messages[i].content = "Summary of the request: " .. summary.text ..
      "\n\nOriginal request: " .. question
  if conf.strong_model then
    req.model = conf.strong_model
  end
  ctx.vars.summary_model = summary.model
  ctx.vars.summary_tokens = summary.usage and summary.usage.total_tokens
end

return M
