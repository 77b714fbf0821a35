"""Streaming: events forwarded as they arrive, usage handling, cuts and
client disconnects."""
import json
import threading
import time

from conftest import no_quarantine_env
from helpers import (Conn, chat, chat_body, sse_data, stream_text, wait_for)

CHAT = "/v1/chat/completions"


def open_stream(port, text, model="gpt-test", **extra):
    """Sends a stream request; returns (conn, response head)."""
    c = Conn(port)
    c.request("POST", CHAT, chat_body(text, model, True, **extra))
    version, status, reason, headers = c.read_head()
    assert status == 200, (status, headers, c.buf[:300])
    return c, headers


def test_stream_chunks_concatenate_to_the_text_and_end_with_done(gw):
    text = "the quick brown fox jumps over the lazy dog"
    r = chat(gw.port, text, stream=True)
    assert r.status == 200, r
    assert "chunked" in r.header("transfer-encoding", "")
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    assert events.count("[DONE]") == 1
    assert stream_text(events) == text
    for e in events[:-1]:
        assert json.loads(e)["object"] == "chat.completion.chunk"
        assert json.loads(e)["model"] == "mock-model"


def test_stream_response_headers_disable_caching_and_buffering(gw):
    r = chat(gw.port, "headers please", stream=True)
    assert r.status == 200, r
    assert r.header("content-type") == "text/event-stream; charset=utf-8"
    assert r.header("cache-control") == "no-cache"
    assert r.header("x-accel-buffering") == "no"
    assert r.header("x-sluice-provider") == "upstream"
    assert r.header("x-sluice-model") == "mock-model"
    float(r.header("x-sluice-overhead-ms"))


def test_stream_asks_upstream_for_usage(gw, mock):
    r = chat(gw.port, "usage upstream", stream=True)
    assert r.status == 200, r
    sent = json.loads(mock.last_request()["body"])
    assert sent["stream"] is True
    assert sent["stream_options"]["include_usage"] is True
    assert sent["model"] == "mock-model"


def test_stream_without_include_usage_gets_no_usage_chunk(gw):
    r = chat(gw.port, "no usage for me", stream=True)
    assert r.status == 200, r
    events = [json.loads(e) for e in sse_data(r.body) if e != "[DONE]"]
    assert events
    for e in events:
        assert e["choices"], "usage-only chunk forwarded: %r" % e
        assert not e.get("usage"), e


def test_stream_with_include_usage_gets_usage_chunk(gw):
    text = "usage for me please"
    r = chat(gw.port, text, stream=True,
             stream_options={"include_usage": True})
    assert r.status == 200, r
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    usage_chunks = [json.loads(e) for e in events[:-1]
                    if json.loads(e).get("usage")]
    assert len(usage_chunks) == 1
    u = usage_chunks[0]
    assert u["choices"] == []
    assert u["usage"] == {"prompt_tokens": 4, "completion_tokens": 4,
                          "total_tokens": 8}
    # It is the last event before [DONE].
    assert json.loads(events[-2]) == u
    assert stream_text(events) == text


def test_stream_events_arrive_spaced_not_buffered(gw):
    # Five words 150 ms apart: each event must leave the gateway when it
    # arrives. A buffering proxy delivers them in one burst at the end.
    c, _ = open_stream(gw.port, "a b c d e [mock:gap_ms=150]")
    with c:
        events = list(c.events())
        assert c.complete
    datas = [d for _, d in events]
    assert datas[-1] == "[DONE]"
    assert stream_text(datas) == "a b c d e"
    times = [t for t, _ in events]
    assert times[-1] - times[0] >= 0.5, times
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert sum(1 for g in gaps if g >= 0.1) >= 4, gaps


def test_stream_tool_calls_pass_through(gw):
    tools = [{"type": "function", "function": {"name": "lookup",
                                               "parameters": {}}}]
    r = chat(gw.port, "find it [mock:tool=lookup]", stream=True, tools=tools)
    assert r.status == 200, r
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    args = ""
    name = None
    for e in events[:-1]:
        for ch in json.loads(e)["choices"]:
            for tc in ch["delta"].get("tool_calls") or []:
                name = tc["function"].get("name") or name
                args += tc["function"].get("arguments") or ""
    assert name == "lookup"
    assert json.loads(args) == {"text": "find it"}


def test_stream_ends_with_error_event_when_upstream_dies(gw, mock):
    # The mock sends 3 events (role, "w1 ", "w2 ") then drops the
    # connection without the terminating chunk.
    c, _ = open_stream(gw.port, "[mock:words=10] [mock:close_after=3]")
    with c:
        events = [d for _, d in c.events()]
        assert "[DONE]" not in events, events
        assert len(events) == 4, events
        assert stream_text(events[:3]) == "w1 w2 "
        err = json.loads(events[-1])["error"]
        assert err["code"] == "upstream_stream_cut"
        assert err["type"] == "upstream_error"
        assert err["message"]
        # And then the connection closes.
        assert c.eof or c.is_closed(timeout=5)
    assert wait_for(lambda: mock.stats()["streams_cut"] >= 1)


def test_stream_cut_before_any_event_still_reports_error(gw):
    c = Conn(gw.port)
    with c:
        c.request("POST", CHAT, chat_body("[mock:close_after=0]",
                                          stream=True))
        r = c.read_response()
    # Nothing was forwarded yet, so a plain 502 is as good as an error
    # event; what must not happen is a 200 that ends like a success.
    if r.status == 200:
        events = sse_data(r.body)
        assert "[DONE]" not in events
        assert json.loads(events[-1])["error"]["code"] == \
            "upstream_stream_cut"
    else:
        assert r.status == 502, r
        assert r.error_code() == "upstream_error"


def test_client_disconnect_mid_stream_cancels_upstream(gw, mock):
    before = mock.stats()["streams_aborted"]
    c, _ = open_stream(gw.port, "[mock:words=200] [mock:gap_ms=50]")
    got = []
    for _, d in c.events():
        got.append(d)
        if len(got) >= 3:
            break
    c.close()
    assert wait_for(lambda: mock.stats()["streams_aborted"] > before,
                    timeout=2.0), mock.stats()
    # The gateway logs the cut: 200 was already sent, so the status stays
    # but the error says what happened.
    def logged():
        return [l for l in gw.access_log()
                if l.get("error") == "client_closed_mid_stream"]
    lines = wait_for(logged, timeout=3.0)
    assert lines, gw.access_log()
    assert lines[0]["stream"] is True


def test_client_disconnect_while_waiting_cancels_upstream_at_once(gw, mock):
    # The stats request itself is one open connection.
    base = mock.stats()["open_connections"]
    c = Conn(gw.port)
    c.request("POST", CHAT, chat_body("wait forever [mock:hang]"))
    # The request reaches the mock and stays there.
    assert wait_for(lambda: mock.stats()["open_connections"] > base,
                    timeout=3.0), mock.stats()
    c.close()
    # No reason for the gateway to keep the upstream call: it must drop it
    # long before any upstream timeout (first_byte_timeout_ms is 5 s).
    t0 = time.monotonic()
    assert wait_for(lambda: mock.stats()["open_connections"] <= base,
                    timeout=2.0), mock.stats()
    assert time.monotonic() - t0 < 2.0
    lines = wait_for(lambda: [l for l in gw.access_log()
                              if l.get("error") == "client_closed"],
                     timeout=3.0)
    assert lines, gw.access_log()
    assert lines[0]["status"] == 499


def test_concurrent_streams_do_not_cross(gw):
    results = {}

    def one(i):
        text = " ".join("s%dw%d" % (i, k) for k in range(20))
        c, _ = open_stream(gw.port, text + " [mock:gap_ms=5]")
        with c:
            results[i] = (text, [d for _, d in c.events()])

    ts = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    assert len(results) == 16
    for i, (text, events) in results.items():
        assert events[-1] == "[DONE]", (i, events[-3:])
        assert stream_text(events) == text, i


def test_long_stream_is_forwarded_intact(gw):
    r = chat(gw.port, "[mock:words=3000]", stream=True)
    assert r.status == 200, r
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    assert stream_text(events) == " ".join("w%d" % i
                                           for i in range(1, 3001))


def test_large_non_stream_answer_is_forwarded_intact(gw):
    r = chat(gw.port, "[mock:words=50000]")
    assert r.status == 200, r
    content = r.json()["choices"][0]["message"]["content"]
    assert content == " ".join("w%d" % i for i in range(1, 50001))
    assert r.json()["usage"]["completion_tokens"] == 50000


def test_slow_reader_gets_backpressure_not_buffering(gateway, mock):
    # About 9 MB of events; a gateway that buffered what the client has not
    # read yet would grow by that much while the client sleeps.
    gw = gateway(env=no_quarantine_env())
    rss0 = gw.rss_kb()
    c, _ = open_stream(gw.port, "[mock:words=60000]")
    with c:
        time.sleep(1.0)
        grown = gw.rss_kb() - rss0
        assert grown < 6 * 1024, "gateway buffered %d KB" % grown
        # The upstream is held back too, not drained into memory.
        assert mock.stats()["streams_completed"] == 0
        events = [d for _, d in c.events()]
    assert c.complete
    assert events[-1] == "[DONE]"
    text = stream_text(events)
    assert text.startswith("w1 w2 ") and text.endswith(" w59999 w60000")
    assert len(text.split()) == 60000


def test_stream_over_total_timeout_ends_with_error_event(gateway):
    gw = gateway(providers={"upstream": {"timeout_ms": 500}})
    c, _ = open_stream(gw.port, "[mock:words=20] [mock:gap_ms=100]")
    with c:
        events = [d for _, d in c.events()]
        assert "[DONE]" not in events, events
        assert 2 <= len(events) < 20, events
        err = json.loads(events[-1])["error"]
        assert err["code"] in ("upstream_timeout", "upstream_stream_cut")
        assert c.eof or c.is_closed(timeout=5)


def test_utf8_text_survives_stream_and_non_stream(gw):
    text = "héllo wörld 世界 ✓ ok"
    r = chat(gw.port, text)
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == text
    r = chat(gw.port, text, stream=True)
    assert stream_text(sse_data(r.body)) == text
    r = chat(gw.port, text, model="echo", stream=True)
    assert stream_text(sse_data(r.body)) == text
