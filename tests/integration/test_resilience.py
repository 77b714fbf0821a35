"""Fallback chains, retries, balancing, concurrency caps and circuit
breakers across a model's targets (issue 6's resilience part).

The mock's `[mock:fail_times=KEY:N:MODE]` directive fails the first N
requests that carry KEY and lets later ones through, so one attempt can fail
while the gateway's retry or fallback succeeds."""
import json
import threading
import time
import uuid

from conftest import closed_port
from helpers import Conn, chat, chat_body, sse_data, stream_text

CHAT = "/v1/chat/completions"


def key():
    return uuid.uuid4().hex[:12]


def chain(primary, fallback, **extra):
    """A model: one target, one fallback, both on the mock upstream unless
    named otherwise."""
    m = {"targets": [{"provider": primary[0], "model": primary[1]}],
         "fallback": [{"provider": fallback[0], "model": fallback[1]}]}
    m.update(extra)
    return m


def attempts(r):
    return int(r.header("x-sluice-attempts"))


def test_connect_error_falls_back_to_the_next_target(gateway, mock):
    gw = gateway(
        providers={"dead": {"type": "openai",
                            "base_url": "http://127.0.0.1:%d/v1" %
                            closed_port()}},
        models={"ha": chain(("dead", "x"), ("upstream", "backup"))})
    r = chat(gw.port, "hello fallback", model="ha")
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "hello fallback"
    assert r.header("x-sluice-provider") == "upstream"
    assert r.header("x-sluice-model") == "backup"
    assert attempts(r) == 2


def test_429_falls_back_and_the_client_sees_one_clean_answer(gateway, mock):
    gw = gateway(models={"ha": chain(("upstream", "primary"),
                                     ("upstream", "backup"))})
    r = chat(gw.port, "hi [mock:fail_times=%s:1:429]" % key(), model="ha")
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "backup"
    assert attempts(r) == 2
    models = [json.loads(q["body"])["model"] for q in mock.requests()[-2:]]
    assert models == ["primary", "backup"]


def test_5xx_falls_back(gateway, mock):
    gw = gateway(models={"ha": chain(("upstream", "primary"),
                                     ("upstream", "backup"))})
    r = chat(gw.port, "hi [mock:fail_times=%s:1:503]" % key(), model="ha")
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "backup"


def test_client_errors_do_not_fall_back(gateway, mock):
    gw = gateway(models={"ha": chain(("upstream", "primary"),
                                     ("upstream", "backup"))})
    before = len(mock.requests())
    r = chat(gw.port, "hi [mock:status=400]", model="ha")
    assert r.status == 400, r
    assert len(mock.requests()) == before + 1


def test_timeout_before_first_byte_falls_back(gateway, mock):
    gw = gateway(
        providers={"slow": {"type": "openai", "base_url": mock.url + "/v1",
                            "first_byte_timeout_ms": 300}},
        models={"ha": chain(("slow", "primary"), ("upstream", "backup"))})
    t0 = time.monotonic()
    r = chat(gw.port, "hi [mock:fail_times=%s:1:hang]" % key(), model="ha")
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "backup"
    assert time.monotonic() - t0 < 3


def test_every_target_failing_gives_the_last_error(gateway, mock):
    gw = gateway(models={"ha": chain(("upstream", "primary"),
                                     ("upstream", "backup"))})
    r = chat(gw.port, "hi [mock:status=429] [mock:retry_after=3]",
             model="ha")
    assert r.status == 429, r
    assert r.header("retry-after") == "3"
    assert r.json()["error"]["message"]


def test_retry_on_the_same_target_honours_retry_after(gateway, mock):
    gw = gateway(models={"r": {
        "targets": [{"provider": "upstream", "model": "only"}],
        "retries": 2, "retry_base_ms": 10, "retry_max_ms": 50}})
    t0 = time.monotonic()
    r = chat(gw.port, "hi [mock:fail_times=%s:1:429] [mock:retry_after=1]"
             % key(), model="r")
    took = time.monotonic() - t0
    assert r.status == 200, r
    assert attempts(r) == 2
    assert r.header("x-sluice-model") == "only"
    assert took >= 0.95, took  # waited for Retry-After, not the 10 ms base


def test_retries_back_off_then_give_up(gateway, mock):
    gw = gateway(models={"r": {
        "targets": [{"provider": "upstream", "model": "only"}],
        "retries": 2, "retry_base_ms": 100, "retry_max_ms": 1000}})
    before = len(mock.requests())
    t0 = time.monotonic()
    r = chat(gw.port, "hi [mock:status=500]", model="r")
    took = time.monotonic() - t0
    assert r.status == 502, r
    assert r.json()["error"]["code"] == "upstream_error"
    assert len(mock.requests()) == before + 3
    # Backoff of 100 then 200 ms, jittered over their upper halves.
    assert took >= 0.15, took


def test_deadline_stops_retries(gateway, mock):
    gw = gateway(models={"r": {
        "targets": [{"provider": "upstream", "model": "only"}],
        "retries": 5, "retry_base_ms": 400, "deadline_ms": 500}})
    before = len(mock.requests())
    r = chat(gw.port, "hi [mock:status=503]", model="r")
    assert r.status == 502, r
    assert len(mock.requests()) - before <= 2


def test_breaker_opens_skips_target_then_half_open_probe_closes_it(
        gateway, mock):
    gw = gateway(models={"b": chain(
        ("upstream", "primary"), ("upstream", "backup"),
        breaker={"failures": 2, "window_ms": 10000, "open_ms": 800})})
    # Two failures of the primary (each answered by the backup) open it.
    for _ in range(2):
        r = chat(gw.port, "x [mock:fail_times=%s:1:500]" % key(), model="b")
        assert r.status == 200 and attempts(r) == 2, r
    # Open: the primary is skipped without being tried.
    before = len(mock.requests())
    r = chat(gw.port, "while open", model="b")
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "backup"
    assert attempts(r) == 1
    assert len(mock.requests()) == before + 1
    # After open_ms one probe goes to the primary; its success closes it.
    time.sleep(0.9)
    r = chat(gw.port, "probe", model="b")
    assert r.header("x-sluice-model") == "primary", r
    r = chat(gw.port, "closed again", model="b")
    assert r.header("x-sluice-model") == "primary", r


def test_failed_half_open_probe_opens_the_breaker_again(gateway, mock):
    gw = gateway(models={"b": chain(
        ("upstream", "primary"), ("upstream", "backup"),
        breaker={"failures": 1, "window_ms": 10000, "open_ms": 500})})
    r = chat(gw.port, "x [mock:fail_times=%s:1:500]" % key(), model="b")
    assert attempts(r) == 2
    time.sleep(0.6)
    r = chat(gw.port, "x [mock:fail_times=%s:1:500]" % key(), model="b")
    assert attempts(r) == 2  # the probe failed; the backup answered
    r = chat(gw.port, "still open", model="b")
    assert r.header("x-sluice-model") == "backup" and attempts(r) == 1


def test_weighted_choice_follows_the_weights(gateway):
    gw = gateway(models={"w": {"targets": [
        {"provider": "mock", "model": "heavy", "weight": 3},
        {"provider": "mock", "model": "light", "weight": 1}]}})
    counts = {"heavy": 0, "light": 0}
    with Conn(gw.port) as c:
        for i in range(400):
            c.request("POST", CHAT, chat_body("n %d" % i, model="w"))
            r = c.read_response()
            counts[r.header("x-sluice-model")] += 1
    share = counts["heavy"] / 400
    assert 0.66 <= share <= 0.84, counts


def test_max_concurrency_sends_the_overflow_to_the_fallback(gateway, mock):
    gw = gateway(models={"c": {
        "targets": [{"provider": "upstream", "model": "primary",
                     "max_concurrency": 1}],
        "fallback": [{"provider": "upstream", "model": "backup"}]}})
    held = Conn(gw.port, timeout=10)
    held.request("POST", CHAT, chat_body("[mock:delay_ms=1500] slow",
                                         model="c"))
    time.sleep(0.3)
    r = chat(gw.port, "overflow", model="c")
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "backup"
    assert attempts(r) == 1
    first = held.read_response()
    assert first.header("x-sluice-model") == "primary"
    held.close()


def test_least_outstanding_avoids_the_busy_target(gateway, mock):
    gw = gateway(workers=1, models={"lo": {
        "balance": "least_outstanding",
        "targets": [{"provider": "upstream", "model": "a"},
                    {"provider": "upstream", "model": "b"}]}})
    held = Conn(gw.port, timeout=10)
    held.request("POST", CHAT, chat_body("[mock:delay_ms=1500] busy",
                                         model="lo"))
    time.sleep(0.3)
    seen = set()
    for i in range(10):
        seen.add(chat(gw.port, "free %d" % i, model="lo")
                 .header("x-sluice-model"))
    busy = held.read_response().header("x-sluice-model")
    held.close()
    assert len(seen) == 1 and busy not in seen, (seen, busy)


def test_failure_before_the_first_token_falls_back_cleanly(gateway, mock):
    gw = gateway(models={"s": chain(("upstream", "primary"),
                                    ("upstream", "backup"))})
    r = chat(gw.port, "one two three [mock:fail_times=%s:1:cut1]" % key(),
             model="s", stream=True)
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "backup"
    assert attempts(r) == 2
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    roles = [e for e in events[:-1]
             if json.loads(e)["choices"] and
             json.loads(e)["choices"][0]["delta"].get("role")]
    assert len(roles) == 1, events  # one start, not two
    assert stream_text(events) == "one two three"


def test_no_silent_switch_after_the_first_token(gateway, mock):
    gw = gateway(models={"s": chain(("upstream", "primary"),
                                    ("upstream", "backup"))})
    before = len(mock.requests())
    r = chat(gw.port, "a b c d e f [mock:close_after=3]", model="s",
             stream=True)
    events = sse_data(r.body)
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "upstream_stream_cut"
    assert len(mock.requests()) == before + 1  # the backup was never asked
    assert r.header("x-sluice-model") == "primary"



def test_stream_larger_than_the_response_cap_ends_with_an_error(gateway):
    gw = gateway(limits={"max_response_bytes": 20000})
    r = chat(gw.port, "[mock:words=5000]", stream=True)
    assert r.status == 200, r
    events = sse_data(r.body)
    assert "[DONE]" not in events
    err = json.loads(events[-1])["error"]
    assert err["code"] == "upstream_response_too_large"
    assert len(r.body) < 40000
