"""Usage, cost and budgets through the real binary: the cost of each
request in the access log and the metrics (cached and reasoning tokens
counted once), the ledger by hour, day, consumer and model over the admin
API and `sluice usage`, and budgets refused with 429 budget_exceeded, kept
across a restart and given back when a client goes away."""
import json
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import SLUICE_BIN
from helpers import Conn, chat, chat_body, http, wait_for
from test_auth import PLUGIN_DIR as AUTH_DIR
from test_plugins import PLUGIN_DIR, good
from test_reload import admin, admin_gateway

CHAT = "/v1/chat/completions"
# mock-model: $2.50 in, $10 out per 1M tokens. The mock counts words, so
# "one two three" is 3 prompt and 3 completion tokens:
# 3 * 2.5 + 3 * 10 = 37.5 micro-dollars, 38 rounded.
PRICING = {"mock-model": {"input": 2.5, "output": 10},
           "echo": {"input": 1, "output": 1}}
COST3 = 38


def usage_config(budgets=None):
    """Consumers named by the test plugin from x-user; the ledger flushed
    every 100 ms so queries see requests quickly."""
    cfg = {
        "pricing": PRICING,
        "store": {"flush_interval_ms": 100},
        "plugin_dir": PLUGIN_DIR,
        "plugins": {"auth": good(consumer_header="x-user")},
        "routes": [{"path": CHAT, "plugins": ["auth"]},
                   {"path": "/v1/embeddings", "plugins": ["auth"]},
                   {"path": "/healthz"}],
    }
    if budgets is not None:
        cfg["budgets"] = budgets
    return cfg


def as_user(user):
    return {"x-user": user} if user else None


def usage(gw, query=""):
    r = admin(gw, "GET", "/admin/usage" + query)
    assert r.status == 200, r
    return r.json()


def settled_usage(gw, query, want_requests, timeout=5.0):
    """The ledger is flushed by each worker on a timer: wait for it."""
    got = {}

    def ready():
        got["u"] = usage(gw, query)
        return got["u"]["total"]["requests"] == want_requests
    assert wait_for(ready, timeout=timeout), got.get("u")
    return got["u"]


def log_lines(gw, n):
    """The access log's model calls (not the readiness probes)."""
    def calls():
        return [l for l in gw.access_log() if l["path"] == CHAT]
    assert wait_for(lambda: len(calls()) >= n), gw.access_log()
    return calls()


def scrape(gw):
    r = admin(gw, "GET", "/metrics")
    assert r.status == 200
    out = {}
    for line in r.body.decode().splitlines():
        if line and not line.startswith("#"):
            k, v = line.rsplit(" ", 1)
            out[k] = v
    return out


def test_each_request_cost_is_in_the_access_log_and_the_metrics(gateway):
    gw = admin_gateway(gateway, extra=usage_config())
    for _ in range(5):
        r = chat(gw.port, "one two three")
        assert r.status == 200, r
    r = chat(gw.port, "one two three", model="echo")  # the built-in mock
    assert r.status == 200, r
    lines = log_lines(gw, 6)
    upstream = [l for l in lines if l["model"] == "gpt-test"]
    assert len(upstream) == 5
    for l in upstream:
        assert l["cost"] == pytest.approx(COST3 / 1e6), l
        assert l["prompt_tokens"] == 3 and l["completion_tokens"] == 3
    raw = open(gw.log_path).read()
    assert '"cost":0.000038' in raw  # six decimals, never float noise
    echo = [l for l in lines if l["model"] == "echo"][0]
    # Priced by its alias: the provider model "echo" has no price of its own.
    assert echo["cost"] == pytest.approx(6e-6), echo
    m = {}
    assert wait_for(lambda: m.update(scrape(gw)) or m.get(
        'sluice_cost_usd_total{model="gpt-test",provider="upstream"}')
        == "0.000190"), {k: v for k, v in m.items() if "cost" in k}
    assert m['sluice_cost_usd_total{model="echo",provider="mock"}'] == \
        "0.000006"


def test_a_stream_is_priced_even_when_the_client_asks_no_usage(gateway):
    gw = admin_gateway(gateway, extra=usage_config())
    r = chat(gw.port, "one two three", stream=True)
    assert r.status == 200 and b"[DONE]" in r.body, r
    # The gateway asked the upstream for usage; the client gets none.
    assert b'"prompt_tokens"' not in r.body
    r = chat(gw.port, "one two three", model="echo", stream=True)
    assert r.status == 200, r
    lines = {l["model"]: l for l in log_lines(gw, 2)}
    assert lines["gpt-test"]["stream"] is True
    assert lines["gpt-test"]["cost"] == pytest.approx(COST3 / 1e6)
    assert lines["echo"]["cost"] == pytest.approx(6e-6)


def test_ledger_false_keeps_costs_but_records_nothing(gateway):
    extra = usage_config()
    extra["ledger"] = False
    gw = admin_gateway(gateway, extra=extra)
    for _ in range(3):
        assert chat(gw.port, "one two three").status == 200
    assert log_lines(gw, 3)[0]["cost"] == pytest.approx(COST3 / 1e6)
    time.sleep(0.3)  # three flush intervals
    assert usage(gw)["total"]["requests"] == 0


def test_unpriced_and_failed_requests_cost_null(gateway):
    gw = admin_gateway(gateway, extra=usage_config())
    assert chat(gw.port, "hi", model="upstream/other").status == 200
    assert chat(gw.port, "[mock:status=500] hi").status >= 500
    lines = log_lines(gw, 2)
    assert all(l["cost"] is None for l in lines), lines


class CachingUpstream(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream whose usage reports cached prompt
    tokens and reasoning tokens, as OpenAI's o-series does."""

    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        body = json.dumps({
            "id": "c1", "object": "chat.completion", "created": 1,
            "model": "o-cached",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500,
                      "total_tokens": 1500,
                      "prompt_tokens_details": {"cached_tokens": 400},
                      "completion_tokens_details": {"reasoning_tokens": 300}},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def caching_upstream():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), CachingUpstream)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d/v1" % srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_cached_and_reasoning_tokens_are_counted_once(gateway,
                                                      caching_upstream):
    extra = usage_config()
    extra["pricing"] = {"o-cached": {"input": 2, "output": 8,
                                     "cached_input": 0.5}}
    gw = admin_gateway(gateway, extra=extra, providers={
        "cacher": {"type": "openai", "base_url": caching_upstream}},
        models={"thinker": {"targets": [{"provider": "cacher",
                                         "model": "o-cached"}]}})
    for _ in range(2):
        assert chat(gw.port, "x", model="thinker").status == 200
    l = log_lines(gw, 2)[0]
    assert l["cached_tokens"] == 400 and l["reasoning_tokens"] == 300, l
    # 600 uncached * 2 + 400 cached * 0.5 + 500 out * 8 (reasoning is
    # inside the 500) = 5400 micro-dollars.
    assert l["cost"] == pytest.approx(0.0054), l
    m = {}
    assert wait_for(lambda: m.update(scrape(gw)) or m.get(
        'sluice_cost_usd_total{model="thinker",provider="cacher"}')
        == "0.010800"), m
    tok = 'sluice_tokens_total{model="thinker",provider="cacher",kind="%s"}'
    assert m[tok % "prompt"] == "2000"
    assert m[tok % "cached"] == "800"
    assert m[tok % "reasoning"] == "600"
    assert m[tok % "completion"] == "1000"
    u = settled_usage(gw, "?group_by=model", 2)
    assert u["rows"][0]["cached_tokens"] == 800
    assert u["rows"][0]["reasoning_tokens"] == 600
    assert u["total"]["cost_usd"] == pytest.approx(0.0108)


def traffic(gw):
    """alice: 3 gpt-test + 1 failing; bob: 2 echo; anonymous: 1 gpt-test."""
    for _ in range(3):
        assert chat(gw.port, "one two three",
                    headers=as_user("alice")).status == 200
    assert chat(gw.port, "[mock:status=500] x",
                headers=as_user("alice")).status >= 500
    for _ in range(2):
        assert chat(gw.port, "one two three", model="echo",
                    headers=as_user("bob")).status == 200
    assert chat(gw.port, "one two three").status == 200
    return 7


def rows_by(u, key):
    return {r[key]: r for r in u["rows"]}


def test_ledger_answers_by_consumer_model_hour_and_day(gateway):
    gw = admin_gateway(gateway, extra=usage_config())
    n = traffic(gw)
    u = settled_usage(gw, "?group_by=consumer", n)
    c = rows_by(u, "consumer")
    assert set(c) == {"alice", "bob", "anonymous"}
    assert c["alice"]["requests"] == 4 and c["alice"]["errors"] == 1
    assert c["alice"]["prompt_tokens"] == 9
    assert c["alice"]["cost_usd"] == pytest.approx(3 * COST3 / 1e6)
    assert c["bob"]["requests"] == 2 and c["bob"]["errors"] == 0
    assert c["bob"]["cost_usd"] == pytest.approx(12e-6)
    assert c["anonymous"]["requests"] == 1

    m = rows_by(usage(gw, "?group_by=model"), "model")
    assert m["gpt-test"]["requests"] == 5 and m["echo"]["requests"] == 2

    hours = usage(gw, "?group_by=hour")
    assert sum(r["requests"] for r in hours["rows"]) == n
    assert all(r["hour"].endswith(":00:00Z") for r in hours["rows"])
    days = usage(gw, "?group_by=day")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert sum(r["requests"] for r in days["rows"]) == n
    assert today in rows_by(days, "day")

    only = usage(gw, "?group_by=model&consumer=alice&model=gpt-test")
    assert [r["model"] for r in only["rows"]] == ["gpt-test"]
    assert only["total"]["requests"] == 4
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    assert usage(gw, "?from=" + tomorrow)["rows"] == []
    assert usage(gw, "?to=2000-01-01")["rows"] == []
    assert usage(gw, "?from=%s&to=%s" % (today, tomorrow))["total"][
        "requests"] == n

    bad = admin(gw, "GET", "/admin/usage?group_by=week")
    assert bad.status == 400 and "group_by" in bad.json()["error"]["message"]
    assert admin(gw, "GET", "/admin/usage?from=soon").status == 400
    assert admin(gw, "GET", "/admin/usage", token=None).status == 401


def test_answers_the_cache_marks_as_hits_are_counted(gateway):
    # A stand-in for the cache plugin: an instance named "hit" that sets
    # x-sluice-cache to its name on every answer of its route.
    extra = usage_config()
    extra["plugins"]["hit"] = good(header="x-sluice-cache")
    extra["routes"][0]["plugins"] = ["auth", "hit"]
    gw = admin_gateway(gateway, extra=extra)
    for _ in range(3):
        r = chat(gw.port, "one two three", headers=as_user("carol"))
        assert r.status == 200 and r.header("x-sluice-cache") == "hit", r
    u = settled_usage(gw, "?group_by=consumer", 3)
    assert u["rows"][0]["cache_hits"] == 3, u
    gw.terminate()
    gw2 = admin_gateway(gateway, extra=usage_config())
    chat(gw2.port, "one two three", headers=as_user("carol"))
    assert settled_usage(gw2, "?group_by=consumer", 4)["total"][
        "cache_hits"] == 3  # the same store: no hit without the header


def test_sluice_usage_prints_the_ledger_as_a_table(gateway):
    gw = admin_gateway(gateway, extra=usage_config())
    n = traffic(gw)
    settled_usage(gw, "", n)
    p = subprocess.run([SLUICE_BIN, "usage", "-c", str(gw.cfg_path),
                        "--group-by", "consumer"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    head = lines[0].split()
    assert head[:3] == ["CONSUMER", "REQUESTS", "PROMPT"], lines
    assert "COST_USD" in head and "ERRORS" in head
    # Aligned: every line as wide as the header.
    assert len({len(l) for l in lines}) == 1, p.stdout
    rows = {l.split()[0]: dict(zip(head, l.split())) for l in lines[1:]}
    assert rows["alice"]["REQUESTS"] == "4"
    assert rows["alice"]["ERRORS"] == "1"
    assert rows["alice"]["COST_USD"] == "0.000114"
    assert rows["TOTAL"]["REQUESTS"] == str(n)

    p = subprocess.run([SLUICE_BIN, "usage", "-c", str(gw.cfg_path),
                        "--group-by", "model", "--consumer", "bob", "--json"],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rows"] == usage(
        gw, "?group_by=model&consumer=bob")["rows"]

    p = subprocess.run([SLUICE_BIN, "usage", "-c", str(gw.cfg_path),
                        "--group-by", "week"], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 2 and "--group-by" in p.stderr


def budget_of(gw, consumer):
    r = admin(gw, "GET", "/admin/budgets?consumer=" + consumer)
    assert r.status == 200, r
    return r.json()["budgets"][0]


def settled_budget(gw, consumer):
    """A call settles just after its answer's last byte: wait until no
    reservation of `consumer` is left, then return its budget."""
    got = {}

    def idle():
        got["b"] = budget_of(gw, consumer)
        return all(v["reserved"] == 0 for k, v in got["b"].items()
                   if k != "consumer")
    assert wait_for(idle), got
    return got["b"]


def test_budget_refuses_with_429_budget_exceeded_once_spent(gateway):
    budgets = {"alice": {"daily_usd": 0.0001}}
    gw = admin_gateway(gateway, extra=usage_config(budgets))
    # Each call reserves 4 * 2.5 = 10 (13 chars / 4) and costs 38: 0, 38,
    # 76 fit under 100; at 114 the budget is spent.
    for _ in range(3):
        settled_budget(gw, "alice")
        r = chat(gw.port, "one two three", headers=as_user("alice"))
        assert r.status == 200, r
    settled_budget(gw, "alice")
    r = chat(gw.port, "one two three", headers=as_user("alice"))
    assert r.status == 429, r
    err = r.json()["error"]
    assert err["code"] == "budget_exceeded"
    assert "alice" in err["message"] and "daily" in err["message"]
    assert "$0.000114" in err["message"] and "$0.000100" in err["message"]
    assert 0 < int(r.header("retry-after")) <= 86400
    # Someone else is not affected.
    assert chat(gw.port, "one two three",
                headers=as_user("bob")).status == 200
    b = admin(gw, "GET", "/admin/budgets").json()["budgets"]
    assert len(b) == 1 and b[0]["consumer"] == "alice"
    assert b[0]["daily_usd"]["spent"] == pytest.approx(114e-6)
    assert b[0]["daily_usd"]["remaining"] == 0
    assert "monthly_usd" not in b[0]

    # What was spent survives a restart (same data_dir).
    gw.terminate()
    gw2 = admin_gateway(gateway, extra=usage_config(budgets))
    assert budget_of(gw2, "alice")["daily_usd"]["spent"] == \
        pytest.approx(114e-6)
    r = chat(gw2.port, "one two three", headers=as_user("alice"))
    assert r.status == 429, r


def test_budget_reserves_max_tokens_and_counts_total_tokens(gateway):
    budgets = {"alice": {"daily_usd": 0.001}, "bob": {"total_tokens": 10}}
    gw = admin_gateway(gateway, extra=usage_config(budgets))
    # 4 + 1000 * $10/1M = 10010 micro-dollars cannot fit in 1000.
    r = chat(gw.port, "one two three", headers=as_user("alice"),
             max_tokens=1000)
    assert r.status == 429 and r.error_code() == "budget_exceeded", r
    assert chat(gw.port, "one two three", headers=as_user("alice"),
                max_tokens=10).status == 200
    # bob: 6 tokens per call against 10 in total.
    for _ in range(2):
        settled_budget(gw, "bob")
        assert chat(gw.port, "one two three",
                    headers=as_user("bob")).status == 200
    assert settled_budget(gw, "bob")["total_tokens"]["spent"] == 12
    r = chat(gw.port, "one two three", headers=as_user("bob"))
    assert r.status == 429, r
    assert "12 of its 10 total tokens" in r.json()["error"]["message"]
    assert r.header("retry-after") is None


def test_reservation_is_given_back_when_the_client_aborts(gateway):
    budgets = {"alice": {"daily_usd": 0.001}}
    gw = admin_gateway(gateway, extra=usage_config(budgets))
    # Reserves 5 + 90 * 10 = 905 of 1000: a second one cannot fit beside it.
    hanging = Conn(gw.port)
    hanging.request("POST", CHAT, chat_body("[mock:hang] one two",
                                            max_tokens=90),
                    {"x-user": "alice"})

    def reserved():
        b = admin(gw, "GET", "/admin/budgets?consumer=alice").json()
        return b["budgets"][0]["daily_usd"]["reserved"]
    assert wait_for(lambda: reserved() > 0)
    r = chat(gw.port, "one two", headers=as_user("alice"), max_tokens=90)
    assert r.status == 429 and r.error_code() == "budget_exceeded", r
    assert "in flight" in r.json()["error"]["message"]
    hanging.close()  # the client goes away: its reservation is given back
    assert wait_for(lambda: reserved() == 0), reserved()
    r = chat(gw.port, "one two", headers=as_user("alice"), max_tokens=90)
    assert r.status == 200, r
    b = settled_budget(gw, "alice")
    assert b["daily_usd"]["spent"] == pytest.approx(25e-6)  # 2*2.5 + 2*10


def test_bad_pricing_and_budgets_are_refused_with_their_json_paths(
        tmp_path):
    cfg = {"listen": [{"addr": "127.0.0.1:1"}],
           "pricing": {"m": {"input": "cheap", "output": 1}},
           "budgets": {"alice": {"weekly_usd": 1}}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "$.pricing.m.input: must be a number" in p.stderr, p.stderr
    assert "$.budgets.alice.weekly_usd: unknown key" in p.stderr, p.stderr


def test_api_keys_of_the_auth_plugin_show_and_obey_their_budget(gateway):
    # The auth plugin names the consumer after the key's name: a budget
    # for that name is the key's budget.
    extra = {
        "pricing": PRICING,
        "budgets": {"svc": {"daily_usd": 0.0001, "total_tokens": 1000}},
        "plugin_dir": AUTH_DIR,
        "plugins": {"auth": {"path": "auth.so", "config": {}}},
        "routes": [{"path": CHAT, "plugins": ["auth"]}, {"path": "/healthz"}],
    }
    gw = admin_gateway(gateway, extra=extra)
    made = admin(gw, "POST", "/admin/keys", body={"name": "svc"}).json()
    other = admin(gw, "POST", "/admin/keys", body={"name": "free"}).json()
    auth = {"Authorization": "Bearer " + made["key"]}
    codes = []
    for _ in range(4):
        settled_budget(gw, "svc")
        codes.append(chat(gw.port, "one two three", headers=auth).status)
    assert codes == [200, 200, 200, 429], codes
    shown = admin(gw, "GET", "/admin/keys/" + made["id"]).json()
    assert shown["budget"]["daily_usd"]["limit"] == pytest.approx(1e-4)
    assert shown["budget"]["daily_usd"]["spent"] == pytest.approx(114e-6)
    assert shown["budget"]["total_tokens"]["spent"] == 18
    assert admin(gw, "GET", "/admin/keys/" + other["id"]).json()[
        "budget"] is None
    listed = {k["name"]: k for k in admin(gw, "GET",
                                          "/admin/keys").json()["keys"]}
    assert listed["svc"]["budget"]["daily_usd"]["remaining"] == 0
    assert listed["free"]["budget"] is None
    assert chat(gw.port, "one two three", headers={
        "Authorization": "Bearer " + other["key"]}).status == 200
