"""Self-tests of sluice-mock over real sockets.

Run: SLUICE_MOCK=BUILD/tests/mock/sluice-mock python3 -m pytest tests/mock
(SLUICE_MOCK_BIN is read too, as the integration tests name it). The
gateway's tests trust the mock's failure modes; these tests check that each
one really happens on the wire.
"""
import json
import os
import socket
import subprocess
import threading
import time

import pytest

MOCK = os.environ.get("SLUICE_MOCK") or os.environ.get("SLUICE_MOCK_BIN")
pytestmark = pytest.mark.skipif(
    not MOCK, reason="set SLUICE_MOCK to the sluice-mock binary")


@pytest.fixture(scope="module")
def mock():
    proc = subprocess.Popen([MOCK, "--threads", "2"], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    assert line.startswith("READY "), line
    yield int(line.split()[1])
    proc.terminate()
    assert proc.wait(timeout=5) == 0


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def request(method, path, body=None, headers=None):
    headers = dict(headers or {})
    data = b""
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(data))
    head = "%s %s HTTP/1.1\r\nHost: mock\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % kv for kv in headers.items())
    return head.encode() + b"\r\n" + data


class Reader:
    """A minimal HTTP/1.1 response reader that keeps raw bytes visible."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise EOFError
        self.buf += data

    def until(self, sep):
        while sep not in self.buf:
            self.fill()
        i = self.buf.index(sep)
        out, self.buf = self.buf[:i], self.buf[i + len(sep):]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        lines = self.until(b"\r\n\r\n").decode().split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        return status, headers

    def response(self):
        status, headers = self.head()
        if headers.get("transfer-encoding") == "chunked":
            chunks = []
            while True:
                size = int(self.until(b"\r\n"), 16)
                if size == 0:
                    self.until(b"\r\n")
                    break
                chunks.append(self.exactly(size))
                assert self.exactly(2) == b"\r\n"
            return status, headers, chunks
        return status, headers, self.exactly(int(headers["content-length"]))

    def rest(self):
        try:
            while True:
                self.fill()
        except EOFError:
            pass
        return self.buf


def call(port, method, path, body=None, headers=None):
    with connect(port) as s:
        s.sendall(request(method, path, body, headers))
        return Reader(s).response()


def chat(text, **extra):
    body = {"model": "gpt-test", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": text}]}
    body.update(extra)
    return body


def sse_data(chunks):
    out = []
    for c in chunks:
        text = c.decode()
        assert text.endswith("\n\n"), "one event per chunk"
        for line in text.strip("\n").split("\n"):
            if line.startswith("data: "):
                out.append(line[6:])
    return out


def test_chat_echoes_last_user_text_without_directives(mock):
    status, _, body = call(mock, "POST", "/v1/chat/completions",
                           chat("  hello [mock:delay_ms=1] big world  "))
    assert status == 200
    r = json.loads(body)
    assert r["model"] == "gpt-test"
    assert r["object"] == "chat.completion"
    assert r["id"].startswith("chatcmpl-mock-")
    assert r["choices"][0]["message"] == {
        "role": "assistant", "content": "hello  big world"}
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["usage"] == {"prompt_tokens": 6, "completion_tokens": 3,
                          "total_tokens": 9}


def test_chat_reads_text_parts_of_array_content(mock):
    body = {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "one "},
        {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "text", "text": "two"}]}]}
    _, _, raw = call(mock, "POST", "/v1/chat/completions", body)
    assert json.loads(raw)["choices"][0]["message"]["content"] == "one two"


def test_chat_stream_deltas_join_to_the_reply(mock):
    status, headers, chunks = call(
        mock, "POST", "/v1/chat/completions",
        chat("alpha  beta\ngamma", stream=True))
    assert status == 200
    assert headers["content-type"] == "text/event-stream"
    data = sse_data(chunks)
    assert data[-1] == "[DONE]"
    events = [json.loads(d) for d in data[:-1]]
    assert events[0]["choices"][0]["delta"] == {"role": "assistant",
                                                "content": ""}
    words = [e["choices"][0]["delta"]["content"] for e in events[1:-1]]
    assert words == ["alpha  ", "beta\n", "gamma"]
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in e for e in events)


def test_chat_stream_usage_chunk_when_asked(mock):
    _, _, chunks = call(mock, "POST", "/v1/chat/completions",
                        chat("a b", stream=True,
                             stream_options={"include_usage": True}))
    events = [json.loads(d) for d in sse_data(chunks)[:-1]]
    assert events[-1]["choices"] == []
    assert events[-1]["usage"] == {"prompt_tokens": 4,
                                   "completion_tokens": 2,
                                   "total_tokens": 6}
    assert all(e["usage"] is None for e in events[:-1])


def test_chat_stream_of_empty_reply_has_no_word_chunks(mock):
    _, _, chunks = call(mock, "POST", "/v1/chat/completions",
                        chat("[mock:gap_ms=0]", stream=True))
    data = sse_data(chunks)
    assert len(data) == 3 and data[-1] == "[DONE]"


def test_chat_tool_call_when_tools_and_directive(mock):
    body = chat("weather in Paris [mock:tool=get_weather]",
                tools=[{"type": "function", "function": {"name": "x"}}])
    _, _, raw = call(mock, "POST", "/v1/chat/completions", body)
    choice = json.loads(raw)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call0 = choice["message"]["tool_calls"][0]
    assert call0["id"] == "call_mock_1"
    assert call0["function"]["name"] == "get_weather"
    assert json.loads(call0["function"]["arguments"]) == {
        "text": "weather in Paris"}


def test_chat_streamed_tool_call_arguments_in_fragments(mock):
    body = chat("weather in Paris [mock:tool=get_weather]", stream=True,
                tools=[{"type": "function", "function": {"name": "x"}}])
    _, _, chunks = call(mock, "POST", "/v1/chat/completions", body)
    events = [json.loads(d) for d in sse_data(chunks)[:-1]]
    calls = [e["choices"][0]["delta"]["tool_calls"][0] for e in events
             if "tool_calls" in e["choices"][0]["delta"]]
    assert calls[0]["function"] == {"name": "get_weather", "arguments": ""}
    assert calls[0]["id"] == "call_mock_1"
    frags = [c["function"]["arguments"] for c in calls[1:]]
    assert len(frags) >= 3
    assert json.loads("".join(frags)) == {"text": "weather in Paris"}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_tool_directive_without_tools_answers_text(mock):
    _, _, raw = call(mock, "POST", "/v1/chat/completions",
                     chat("hi [mock:tool=x]"))
    assert json.loads(raw)["choices"][0]["message"]["content"] == "hi"


def test_words_directive_replaces_the_echo(mock):
    _, _, raw = call(mock, "POST", "/v1/chat/completions",
                     chat("ignored [mock:words=5]"))
    r = json.loads(raw)
    assert r["choices"][0]["message"]["content"] == "w1 w2 w3 w4 w5"
    assert r["usage"]["completion_tokens"] == 5


def test_long_stream_arrives_whole(mock):
    _, _, chunks = call(mock, "POST", "/v1/chat/completions",
                        chat("[mock:words=20000]", stream=True))
    events = [json.loads(d) for d in sse_data(chunks)[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content") or ""
                   for e in events)
    assert text == " ".join("w%d" % i for i in range(1, 20001))


def test_messages_non_stream_shape(mock):
    body = {"model": "claude-x", "system": "sys words",
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "hi there [mock:delay_ms=0]"}]}]}
    status, _, raw = call(mock, "POST", "/v1/messages", body)
    r = json.loads(raw)
    assert status == 200
    assert r["id"].startswith("msg_mock_")
    assert r["type"] == "message" and r["role"] == "assistant"
    assert r["model"] == "claude-x"
    assert r["content"] == [{"type": "text", "text": "hi there"}]
    assert r["stop_reason"] == "end_turn" and r["stop_sequence"] is None
    assert r["usage"] == {"input_tokens": 5, "output_tokens": 2}


def anthropic_events(chunks):
    out = []
    for c in chunks:
        lines = c.decode().strip("\n").split("\n")
        assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
        data = json.loads(lines[1][6:])
        assert data["type"] == lines[0][7:]
        out.append(data)
    return out


def test_messages_stream_event_sequence(mock):
    body = {"model": "c", "stream": True,
            "messages": [{"role": "user", "content": "one two three"}]}
    _, _, chunks = call(mock, "POST", "/v1/messages", body)
    ev = anthropic_events(chunks)
    assert [e["type"] for e in ev] == [
        "message_start", "content_block_start", "ping",
        "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    assert ev[0]["message"]["usage"] == {"input_tokens": 3,
                                         "output_tokens": 1}
    assert "".join(e["delta"]["text"] for e in ev[3:6]) == "one two three"
    assert ev[7]["delta"]["stop_reason"] == "end_turn"
    assert ev[7]["usage"]["output_tokens"] == 3


def test_messages_streamed_tool_use(mock):
    body = {"model": "c", "stream": True, "tools": [{"name": "t"}],
            "messages": [{"role": "user",
                          "content": "look this up [mock:tool=search]"}]}
    _, _, chunks = call(mock, "POST", "/v1/messages", body)
    ev = anthropic_events(chunks)
    assert ev[1]["content_block"] == {"type": "tool_use",
                                      "id": "toolu_mock_1",
                                      "name": "search", "input": {}}
    frags = [e["delta"]["partial_json"] for e in ev
             if e["type"] == "content_block_delta"]
    assert len(frags) >= 3
    assert json.loads("".join(frags)) == {"text": "look this up"}
    assert ev[-2]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize("code,etype", [
    (400, "invalid_request_error"), (401, "authentication_error"),
    (403, "permission_error"), (404, "not_found_error"),
    (429, "rate_limit_error"), (500, "api_error"),
    (529, "overloaded_error")])
def test_messages_error_types_by_status(mock, code, etype):
    body = {"model": "c", "messages": [
        {"role": "user", "content": "x [mock:status=%d]" % code}]}
    status, _, raw = call(mock, "POST", "/v1/messages", body)
    assert status == code
    assert json.loads(raw) == {"type": "error", "error": {
        "type": etype, "message": "mock error: status %d" % code}}


def test_status_and_retry_after_directives(mock):
    status, headers, raw = call(
        mock, "POST", "/v1/chat/completions",
        chat("x [mock:status=429] [mock:retry_after=3]"))
    assert status == 429
    assert headers["retry-after"] == "3"
    err = json.loads(raw)["error"]
    assert set(err) >= {"message", "type", "code"}


def test_status_from_header(mock):
    status, _, raw = call(mock, "POST", "/v1/chat/completions", chat("x"),
                          {"x-mock-status": "503"})
    assert status == 503
    assert "error" in json.loads(raw)


def test_garbage_is_not_json(mock):
    status, headers, raw = call(mock, "POST", "/v1/chat/completions",
                                chat("[mock:garbage]"))
    assert status == 200
    assert headers["content-type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(raw)


def test_bad_json_body_is_400(mock):
    status, _, raw = call(mock, "POST", "/v1/chat/completions", b"{nope")
    assert status == 400
    assert json.loads(raw)["error"]["type"] == "invalid_request_error"


def test_unknown_path_is_404_openai_error(mock):
    status, _, raw = call(mock, "GET", "/v2/whatever")
    assert status == 404
    assert json.loads(raw)["error"]["code"]


def test_models_lists_mock_model(mock):
    _, _, raw = call(mock, "GET", "/v1/models")
    assert [m["id"] for m in json.loads(raw)["data"]] == ["mock-model"]


def test_embeddings_are_deterministic_per_text(mock):
    body = {"model": "emb", "input": ["a b", "a b", "c", [1, 2, 3]]}
    _, _, raw = call(mock, "POST", "/v1/embeddings", body)
    r = json.loads(raw)
    vecs = [d["embedding"] for d in r["data"]]
    assert [d["index"] for d in r["data"]] == [0, 1, 2, 3]
    assert all(len(v) == 8 for v in vecs)
    assert vecs[0] == vecs[1] and vecs[0] != vecs[2]
    assert r["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    _, _, raw2 = call(mock, "POST", "/v1/embeddings",
                      {"model": "emb", "input": "a b"})
    assert json.loads(raw2)["data"][0]["embedding"] == vecs[0]


def test_keep_alive_serves_many_requests_on_one_connection(mock):
    with connect(mock) as s:
        r = Reader(s)
        for i in range(5):
            s.sendall(request("POST", "/v1/chat/completions",
                              chat("n%d" % i)))
            _, _, raw = r.response()
            assert json.loads(raw)["choices"][0]["message"]["content"] == \
                "n%d" % i


def test_pipelined_requests_answer_in_order(mock):
    with connect(mock) as s:
        s.sendall(b"".join(request("POST", "/v1/chat/completions",
                                   chat("p%d [mock:delay_ms=%d]" %
                                        (i, 30 - 10 * i)))
                           for i in range(3)))
        r = Reader(s)
        got = [json.loads(r.response()[2])["choices"][0]["message"]
               ["content"] for _ in range(3)]
    assert got == ["p0", "p1", "p2"]


def test_chunked_request_body_is_read(mock):
    data = json.dumps(chat("chunked body")).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 7]), data[i:i + 7])
                    for i in range(0, len(data), 7)) + b"0\r\n\r\n"
    with connect(mock) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n" + body)
        _, _, raw = Reader(s).response()
    assert json.loads(raw)["choices"][0]["message"]["content"] == \
        "chunked body"


def test_expect_100_continue_gets_interim_response(mock):
    data = json.dumps(chat("expect")).encode()
    with connect(mock) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n"
                  % len(data))
        r = Reader(s)
        status, _ = r.head()
        assert status == 100
        s.sendall(data)
        status, _, _ = r.response()
        assert status == 200


def test_hang_never_answers(mock):
    with connect(mock) as s:
        s.sendall(request("POST", "/v1/chat/completions",
                          chat("[mock:hang]")))
        s.settimeout(0.5)
        with pytest.raises(socket.timeout):
            s.recv(1)


def test_first_byte_and_delay_wait(mock):
    t = time.monotonic()
    call(mock, "POST", "/v1/chat/completions",
         chat("x [mock:first_byte_ms=100] [mock:delay_ms=100]"))
    assert time.monotonic() - t >= 0.2


def test_gap_between_stream_events_does_not_block_others(mock):
    def slow():
        call(mock, "POST", "/v1/chat/completions",
             chat("a b c d [mock:gap_ms=100]", stream=True))
    th = threading.Thread(target=slow)
    t = time.monotonic()
    th.start()
    time.sleep(0.05)
    call(mock, "POST", "/v1/chat/completions", chat("fast"))
    fast = time.monotonic() - t
    th.join()
    assert fast < 0.3
    assert time.monotonic() - t >= 0.6  # 6 gaps: 4 words, finish, [DONE]


def test_stream_close_after_cuts_without_terminating_chunk(mock):
    with connect(mock) as s:
        s.sendall(request("POST", "/v1/chat/completions",
                          chat("a b c d e [mock:close_after=3]",
                               stream=True)))
        r = Reader(s)
        r.head()
        raw = r.rest()
    assert raw.count(b"data: ") == 3
    assert not raw.endswith(b"0\r\n\r\n")


def test_non_stream_close_after_sends_half_the_body(mock):
    with connect(mock) as s:
        s.sendall(request("POST", "/v1/chat/completions",
                          chat("a b c [mock:close_after=1]")))
        r = Reader(s)
        _, headers = r.head()
        raw = r.rest()
    assert 0 < len(raw) < int(headers["content-length"])


def raw_answer(port, text):
    with connect(port) as s:
        s.sendall(request("POST", "/v1/chat/completions", chat(text)))
        return Reader(s).rest()


def test_frame_cl_te_sends_both_headers(mock):
    raw = raw_answer(mock, "x [mock:frame=cl_te]").lower()
    assert b"content-length:" in raw and \
        b"transfer-encoding: chunked" in raw


def test_frame_dup_cl_sends_two_different_lengths(mock):
    head = raw_answer(mock, "x [mock:frame=dup_cl]").split(b"\r\n\r\n")[0]
    lengths = [l for l in head.split(b"\r\n")
               if l.lower().startswith(b"content-length:")]
    assert len(lengths) == 2 and lengths[0] != lengths[1]


def test_frame_te_gzip(mock):
    assert b"Transfer-Encoding: gzip, chunked\r\n" in \
        raw_answer(mock, "x [mock:frame=te_gzip]")


def test_frame_bad_chunk_size_is_not_hex(mock):
    raw = raw_answer(mock, "x [mock:frame=bad_chunk]")
    assert raw.split(b"\r\n\r\n", 1)[1].startswith(b"zz\r\n")


def test_frame_obs_fold(mock):
    assert b"\r\n continued" in raw_answer(mock, "x [mock:frame=obs_fold]")


def test_frame_bare_lf_head(mock):
    raw = raw_answer(mock, "x [mock:frame=bare_lf]")
    head = raw.split(b"\n\n")[0]
    assert b"\r" not in head and head.startswith(b"HTTP/1.1 200")


def test_journal_records_v1_requests_newest_last(mock):
    assert call(mock, "DELETE", "/mock/requests")[0] == 200
    call(mock, "POST", "/v1/chat/completions", chat("first"),
         {"X-Custom": "a"})
    call(mock, "GET", "/v1/models")
    call(mock, "GET", "/mock/stats")
    _, _, raw = call(mock, "GET", "/mock/requests")
    log = json.loads(raw)
    assert [(e["method"], e["path"]) for e in log] == [
        ("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
    assert log[0]["headers"]["x-custom"] == "a"
    assert json.loads(log[0]["body"])["messages"][1]["content"] == "first"


def test_journal_keeps_last_100(mock):
    call(mock, "DELETE", "/mock/requests")
    with connect(mock) as s:
        r = Reader(s)
        for i in range(105):
            s.sendall(request("POST", "/v1/chat/completions",
                              chat("j%d" % i)))
            r.response()
    log = json.loads(call(mock, "GET", "/mock/requests")[2])
    assert len(log) == 100
    assert json.loads(log[-1]["body"])["messages"][1]["content"] == "j104"
    assert json.loads(log[0]["body"])["messages"][1]["content"] == "j5"


def stats(port):
    return json.loads(call(port, "GET", "/mock/stats")[2])


def test_stats_count_streams_completed_and_aborted(mock):
    before = stats(mock)
    call(mock, "POST", "/v1/chat/completions", chat("a b", stream=True))
    with connect(mock) as s:
        s.sendall(request("POST", "/v1/chat/completions",
                          chat("a b c [mock:gap_ms=200]", stream=True)))
        Reader(s).head()
    time.sleep(0.2)
    after = stats(mock)
    assert after["streams_started"] - before["streams_started"] == 2
    assert after["streams_completed"] - before["streams_completed"] == 1
    assert after["streams_aborted"] - before["streams_aborted"] == 1
    assert after["requests"] - before["requests"] == 2
    assert after["connections_accepted"] - \
        before["connections_accepted"] == 3
    assert after["open_connections"] == 1  # the stats request itself


def test_close_after_beyond_the_stream_still_drops_the_end(mock):
    with connect(mock) as s:
        s.sendall(request("POST", "/v1/chat/completions",
                          chat("a [mock:close_after=99]", stream=True)))
        r = Reader(s)
        r.head()
        raw = r.rest()
    assert b"data: [DONE]" in raw
    assert not raw.endswith(b"0\r\n\r\n")


def test_header_directives_accept_dashes(mock):
    t = time.monotonic()
    status, headers, _ = call(mock, "GET", "/v1/models", None,
                              {"x-mock-first-byte-ms": "150",
                               "x-mock-retry-after": "4"})
    assert time.monotonic() - t >= 0.15
    assert status == 200 and headers["retry-after"] == "4"


def test_http10_request_gets_connection_close(mock):
    with connect(mock) as s:
        s.sendall(b"GET /v1/models HTTP/1.0\r\n\r\n")
        r = Reader(s)
        _, headers = r.head()
        r.rest()
        assert r.eof
    assert headers["connection"] == "close"


def test_malformed_chunked_body_is_400(mock):
    with connect(mock) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
        status, _, _ = Reader(s).response()
    assert status == 400


def test_frame_applies_to_streams_too(mock):
    with connect(mock) as s:
        s.sendall(request("POST", "/v1/chat/completions",
                          chat("x [mock:frame=cl_te]", stream=True)))
        raw = Reader(s).rest()
    assert b"text/event-stream" in raw and b"data: [DONE]" in raw
    assert b"Content-Length:" in raw and b"Transfer-Encoding: chunked" in raw


def test_repeated_request_headers_join_in_the_journal(mock):
    call(mock, "DELETE", "/mock/requests")
    with connect(mock) as s:
        s.sendall(b"GET /v1/models HTTP/1.1\r\nX-Twice: a\r\nX-Twice: b\r\n"
                  b"\r\n")
        Reader(s).response()
    log = json.loads(call(mock, "GET", "/mock/requests")[2])
    assert log[-1]["headers"]["x-twice"] == "a, b"
