"""The request log: a record per request in the store, GET /admin/logs and
its filters, the JSON-lines export, retention by count, body capture only
when configured, and the W3C trace context carried to the upstream."""
import json
import re
import socket
import subprocess
import time

import pytest

from conftest import SLUICE_BIN
from helpers import Conn, chat, chat_body, http, sse_data, stream_text, \
    wait_for
from test_plugins import CHAT, good, plugin_config
from test_reload import TOKEN, admin, admin_gateway

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def logs(gw, query=""):
    r = admin(gw, "GET", "/admin/logs" + query)
    assert r.status == 200, r
    return r.json()["data"]


def logs_settled(gw, n, query=""):
    """The listing once it holds n records: a record is written just after
    its answer went out, and committed a moment later."""
    got = wait_for(lambda: len(logs(gw, query)) >= n and logs(gw, query))
    assert got and len(got) >= n, logs(gw, query)
    return got


def with_consumers(**kw):
    """A gateway whose chat route names the consumer from x-who."""
    extra = plugin_config({"who": good(consumer_header="x-who")}, ["who"])
    extra.update(kw.pop("extra", {}))
    return extra


def upstream_header(mock, name):
    req = mock.last_request()
    for k, v in req["headers"].items():
        if k.lower() == name:
            return v
    return None


@pytest.fixture
def gw_with_admin(gateway):
    return admin_gateway(gateway)


def test_each_request_is_recorded_with_its_fields(gateway):
    gw = admin_gateway(gateway, extra=with_consumers())
    r = chat(gw.port, "hello there", headers={"x-who": "alice"})
    assert r.status == 200, r
    s = chat(gw.port, "a b c", stream=True, headers={"x-who": "bob"})
    assert s.status == 200 and stream_text(sse_data(s.body)) == "a b c"
    assert http(gw.port, "GET", "/healthz").status == 200
    got = logs_settled(gw, 2)
    assert len(got) == 2, got  # health checks are not recorded
    streamed, plain = got  # newest first
    assert plain["consumer"] == "alice" and streamed["consumer"] == "bob"
    for e in got:
        assert e["route"] == CHAT and e["path"] == CHAT
        assert e["method"] == "POST"
        assert e["model"] == "gpt-test"
        assert e["provider"] == "upstream"
        assert e["target_model"] == "mock-model"
        assert e["status"] == 200
        assert e["attempts"] == 1
        assert e["error"] is None
        assert e["latency_ms"] >= e["upstream_ms"] >= 0
        assert HEX32.match(e["trace_id"]) and HEX16.match(e["span_id"])
        assert e["plugins"] == ["who"]
        assert "request_body" not in e and "response_text" not in e
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$",
                        e["time"])
    assert plain["stream"] is False and plain["ttft_ms"] is None
    assert streamed["stream"] is True
    assert 0 <= streamed["ttft_ms"] <= streamed["latency_ms"]
    assert plain["prompt_tokens"] == 2 and plain["completion_tokens"] == 2
    assert plain["total_tokens"] == 4
    assert streamed["completion_tokens"] == 3
    assert streamed["ts_us"] >= plain["ts_us"]
    assert plain["trace_id"] == r.header("x-sluice-trace-id")
    assert streamed["id"] != plain["id"]


def test_errors_are_recorded_with_their_code(gw_with_admin):
    gw = gw_with_admin
    assert chat(gw.port, "x", model="nope").status == 404
    e = logs_settled(gw, 1)[0]
    assert e["status"] == 404 and e["error"] == "model_not_found"
    assert e["model"] == "nope" and e["provider"] is None
    assert e["attempts"] == 0


def test_listing_filters_by_consumer_model_status_and_time(gateway):
    gw = admin_gateway(gateway, extra=with_consumers())
    t0 = time.time()
    for who in ("alice", "bob", "alice"):
        assert chat(gw.port, "hi", headers={"x-who": who}).status == 200
    assert chat(gw.port, "hi", model="echo",
                headers={"x-who": "bob"}).status == 200
    assert chat(gw.port, "hi", model="nope",
                headers={"x-who": "carol"}).status == 404
    logs_settled(gw, 5)
    assert [e["consumer"] for e in logs(gw, "?consumer=alice")] == \
        ["alice", "alice"]
    assert [e["model"] for e in logs(gw, "?model=echo")] == ["echo"]
    # An unknown model is refused before the plugins name anyone.
    assert [e["model"] for e in logs(gw, "?status=404")] == ["nope"]
    assert len(logs(gw, "?status=4xx")) == 1
    assert len(logs(gw, "?status=2xx")) == 4
    both = logs(gw, "?consumer=bob&model=gpt-test")
    assert len(both) == 1 and both[0]["model"] == "gpt-test"
    assert len(logs(gw, "?since=%f" % t0)) == 5
    assert logs(gw, "?since=%d" % (time.time() + 3600)) == []
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 - 60))
    assert len(logs(gw, "?since=" + iso)) == 5
    newest = logs(gw, "?limit=2")
    assert [e["model"] for e in newest] == ["nope", "echo"]
    for bad in ("?limit=0", "?limit=x", "?limit=1001", "?status=abc",
                "?since=yesterday"):
        r = admin(gw, "GET", "/admin/logs" + bad)
        assert r.status == 400, (bad, r)
        assert r.json()["error"]["code"] == "invalid_request"
    assert admin(gw, "GET", "/admin/logs", token=None).status == 401
    assert admin(gw, "POST", "/admin/logs").status == 405


def test_export_is_json_lines_oldest_first_in_chunks(gateway):
    gw = admin_gateway(gateway)
    c = Conn(gw.port)
    for i in range(30):
        c.request("POST", CHAT, chat_body("n %d" % i))
        assert c.read_response().status == 200
    c.close()
    logs_settled(gw, 30)
    r = admin(gw, "GET", "/admin/logs/export")
    assert r.status == 200, r
    assert r.header("content-type") == "application/x-ndjson"
    assert r.header("transfer-encoding") == "chunked"
    lines = r.body.decode().splitlines()
    assert len(lines) == 30
    recs = [json.loads(l) for l in lines]
    stamps = [e["ts_us"] for e in recs]
    assert stamps == sorted(stamps)
    assert len({e["id"] for e in recs}) == 30
    assert all(e["status"] == 200 for e in recs)
    # Filters and a limit apply to the export too.
    r = admin(gw, "GET", "/admin/logs/export?limit=3&status=200")
    assert [json.loads(l)["id"] for l in r.body.decode().splitlines()] == \
        [e["id"] for e in recs[:3]]


def test_a_large_export_to_a_slow_reader_is_whole_and_in_order(gateway):
    # Captured bodies make records of about 3 KiB: 4500 of them are
    # several export steps (each reads a few thousand records) and more
    # output than the socket buffers hold, so the export must wait for the
    # reader.
    gw = admin_gateway(gateway, extra={"request_log": {
        "capture_bodies": True, "max_body_bytes": 4096}})
    body = json.dumps(chat_body("hello " * 250, model="echo"))
    one = ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
           "\r\nContent-Length: %d\r\n\r\n%s" % (CHAT, len(body), body))
    c = Conn(gw.port)
    for _ in range(30):
        c.send(one * 150)
        for _ in range(150):
            assert c.read_response().status == 200
    c.close()
    assert wait_for(lambda: admin(gw, "GET", "/admin/logs?limit=1").json()[
        "data"] and len(admin(gw, "GET", "/admin/logs/export").body.split(
            b"\n")) == 4501, timeout=10)
    s = socket.create_connection(("127.0.0.1", gw.admin_port))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(b"GET /admin/logs/export HTTP/1.1\r\nHost: t\r\n"
              b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
    data = b""
    s.settimeout(10)
    time.sleep(0.3)  # not reading yet: the gateway has to wait
    while not data.endswith(b"\r\n0\r\n\r\n"):
        chunk = s.recv(262144)
        assert chunk, "the export ended early"
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    body = b""
    while True:  # de-chunk
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        body += rest[:n]
        rest = rest[n + 2:]
    recs = [json.loads(l) for l in body.decode().splitlines()]
    assert len(recs) == 4500
    ids = [e["id"] for e in recs]
    assert ids == sorted(ids) and len(set(ids)) == 4500


def test_retention_keeps_the_newest_max_entries(gateway):
    gw = admin_gateway(gateway, extra={"request_log": {
        "max_entries": 5, "sweep_interval_ms": 50}})
    c = Conn(gw.port)
    for i in range(12):
        c.request("POST", CHAT, chat_body("r %d" % i))
        assert c.read_response().status == 200
    c.close()
    time.sleep(0.3)
    got = wait_for(lambda: len(logs(gw)) == 5 and logs(gw), timeout=5)
    assert got, logs(gw)
    exported = admin(gw, "GET", "/admin/logs/export").body.decode()
    assert len(exported.splitlines()) == 5
    # The newest five stay: one more request pushes the oldest out.
    oldest = got[-1]["id"]
    assert chat(gw.port, "one more").status == 200
    assert wait_for(lambda: [e["id"] for e in logs(gw)][1:] ==
                    [e["id"] for e in got[:4]]), logs(gw)
    assert oldest not in [e["id"] for e in logs(gw)]


def test_bodies_are_captured_only_when_configured(gateway, mock, tmp_path):
    plugins = plugin_config({"mask": good(prompt_prefix="[masked] ")},
                            ["mask"])
    gw = admin_gateway(gateway, extra=plugins)
    assert chat(gw.port, "secret words").status == 200
    e = logs_settled(gw, 1)[0]
    assert "request_body" not in e and "response_text" not in e

    plugins["request_log"] = {"capture_bodies": True, "max_body_bytes": 200}
    plugins["data_dir"] = str(tmp_path / "data2")  # a log of its own
    gw = admin_gateway(gateway, extra=plugins)
    assert chat(gw.port, "secret words").status == 200
    e = logs_settled(gw, 1)[0]
    sent = json.loads(e["request_body"])
    # What the provider got: after the plugins rewrote the prompt.
    assert sent == json.loads(mock.last_request()["body"])
    assert sent["messages"][-1]["content"].startswith("[masked] ")
    assert e["response_text"] == "[masked] secret words"
    s = chat(gw.port, "one two three", stream=True)
    assert s.status == 200
    e = logs_settled(gw, 2)[0]
    assert e["stream"] is True
    assert e["response_text"] == "[masked] one two three"
    # Long bodies are cut to max_body_bytes.
    long_text = "word " * 200
    assert chat(gw.port, long_text).status == 200
    e = logs_settled(gw, 3)[0]
    assert len(e["request_body"].encode()) <= 200
    assert len(e["response_text"].encode()) <= 200
    assert e["response_text"].startswith("[masked] word word")


def test_traceparent_goes_to_the_upstream_with_a_new_span(gateway, mock):
    gw = admin_gateway(gateway)
    tp = "00-%s-%s-01" % (TRACE, SPAN)
    r = chat(gw.port, "trace me", headers={"traceparent": tp})
    assert r.status == 200, r
    assert r.header("x-sluice-trace-id") == TRACE
    sent = upstream_header(mock, "traceparent")
    assert sent is not None, mock.last_request()["headers"]
    version, trace, span, flags = sent.split("-")
    assert (version, trace, flags) == ("00", TRACE, "01")
    assert HEX16.match(span) and span != SPAN
    e = logs_settled(gw, 1)[0]
    assert e["trace_id"] == TRACE
    assert e["parent_span_id"] == SPAN
    assert e["span_id"] == span  # the upstream's parent is our span
    assert upstream_header(mock, "tracestate") is None
    # A tracestate travels with a trace the request joined, unchanged.
    r = chat(gw.port, "with state", headers={
        "traceparent": tp, "tracestate": "vendor=abc,other=1"})
    assert upstream_header(mock, "tracestate") == "vendor=abc,other=1"
    r = chat(gw.port, "bad parent", headers={
        "traceparent": "garbage", "tracestate": "vendor=abc"})
    assert upstream_header(mock, "tracestate") is None
    line = wait_for(lambda: [l for l in gw.access_log()
                             if l.get("trace_id") == TRACE])
    assert line and line[0]["path"] == CHAT
    # Streams carry it too, and the sampled flag is passed on as it came.
    tp0 = "00-%s-%s-00" % (TRACE, SPAN)
    s = chat(gw.port, "x y", stream=True, headers={"traceparent": tp0})
    assert s.status == 200
    assert upstream_header(mock, "traceparent").endswith("-00")


def test_invalid_traceparent_is_ignored_and_a_new_trace_starts(gateway,
                                                               mock):
    gw = admin_gateway(gateway)
    bad = [
        "00-%s-%s-01" % (TRACE.upper(), SPAN),   # upper case
        "00-%s-%s-01" % ("0" * 32, SPAN),        # all-zero trace id
        "00-%s-%s-01" % (TRACE, "0" * 16),       # all-zero span id
        "ff-%s-%s-01" % (TRACE, SPAN),           # forbidden version
        "00-%s-%s-01-extra" % (TRACE, SPAN),     # v00 has four fields
        "00-%s-%s" % (TRACE, SPAN),              # no flags
        "garbage",
    ]
    seen = set()
    for tp in bad:
        r = chat(gw.port, "x", headers={"traceparent": tp})
        assert r.status == 200, (tp, r)
        tid = r.header("x-sluice-trace-id")
        assert HEX32.match(tid) and tid != TRACE, tp
        sent = upstream_header(mock, "traceparent")
        assert sent.split("-")[1] == tid, (tp, sent)
        seen.add(tid)
    assert len(seen) == len(bad)  # a new trace each time
    recs = logs_settled(gw, len(bad))
    assert all(e["parent_span_id"] is None for e in recs)
    # A later version may add fields; its first four are still read.
    r = chat(gw.port, "x", headers={
        "traceparent": "01-%s-%s-01-what-ever" % (TRACE, SPAN)})
    assert r.header("x-sluice-trace-id") == TRACE


def test_plugin_verdicts_and_log_fields_are_recorded(gateway, tmp_path):
    from test_guardrails import guarded
    extra = guarded(deny={
        "no-codenames": {"pattern": "(?i)bluebird"},
        "watch": {"pattern": "refund", "action": "flag"}})
    gw = admin_gateway(gateway, extra=extra)
    assert chat(gw.port, "about bluebird").status == 400
    assert chat(gw.port, "a refund please").status == 200
    flagged, blocked = logs_settled(gw, 2)
    assert blocked["status"] == 400
    assert blocked["verdict"] == {"plugin": "guard", "action": "respond",
                                  "phase": "on_request"}
    assert blocked["attempts"] == 0 and blocked["provider"] is None
    assert "verdict" not in flagged
    assert flagged["plugin_fields"] == {"guardrail": "watch"}
    # A hook that fails closed is recorded as an error verdict.
    extra = plugin_config({"strict": good(fail_in="request")}, ["strict"])
    extra["data_dir"] = str(tmp_path / "data2")
    gw = admin_gateway(gateway, extra=extra)
    assert chat(gw.port, "x").status == 500
    e = logs_settled(gw, 1)[0]
    assert e["verdict"] == {"plugin": "strict", "action": "error",
                            "phase": "on_request"}
    assert e["error"] == "plugin_error"


def test_cost_and_token_kinds_are_recorded(gateway):
    # mock-model at $2.50 in and $10 out per 1M tokens: "one two three" is
    # 3 + 3 tokens, 37.5 micro-dollars, 38 rounded.
    gw = admin_gateway(gateway, extra={"pricing": {
        "mock-model": {"input": 2.5, "output": 10}}})
    assert chat(gw.port, "one two three").status == 200
    assert chat(gw.port, "x", model="echo").status == 200  # no price
    unpriced, priced = logs_settled(gw, 2)
    assert priced["cost"] == 0.000038
    assert priced["cached_tokens"] is None
    assert priced["reasoning_tokens"] is None
    assert unpriced["cost"] is None
    raw = admin(gw, "GET", "/admin/logs").body.decode()
    assert '"cost":0.000038' in raw  # exact, never float noise


def test_records_of_the_last_moment_survive_a_restart(gateway):
    gw = admin_gateway(gateway)
    c = Conn(gw.port)
    for i in range(3):
        c.request("POST", CHAT, chat_body("last words %d" % i))
        assert c.read_response().status == 200
    c.close()
    # Stopped at once: records still waiting on their worker go to the
    # store as it stops, not lost.
    assert gw.terminate() == 0
    again = admin_gateway(gateway)  # the same data_dir
    got = logs(again)
    assert len(got) == 3, got
    assert all(e["status"] == 200 for e in got)


def test_request_log_can_be_turned_off(gateway):
    gw = admin_gateway(gateway, extra={"request_log": {"enabled": False}})
    assert chat(gw.port, "x").status == 200
    time.sleep(0.2)
    assert logs(gw) == []


def test_bad_request_log_settings_are_refused_with_their_json_paths(
        tmp_path):
    cfg = {"listen": [{"addr": "127.0.0.1:1"}],
           "request_log": {"enabled": "yes", "max_entries": 0,
                           "max_body_bytes": 1.5, "keep": 1}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    for want in ("$.request_log.enabled: must be true or false",
                 "$.request_log.max_entries: must be between 1 and",
                 "$.request_log.max_body_bytes: must be an integer",
                 "$.request_log.keep: unknown key"):
        assert want in p.stderr, p.stderr
    cfg["request_log"] = {"enabled": False, "max_age_hours": 1,
                          "sweep_interval_ms": 100}
    path.write_text(json.dumps(cfg))
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
