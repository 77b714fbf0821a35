"""GET /metrics on the admin listener: Prometheus text, per-worker counters
summed at scrape time, bounded labels."""
import time

from helpers import Conn, chat, chat_body, http
from test_reload import TOKEN, admin, admin_gateway, rewrite


def scrape(gw):
    r = admin(gw, "GET", "/metrics")
    assert r.status == 200, r
    assert r.header("content-type").startswith("text/plain")
    series = {}
    for line in r.body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        series[name] = float(value)
    return series


def settled(gw, key, want, timeout=3.0):
    """Scrapes until `key` reaches `want`: a worker records a request just
    after its last byte went out, so a scrape can come a moment early."""
    deadline = time.monotonic() + timeout
    while True:
        s = scrape(gw)
        if s.get(key) == want or time.monotonic() > deadline:
            return s
        time.sleep(0.02)


def test_metrics_need_the_admin_token(gateway):
    gw = admin_gateway(gateway)
    assert admin(gw, "GET", "/metrics", token=None).status == 401
    assert http(gw.port, "GET", "/metrics").status == 404


def test_requests_are_counted_across_workers_by_route_model_status(gateway):
    gw = admin_gateway(gateway, workers=2)
    conns = [Conn(gw.port) for _ in range(4)]
    for i in range(40):
        c = conns[i % 4]
        c.request("POST", "/v1/chat/completions", chat_body("hi %d" % i))
        assert c.read_response().status == 200
    for c in conns:
        c.close()
    assert chat(gw.port, "x", model="nope").status == 404
    assert chat(gw.port, "x", model="upstream/some-model").status == 200
    s = settled(gw, 'sluice_request_duration_seconds_count'
                    '{route="/v1/chat/completions"}', 42)
    ok = ('sluice_requests_total{route="/v1/chat/completions",'
          'model="gpt-test",provider="upstream",status="200"}')
    assert s[ok] == 40, {k: v for k, v in s.items() if "requests" in k}
    assert s['sluice_requests_total{route="/v1/chat/completions",'
             'model="unknown",provider="",status="404"}'] == 1
    # A direct provider/model never becomes a label value of its own.
    assert s['sluice_requests_total{route="/v1/chat/completions",'
             'model="direct",provider="upstream",status="200"}'] == 1
    assert not any("some-model" in k for k in s)
    # Each "hi N" prompt is two words; the echo is two words too.
    assert s['sluice_tokens_total{model="gpt-test",provider="upstream",'
             'kind="prompt"}'] == 80
    route = 'route="/v1/chat/completions"'
    count = s["sluice_request_duration_seconds_count{%s}" % route]
    assert count == 42
    assert s['sluice_request_duration_seconds_bucket{%s,le="+Inf"}'
             % route] == count
    buckets = [v for k, v in s.items()
               if k.startswith("sluice_request_duration_seconds_bucket{%s,"
                               % route)]
    assert buckets == sorted(buckets)  # cumulative
    assert s['sluice_upstream_duration_seconds_count{provider="upstream"}'] \
        == 41
    assert s["sluice_open_connections"] >= 0


def test_streams_record_time_to_first_token(gateway):
    gw = admin_gateway(gateway)
    r = chat(gw.port, "a b c", stream=True)
    assert r.status == 200
    s = settled(gw, 'sluice_time_to_first_token_seconds_count'
                    '{provider="upstream"}', 1)
    assert s['sluice_time_to_first_token_seconds_count'
             '{provider="upstream"}'] == 1


def test_breaker_retries_and_reloads_are_exposed(gateway):
    gw = admin_gateway(gateway, models={"b": {
        "targets": [{"provider": "upstream", "model": "primary"}],
        "fallback": [{"provider": "upstream", "model": "backup"}],
        "breaker": {"failures": 1, "window_ms": 10000, "open_ms": 60000}}})
    assert chat(gw.port, "x [mock:fail_times=metricsb:1:500]",
                model="b").status == 200
    primary = ('sluice_breaker_state{model="b",provider="upstream",'
               'target_model="primary"}')
    s = settled(gw, 'sluice_upstream_attempts_total{model="b"}', 1)
    assert s[primary] == 1  # open
    assert s['sluice_upstream_attempts_total{model="b"}'] == 1
    assert s['sluice_reloads_total{result="ok"}'] == 0
    assert admin(gw, "POST", "/admin/reload").status == 200
    s = scrape(gw)
    assert s['sluice_reloads_total{result="ok"}'] == 1
    # The reload started fresh breakers: the new config's are closed.
    assert s[primary] == 0
    assert 'sluice_store_map_bytes{env="durable"}' in s


def test_after_a_reload_requests_count_under_the_new_config_names(gateway):
    # A worker resolves a request's series once per route, model, provider
    # and status; a reload must never reuse what the old config resolved.
    gw = admin_gateway(gateway)
    for _ in range(3):
        assert chat(gw.port, "x").status == 200
    old = ('sluice_requests_total{route="/v1/chat/completions",'
           'model="gpt-test",provider="upstream",status="200"}')
    assert settled(gw, old, 3)[old] == 3

    def rename(c):
        c["providers"]["renamed"] = c["providers"].pop("upstream")
        c["models"]["gpt-test"]["targets"][0]["provider"] = "renamed"
    rewrite(gw, rename)
    assert admin(gw, "POST", "/admin/reload").status == 200
    for _ in range(2):
        assert chat(gw.port, "x").status == 200
    new = old.replace('"upstream"', '"renamed"')
    s = settled(gw, new, 2)
    assert s[new] == 2, {k: v for k, v in s.items() if "requests" in k}
    assert s[old] == 3
    assert s['sluice_upstream_duration_seconds_count{provider="renamed"}'] \
        == 2


def test_lua_sub_requests_count_under_their_own_route(gateway, tmp_path):
    # A script's model call is a request of its own, on a route made for
    # it ("lua:" and the script's route): two routes' calls never mix.
    script = tmp_path / "sub.lua"
    script.write_text("""
return {on_request = function(ctx)
  local a, err = sluice.llm.chat{model = "gpt-test", prompt = "sub call"}
  assert(a, err)
  sluice.respond(200, {text = a.text})
end}
""")
    gw = admin_gateway(gateway, workers=1, extra={"routes": [
        {"path": "/a", "kind": "chat", "lua": str(script)},
        {"path": "/b", "kind": "chat", "lua": str(script)},
        {"path": "/healthz"}]})
    for path in ["/a", "/b", "/a", "/b", "/b"]:
        r = http(gw.port, "POST", path, chat_body("x"),
                 {"Content-Type": "application/json"})
        assert r.status == 200, r
    key = ('sluice_requests_total{route="lua:%s",model="gpt-test",'
           'provider="upstream",status="200"}')
    s = settled(gw, key % "/b", 3)
    assert s.get(key % "/a") == 2, \
        {k: v for k, v in s.items() if "requests" in k}
    assert s.get(key % "/b") == 3


def test_metrics_can_be_turned_off(gateway):
    gw = admin_gateway(gateway, extra={"metrics": False})
    assert chat(gw.port, "x").status == 200
    time.sleep(0.1)
    s = scrape(gw)
    assert not any(k.startswith("sluice_requests_total") for k in s)
    assert "sluice_open_connections" in s  # gauges still answer
