"""C plugins in the running gateway: early answers, prompt, answer and
stream rewrites, fail closed / fail open, route order, on_log, load errors,
and the out-of-tree example plugin built against a staged install.

The test plugins are the build's tests/plugins/*.so (sources in
tests/plugins/): `testgood` does what its config asks, the others are
broken on purpose."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import SLUICE_BIN, SRC_DIR, base_config, free_port
from helpers import Conn, chat, chat_body, http, sse_data, stream_text, \
    wait_for

BUILD_DIR = os.path.dirname(os.path.dirname(SLUICE_BIN))
PLUGIN_DIR = os.path.join(BUILD_DIR, "tests", "plugins")
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module", autouse=True)
def test_plugins_built_and_loaded(tmp_path_factory):
    path = os.path.join(PLUGIN_DIR, "testgood.so")
    assert os.path.exists(path), (
        "no test plugins in %s: build them with `make` in the build "
        "directory" % PLUGIN_DIR)
    # Every test here fails the same way when the binary never loads
    # plugins: say so once, plainly.
    cfg = write_config(tmp_path_factory.mktemp("probe"),
                       {"x": {"path": "badmajor.so"}}, ["x"])
    p = run_sluice("check", "-c", str(cfg))
    assert p.returncode == 1, (
        "this sluice binary does not load plugins (`sluice check` accepted "
        "a plugin built for another ABI): the server and `check` must call "
        "sl_plugins_load() when they build a config snapshot")


def plugin_config(plugins, route_plugins, plugin_dir=PLUGIN_DIR):
    """The config overrides for a chat route running route_plugins."""
    return {
        "plugin_dir": plugin_dir,
        "plugins": plugins,
        "routes": [
            {"path": CHAT, "plugins": route_plugins},
            {"path": "/v1/embeddings", "plugins": route_plugins},
            {"path": "/v1/models"},
            {"path": "/healthz"},
        ],
    }


def good(**config):
    entry = {"path": "testgood.so", "config": config}
    return entry


def chat_requests(mock):
    return [r for r in mock.requests() if r["path"] == CHAT]


def test_plugin_answers_early_and_the_upstream_is_never_called(gateway,
                                                                mock):
    gw = gateway(extra=plugin_config(
        {"auth": good(deny_header="x-deny")}, ["auth"]))
    before = len(chat_requests(mock))
    r = chat(gw.port, "let me in", headers={"x-deny": "1"})
    assert r.status == 403, r
    assert r.json()["error"]["code"] == "denied"
    assert r.header("x-tgood") == "auth"  # headers set before RESPOND stay
    assert r.header("content-type") == "application/json"
    assert len(chat_requests(mock)) == before
    r = chat(gw.port, "let me in")
    assert r.status == 200, r
    assert r.header("x-tgood") == "auth"
    assert len(chat_requests(mock)) == before + 1


def test_plugin_rewrites_the_prompt_the_upstream_receives(gateway, mock):
    gw = gateway(extra=plugin_config(
        {"guard": good(prompt_prefix="[checked] ")}, ["guard"]))
    body = chat_body("what is the time")
    body["messages"].insert(0, {"role": "system", "content": "be brief"})
    r = http(gw.port, "POST", CHAT, body)
    assert r.status == 200, r
    sent = json.loads(mock.last_request()["body"])
    assert sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["messages"][-1]["content"] == "[checked] what is the time"
    # The mock echoes what it got: the client sees the rewritten prompt.
    answer = r.json()["choices"][0]["message"]["content"]
    assert "[checked] what is the time" in answer


def test_plugins_run_in_route_order_in_and_reverse_order_out(gateway, mock):
    gw = gateway(extra=plugin_config(
        {"first": good(prompt_prefix="A ", response_suffix=" [first]"),
         "second": good(prompt_prefix="B ", response_suffix=" [second]")},
        ["first", "second"]))
    r = chat(gw.port, "hello")
    assert r.status == 200, r
    sent = json.loads(mock.last_request()["body"])
    assert sent["messages"][-1]["content"] == "B A hello"
    text = r.json()["choices"][0]["message"]["content"]
    assert text.endswith(" [second] [first]"), text


def test_plugin_rewrites_stream_deltas(gateway):
    gw = gateway(extra=plugin_config({"up": good(delta_upper=True)}, ["up"]))
    text = "the quick brown fox jumps over the lazy dog"
    r = chat(gw.port, text, stream=True)
    assert r.status == 200, r
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    assert stream_text(events) == text.upper()
    deltas = [json.loads(e) for e in events[:-1]]
    assert len(deltas) > 3  # still event by event, not one rewritten blob


def test_error_fails_closed_with_a_500_naming_the_plugin(gateway, mock):
    gw = gateway(extra=plugin_config(
        {"strict": good(fail_in="request")}, ["strict"]))
    before = len(chat_requests(mock))
    r = chat(gw.port, "hello")
    assert r.status == 500, r
    err = r.json()["error"]
    assert err["code"] == "plugin_error"
    assert "strict" in err["message"]
    assert len(chat_requests(mock)) == before
    assert "plugin strict: on_request returned ERROR (failing closed)" in \
        gw.stderr()


def test_error_fails_open_when_the_instance_says_so(gateway, mock):
    entry = good(fail_in="request")
    entry["fail_open"] = True
    gw = gateway(extra=plugin_config({"lenient": entry}, ["lenient"]))
    r = chat(gw.port, "hello")
    assert r.status == 200, r
    assert "hello" in r.json()["choices"][0]["message"]["content"]


def test_response_error_replaces_the_answer(gateway):
    gw = gateway(extra=plugin_config({"rf": good(fail_in="response")},
                                     ["rf"]))
    r = chat(gw.port, "hello")
    assert r.status == 500, r
    assert r.json()["error"]["code"] == "plugin_error"


def test_chunk_error_ends_the_stream_with_an_error_event(gateway):
    gw = gateway(extra=plugin_config({"cf": good(fail_in="chunk")}, ["cf"]))
    r = chat(gw.port, "one two three four", stream=True)
    assert r.status == 200, r
    events = sse_data(r.body)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "plugin_error"
    assert "cf" in last["error"]["message"]


def test_on_log_runs_for_every_request_even_after_respond(gateway):
    gw = gateway(extra=plugin_config(
        {"den": good(deny_header="x-deny", consumer_header="x-user")},
        ["den"]))
    r = chat(gw.port, "hi", headers={"x-deny": "1", "x-user": "mallory"})
    assert r.status == 403, r
    r = chat(gw.port, "hi", stream=True)
    assert r.status == 200, r
    assert wait_for(lambda: "on_log status=200" in gw.stderr(), timeout=5)
    err = gw.stderr()
    assert ("plugin den: info: on_log status=403 consumer=mallory "
            "path=/v1/chat/completions") in err
    # The stream's on_chunk count reached on_log through request state.
    line = [l for l in err.splitlines() if "on_log status=200" in l][0]
    assert "chunks=0" not in line
    assert "misuse=-3" in line  # respond() in on_log: SLUICE_EPHASE


def test_consumer_set_on_the_way_in_is_seen_on_the_way_out(gateway):
    gw = gateway(extra=plugin_config(
        {"auth": good(consumer_header="x-user")}, ["auth"]))
    r = chat(gw.port, "hi", headers={"x-user": "alice"})
    assert r.status == 200, r
    assert r.header("x-tgood-consumer") == "alice"


def test_plugins_run_on_embeddings_routes(gateway):
    gw = gateway(extra=plugin_config(
        {"auth": good(deny_header="x-deny")}, ["auth"]))
    r = http(gw.port, "POST", "/v1/embeddings",
             {"model": "gpt-test", "input": "x"}, {"x-deny": "1"})
    assert r.status == 403, r


def test_plugin_kv_counts_across_requests(gateway):
    gw = gateway(extra=plugin_config({"kvc": good(kv_count=True)}, ["kvc"]))
    counts = []
    for _ in range(3):
        r = chat(gw.port, "count me")
        assert r.status == 200, r
        counts.append(r.header("x-tgood-count"))
        time.sleep(0.1)  # writes are queued: let the writer commit
    assert counts == ["1", "2", "3"], counts


# ---- reload -------------------------------------------------------------


def reload_and_wait(gw, done):
    """SIGHUP, then waits until done() holds."""
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(done, timeout=5), gw.stderr()[-3000:]


def test_reload_applies_a_new_plugin_config_and_rejects_a_bad_one(gateway):
    gw = gateway(extra=plugin_config({"p": good(header="x-one")}, ["p"]))
    assert chat(gw.port, "hi").header("x-one") == "p"
    cfg = json.loads(gw.cfg_path.read_text())
    cfg["plugins"]["p"]["config"]["header"] = "x-two"
    gw.cfg_path.write_text(json.dumps(cfg))
    reload_and_wait(gw, lambda: chat(gw.port, "hi").header("x-two") == "p")
    # A config the plugin's schema refuses keeps the running one.
    cfg["plugins"]["p"]["config"] = {"header": 5}
    gw.cfg_path.write_text(json.dumps(cfg))
    reload_and_wait(gw, lambda: "reload on SIGHUP rejected" in gw.stderr())
    assert "$.plugins.p.config.header: must be a string" in gw.stderr()
    assert chat(gw.port, "hi").header("x-two") == "p"


def test_stream_in_flight_keeps_its_plugins_across_a_reload(gateway):
    gw = gateway(extra=plugin_config({"up": good(delta_upper=True)}, ["up"]))
    c = Conn(gw.port, timeout=10)
    c.request("POST", CHAT, chat_body("a b c d e f [mock:gap_ms=100]",
                                      stream=True))
    c.read_head()
    cfg = json.loads(gw.cfg_path.read_text())
    cfg["routes"][0]["plugins"] = []
    gw.cfg_path.write_text(json.dumps(cfg))
    gw.proc.send_signal(signal.SIGHUP)
    data = [d for _, d in c.events()]
    c.close()
    assert data[-1] == "[DONE]", data
    text = stream_text(data)
    assert text == text.upper() and text.startswith("A B C D E F"), text
    assert wait_for(lambda: "reloaded" in gw.stderr(), timeout=5)
    r = chat(gw.port, "lower case", stream=True)
    assert stream_text(sse_data(r.body)) == "lower case"


# ---- load errors ------------------------------------------------------


def write_config(tmp_path, plugins, route_plugins):
    cfg = base_config(free_port(), "http://127.0.0.1:9", tmp_path)
    cfg.update(plugin_config(plugins, route_plugins))
    path = tmp_path / "plugins.json"
    path.write_text(json.dumps(cfg))
    return path


def run_sluice(*args, timeout=20):
    return subprocess.run([SLUICE_BIN] + list(args), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("plugins,want", [
    ({"x": {"path": "badmajor.so"}},
     ["$.plugins.x.path:", "plugin ABI 2.3", "ABI 1.1"]),
    ({"x": {"path": "nosymbol.so"}},
     ["$.plugins.x.path:", "no 'sluice_plugin' symbol"]),
    ({"x": {"path": "createfail.so", "config": {"reason": "no licence"}}},
     ["$.plugins.x:", "failed to start", "no licence"]),
    ({"x": {"path": "testgood.so", "config": {"limit": "ten", "nope": 1}}},
     ["$.plugins.x.config.limit: must be an integer",
      "$.plugins.x.config.nope: unknown key"]),
    ({"x": {"path": "missing.so"}}, ["$.plugins.x.path: cannot open"]),
])
def test_check_and_run_refuse_a_plugin_that_cannot_load(tmp_path, plugins,
                                                         want):
    path = write_config(tmp_path, plugins, ["x"])
    p = run_sluice("check", "-c", str(path))
    assert p.returncode == 1, (p.stdout, p.stderr)
    for w in want:
        assert w in p.stderr, p.stderr
    p = run_sluice("-c", str(path))
    assert p.returncode == 1, (p.stdout, p.stderr)
    for w in want:
        assert w in p.stderr, p.stderr


def test_check_accepts_good_plugins(tmp_path):
    path = write_config(tmp_path, {"x": good(limit=3)}, ["x"])
    p = run_sluice("check", "-c", str(path))
    assert p.returncode == 0, p.stderr
    assert "ok" in p.stdout


# ---- the out-of-tree example ---------------------------------------------


def test_example_plugin_builds_against_a_staged_install_and_runs(
        gateway, tmp_path):
    if not os.path.exists(os.path.join(BUILD_DIR, "Makefile")):
        pytest.fail("no build directory at %s" % BUILD_DIR)
    stage = tmp_path / "stage"
    p = subprocess.run(["make", "-C", BUILD_DIR, "install",
                        "DESTDIR=%s" % stage], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    pcs = list(stage.rglob("sluice-plugin.pc"))
    headers = list(stage.rglob("sluice/plugin.h"))
    assert len(pcs) == 1 and len(headers) == 1, (pcs, headers)

    src = tmp_path / "example"
    shutil.copytree(os.path.join(SRC_DIR, "examples", "plugins"), src)
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = str(pcs[0].parent)
    env["PKG_CONFIG_SYSROOT_DIR"] = str(stage)
    env.pop("PKG_CONFIG_LIBDIR", None)
    p = subprocess.run(["make", "-C", str(src)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    cflags = subprocess.run(["pkg-config", "--cflags", "sluice-plugin"],
                            capture_output=True, text=True, env=env).stdout
    assert cflags.split() == ["-I%s" % headers[0].parent.parent], cflags
    so = src / "example.so"
    assert so.exists()

    gw = gateway(extra=plugin_config(
        {"counter": {"path": str(so), "config": {"header": "x-example-count"}}},
        ["counter"]))
    counts = []
    for _ in range(3):
        r = chat(gw.port, "count me")
        assert r.status == 200, r
        counts.append(r.header("x-example-count"))
        time.sleep(0.1)
    assert counts == ["1", "2", "3"], counts
    assert "no store" not in gw.stderr()  # counted in kv, not in memory
