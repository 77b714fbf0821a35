"""Plugins under the admin API and hot reload: GET /admin/plugins, PUT
/admin/plugins/NAME (a config-only change that keeps the library), its
refusals, and the proof: steady traffic, streams and not, through 50+
valid plugin reloads by PUT and POST /admin/reload, some invalid, with a plugin
binary swapped in the middle — zero failed or truncated requests; what
was in flight finishes on the old code, what comes after runs the new.

The swap plugin is tests/plugins/swap.c built twice: v1 lower-cases
stream deltas, v2 upper-cases them, and each says "x-swap: vN"."""
import json
import os
import shutil
import threading
import time

import pytest

from conftest import SLUICE_BIN, free_port
from helpers import Conn, chat, chat_body, http, sse_data, stream_text, \
    wait_for

BUILD_DIR = os.path.dirname(os.path.dirname(SLUICE_BIN))
TEST_PLUGIN_DIR = os.path.join(BUILD_DIR, "tests", "plugins")
RATELIMIT = os.path.join(BUILD_DIR, "plugins", "ratelimit.so")
CHAT = "/v1/chat/completions"
TOKEN = "adm-plugin-token-5678"
TOKEN_ENV = "SLUICE_IT_ADMIN_TOKEN"


@pytest.fixture
def plugin_dir(tmp_path):
    d = tmp_path / "plugins"
    d.mkdir()
    for v in ("swap_v1.so", "swap_v2.so"):
        src = os.path.join(TEST_PLUGIN_DIR, v)
        assert os.path.exists(src), "no %s: run `make`" % src
        shutil.copy(src, d / v)
    shutil.copy(RATELIMIT, d / "ratelimit.so")
    return d


def start(gateway, plugin_dir, swap_config=None):
    port = free_port()
    extra = {
        "admin": {"addr": "127.0.0.1:%d" % port, "token_env": TOKEN_ENV},
        "plugin_dir": str(plugin_dir),
        "plugins": {
            "swap": {"path": "swap_v1.so",
                     "config": swap_config or {"tag": "t0",
                                               "api_key": "sk-very-secret"}},
            "rl": {"path": "ratelimit.so",
                   "config": {"requests_per_minute": 1000000,
                              "tokens_per_minute": 1000000000}},
        },
        "routes": [{"path": CHAT, "plugins": ["swap", "rl"]},
                   {"path": "/healthz"}],
    }
    gw = gateway(extra=extra, env={TOKEN_ENV: TOKEN})
    gw.admin_port = port
    return gw


def admin(gw, method, path, body=None):
    return http(gw.admin_port, method, path, body,
                {"Authorization": "Bearer " + TOKEN})


def rewrite(gw, change):
    cfg = json.loads(gw.cfg_path.read_text())
    change(cfg)
    gw.cfg_path.write_text(json.dumps(cfg))


def mapped(gw, name):
    """Lines of the gateway's memory map that name file `name`."""
    with open("/proc/%d/maps" % gw.proc.pid) as f:
        return [l for l in f if name in l]


def test_admin_lists_instances_with_redacted_configs_and_routes(
        gateway, plugin_dir):
    gw = start(gateway, plugin_dir)
    r = admin(gw, "GET", "/admin/plugins")
    assert r.status == 200, r
    ps = {p["name"]: p for p in r.json()["plugins"]}
    swap = ps["swap"]
    assert swap["plugin"] == "swap" and swap["version"] == "1.0.0"
    assert swap["abi"] == "1.1"
    assert swap["path"] == str(plugin_dir / "swap_v1.so")
    assert swap["config"]["tag"] == "t0"
    assert swap["config"]["attrs"] == []  # defaults filled in
    assert swap["config"]["api_key"] == "[redacted]"
    assert "sk-very-secret" not in r.body.decode()
    assert swap["routes"] == [CHAT]
    assert swap["hooks"] == ["on_request", "on_chunk"]
    assert ps["rl"]["plugin"] == "ratelimit"
    assert ps["rl"]["config"]["requests_per_minute"] == 1000000
    assert http(gw.admin_port, "GET", "/admin/plugins").status == 401
    assert admin(gw, "POST", "/admin/plugins").status == 405
    assert admin(gw, "GET", "/admin/plugins/swap").status == 405


def test_put_applies_a_config_at_once_and_keeps_the_library(gateway,
                                                            plugin_dir):
    gw = start(gateway, plugin_dir)
    assert chat(gw.port, "x", model="echo").header("x-swap-tag") == "t0"
    before = mapped(gw, "swap_v1.so")
    assert before
    r = admin(gw, "PUT", "/admin/plugins/swap", {"config": {"tag": "t1"}})
    assert r.status == 200, r
    assert r.json()["status"] == "applied"
    assert r.json()["plugin"]["config"]["tag"] == "t1"
    gen = r.json()["generation"]
    r = chat(gw.port, "x", model="echo")
    assert r.header("x-swap-tag") == "t1" and r.header("x-swap") == "v1"
    # The same library, mapped once, never a private copy of a new file.
    assert mapped(gw, "swap_v1.so") == before
    assert not mapped(gw, ".sluice-plugin-")
    r = admin(gw, "GET", "/admin/plugins")
    assert r.json()["generation"] == gen
    # The file's config is not touched: a reload from it brings t0 back.
    assert admin(gw, "POST", "/admin/reload").status == 200
    assert chat(gw.port, "x", model="echo").header("x-swap-tag") == "t0"


def test_put_refuses_a_bad_config_with_its_path_and_keeps_running(
        gateway, plugin_dir):
    gw = start(gateway, plugin_dir)
    r = admin(gw, "PUT", "/admin/plugins/swap", {"config": {"tag": 5}})
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "invalid_config"
    assert {"path": "$.plugins.swap.config.tag",
            "message": "must be a string"} in err["details"], err
    r = admin(gw, "PUT", "/admin/plugins/swap", {"config": {"nope": 1}})
    assert r.status == 400
    assert r.json()["error"]["details"][0]["path"] == \
        "$.plugins.swap.config.nope"
    # The plugin's own create() refusing is a 400 naming the instance.
    r = admin(gw, "PUT", "/admin/plugins/rl",
              {"config": {"models": ["echo rpm=many"]}})
    assert r.status == 400, r
    assert r.json()["error"]["details"][0]["path"] == "$.plugins.rl"
    r = admin(gw, "PUT", "/admin/plugins/swap", {"tag": "no wrapper"})
    assert r.status == 400
    assert admin(gw, "PUT", "/admin/plugins/nope",
                 {"config": {}}).status == 404
    r = chat(gw.port, "still", model="echo")
    assert r.status == 200 and r.header("x-swap-tag") == "t0"


def test_plugin_reloads_and_a_binary_swap_under_load_fail_nothing(
        gateway, plugin_dir):
    gw = start(gateway, plugin_dir)
    stop = threading.Event()
    failures, served = [], {"v1": 0, "v2": 0}
    swapped = [None]  # monotonic time the v2 config was published
    lock = threading.Lock()

    def traffic(stream):
        i = 0
        while not stop.is_set():
            i += 1
            text = "Load %d Ok" % i
            t0 = time.monotonic()
            try:
                r = chat(gw.port, text + (" [mock:gap_ms=3]" if stream
                                          else ""), stream=stream)
                v = r.header("x-swap")
                if r.status != 200:
                    failures.append((r.status, r.body[:200]))
                    continue
                if v not in ("v1", "v2"):
                    failures.append(("no x-swap", r))
                if swapped[0] is not None and t0 > swapped[0] + 0.2 and \
                        v != "v2":
                    failures.append(("old code after the swap", v))
                if stream:
                    ev = sse_data(r.body)
                    got = stream_text(ev)
                    want = text.lower() if v == "v1" else text.upper()
                    if ev[-1] != "[DONE]" or got != want:
                        failures.append(("truncated or mixed", v, ev[-3:]))
                elif r.json()["choices"][0]["message"]["content"] != text:
                    failures.append(("wrong", r.body[:200]))
                with lock:
                    served[v] = served.get(v, 0) + 1
            except Exception as e:  # a reset or a timeout is a failure
                failures.append(("exception", repr(e)))

    threads = [threading.Thread(target=traffic, args=(s,))
               for s in (False, False, True, True)]
    for t in threads:
        t.start()
    long_stream = None
    reloads = 0
    try:
        for i in range(75):
            if i == 37:
                # A long stream in flight across the binary swap.
                long_stream = Conn(gw.port, timeout=20)
                long_stream.request("POST", CHAT, chat_body(
                    "Aa Bb Cc Dd Ee Ff Gg Hh Ii Jj [mock:gap_ms=80]",
                    stream=True))
                _, status, _, head = long_stream.read_head()
                assert status == 200 and head["x-swap"] == ["v1"]
                rewrite(gw, lambda c: c["plugins"]["swap"].update(
                    {"path": "swap_v2.so"}))
                r = admin(gw, "POST", "/admin/reload")
                assert r.status == 200, r
                swapped[0] = time.monotonic()
            elif i % 10 == 4:
                r = admin(gw, "PUT", "/admin/plugins/swap",
                          {"config": {"tag": 7}})
                assert r.status == 400, r
            elif i % 10 == 7:
                good = gw.cfg_path.read_text()
                gw.cfg_path.write_text("{broken")
                assert admin(gw, "POST", "/admin/reload").status == 400
                gw.cfg_path.write_text(good)
            elif i % 3 == 0:
                rewrite(gw, lambda c, i=i: c["plugins"]["swap"]["config"]
                        .update({"tag": "file%d" % i}))
                r = admin(gw, "POST", "/admin/reload")
                assert r.status == 200, r
                reloads += 1
            elif i % 3 == 1:
                r = admin(gw, "PUT", "/admin/plugins/rl", {"config": {
                    "requests_per_minute": 1000000 + i,
                    "tokens_per_minute": 1000000000}})
                assert r.status == 200, r
                reloads += 1
            else:
                r = admin(gw, "PUT", "/admin/plugins/swap",
                          {"config": {"tag": "put%d" % i}})
                assert r.status == 200, r
                assert chat(gw.port, "t", model="echo").header(
                    "x-swap-tag") == "put%d" % i
                reloads += 1
            time.sleep(0.02)
        # The stream that began on v1 ends on v1: every event, and [DONE].
        events = [d for _, d in long_stream.events()]
        assert long_stream.complete and events[-1] == "[DONE]", events[-3:]
        assert stream_text(events) == "aa bb cc dd ee ff gg hh ii jj"
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        if long_stream is not None:
            long_stream.close()
    assert reloads >= 50  # plus the swap and 15 refused ones
    assert not failures, failures[:5]
    assert served["v1"] > 10 and served["v2"] > 10, served
    r = chat(gw.port, "New One", stream=True)
    assert r.header("x-swap") == "v2"
    assert stream_text(sse_data(r.body)) == "NEW ONE"
    # Nothing uses v1 any more: its library goes.
    assert wait_for(lambda: not mapped(gw, "swap_v1.so"), timeout=5), \
        mapped(gw, "swap_v1.so")
