"""POST /v1/messages: Anthropic's Messages format as a front door to any
provider, against the mock upstream (an openai-type provider) and the
built-in mock provider."""
import json

from helpers import Conn, http, wait_for

MESSAGES = "/v1/messages"


def messages_body(text, model="gpt-test", stream=None, **extra):
    body = {"model": model, "max_tokens": 64,
            "messages": [{"role": "user", "content": text}]}
    if stream is not None:
        body["stream"] = stream
    body.update(extra)
    return body


def messages(port, text, model="gpt-test", stream=None, **extra):
    return http(port, "POST", MESSAGES,
                messages_body(text, model, stream, **extra))


def sse_events(body):
    """[(event name, data object)] of an event-stream body."""
    out = []
    for block in body.decode().split("\n\n"):
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            out.append((name, json.loads("\n".join(data))))
    return out


def assert_anthropic_error(r, status, etype):
    assert r.status == status, r
    assert r.header("content-type") == "application/json", r
    body = r.json()
    assert body["type"] == "error", body
    assert body["error"]["type"] == etype, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "code" not in body["error"]
    return body["error"]["message"]


def text_of(events):
    return "".join(d["delta"]["text"] for n, d in events
                   if n == "content_block_delta"
                   and d["delta"]["type"] == "text_delta")


def names(events):
    return [n for n, _ in events]


TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "input_schema": {"type": "object",
                           "properties": {"city": {"type": "string"}}}}]


# -- non-stream ---------------------------------------------------------------

def test_messages_answer_in_anthropic_shape_from_openai_upstream(gw, mock):
    r = messages(gw.port, "hello from anthropic", system="Be brief.",
                 temperature=0.2, stop_sequences=["END"], top_k=5)
    assert r.status == 200, r
    assert r.header("x-sluice-provider") == "upstream"
    assert r.header("x-sluice-model") == "mock-model"
    msg = r.json()
    assert msg["type"] == "message"
    assert msg["role"] == "assistant"
    assert msg["model"] == "gpt-test"  # the client's name, not the target's
    assert msg["id"].startswith("msg_")
    assert msg["content"] == [{"type": "text", "text": "hello from anthropic"}]
    assert msg["stop_reason"] == "end_turn"
    assert msg["stop_sequence"] is None
    # The mock counts words: "Be brief." + "hello from anthropic".
    assert msg["usage"]["input_tokens"] == 5
    assert msg["usage"]["output_tokens"] == 3
    assert msg["usage"]["cache_read_input_tokens"] == 0

    sent = json.loads(mock.last_request()["body"])
    assert sent["model"] == "mock-model"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello from anthropic"}]
    assert sent["max_tokens"] == 64
    assert sent["temperature"] == 0.2
    assert sent["stop"] == ["END"]
    assert "top_k" not in sent
    assert "stream" not in sent
    assert "system" not in sent


def test_messages_answer_from_builtin_mock_provider(gw):
    r = messages(gw.port, "echo me please", model="echo")
    assert r.status == 200, r
    assert r.header("x-sluice-provider") == "mock"
    msg = r.json()
    assert msg["model"] == "echo"
    assert msg["content"] == [{"type": "text", "text": "echo me please"}]
    assert msg["usage"]["input_tokens"] == 3
    assert msg["usage"]["output_tokens"] == 3


def test_messages_with_content_blocks_reach_upstream_as_parts(gw, mock):
    r = http(gw.port, "POST", MESSAGES, {
        "model": "gpt-test", "max_tokens": 10,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this"},
            {"type": "image", "source": {"type": "base64",
                                         "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}]}]})
    assert r.status == 200, r
    assert r.json()["content"][0]["text"] == "what is this"
    sent = json.loads(mock.last_request()["body"])
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url",
         "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]


# -- streams ------------------------------------------------------------------

def assert_whole_text_stream(r, text):
    assert r.status == 200, r
    assert r.header("content-type") == "text/event-stream; charset=utf-8"
    assert "chunked" in r.header("transfer-encoding", "")
    assert b"[DONE]" not in r.body
    events = sse_events(r.body)
    for n, d in events:
        assert d["type"] == n, (n, d)
    seq = names(events)
    assert seq[0] == "message_start"
    assert seq[1] == "content_block_start"
    assert seq[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(seq[2:-3]) == {"content_block_delta"}
    assert text_of(events) == text
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == []
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn",
                              "stop_sequence": None}
    return events


def test_messages_stream_from_openai_upstream(gw, mock):
    text = "the quick brown fox jumps"
    r = messages(gw.port, text, stream=True)
    events = assert_whole_text_stream(r, text)
    assert events[0][1]["message"]["model"] == "gpt-test"
    usage = events[-2][1]["usage"]
    assert usage["output_tokens"] == 5
    assert usage["input_tokens"] == 5
    sent = json.loads(mock.last_request()["body"])
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


def test_messages_stream_from_builtin_mock_provider(gw):
    text = "one two three four"
    r = messages(gw.port, text, model="echo", stream=True)
    events = assert_whole_text_stream(r, text)
    assert events[-2][1]["usage"]["output_tokens"] == 4


def test_messages_stream_then_chat_on_the_same_connection(gw):
    # The front belongs to one request: the next one on the connection is
    # OpenAI-shaped again.
    with Conn(gw.port) as c:
        c.request("POST", MESSAGES, messages_body("first", stream=True))
        r = c.read_response("POST")
        assert r.status == 200, r
        assert names(sse_events(r.body))[-1] == "message_stop"
        c.request("POST", "/v1/chat/completions",
                  {"model": "gpt-test",
                   "messages": [{"role": "user", "content": "second"}]})
        r = c.read_response("POST")
        assert r.status == 200, r
        assert r.json()["object"] == "chat.completion"
        c.request("POST", "/v1/chat/completions", {"model": "nope",
                  "messages": [{"role": "user", "content": "x"}]})
        r = c.read_response("POST")
        assert r.status == 404
        assert r.json()["error"]["code"] == "model_not_found"


# -- tools --------------------------------------------------------------------

def test_messages_tool_use_from_upstream_tool_call(gw, mock):
    r = messages(gw.port, "[mock:tool=get_weather] Paris", tools=TOOLS,
                 tool_choice={"type": "tool", "name": "get_weather"})
    assert r.status == 200, r
    msg = r.json()
    assert msg["stop_reason"] == "tool_use"
    [block] = msg["content"]
    assert block["type"] == "tool_use"
    assert block["name"] == "get_weather"
    assert block["id"] == "call_mock_1"
    assert block["input"] == {"text": "Paris"}
    sent = json.loads(mock.last_request()["body"])
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": TOOLS[0]["input_schema"]}}]
    assert sent["tool_choice"] == {"type": "function",
                                   "function": {"name": "get_weather"}}


def test_messages_tool_use_stream_sends_input_json_fragments(gw):
    r = messages(gw.port, "[mock:tool=get_weather] a longer city name here",
                 stream=True, tools=TOOLS)
    assert r.status == 200, r
    events = sse_events(r.body)
    seq = names(events)
    assert seq[0] == "message_start"
    assert seq[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start = events[1][1]
    assert start["type"] == "content_block_start"
    assert start["content_block"] == {"type": "tool_use", "id": "call_mock_1",
                                      "name": "get_weather", "input": {}}
    frags = [d["delta"]["partial_json"] for n, d in events
             if n == "content_block_delta"]
    assert len(frags) >= 3
    for n, d in events:
        if n.startswith("content_block"):
            assert d["index"] == start["index"]
    assert json.loads("".join(frags)) == {"text": "a longer city name here"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_messages_tool_results_go_upstream_as_tool_messages(gw, mock):
    r = http(gw.port, "POST", MESSAGES, {
        "model": "gpt-test", "max_tokens": 50, "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_9",
                 "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "thanks, summarise"}]}]})
    assert r.status == 200, r
    assert r.json()["content"][0]["text"] == "thanks, summarise"
    sent = json.loads(mock.last_request()["body"])
    assert sent["messages"][1] == {
        "role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_9", "type": "function",
             "function": {"name": "get_weather",
                          "arguments": "{\"city\":\"Paris\"}"}}]}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_9",
                                   "content": "18C"}
    assert sent["messages"][3] == {"role": "user",
                                   "content": "thanks, summarise"}


# -- errors -------------------------------------------------------------------

def test_messages_unknown_model_is_not_found_error(gw):
    msg = assert_anthropic_error(messages(gw.port, "hi", model="nope"), 404,
                                 "not_found_error")
    assert "nope" in msg


def test_messages_request_errors_are_invalid_request_errors(gw, mock):
    body = messages_body("hi")
    del body["max_tokens"]
    msg = assert_anthropic_error(http(gw.port, "POST", MESSAGES, body), 400,
                                 "invalid_request_error")
    assert "max_tokens" in msg
    assert_anthropic_error(http(gw.port, "POST", MESSAGES, b"{not json"),
                           400, "invalid_request_error")
    assert_anthropic_error(http(gw.port, "POST", MESSAGES, b""), 400,
                           "invalid_request_error")
    assert_anthropic_error(http(gw.port, "POST", MESSAGES, [1, 2]), 400,
                           "invalid_request_error")
    msg = assert_anthropic_error(
        messages(gw.port, "hi", messages=[{"role": "system",
                                           "content": "x"}]),
        400, "invalid_request_error")
    assert "messages.0.role" in msg
    msg = assert_anthropic_error(
        messages(gw.port, "hi", stream="yes"), 400, "invalid_request_error")
    assert "stream" in msg
    # None of these reached the provider.
    assert not [q for q in mock.requests() if q["path"].startswith("/v1/")]


def test_messages_wrong_method_is_405_in_anthropic_shape(gw):
    r = http(gw.port, "GET", MESSAGES)
    assert_anthropic_error(r, 405, "invalid_request_error")
    assert r.header("allow") == "POST"


def test_messages_upstream_429_is_rate_limit_error_with_retry_after(gw):
    r = messages(gw.port, "[mock:status=429] [mock:retry_after=7] hi")
    msg = assert_anthropic_error(r, 429, "rate_limit_error")
    assert "429" in msg
    assert r.header("retry-after") == "7"


def test_messages_upstream_429_on_a_stream_request_is_plain_json(gw):
    r = messages(gw.port, "[mock:status=429] hi", stream=True)
    assert_anthropic_error(r, 429, "rate_limit_error")


def test_messages_upstream_failures_are_api_errors(gw):
    assert_anthropic_error(messages(gw.port, "[mock:status=500] hi"), 502,
                           "api_error")
    assert_anthropic_error(messages(gw.port, "[mock:garbage] hi"), 502,
                           "api_error")
    assert_anthropic_error(messages(gw.port, "[mock:status=400] hi"), 400,
                           "invalid_request_error")


def test_messages_upstream_down_is_api_error(gateway):
    from conftest import closed_port
    gw = gateway(providers={"upstream": {
        "base_url": "http://127.0.0.1:%d/v1" % closed_port()}})
    assert_anthropic_error(messages(gw.port, "hi"), 502, "api_error")


def read_until_close(c):
    """Head, then every chunk until the last one or the connection's end;
    returns (status, headers, body bytes, ended cleanly)."""
    _, status, _, headers = c.read_head()
    body = b""
    while True:
        try:
            chunk = c.read_chunk()
        except EOFError:
            return status, headers, body, False
        if chunk is None:
            return status, headers, body, True
        body += chunk


def test_messages_stream_cut_ends_with_an_error_event(gw, mock):
    with Conn(gw.port) as c:
        c.request("POST", MESSAGES,
                  messages_body("[mock:words=10] [mock:close_after=3]",
                                stream=True))
        status, _, body, _ = read_until_close(c)
        assert status == 200
        events = sse_events(body)
        seq = names(events)
        assert seq[0] == "message_start"
        assert seq[-1] == "error", seq
        assert "message_stop" not in seq and "message_delta" not in seq
        assert text_of(events) == "w1 w2 "
        err = events[-1][1]
        assert err["type"] == "error"
        assert err["error"]["type"] == "api_error"
        assert err["error"]["message"]
        assert c.eof or c.is_closed(timeout=5)
    assert wait_for(lambda: mock.stats()["streams_cut"] >= 1)


def test_messages_access_log_names_the_route_and_tokens(gw):
    r = messages(gw.port, "count these four", model="echo")
    assert r.status == 200, r
    lines = wait_for(lambda: [l for l in gw.access_log()
                              if l["path"] == MESSAGES])
    assert lines, gw.access_log()
    line = lines[-1]
    assert line["status"] == 200
    assert line["model"] == "echo"
    assert line["prompt_tokens"] == 3
    assert line["completion_tokens"] == 3
