"""Per-route Lua scripts in the running gateway: the phases, the sluice API
(llm.chat / parallel, http, sleep, kv, json, prompt, respond, log), ctx,
stream transforms, the sandbox and its limits, reload and `sluice check`.

The proofs that scripts never block the gateway (a slow chain beside a
fast route, parallel calls) are in test_lua_proofs.py; the examples of
examples/lua/ in test_lua_examples.py."""
import json
import os
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import SLUICE_BIN, base_config, free_port
from helpers import Conn, chat, chat_body, http, sse_data, stream_text, \
    wait_for

CHAT = "/v1/chat/completions"


def lua_config(script, limits=None, config=None, prompts=None, models=None):
    """Config overrides: the chat route runs `script` (a path); /plain is a
    chat route without a script."""
    route = {"path": CHAT, "lua": str(script)}
    if limits:
        route["lua_limits"] = limits
    if config is not None:
        route["lua_config"] = config
    extra = {"routes": [route, {"path": "/plain", "kind": "chat"},
                        {"path": "/healthz"}, {"path": "/v1/messages"}],
             "models": {"cheap": {"targets": [{"provider": "upstream",
                                               "model": "cheap-model"}]},
                        "strong": {"targets": [{"provider": "upstream",
                                                "model": "strong-model"}]}}}
    if prompts is not None:
        extra["prompts"] = prompts
    if models:
        extra["models"].update(models)
    return extra


@pytest.fixture
def lua_gw(gateway, tmp_path):
    """Factory: lua_gw(source, **lua_config kwargs) writes the script and
    starts a gateway whose chat route runs it."""
    def start(source, workers=2, env=None, **kw):
        path = tmp_path / ("policy-%d.lua" % len(os.listdir(tmp_path)))
        path.write_text(source)
        gw = gateway(extra=lua_config(path, **kw), workers=workers, env=env)
        gw.script = path
        return gw
    return start


def content(r):
    assert r.status == 200, r
    return r.json()["choices"][0]["message"]["content"]


def upstream_chats(mock):
    return [json.loads(r["body"]) for r in mock.requests()
            if r["path"] == CHAT]


def log_lines(gw, pred, timeout=3.0):
    return wait_for(lambda: [l for l in gw.access_log() if pred(l)],
                    timeout=timeout)


def run_check(cfg_path):
    return subprocess.run([SLUICE_BIN, "check", "-c", str(cfg_path)],
                          capture_output=True, text=True, timeout=20)


# ---- phases and ctx -------------------------------------------------------


def test_script_rewrites_the_prompt_before_and_the_answer_after(lua_gw,
                                                                 mock):
    gw = lua_gw("""
local M = {}
function M.on_request(ctx)
  local m = ctx.request.messages
  m[#m].content = m[#m].content .. " please"
end
function M.on_response(ctx)
  local msg = ctx.response.choices[1].message
  msg.content = "<" .. msg.content .. ">"
end
return M
""")
    assert content(chat(gw.port, "tea")) == "<tea please>"
    assert upstream_chats(mock)[-1]["messages"][-1]["content"] == \
        "tea please"


def test_a_route_without_the_script_is_untouched(lua_gw):
    gw = lua_gw("return {on_request = function(ctx) error('never') end}")
    r = http(gw.port, "POST", "/plain", chat_body("plain"))
    assert content(r) == "plain"


def test_ctx_has_route_headers_consumer_model_and_config(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  ctx.consumer = ctx.headers["x-user"]
  sluice.respond(200, {
    path = ctx.route.path, kind = ctx.route.kind, conf = ctx.route.config.k,
    consumer = ctx.consumer, model = ctx.model, phase = ctx.phase,
    agent = ctx.headers["x-agent"]})
end}
""", config={"k": [1, 2]})
    r = chat(gw.port, "x", headers={"x-user": "ann", "X-Agent": "t/1"})
    assert r.status == 200, r
    assert r.json() == {"path": CHAT, "kind": "chat", "conf": [1, 2],
                        "consumer": "ann", "model": "gpt-test",
                        "phase": "on_request", "agent": "t/1"}


def test_changing_the_model_in_on_request_reroutes_the_call(lua_gw, mock):
    gw = lua_gw("""
return {on_request = function(ctx) ctx.request.model = "strong" end}
""")
    r = chat(gw.port, "hi", model="cheap")
    assert content(r) == "hi"
    assert r.header("x-sluice-model") == "strong-model"
    assert upstream_chats(mock)[-1]["model"] == "strong-model"
    # The client's model is checked before the script runs.
    r = chat(gw.port, "hi", model="nope")
    assert r.status == 404, r


def test_an_unknown_model_set_by_the_script_is_a_404(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx) ctx.request.model = "missing" end}
""")
    r = chat(gw.port, "hi")
    assert r.status == 404 and r.error_code() == "model_not_found", r


def test_vars_are_shared_by_phases_and_land_in_the_access_log(lua_gw):
    gw = lua_gw("""
return {
  on_request = function(ctx) ctx.vars.n = 1; ctx.vars.who = "a" end,
  on_response = function(ctx) ctx.vars.n = ctx.vars.n + 1 end,
}
""")
    assert chat(gw.port, "v").status == 200
    lines = log_lines(gw, lambda l: l.get("route") == CHAT and
                      l.get("vars"))
    assert lines and lines[-1]["vars"] == {"n": 2, "who": "a"}


def test_respond_answers_without_calling_the_upstream(lua_gw, mock):
    gw = lua_gw("""
return {on_request = function(ctx)
  sluice.respond(429, {error = {message = "slow down", type = "rate",
                                code = "mine"}}, {["retry-after"] = "7"})
  error("not reached")
end}
""")
    before = len(upstream_chats(mock))
    r = chat(gw.port, "x")
    assert r.status == 429 and r.error_code() == "mine", r
    assert r.header("retry-after") == "7"
    assert len(upstream_chats(mock)) == before


def test_on_response_sees_errors_and_can_replace_them(lua_gw):
    gw = lua_gw("""
return {on_response = function(ctx)
  if ctx.status ~= 200 then
    ctx.status = 200
    ctx.response = {choices = {{message = {role = "assistant",
      content = "fallback after " .. ctx.response.error.code}}}}
  end
end}
""")
    r = chat(gw.port, "x [mock:status=500]")
    assert content(r) == "fallback after upstream_error"


def test_the_messages_front_runs_the_route_script(gateway, tmp_path):
    path = tmp_path / "m.lua"
    path.write_text("""
return {on_response = function(ctx)
  ctx.response.choices[1].message.content = "from lua"
end}
""")
    gw = gateway(extra={"routes": [{"path": "/v1/messages",
                                    "lua": str(path)}, {"path": "/healthz"}]})
    r = http(gw.port, "POST", "/v1/messages",
             {"model": "gpt-test", "max_tokens": 10,
              "messages": [{"role": "user", "content": "hi"}]})
    assert r.status == 200, r
    assert r.json()["content"][0]["text"] == "from lua"


# ---- model calls --------------------------------------------------------


def test_llm_chat_answer_has_text_response_usage_and_is_logged(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local a, err = sluice.llm.chat{model = "cheap", system = "be short",
                                 prompt = "four words right here"}
  assert(a, err)
  sluice.respond(200, {text = a.text, tokens = a.usage.total_tokens,
    id = a.response.object, status = a.status, provider = a.provider,
    model = a.model, finish = a.finish_reason})
end}
""")
    r = chat(gw.port, "x")
    assert r.status == 200, r
    assert r.json() == {"text": "four words right here", "tokens": 10,
                        "id": "chat.completion", "status": 200,
                        "provider": "upstream", "model": "cheap-model",
                        "finish": "stop"}
    sub = log_lines(gw, lambda l: l.get("route") == "lua:" + CHAT)
    assert sub and sub[-1]["model"] == "cheap" and \
        sub[-1]["completion_tokens"] == 4 and sub[-1]["status"] == 200


def test_llm_chat_failure_is_nil_and_an_error(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local a, err = sluice.llm.chat{model = "cheap",
                                 prompt = "x [mock:status=400]"}
  local b, err2 = sluice.llm.chat{model = "nope", prompt = "x"}
  sluice.respond(200, {a = a == nil, err = err, err2 = err2})
end}
""")
    j = chat(gw.port, "x").json()
    assert j["a"] is True
    assert j["err"].startswith("model call failed (400)")
    assert j["err2"].startswith("model call failed (404)")


def test_parallel_returns_answers_and_errors_in_order(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local as, es = sluice.llm.parallel{
    {model = "cheap", prompt = "one"},
    {model = "cheap", prompt = "two [mock:status=503]"},
    {model = "strong", prompt = "three"}}
  sluice.respond(200, {as[1].text, as[2], as[3].text, es[1], es[2] ~= false})
end}
""")
    assert chat(gw.port, "x").json() == ["one", False, "three", False, True]


def test_misuse_of_llm_chat_raises_naming_the_function(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local ok, err = pcall(sluice.llm.chat, {messages = {}})
  sluice.respond(200, {err = err})
end}
""")
    err = chat(gw.port, "x").json()["err"]
    assert "sluice.llm.chat: 'model' must be a non-empty string" in err


def test_client_gone_cancels_the_scripts_model_call(lua_gw, mock):
    gw = lua_gw("""
return {on_request = function(ctx)
  sluice.llm.chat{model = "cheap", prompt = "wait [mock:hang]"}
end}
""")
    c = Conn(gw.port)
    c.request("POST", CHAT, chat_body("x"))
    wait_for(lambda: any("mock:hang" in r["body"]
                         for r in mock.requests()), timeout=5)
    c.close()
    sub = log_lines(gw, lambda l: l.get("route") == "lua:" + CHAT and
                    l.get("status") == 499)
    assert sub, gw.access_log()
    assert wait_for(lambda: mock.stats()["open_connections"] <= 2,
                    timeout=5)


# ---- http, sleep, kv, json, prompts ----------------------------------------


class Echo(BaseHTTPRequestHandler):
    def _answer(self):
        n = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(n).decode() if n else ""
        out = json.dumps({"method": self.command, "path": self.path,
                          "body": body,
                          "ctype": self.headers.get("content-type"),
                          "token": self.headers.get("x-token")}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Echo", "yes")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

    def log_message(self, *a):
        pass


@pytest.fixture
def echo_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_http_request_methods_headers_and_bodies(lua_gw, echo_server):
    gw = lua_gw("""
return {on_request = function(ctx)
  local url = ctx.route.config.url
  local g = assert(sluice.http.request{url = url .. "/a?b=1",
                                       headers = {["x-token"] = "t1"}})
  local p = assert(sluice.http.request{method = "post", url = url,
                                       body = {k = "v"}})
  local d = assert(sluice.http.request{method = "DELETE", url = url,
                                       body = "raw"})
  local h = assert(sluice.http.request{method = "HEAD", url = url})
  local x, err = sluice.http.request{url = "http://127.0.0.1:1/", timeout = 1}
  sluice.respond(200, {g = sluice.json.decode(g.body), gs = g.status,
    gh = g.headers["x-echo"], p = sluice.json.decode(p.body),
    d = sluice.json.decode(d.body), h = h.body, hs = h.status,
    x = x == nil, err = err})
end}
""", config={"url": echo_server})
    j = chat(gw.port, "x").json()
    assert j["gs"] == 201 and j["gh"] == "yes"
    assert j["g"]["method"] == "GET" and j["g"]["path"] == "/a?b=1"
    assert j["g"]["token"] == "t1"
    assert j["p"]["method"] == "POST" and j["p"]["body"] == '{"k":"v"}'
    assert j["p"]["ctype"] == "application/json"
    assert j["d"]["method"] == "DELETE" and j["d"]["body"] == "raw"
    assert j["h"] == "" and j["hs"] == 201
    assert j["x"] is True and j["err"]


def test_sleep_waits_and_the_worker_serves_others_meanwhile(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx) sluice.sleep(0.5) end}
""", workers=1)
    t = threading.Thread(target=lambda: chat(gw.port, "slow"))
    start = time.monotonic()
    t.start()
    time.sleep(0.1)
    r = http(gw.port, "POST", "/plain", chat_body("fast"))
    fast = time.monotonic() - start
    t.join()
    slow = time.monotonic() - start
    assert r.status == 200 and fast < 0.4, fast
    assert slow >= 0.45


def test_kv_set_get_incr_delete_and_ttl(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local op = ctx.request.messages[1].content
  local out = {}
  if op == "set" then
    out.set = sluice.kv.set("doc", {a = {1, 2}, b = "x"})
    out.short = sluice.kv.set("short", "12345678")
    out.ttl = sluice.kv.set("gone", true, 0.2)
    out.n1 = sluice.kv.incr("n")
    out.n2 = sluice.kv.incr("n", 5)
  elseif op == "get" then
    out.doc = sluice.kv.get("doc")
    out.short = sluice.kv.get("short")
    out.n = sluice.kv.get("n")
    out.gone = sluice.kv.get("gone") == nil
    out.del = sluice.kv.delete("doc")
    out.del2 = sluice.kv.delete("doc")
    out.after = sluice.kv.get("doc") == nil
  end
  sluice.respond(200, out)
end}
""")
    assert chat(gw.port, "set").json() == {"set": True, "short": True,
                                           "ttl": True, "n1": 1, "n2": 6}
    time.sleep(0.4)
    assert chat(gw.port, "get").json() == {
        "doc": {"a": [1, 2], "b": "x"}, "short": "12345678", "n": 6,
        "gone": True, "del": True, "del2": False, "after": True}


def test_json_round_trips_null_and_empty_arrays(lua_gw):
    gw = lua_gw("""
local j = sluice.json
return {on_request = function(ctx)
  local v = assert(j.decode('{"a":null,"b":[],"c":{},"d":[1,"x",true]}'))
  local bad, err = j.decode("{nope")
  sluice.respond(200, {again = j.encode(v), isnull = v.a == j.null,
    arr = j.encode(j.array()), err = err, bad = bad == nil})
end}
""")
    out = chat(gw.port, "x").json()
    assert json.loads(out["again"]) == {"a": None, "b": [], "c": {},
                                        "d": [1, "x", True]}
    assert out["isnull"] is True and out["arr"] == "[]"
    assert out["bad"] is True and "invalid JSON" in out["err"]


def test_prompt_render_with_versions_and_missing_variables(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local p = sluice.prompt
  local none, err = p.render("hello", {})
  local nov, err2 = p.render("hello", {name = "x"}, "v9")
  local nop, err3 = p.render("nothing", {})
  sluice.respond(200, {p.render("hello", {name = "Ann", user = {age = 3}}),
    p.render("hello", {name = "Bob", user = {age = 4}}, "v1"),
    p.render("plain"), err, err2, err3})
end}
""", prompts={"hello": {"versions": {"v1": "Hi {{name}}",
                                     "v2": "Hello {{ name }}, {{user.age}}"},
                        "default": "v2"},
              "plain": "no vars"})
    assert chat(gw.port, "x").json() == [
        "Hello Ann, 3", "Hi Bob", "no vars",
        "prompt 'hello': variable 'name' is missing",
        "prompt 'hello' has no version 'v9'", "no prompt 'nothing'"]


# ---- streams ------------------------------------------------------------


def test_on_chunk_changes_drops_and_adds_text(lua_gw):
    gw = lua_gw("""
return {on_chunk = function(ctx, chunk, text)
  if chunk == nil then return "!" end
  if text == "drop " then return false end
  if text then return text:upper() end
end}
""")
    r = chat(gw.port, "keep drop this", stream=True)
    assert r.status == 200, r
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    assert stream_text(events) == "KEEP THIS!"


def test_error_in_on_chunk_mid_stream_ends_it_with_an_error_event(lua_gw):
    gw = lua_gw("""
return {on_chunk = function(ctx, chunk, text)
  if text == "boom " then error("bad chunk") end
end}
""")
    c = Conn(gw.port)
    c.request("POST", CHAT,
              chat_body("a b boom c d e f g h [mock:gap_ms=50]",
                        stream=True))
    assert c.read_head()[1] == 200
    events = [d for _, d in c.events()]
    assert stream_text(events[:-1]) == "a b "
    err = json.loads(events[-1])["error"]
    assert err["code"] == "script_error" and CHAT in err["message"]
    assert "[DONE]" not in events
    assert c.is_closed()
    c.close()
    assert "on_chunk failed" in gw.stderr() and \
        os.path.basename(gw.script) + ":3: bad chunk" in gw.stderr()
    assert gw.healthy()
    r = chat(gw.port, "a b c", stream=True)
    assert stream_text(sse_data(r.body)) == "a b c"


def test_waiting_in_on_chunk_is_an_error_naming_function_and_phase(lua_gw):
    gw = lua_gw("""
return {on_chunk = function(ctx, chunk, text)
  if text then sluice.sleep(0.01) end
end}
""")
    r = chat(gw.port, "a b", stream=True)
    assert json.loads(sse_data(r.body)[-1])["error"]["code"] == \
        "script_error"
    assert "sluice.sleep: cannot be called in on_chunk" in gw.stderr()


# ---- sandbox and limits -------------------------------------------------


def test_sandbox_has_no_io_os_debug_require_or_bytecode(lua_gw):
    gw = lua_gw("""
local function bytecode()
  return load("\\27LJ\\2") == nil
end
return {on_request = function(ctx)
  sluice.respond(200, {io = io == nil, debug = debug == nil,
    require = require == nil, package = package == nil, ffi = ffi == nil,
    jit = jit == nil, execute = os.execute == nil, exit = os.exit == nil,
    getenv = os.getenv == nil, dofile = dofile == nil,
    loadfile = loadfile == nil, dump = string.dump == nil,
    setfenv = setfenv == nil, getfenv = getfenv == nil,
    bytecode = bytecode(), text = load("return 1 + 1")() == 2,
    strmeta = getmetatable("") == false, time = type(os.time()) == "number"})
end}
""")
    out = chat(gw.port, "x").json()
    assert all(out.values()), out


def test_the_sluice_table_and_libraries_are_read_only(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local function try(f) local ok, e = pcall(f) return not ok and e or "allowed" end
  sluice.respond(200, {
    try(function() sluice.llm = nil end),
    try(function() sluice.kv.get = print end),
    try(function() string.upper = nil end),
    try(function() rawset(sluice, "x", 1) end),
    try(function() setmetatable(sluice, {}) end),
    try(function() ctx.nothing = 1 end)})
end}
""")
    out = chat(gw.port, "x").json()
    assert all(e != "allowed" for e in out), out
    assert "read-only" in out[0] and "read-only" in out[3]
    assert "ctx.nothing" in out[5]


def test_an_infinite_loop_is_stopped_even_through_pcall(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  while true do pcall(function() while true do end end) end
end}
""", limits={"instructions": 1000000})
    r = chat(gw.port, "x")
    assert r.status == 500 and r.error_code() == "script_error", r
    msg = r.json()["error"]["message"]
    assert CHAT in msg and "instruction limit exceeded" in msg
    assert os.path.basename(gw.script) + ":3: instruction limit" in \
        gw.stderr()
    assert gw.healthy() and chat(gw.port, "again").status == 500
    assert http(gw.port, "POST", "/plain", chat_body("ok")).status == 200


def test_a_huge_allocation_hits_the_memory_cap(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local w = ctx.request.messages[1].content
  if w == "one" then local s = string.rep("x", 2^30) end
  if w == "many" then
    local t = {}
    for i = 1, 1e6 do t[i] = string.rep("y", 4096) .. i end
  end
end}
""", limits={"memory_mb": 16, "instructions": 100000000})
    for word, line in (("one", 4), ("many", 7)):
        r = chat(gw.port, word)
        assert r.status == 500, r
        assert "memory limit exceeded" in r.json()["error"]["message"]
        assert "%s:%d: memory limit (16 MB)" % (
            os.path.basename(gw.script), line) in gw.stderr()
    assert content(chat(gw.port, "fine")) == "fine"


def test_the_time_limit_covers_waiting(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx) sluice.sleep(10) end}
""", limits={"timeout_ms": 300})
    start = time.monotonic()
    r = chat(gw.port, "x")
    took = time.monotonic() - start
    assert r.status == 500, r
    assert "time limit exceeded" in r.json()["error"]["message"]
    assert 0.25 < took < 2, took
    assert "waiting on sluice.sleep" in gw.stderr()


def test_a_script_error_is_a_500_naming_the_route_and_logs_file_line(
        lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local t = nil
  return t.field
end}
""")
    r = chat(gw.port, "x")
    assert r.status == 500 and r.error_code() == "script_error", r
    assert "route '%s'" % CHAT in r.json()["error"]["message"]
    assert os.path.basename(gw.script) + ":4:" in gw.stderr()
    line = log_lines(gw, lambda l: l.get("error") == "script_error")
    assert line and line[-1]["status"] == 500


def test_a_ctx_kept_past_its_request_raises_instead_of_crashing(lua_gw):
    gw = lua_gw("""
local old
return {on_request = function(ctx)
  local prev = old
  old = ctx
  if prev then
    local ok, err = pcall(function() return prev.request end)
    sluice.respond(200, {ok = ok, err = err})
  end
end}
""", workers=1)
    assert chat(gw.port, "first").status == 200
    out = chat(gw.port, "second").json()
    assert out["ok"] is False and "has ended" in out["err"]


def test_scripts_of_two_routes_do_not_share_globals(gateway, tmp_path):
    a, b = tmp_path / "a.lua", tmp_path / "b.lua"
    a.write_text("""
x = "a"
return {on_request = function(ctx) sluice.respond(200, {x = x}) end}
""")
    b.write_text("""
return {on_request = function(ctx) sluice.respond(200, {x = x or "none"}) end}
""")
    gw = gateway(extra={"routes": [
        {"path": CHAT, "lua": str(a)},
        {"path": "/b", "kind": "chat", "lua": str(b)}, {"path": "/healthz"}]})
    assert chat(gw.port, "x").json() == {"x": "a"}
    assert http(gw.port, "POST", "/b", chat_body("x")).json() == \
        {"x": "none"}


# ---- check and reload ---------------------------------------------------


def write_cfg(tmp_path, route, extra=None):
    cfg = base_config(free_port(), "http://127.0.0.1:1", tmp_path)
    cfg["routes"] = [route, {"path": "/healthz"}]
    cfg.update(extra or {})
    path = tmp_path / "check.json"
    path.write_text(json.dumps(cfg))
    return path


def test_check_reports_a_syntax_error_with_file_and_line(tmp_path):
    (tmp_path / "bad.lua").write_text("local x = 1\nlocal y = (\nreturn {}\n")
    cfg = write_cfg(tmp_path, {"path": CHAT, "lua": "bad.lua"})
    p = run_check(cfg)
    assert p.returncode == 1
    assert "$.routes[0].lua: bad.lua:3:" in p.stderr, p.stderr


def test_check_loads_scripts_and_reports_each_problem(tmp_path):
    (tmp_path / "ok.lua").write_text("return {on_request = function() end}")
    (tmp_path / "notable.lua").write_text("return 42")
    (tmp_path / "typo.lua").write_text("return {on_requst = function() end}")
    (tmp_path / "boom.lua").write_text("error('at load')")
    cfg = base_config(free_port(), "http://127.0.0.1:1", tmp_path)
    cfg["routes"] = [
        {"path": CHAT, "lua": "ok.lua"},
        {"path": "/a", "kind": "chat", "lua": "notable.lua"},
        {"path": "/b", "kind": "chat", "lua": "typo.lua"},
        {"path": "/c", "kind": "chat", "lua": "boom.lua"},
        {"path": "/d", "kind": "chat", "lua": "missing.lua"},
        {"path": "/healthz", "lua": "ok.lua"},
    ]
    cfg["prompts"] = {"p": "{{ bad name }}", "q": {"versions": {"1": "x"},
                                                   "default": "2"}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    p = run_check(path)
    assert p.returncode == 1
    err = p.stderr
    assert "$.routes[1].lua: notable.lua: the script must return a table" \
        in err
    assert "$.routes[2].lua: typo.lua: unknown phase 'on_requst'" in err
    assert "$.routes[3].lua: boom.lua:1: at load" in err
    assert "$.routes[4].lua: cannot read" in err and "missing.lua" in err
    assert "$.routes[5].lua: Lua scripts run on chat and messages routes" \
        in err
    assert "$.prompts.p: \"{{ bad name }}\" at byte 0" in err
    assert "$.prompts.q.default: no version \"2\"" in err
    cfg["routes"] = [{"path": CHAT, "lua": "ok.lua",
                      "lua_limits": {"instructions": 5, "timeout_ms": 0,
                                     "cpu": 1}}]
    path.write_text(json.dumps(cfg))
    err = run_check(path).stderr
    assert "$.routes[0].lua_limits.instructions: must be between" in err
    assert "$.routes[0].lua_limits.timeout_ms: must be between" in err
    assert "$.routes[0].lua_limits.cpu: unknown key" in err
    cfg["routes"] = [{"path": CHAT, "lua": "ok.lua"}]
    cfg.pop("prompts")
    path.write_text(json.dumps(cfg))
    p = run_check(path)
    assert p.returncode == 0, p.stderr


def test_a_gateway_with_a_broken_script_does_not_start(tmp_path):
    (tmp_path / "bad.lua").write_text("return {")
    cfg = write_cfg(tmp_path, {"path": CHAT, "lua": "bad.lua"})
    p = subprocess.run([SLUICE_BIN, "-c", str(cfg)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "bad.lua:1:" in p.stderr


def test_reload_swaps_the_script_under_load_with_no_failed_request(
        lua_gw):
    gw = lua_gw("""
return {on_response = function(ctx)
  ctx.response.choices[1].message.content = "v1"
end}
""")
    stop = threading.Event()
    seen, failures = set(), []

    def traffic(stream):
        while not stop.is_set():
            try:
                r = chat(gw.port, "x y", stream=stream)
                if r.status != 200:
                    failures.append((r.status, r.body[:200]))
                elif stream:
                    ev = sse_data(r.body)
                    if ev[-1] != "[DONE]":
                        failures.append(("truncated", ev[-2:]))
                else:
                    seen.add(r.json()["choices"][0]["message"]["content"])
            except Exception as e:
                failures.append(("exception", repr(e)))

    # Signals are handled once the server says it serves.
    assert wait_for(lambda: "serving" in gw.stderr(), timeout=5)
    threads = [threading.Thread(target=traffic, args=(s,))
               for s in (False, False, True)]
    for t in threads:
        t.start()
    try:
        for i in range(2, 12):
            gw.script.write_text("""
return {on_response = function(ctx)
  ctx.response.choices[1].message.content = "v%d"
end}
""" % i)
            gw.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda i=i: "v%d" % i in seen, timeout=5), seen
        # A script that does not compile is refused; the last one stays.
        gw.script.write_text("return {")
        gw.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload on SIGHUP rejected" in gw.stderr(),
                        timeout=5)
        seen.clear()
        time.sleep(0.2)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
    assert not failures, failures[:5]
    assert seen == {"v11"}, seen


def test_plugins_read_ctx_vars_in_their_log_phase(gateway, tmp_path):
    plugin_dir = os.path.join(os.path.dirname(os.path.dirname(SLUICE_BIN)),
                              "tests", "plugins")
    script = tmp_path / "v.lua"
    script.write_text("""
return {on_request = function(ctx)
  ctx.vars.variant = "b"
  ctx.vars.score = 7
  ctx.vars.ok = true
end}
""")
    gw = gateway(extra={
        "plugin_dir": plugin_dir,
        "plugins": {"lv": {"path": "luavars.so", "config": {
            "attrs": ["lua.variant", "lua.score", "lua.ok", "lua.none"]}}},
        "routes": [{"path": CHAT, "plugins": ["lv"], "lua": str(script)},
                   {"path": "/healthz"}]})
    assert chat(gw.port, "x").status == 200
    assert wait_for(lambda: "attr lua.none=(unset)" in gw.stderr())
    err = gw.stderr()
    assert "attr lua.variant=b" in err and "attr lua.score=7" in err
    assert "attr lua.ok=true" in err


def test_stored_prompts_are_managed_by_the_admin_api_and_rendered(
        gateway, tmp_path):
    token, port = "adm-lua-prompts-1234", free_port()
    script = tmp_path / "p.lua"
    script.write_text("""
return {on_request = function(ctx)
  local v = ctx.headers["x-version"]
  local text, err = sluice.prompt.render("greet", {who = "Ann"}, v)
  sluice.respond(200, {text = text, err = err})
end}
""")
    gw = gateway(extra={
        "admin": {"addr": "127.0.0.1:%d" % port,
                  "token_env": "SLUICE_IT_LUA_ADMIN"},
        "prompts": {"fromconfig": "x"},
        "routes": [{"path": CHAT, "lua": str(script)}, {"path": "/healthz"}]},
        env={"SLUICE_IT_LUA_ADMIN": token})
    auth = {"Authorization": "Bearer " + token}

    def admin(method, path, body=None):
        return http(port, method, path, body, auth)

    assert chat(gw.port, "x").json() == {"err": "no prompt 'greet'"}
    r = admin("PUT", "/admin/prompts/greet", {"template": "Hi {{who}}"})
    assert r.status == 200, r
    assert admin("PUT", "/admin/prompts/greet@v2",
                 {"template": "Hello {{ who }}!"}).status == 200
    r = admin("PUT", "/admin/prompts/greet@v3", {"template": "{{oops"})
    assert r.status == 400 and r.error_code() == "invalid_template", r
    assert admin("PUT", "/admin/prompts/bad name", {"template": "x"}
                 ).status == 400
    assert chat(gw.port, "x").json() == {"text": "Hi Ann"}
    assert chat(gw.port, "x", headers={"x-version": "v2"}).json() == \
        {"text": "Hello Ann!"}
    listed = admin("GET", "/admin/prompts").json()["prompts"]
    assert {(p["name"], p["version"]) for p in listed} == \
        {("greet", None), ("greet", "v2")}
    assert admin("DELETE", "/admin/prompts/greet@v2").status == 200
    assert admin("DELETE", "/admin/prompts/greet@v2").status == 404
    assert chat(gw.port, "x", headers={"x-version": "v2"}).json() == \
        {"err": "no prompt 'greet' version 'v2'"}


def test_prompt_and_answer_edit_text_without_tables(lua_gw, mock):
    gw = lua_gw("""
return {
  on_request = function(ctx)
    local mode = ctx.headers["x-mode"]
    if mode == "table" then
      ctx.request.temperature = 0.5  -- the table exists: prompt uses it
    end
    ctx.vars.before = ctx.prompt
    ctx.prompt = "[" .. ctx.prompt .. "]"
  end,
  on_response = function(ctx)
    if ctx.headers["x-mode"] == "table" then
      ctx.response.id = "changed"
    end
    ctx.answer = ctx.answer .. "!"
  end,
}
""")
    r = http(gw.port, "POST", CHAT, {
        "model": "gpt-test",
        "messages": [{"role": "user", "content": "old"},
                     {"role": "assistant", "content": "a"},
                     {"role": "user", "content": [
                         {"type": "text", "text": "x"},
                         {"type": "image_url", "image_url": {"url": "u"}},
                         {"type": "text", "text": "y"}]}]})
    assert content(r) == "[x\ny]!"
    sent = upstream_chats(mock)[-1]["messages"]
    assert sent[0]["content"] == "old" and sent[2]["content"] == "[x\ny]"
    r = chat(gw.port, 'say "hi"', headers={"x-mode": "table"})
    assert content(r) == '[say "hi"]!' and r.json()["id"] == "changed"
    assert upstream_chats(mock)[-1]["temperature"] == 0.5


def test_prompt_and_answer_text_edits_keep_every_character(lua_gw, mock):
    """ctx.prompt and ctx.answer are found and spliced in the JSON text:
    escapes and non-ASCII text survive both ways, a pretty-printed body with
    its keys in any order is edited in place, and a body the byte walk
    cannot read exactly (a key written with escapes) or whose model an
    alias rewrites still gets the edit."""
    gw = lua_gw(r"""
return {
  on_request = function(ctx)
    ctx.vars.seen = ctx.prompt
    ctx.prompt = ctx.prompt .. ' "q" \\ \n\t é 🙂 \1'
  end,
  on_response = function(ctx)
    ctx.vars.answer = ctx.answer
    ctx.answer = "<" .. ctx.answer .. ">"
  end,
}
""")
    suffix = ' "q" \\ \n\t é 🙂 \x01'
    text = 'a "b" \\ c\né 🙂 /'
    r = chat(gw.port, text)
    sent = upstream_chats(mock)[-1]["messages"]
    assert sent[0]["content"] == text + suffix
    assert content(r) == "<" + text + suffix + ">"
    line = log_lines(gw, lambda l: l.get("vars"))[-1]
    assert line["vars"]["seen"] == text
    assert line["vars"]["answer"] == text + suffix

    pretty = b"""{
  "messages" : [ { "content" : "first", "role" : "user" },
                 { "role": "assistant", "content": "a" },
                 { "content" : "last one" , "role" : "user", "name": "u" } ],
  "model" : "gpt-test"
}"""
    r = http(gw.port, "POST", CHAT, pretty,
             headers={"Content-Type": "application/json"})
    assert content(r) == "<last one" + suffix + ">"
    sent = upstream_chats(mock)[-1]["messages"]
    assert [m["content"] for m in sent] == \
        ["first", "a", "last one" + suffix]
    assert sent[2]["name"] == "u"

    escaped_key = (b'{"model":"gpt-test","messages":'
                   b'[{"role":"user","\\u0063ontent":"esc"}]}')
    r = http(gw.port, "POST", CHAT, escaped_key,
             headers={"Content-Type": "application/json"})
    assert content(r) == "<esc" + suffix + ">"
    assert upstream_chats(mock)[-1]["messages"][0]["content"] == \
        "esc" + suffix

    r = chat(gw.port, "alias", model="cheap")
    assert content(r) == "<alias" + suffix + ">"
    sent = upstream_chats(mock)[-1]
    assert sent["model"] == "cheap-model"
    assert sent["messages"][0]["content"] == "alias" + suffix


def test_prompt_and_answer_misuse_and_absence(lua_gw):
    gw = lua_gw("""
return {
  on_request = function(ctx)
    local m = ctx.headers["x-mode"]
    if m == "nouser" then
      ctx.request.messages = {{role = "system", content = "s"}}
      local ok, err = pcall(function() ctx.prompt = "x" end)
      sluice.respond(200, {prompt = ctx.prompt == nil, err = err,
                           answer = ctx.answer == nil})
    end
    if m == "type" then
      local ok, err = pcall(function() ctx.prompt = 42 end)
      sluice.respond(200, {err = err})
    end
  end,
  on_response = function(ctx)
    local ok, err = pcall(function() ctx.prompt = "late" end)
    ctx.vars.late = err
    if ctx.answer == nil then ctx.answer = "was a tool call" end
  end,
}
""")
    out = chat(gw.port, "x", headers={"x-mode": "nouser"}).json()
    assert out["prompt"] is True and out["answer"] is True
    assert "ctx.prompt: the request has no user message" in out["err"]
    err = chat(gw.port, "x", headers={"x-mode": "type"}).json()["err"]
    assert "ctx.prompt: must be a string" in err
    r = chat(gw.port, "call it [mock:tool=lookup]",
             tools=[{"type": "function", "function": {
                 "name": "lookup", "parameters": {"type": "object"}}}])
    msg = r.json()["choices"][0]["message"]
    assert msg["content"] == "was a tool call"
    assert msg["tool_calls"][0]["function"]["name"] == "lookup"
    line = log_lines(gw, lambda l: l.get("vars"))
    assert "ctx.prompt: can be set in on_request only" in \
        line[-1]["vars"]["late"]
