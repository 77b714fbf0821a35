"""The access log: one JSON object per request, with the spec's fields."""
import json
import time

from helpers import Conn, chat_body, wait_for

CHAT = "/v1/chat/completions"
FIELDS = {"time", "method", "path", "route", "model", "provider",
          "target_model", "status", "stream", "latency_ms", "upstream_ms",
          "prompt_tokens", "completion_tokens", "bytes_in", "bytes_out",
          "error"}


def find(gw, pred, timeout=3.0):
    """The first access log line matching pred, waiting for the flush."""
    def look():
        return [l for l in gw.access_log() if pred(l)]
    lines = wait_for(look, timeout=timeout)
    assert lines, "no matching line in %r" % gw.access_log()
    return lines[0]


def send(gw, body, path=CHAT):
    with Conn(gw.port) as c:
        c.request("POST", path, body)
        r = c.read_response()
        return r, c.sent, c.received


def test_access_log_chat_line_has_every_field(gw):
    body = chat_body("count these four words [mock:delay_ms=200]")
    r, sent, received = send(gw, body)
    assert r.status == 200, r
    line = find(gw, lambda l: l.get("path") == CHAT)
    assert set(line) >= FIELDS, FIELDS - set(line)
    assert line["method"] == "POST"
    assert line["status"] == 200
    assert line["stream"] is False
    assert line["provider"] == "upstream"
    assert line["target_model"] == "mock-model"
    # The mock counts the directive as a prompt word, and strips it from
    # the reply.
    assert line["prompt_tokens"] == 5
    assert line["completion_tokens"] == 4
    assert line["error"] in (None, "")
    assert line["route"]
    assert isinstance(line["time"], str) and line["time"][:2] == "20"
    # Timing: the upstream took at least the mock's delay, and the whole
    # request at least as long as its upstream part.
    assert line["upstream_ms"] >= 190, line
    assert line["latency_ms"] >= line["upstream_ms"], line
    assert line["latency_ms"] < 5000, line
    # Bytes on the wire, head included.
    assert line["bytes_in"] == sent, (line, sent)
    assert line["bytes_out"] == received, (line, received)


# Regression: the logged model once pointed into the request JSON, freed
# when the provider adapter rewrote "model"; the log printed freed memory.
def test_access_log_model_is_the_alias_the_client_asked_for(gw):
    r, _, _ = send(gw, chat_body("which model"))
    assert r.status == 200, r
    r, _, _ = send(gw, chat_body("which model", stream=True))
    assert r.status == 200, r
    # Two workers flush their own buffers: wait for both lines.
    def both():
        lines = [l for l in gw.access_log() if l.get("path") == CHAT]
        return lines if len(lines) >= 2 else None
    lines = wait_for(both, timeout=5)
    assert lines is not None, gw.access_log()
    assert [l["model"] for l in lines] == ["gpt-test", "gpt-test"], lines


def test_access_log_stream_has_tokens_from_upstream_usage(gw):
    # The client did not ask for usage; the gateway did, and logs it.
    r, _, _ = send(gw, chat_body("five words in this stream", stream=True))
    assert r.status == 200, r
    line = find(gw, lambda l: l.get("path") == CHAT)
    assert line["stream"] is True
    assert line["status"] == 200
    assert line["prompt_tokens"] == 5
    assert line["completion_tokens"] == 5
    assert line["error"] in (None, "")


def test_access_log_builtin_mock_has_tokens(gw):
    r, _, _ = send(gw, chat_body("one two three", model="echo", stream=True))
    assert r.status == 200, r
    line = find(gw, lambda l: l.get("path") == CHAT)
    assert line["provider"] == "mock"
    assert line["target_model"] == "echo"
    assert line["model"] == "echo"
    assert (line["prompt_tokens"], line["completion_tokens"]) == (3, 3)


def test_access_log_error_line_names_the_error(gw):
    r, _, _ = send(gw, chat_body("x", model="no-such-model"))
    assert r.status == 404
    line = find(gw, lambda l: l.get("status") == 404)
    assert line["error"] == "model_not_found"
    assert line["model"] == "no-such-model"
    assert line["provider"] is None


def test_access_log_upstream_failure_line(gw):
    r, _, _ = send(gw, chat_body("x [mock:garbage]"))
    assert r.status == 502
    line = find(gw, lambda l: l.get("status") == 502)
    assert line["error"] == "upstream_bad_response"
    assert line["provider"] == "upstream"


def test_access_log_is_flushed_while_running(gw):
    # No exit needed: lines appear within the 200 ms flush interval.
    t0 = time.monotonic()
    with Conn(gw.port) as c:
        c.request("GET", "/healthz")
        assert c.read_response().status == 200
    line = find(gw, lambda l: l.get("path") == "/healthz", timeout=2.0)
    assert line["method"] == "GET" and line["status"] == 200
    assert time.monotonic() - t0 < 2.0


def test_access_log_to_stderr_is_json_lines(gateway):
    gw = gateway(extra={"access_log": "stderr"})
    r, _, _ = send(gw, chat_body("to stderr", model="echo"))
    assert r.status == 200

    def lines():
        out = []
        for l in gw.stderr().splitlines():
            if l.startswith("{"):
                out.append(json.loads(l))
        return [l for l in out if l.get("path") == CHAT]
    got = wait_for(lines, timeout=2.0)
    assert got and got[0]["status"] == 200, gw.stderr()


def test_access_log_off_writes_nothing(gateway, tmp_path):
    gw = gateway(extra={"access_log": "off"})
    r, _, _ = send(gw, chat_body("quiet", model="echo"))
    assert r.status == 200
    time.sleep(0.4)
    assert not any(l.startswith("{") for l in gw.stderr().splitlines())
    assert not (tmp_path / "access.log").exists()
