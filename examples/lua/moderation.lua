-- A moderation gate: the user's last message goes to an external HTTP
-- moderation endpoint before any model sees it; a flagged message is
-- refused with a 400.
--
-- The endpoint gets POST {"input": "..."} and answers {"flagged": bool,
-- "categories": [...]} (the shape of OpenAI's moderation API, simplified).
-- Route config (lua_config):
--   url        the endpoint (required)
--   token      sent as a bearer token (optional)
--   fail_open  true: an unreachable endpoint lets requests through
--              (default false: they get a 503)

local M = {}

function M.on_request(ctx)
  local conf = ctx.route.config
  local messages = ctx.request.messages
  local text = messages[#messages].content
  if type(text) ~= "string" then return end

  local res, err = sluice.http.request{
    method = "POST",
    url = conf.url,
    headers = conf.token and {authorization = "Bearer " .. conf.token} or nil,
    body = {input = text},
    timeout = 2,
  }
  local verdict = res and res.status == 200 and sluice.json.decode(res.body)
  if not verdict then
    sluice.log.error("moderation unavailable:", err or (res and res.status))
    if conf.fail_open then return end
    return sluice.respond(503, {error = {
      message = "moderation is unavailable", type = "server_error",
      code = "moderation_unavailable"}})
  end

  ctx.vars.moderated = true
  if verdict.flagged then
    ctx.vars.flagged = true
    return sluice.respond(400, {error = {
      message = "the message was refused by moderation",
      type = "invalid_request_error", code = "content_flagged",
      categories = verdict.categories}})
  end
end

return M
