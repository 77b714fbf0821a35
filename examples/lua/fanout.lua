-- Fan out and pick: ask several models at once, let a judge model choose
-- the best answer, and answer the client with it. The calls run in
-- parallel: three 2-second models take about 2 seconds, not 6.
--
-- Route config (lua_config):
--   candidates  models to ask              (default {"a", "b", "c"})
--   judge       the model that picks       (default: none, the longest wins)

local M = {}

local function longest(answers)
  local best
  for i, a in ipairs(answers) do
    if a and (not best or #a.text > #answers[best].text) then
      best = i
    end
  end
  return best
end

function M.on_request(ctx)
  local conf = ctx.route.config
  local models = conf.candidates or {"a", "b", "c"}
  local calls = {}
  for i, model in ipairs(models) do
    calls[i] = {model = model, messages = ctx.request.messages}
  end

  local answers, errs = sluice.llm.parallel(calls)
  for i, e in ipairs(errs) do
    if e then sluice.log.warn(models[i], "failed:", e) end
  end

  local pick
  if conf.judge then
    local list = {}
    for i, a in ipairs(answers) do
      if a then list[#list + 1] = i .. ". " .. a.text end
    end
    local verdict = sluice.llm.chat{
      model = conf.judge,
      prompt = "Which answer is best? Reply with its number only.\n\n" ..
          table.concat(list, "\n\n"),
    }
    local n = verdict and tonumber(verdict.text:match("%d+"))
    if n and answers[n] then pick = n end
  end
  pick = pick or longest(answers)

  if not pick then
    return sluice.respond(502, {error = {
      message = "every candidate model failed", type = "upstream_error",
      code = "all_candidates_failed"}})
  end
  ctx.vars.picked = models[pick]
  sluice.respond(200, answers[pick].response, {["x-sluice-picked"] = models[pick]})
end

return M
