"""The admin API and hot reload: config view, reload by API and SIGHUP,
refusals that keep the running config, and reloads under load with no
failed or truncated request."""
import json
import signal
import threading
import time

from conftest import free_port
from helpers import Conn, chat, chat_body, http, sse_data, stream_text

TOKEN = "adm-secret-token-1234"
TOKEN_ENV = "SLUICE_IT_ADMIN_TOKEN"


def admin_gateway(gateway, **kw):
    port = free_port()
    extra = kw.pop("extra", {})
    extra["admin"] = {"addr": "127.0.0.1:%d" % port, "token_env": TOKEN_ENV}
    gw = gateway(extra=extra, env={TOKEN_ENV: TOKEN}, **kw)
    gw.admin_port = port
    return gw


def admin(gw, method, path, token=TOKEN, body=None):
    headers = {"Authorization": "Bearer " + token} if token else {}
    return http(gw.admin_port, method, path, body, headers)


def rewrite(gw, change):
    cfg = json.loads(gw.cfg_path.read_text())
    change(cfg)
    gw.cfg_path.write_text(json.dumps(cfg))


def test_admin_is_off_without_a_token(gw):
    assert "admin API off" in gw.stderr()
    assert "admin API on" not in gw.stderr()
    r = http(gw.port, "GET", "/admin/config")
    assert r.status == 404, r  # not served on the main listener


def test_admin_wants_the_bearer_token(gateway):
    gw = admin_gateway(gateway)
    assert admin(gw, "GET", "/admin/config", token=None).status == 401
    r = admin(gw, "GET", "/admin/config", token="wrong")
    assert r.status == 401
    assert r.json()["error"]["code"] == "invalid_admin_token"
    r = admin(gw, "GET", "/admin/config")
    assert r.status == 200, r
    cfg = r.json()
    assert cfg["models"]["gpt-test"]["targets"][0]["model"] == "mock-model"
    assert cfg["providers"]["upstream"]["api_key_env"]  # a name, shown
    assert TOKEN not in r.body.decode()
    assert admin(gw, "GET", "/admin/nope").status == 404
    assert admin(gw, "GET", "/admin/reload").status == 405


def test_reload_by_api_switches_models(gateway):
    gw = admin_gateway(gateway)
    assert chat(gw.port, "x", model="renamed").status == 404
    rewrite(gw, lambda c: c["models"].update(
        {"renamed": c["models"]["gpt-test"]}))
    r = admin(gw, "POST", "/admin/reload")
    assert r.status == 200, r
    assert r.json()["status"] == "reloaded"
    assert r.json()["generation"] == 1
    r = chat(gw.port, "after reload", model="renamed")
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "after reload"
    ids = [m["id"] for m in http(gw.port, "GET", "/v1/models").json()["data"]]
    assert "renamed" in ids


def test_invalid_reload_is_refused_and_the_running_config_stays(gateway):
    gw = admin_gateway(gateway)
    rewrite(gw, lambda c: c["models"]["gpt-test"]["targets"][0].update(
        {"provider": "nope"}))
    r = admin(gw, "POST", "/admin/reload")
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "invalid_config"
    assert {"path": "$.models.gpt-test.targets[0].provider",
            "message": 'unknown provider "nope"'} in err["details"], err
    assert chat(gw.port, "still served").status == 200
    gw.cfg_path.write_text("{not json")
    assert admin(gw, "POST", "/admin/reload").status == 400
    assert chat(gw.port, "still served").status == 200


def test_restart_only_changes_are_refused(gateway):
    gw = admin_gateway(gateway)
    rewrite(gw, lambda c: c.update({"workers": c["workers"] + 1}))
    r = admin(gw, "POST", "/admin/reload")
    assert r.status == 400, r
    assert r.json()["error"]["details"][0]["path"] == "$.workers"


def test_sighup_reloads_and_a_bad_file_is_logged_not_applied(gateway):
    gw = gateway()
    rewrite(gw, lambda c: c["models"].update(
        {"hup": c["models"]["gpt-test"]}))
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while chat(gw.port, "x", model="hup").status != 200:
        assert time.monotonic() < deadline, gw.stderr()
        time.sleep(0.05)
    gw.cfg_path.write_text("{")
    gw.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reload on SIGHUP rejected" not in gw.stderr():
        assert time.monotonic() < deadline, gw.stderr()
        time.sleep(0.05)
    assert chat(gw.port, "x", model="hup").status == 200


def test_stream_in_flight_finishes_on_its_old_config(gateway):
    gw = admin_gateway(gateway)
    c = Conn(gw.port, timeout=10)
    c.request("POST", "/v1/chat/completions",
              chat_body("a b c d e f [mock:gap_ms=100]", stream=True))
    c.read_head()
    # The model the stream uses disappears from the new config.
    rewrite(gw, lambda cfg: cfg["models"].pop("gpt-test"))
    assert admin(gw, "POST", "/admin/reload").status == 200
    events = [d for _, d in c.events()]
    c.close()
    assert events[-1] == "[DONE]"
    assert stream_text(events) == "a b c d e f"
    assert chat(gw.port, "x").status == 404  # new requests: new config


def test_fifty_reloads_under_load_fail_no_request(gateway):
    gw = admin_gateway(gateway)
    stop = threading.Event()
    failures, done = [], [0]

    def traffic(stream):
        i = 0
        while not stop.is_set():
            i += 1
            text = "load %d ok" % i
            try:
                r = chat(gw.port, text + (" [mock:gap_ms=5]" if stream
                                          else ""), stream=stream)
                if r.status != 200:
                    failures.append((r.status, r.body[:200]))
                elif stream:
                    ev = sse_data(r.body)
                    if ev[-1] != "[DONE]" or stream_text(ev) != text:
                        failures.append(("truncated", ev[-3:]))
                elif r.json()["choices"][0]["message"]["content"] != text:
                    failures.append(("wrong", r.body[:200]))
                done[0] += 1
            except Exception as e:  # a reset or a timeout is a failure
                failures.append(("exception", repr(e)))

    threads = [threading.Thread(target=traffic, args=(s,))
               for s in (False, False, True, True)]
    for t in threads:
        t.start()
    try:
        for i in range(50):
            if i % 10 == 9:
                good = gw.cfg_path.read_text()
                gw.cfg_path.write_text("{broken")
                assert admin(gw, "POST", "/admin/reload").status == 400
                gw.cfg_path.write_text(good)
            else:
                rewrite(gw, lambda c, i=i: c["limits"].update(
                    {"idle_timeout_ms": 10000 + i}))
                r = admin(gw, "POST", "/admin/reload")
                assert r.status == 200, r
            time.sleep(0.02)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
    assert not failures, failures[:5]
    assert done[0] > 50


def test_admin_providers_shows_targets_and_breakers(gateway):
    gw = admin_gateway(gateway, models={"b": {
        "targets": [{"provider": "upstream", "model": "primary"}],
        "fallback": [{"provider": "upstream", "model": "backup"}],
        "breaker": {"failures": 1, "window_ms": 10000, "open_ms": 60000}}})
    r = chat(gw.port, "x [mock:fail_times=adminprov:1:500]", model="b")
    assert r.status == 200
    r = admin(gw, "GET", "/admin/providers")
    assert r.status == 200, r
    rows = {(t["model"], t["target_model"]): t for t in r.json()["targets"]}
    primary = rows[("b", "primary")]
    assert primary["breaker"] == "open"
    assert primary["errors"] == 1 and primary["requests"] == 1
    assert rows[("b", "backup")]["breaker"] == "closed"
    names = [p["name"] for p in r.json()["providers"]]
    assert "upstream" in names and "mock" in names
