"""The proofs that Lua scripts never block the gateway: requests waiting in
a chain of slow model calls leave another route's latency where it was;
parallel calls take the time of the slowest, not the sum; runaway scripts
are stopped and everything else goes on."""
import json
import statistics
import threading
import time

from conftest import no_quarantine_env
from helpers import chat, chat_body, http, sse_data, stream_text
from test_lua import CHAT, lua_gw  # noqa: F401  (fixture)

SLOW = "[mock:delay_ms=300]"


def timed(fn):
    start = time.monotonic()
    r = fn()
    return r, time.monotonic() - start


def fast_latencies(gw, seconds=None, count=None):
    """Sequential requests on the route without a script."""
    out = []
    end = time.monotonic() + (seconds or 0)
    while (count is not None and len(out) < count) or \
            (seconds is not None and time.monotonic() < end):
        r, t = timed(lambda: http(gw.port, "POST", "/plain",
                                  chat_body("fast")))
        assert r.status == 200, r
        out.append(t)
    return out


def test_fifty_requests_in_slow_chains_leave_another_route_fast(lua_gw,
                                                                mock):
    gw = lua_gw("""
return {on_request = function(ctx)
  local q = ctx.request.messages[1].content
  local a = assert(sluice.llm.chat{model = "cheap",
                                   prompt = "first " .. q .. " %s"})
  local b = assert(sluice.llm.chat{model = "cheap",
                                   prompt = "second " .. q .. " %s"})
  sluice.respond(200, {choices = {{message = {role = "assistant",
    content = a.text .. " / " .. b.text}}}})
end}
""" % (SLOW, SLOW))
    fast_latencies(gw, count=20)  # warm up both workers' connections
    before = fast_latencies(gw, count=100)

    results = [None] * 50

    def slow(i):
        results[i] = timed(lambda: http(gw.port, "POST", CHAT,
                                        chat_body("q%d" % i), timeout=10))

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(50)]
    start = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(0.05)
    during = fast_latencies(gw, seconds=0.45)
    for t in threads:
        t.join()
    batch = time.monotonic() - start

    for i, (r, took) in enumerate(results):
        assert r.status == 200, r
        text = r.json()["choices"][0]["message"]["content"]
        assert text == "first q%d / second q%d" % (i, i), text
        assert took >= 0.55, took
    # Fifty 600 ms chains at once: about 600 ms in all, not 30 s.
    assert batch < 2.0, batch
    b50, d50 = statistics.median(before), statistics.median(during)
    d99 = sorted(during)[int(len(during) * 0.99) - 1]
    report = "fast route p50 %.2f ms before, %.2f ms during (p99 %.2f ms, " \
             "%d requests)" % (b50 * 1e3, d50 * 1e3, d99 * 1e3, len(during))
    print(report)
    assert len(during) >= 20, report
    assert d50 < b50 + 0.005 and d50 < 3 * b50 + 0.002, report
    assert d99 < 0.1, report


def test_parallel_calls_take_the_time_of_one(lua_gw):
    gw = lua_gw("""
return {on_request = function(ctx)
  local calls = {}
  for i = 1, 3 do calls[i] = {model = "cheap", prompt = "p" .. i .. " %s"} end
  if ctx.request.messages[1].content == "parallel" then
    local as, es = sluice.llm.parallel(calls)
    sluice.respond(200, {as[1].text, as[2].text, as[3].text})
  else
    local out = {}
    for i = 1, 3 do out[i] = assert(sluice.llm.chat(calls[i])).text end
    sluice.respond(200, out)
  end
end}
""" % SLOW)
    r, par = timed(lambda: chat(gw.port, "parallel"))
    assert r.json() == ["p1", "p2", "p3"]
    r, seq = timed(lambda: chat(gw.port, "one by one"))
    assert r.json() == ["p1", "p2", "p3"]
    print("parallel %.0f ms, sequential %.0f ms" % (par * 1e3, seq * 1e3))
    assert 0.28 <= par < 0.5, par
    assert seq >= 0.85, seq


def test_runaway_scripts_leave_everyone_else_untouched(lua_gw):
    gw = lua_gw("""
return {
  on_request = function(ctx)
    local w = ctx.request.messages[1].content
    if w == "loop" then while true do end end
    if w == "alloc" then local t = {} for i = 1, 1e9 do t[i] = {i} end end
    if w == "rep" then return string.rep("x", 2^30) end
  end,
  on_chunk = function(ctx, chunk, text)
    if text == "boom " then error("on_chunk blew up") end
  end,
}
""", limits={"instructions": 20000000, "memory_mb": 32},
                env=no_quarantine_env())
    stop = threading.Event()
    bad, good = [], [0]

    def normal():
        while not stop.is_set():
            r = http(gw.port, "POST", "/plain", chat_body("fine"))
            if r.status != 200:
                bad.append(r)
            good[0] += 1

    t = threading.Thread(target=normal)
    t.start()
    try:
        rss = gw.rss_kb()
        for _ in range(3):
            for word, what in (("loop", "instruction limit"),
                               ("alloc", "memory limit"),
                               ("rep", "memory limit")):
                r = chat(gw.port, word)
                assert r.status == 500, r
                assert what in r.json()["error"]["message"]
            r = chat(gw.port, "a boom b", stream=True)
            events = sse_data(r.body)
            assert json.loads(events[-1])["error"]["code"] == "script_error"
            assert stream_text(events[:-1]) == "a "
        assert gw.rss_kb() < rss + 200 * 1024  # the caps held
        r = chat(gw.port, "still works")
        assert r.json()["choices"][0]["message"]["content"] == "still works"
    finally:
        stop.set()
        t.join()
    assert not bad, bad[:3]
    assert good[0] > 10
    assert gw.healthy()
