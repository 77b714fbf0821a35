"""The bundled ratelimit plugin in the running gateway: exact counts under
concurrency across workers, the x-ratelimit-* headers on every answer,
429 with Retry-After, token reservations settled against the provider's
usage (streams included) and given back by aborted requests, per-model
and per-key limits, per-consumer counting, and counts that survive a
restart within the window."""
import json
import os
import signal
import threading
import time

import pytest

from helpers import Conn, chat, chat_body, http, sse_data, wait_for

from conftest import SLUICE_BIN

BUILD_DIR = os.path.dirname(os.path.dirname(SLUICE_BIN))
PLUGIN_DIR = os.path.join(BUILD_DIR, "plugins")
TEST_PLUGIN_DIR = os.path.join(BUILD_DIR, "tests", "plugins")
CHAT = "/v1/chat/completions"


@pytest.fixture(autouse=True)
def ratelimit_built():
    path = os.path.join(PLUGIN_DIR, "ratelimit.so")
    assert os.path.exists(path), "no %s: run `make` in the build dir" % path


def fresh_window(need_s=4):
    """Waits for a new minute when fewer than need_s seconds are left in
    this one: the limits count fixed one-minute windows."""
    left = 60 - time.time() % 60
    if left < need_s:
        time.sleep(left + 0.2)


def rl_config(config, route_plugins=("rl",), plugins=None):
    ps = {"rl": {"path": os.path.join(PLUGIN_DIR, "ratelimit.so"),
                 "config": config}}
    ps.update(plugins or {})
    return {
        "plugins": ps,
        "routes": [{"path": CHAT, "plugins": list(route_plugins)},
                   {"path": "/healthz"}],
    }


def test_n_parallel_requests_at_a_limit_of_k_give_exactly_k(gateway):
    fresh_window()
    gw = gateway(workers=2, extra=rl_config({"requests_per_minute": 7}))
    n = 40
    statuses, lock = [], threading.Lock()
    barrier = threading.Barrier(n)

    def one():
        c = Conn(gw.port)
        barrier.wait()
        c.request("POST", CHAT, chat_body("race", model="echo"))
        r = c.read_response("POST")
        c.close()
        with lock:
            statuses.append(r)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    ok = [r for r in statuses if r.status == 200]
    limited = [r for r in statuses if r.status == 429]
    assert len(statuses) == n
    assert len(ok) == 7, [r.status for r in statuses]
    assert len(limited) == n - 7
    r = limited[0]
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(r.header("retry-after")) <= 60
    assert r.header("x-ratelimit-remaining-requests") == "0"
    assert sorted(int(r.header("x-ratelimit-remaining-requests"))
                  for r in ok) == list(range(7))


def test_every_answer_carries_the_limit_headers_streams_too(gateway):
    fresh_window()
    gw = gateway(extra=rl_config({"requests_per_minute": 10,
                                  "tokens_per_minute": 100000}))
    r = chat(gw.port, "one", model="echo")
    assert r.status == 200, r
    assert r.header("x-ratelimit-limit-requests") == "10"
    assert r.header("x-ratelimit-remaining-requests") == "9"
    assert r.header("x-ratelimit-limit-tokens") == "100000"
    reset = r.header("x-ratelimit-reset-requests")
    assert reset == "1m0s" or (reset.endswith("s") and
                               1 <= int(reset[:-1]) < 60), reset
    assert r.header("x-ratelimit-reset-tokens") == reset
    r = chat(gw.port, "two", model="echo", stream=True)
    assert r.status == 200, r
    assert r.header("x-ratelimit-remaining-requests") == "8"
    assert r.header("x-ratelimit-remaining-tokens") is not None
    assert sse_data(r.body)[-1] == "[DONE]"


def tokens_left(r):
    return int(r.header("x-ratelimit-remaining-tokens"))


def usage_of(r):
    u = r.json()["usage"]
    return u["prompt_tokens"] + u["completion_tokens"]


def test_tokens_are_reserved_then_settled_to_the_actual_usage(gateway):
    fresh_window()
    gw = gateway(extra=rl_config({"tokens_per_minute": 10000,
                                  "default_max_tokens": 500}))
    text = "settle me please"  # 16 characters: 4 tokens estimated
    body = chat_body(text, model="echo")
    body["max_tokens"] = 300
    r1 = http(gw.port, "POST", CHAT, body)
    assert r1.status == 200, r1
    assert tokens_left(r1) == 10000 - (4 + 300)
    time.sleep(0.1)  # on_log settles once the answer is out
    r2 = chat(gw.port, text, model="echo")  # no max_tokens: the default
    assert r2.status == 200, r2
    assert tokens_left(r2) == 10000 - usage_of(r1) - (4 + 500)
    # A stream settles too, from the usage its provider reports.
    body = chat_body(text, model="echo", stream=True)
    body["max_tokens"] = 100
    body["stream_options"] = {"include_usage": True}
    time.sleep(0.1)
    r3 = http(gw.port, "POST", CHAT, body)
    assert r3.status == 200, r3
    events = [json.loads(e) for e in sse_data(r3.body)[:-1]]
    usage3 = [e["usage"] for e in events if e.get("usage")][-1]
    used3 = usage3["prompt_tokens"] + usage3["completion_tokens"]
    time.sleep(0.1)
    r4 = chat(gw.port, text, model="echo")
    assert tokens_left(r4) == (10000 - usage_of(r1) - usage_of(r2) - used3 -
                               (4 + 500))


def test_an_upstream_error_has_the_headers_and_gives_tokens_back(gateway):
    fresh_window()
    gw = gateway(extra=rl_config({"requests_per_minute": 50,
                                  "tokens_per_minute": 10000}))
    body = chat_body("x [mock:status=400]", model="gpt-test")  # 19 chars
    body["max_tokens"] = 100
    r = http(gw.port, "POST", CHAT, body)
    assert r.status == 400, r
    assert r.header("x-ratelimit-remaining-requests") == "49"
    assert tokens_left(r) == 10000 - (5 + 100)
    time.sleep(0.1)
    body = chat_body("y", model="echo")
    body["max_tokens"] = 100
    r = http(gw.port, "POST", CHAT, body)
    assert r.status == 200, r
    assert tokens_left(r) == 10000 - (1 + 100)  # the error's went back


def test_a_request_too_large_for_the_limit_is_refused(gateway):
    fresh_window()
    gw = gateway(extra=rl_config({"tokens_per_minute": 100}))
    body = chat_body("hi", model="echo")
    body["max_tokens"] = 5000
    r = http(gw.port, "POST", CHAT, body)
    assert r.status == 429, r
    assert "too large" in r.json()["error"]["message"]
    assert r.header("retry-after") is not None


def test_an_aborted_stream_gives_its_reservation_back(gateway):
    fresh_window()
    gw = gateway(extra=rl_config({"tokens_per_minute": 1000}))
    body = chat_body("a b c d e f g h [mock:gap_ms=200]", model="gpt-test",
                     stream=True)
    body["max_tokens"] = 900
    c = Conn(gw.port)
    c.request("POST", CHAT, body)
    c.read_head()
    # The reservation is held while the stream runs...
    small = chat_body("x", model="echo")
    small["max_tokens"] = 200
    r = http(gw.port, "POST", CHAT, small)
    assert r.status == 429, r
    c.close()  # ...and the client walks away
    deadline = time.monotonic() + 5
    while True:
        r = http(gw.port, "POST", CHAT, small)
        if r.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.status == 200, r
    assert tokens_left(r) == 1000 - (1 + 200)


def test_a_model_limit_counts_apart_from_the_route_limit(gateway):
    fresh_window()
    gw = gateway(extra=rl_config({"requests_per_minute": 100,
                                  "models": ["echo rpm=2"]}))
    assert chat(gw.port, "a", model="echo").status == 200
    r = chat(gw.port, "b", model="echo")
    assert r.status == 200
    assert r.header("x-ratelimit-limit-requests") == "2"  # the tighter one
    assert chat(gw.port, "c", model="echo").status == 429
    r = chat(gw.port, "d", model="gpt-test")
    assert r.status == 200, r
    assert r.header("x-ratelimit-limit-requests") == "100"
    assert r.header("x-ratelimit-remaining-requests") == "97"


def test_a_key_limit_set_by_auth_overrides_the_route_limit(gateway):
    fresh_window()
    swap = os.path.join(TEST_PLUGIN_DIR, "swap_v1.so")
    gw = gateway(extra=rl_config(
        {"requests_per_minute": 100},
        route_plugins=("auth", "rl"),
        plugins={"auth": {"path": swap, "config": {
            "attrs": ["ratelimit.rpm=1", "ratelimit.tpm=5000"]}}}))
    r = chat(gw.port, "a", model="echo")
    assert r.status == 200, r
    assert r.header("x-ratelimit-limit-requests") == "1"
    assert r.header("x-ratelimit-limit-tokens") == "5000"
    assert chat(gw.port, "b", model="echo").status == 429


def test_each_consumer_has_its_own_count(gateway):
    fresh_window()
    good = os.path.join(TEST_PLUGIN_DIR, "testgood.so")
    gw = gateway(extra=rl_config(
        {"requests_per_minute": 1}, route_plugins=("who", "rl"),
        plugins={"who": {"path": good,
                         "config": {"consumer_header": "x-who"}}}))
    for who in ("alice", "bob"):
        r = chat(gw.port, "hi", model="echo", headers={"x-who": who})
        assert r.status == 200, (who, r)
    r = chat(gw.port, "hi", model="echo", headers={"x-who": "alice"})
    assert r.status == 429
    # No consumer: the client's address is counted instead.
    assert chat(gw.port, "hi", model="echo").status == 200
    assert chat(gw.port, "hi", model="echo").status == 429


def test_a_restart_keeps_the_count_within_the_window(gateway):
    fresh_window(need_s=8)
    extra = rl_config({"requests_per_minute": 3})
    gw = gateway(extra=extra)
    assert chat(gw.port, "one", model="echo").status == 200
    assert chat(gw.port, "two", model="echo").status == 200
    assert gw.terminate() == 0
    gw2 = gateway(extra=extra)
    r = chat(gw2.port, "three", model="echo")
    assert r.status == 200, r
    assert r.header("x-ratelimit-remaining-requests") == "0"
    assert chat(gw2.port, "four", model="echo").status == 429


def test_a_reload_keeps_the_count_of_requests_in_flight(gateway):
    fresh_window(need_s=8)
    gw = gateway(extra=rl_config({"requests_per_minute": 3}))
    streams = []
    for _ in range(2):
        c = Conn(gw.port)
        c.request("POST", CHAT, chat_body("a b c d [mock:gap_ms=150]",
                                          model="gpt-test", stream=True))
        assert c.read_head()[1] == 200
        streams.append(c)
    time.sleep(0.2)  # the store's writer commits the admissions
    # Any reload makes new plugin instances; they read the store.
    cfg = json.loads(gw.cfg_path.read_text())
    cfg["plugins"]["rl"]["config"]["default_max_tokens"] = 10
    gw.cfg_path.write_text(json.dumps(cfg))
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded" in gw.stderr(), timeout=5)
    r = chat(gw.port, "third", model="echo")
    assert r.status == 200, r
    assert r.header("x-ratelimit-remaining-requests") == "0"
    assert chat(gw.port, "fourth", model="echo").status == 429
    for c in streams:
        assert [d for _, d in c.events()][-1] == "[DONE]"
        c.close()


def test_without_persist_a_restart_starts_over(gateway):
    fresh_window(need_s=8)
    extra = rl_config({"requests_per_minute": 2, "persist": False})
    gw = gateway(extra=extra)
    assert chat(gw.port, "one", model="echo").status == 200
    assert chat(gw.port, "two", model="echo").status == 200
    assert chat(gw.port, "three", model="echo").status == 429
    assert gw.terminate() == 0
    gw2 = gateway(extra=extra)
    assert chat(gw2.port, "again", model="echo").status == 200


def test_a_bad_models_entry_is_a_load_error(tmp_path):
    import subprocess
    from conftest import base_config, free_port
    cfg = base_config(free_port(), "http://127.0.0.1:9", tmp_path)
    cfg.update(rl_config({"models": ["echo rpm=lots"]}))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "$.plugins.rl" in p.stderr and "MODEL rpm=N tpm=N" in p.stderr, \
        p.stderr


def crash(gw):
    """SIGKILL: nothing runs at exit. The fixture's clean-exit check does
    not apply to a gateway killed on purpose."""
    gw.proc.kill()
    gw.proc.wait()
    gw.terminate = lambda timeout=10: 0


def test_a_clean_stop_writes_back_what_the_interval_held(gateway):
    fresh_window(need_s=8)
    extra = rl_config({"requests_per_minute": 1000,
                       "persist_interval_ms": 60000})
    gw = gateway(extra=extra)
    for i in range(5):
        assert chat(gw.port, "n %d" % i, model="echo").status == 200
    assert gw.terminate() == 0
    gw2 = gateway(extra=extra)
    r = chat(gw2.port, "after", model="echo")
    assert r.status == 200, r
    assert r.header("x-ratelimit-remaining-requests") == "994"


def test_a_crash_loses_only_what_the_interval_had_not_written(gateway):
    fresh_window(need_s=10)
    # Nothing is written before the first interval ends...
    extra = rl_config({"requests_per_minute": 1000,
                       "persist_interval_ms": 60000})
    gw = gateway(extra=extra)
    for i in range(5):
        assert chat(gw.port, "n %d" % i, model="echo").status == 200
    crash(gw)
    gw2 = gateway(extra=extra)
    r = chat(gw2.port, "after", model="echo")
    assert r.header("x-ratelimit-remaining-requests") == "999", r
    crash(gw2)
    # ...and everything counted before the last interval is.
    extra = rl_config({"requests_per_minute": 1000,
                       "persist_interval_ms": 200})
    gw3 = gateway(extra=extra)
    for i in range(3):
        assert chat(gw3.port, "m %d" % i, model="echo").status == 200
    time.sleep(1.0)
    crash(gw3)
    gw4 = gateway(extra=extra)
    r = chat(gw4.port, "after", model="echo")
    assert r.header("x-ratelimit-remaining-requests") == "996", r  # 3 + 1
