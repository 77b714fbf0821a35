"""The anthropic provider type: OpenAI clients served by the Messages API
(here the mock speaking it), translated both ways: chat, streams, tool
calls and errors."""
import json

from conftest import KEY_ENV, TEST_KEY
from helpers import Conn, chat, chat_body, sse_data, stream_text, wait_for

MODEL = "claude-x"
CHAT = "/v1/chat/completions"
TOOLS = [{"type": "function",
          "function": {"name": "lookup", "description": "Find a thing",
                       "parameters": {"type": "object",
                                      "properties": {"text": {
                                          "type": "string"}}}}}]


def claude_gateway(gateway, mock, **provider):
    prov = {"type": "anthropic", "base_url": mock.url, "api_key_env": KEY_ENV}
    prov.update(provider)
    return gateway(providers={"claude": prov},
                   models={"smart": {"targets": [{"provider": "claude",
                                                  "model": MODEL}]}})


def sent(mock):
    """The headers and decoded body of the last request on /v1/messages."""
    req = mock.last_request("/v1/messages")
    return req["headers"], json.loads(req["body"])


def chunks(body):
    """The JSON chunks of an event-stream body, and whether it ended with
    [DONE]."""
    events = sse_data(body)
    done = bool(events) and events[-1] == "[DONE]"
    return [json.loads(e) for e in events if e != "[DONE]"], done


def test_anthropic_chat_is_translated_both_ways(gateway, mock):
    gw = claude_gateway(gateway, mock)
    body = chat_body("hello anthropic world", model="smart", temperature=0.2,
                     max_tokens=50)
    body["messages"].insert(0, {"role": "system", "content": "be brief"})
    with Conn(gw.port) as c:
        c.request("POST", CHAT, body)
        r = c.read_response()
    assert r.status == 200, r
    assert r.header("content-type").startswith("application/json")
    assert r.header("x-sluice-provider") == "claude"
    assert r.header("x-sluice-model") == MODEL
    j = r.json()
    assert j["object"] == "chat.completion"
    assert j["model"] == MODEL
    assert isinstance(j["created"], int)
    ch = j["choices"][0]
    assert ch["message"] == {"role": "assistant",
                             "content": "hello anthropic world"}
    assert ch["finish_reason"] == "stop"
    # The mock counts words: 2 of the system prompt + 3 of the user.
    assert j["usage"]["prompt_tokens"] == 5
    assert j["usage"]["completion_tokens"] == 3
    assert j["usage"]["total_tokens"] == 8
    assert j["usage"]["prompt_tokens_details"] == {"cached_tokens": 0}

    headers, req = sent(mock)
    assert headers["x-api-key"] == TEST_KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers
    assert req == {"model": MODEL, "max_tokens": 50, "system": "be brief",
                   "messages": [{"role": "user",
                                 "content": "hello anthropic world"}],
                   "temperature": 0.2}


def test_anthropic_chat_without_max_tokens_sends_the_provider_default(
        gateway, mock):
    gw = claude_gateway(gateway, mock, default_max_tokens=123)
    r = chat(gw.port, "a default please", model="smart")
    assert r.status == 200, r
    assert sent(mock)[1]["max_tokens"] == 123


def test_anthropic_stream_without_include_usage_hides_usage_but_counts_it(
        gateway, mock):
    gw = claude_gateway(gateway, mock)
    text = "one two three four"
    r = chat(gw.port, text, model="smart", stream=True)
    assert r.status == 200, r
    assert r.header("content-type") == "text/event-stream; charset=utf-8"
    assert r.header("x-sluice-provider") == "claude"
    cs, done = chunks(r.body)
    assert done
    assert stream_text(sse_data(r.body)) == text
    for c in cs:
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == MODEL
        assert c["choices"], "usage-only chunk forwarded: %r" % c
    assert cs[0]["choices"][0]["delta"] == {"role": "assistant",
                                            "content": ""}
    assert cs[-1]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in cs}) == 1
    _, req = sent(mock)
    assert req["stream"] is True
    assert "stream_options" not in req
    # The gateway still took the usage for its own accounting.
    log = wait_for(lambda: [l for l in gw.access_log()
                            if l["stream"] and l["status"] == 200])
    assert log, gw.access_log()
    assert log[-1]["prompt_tokens"] == 4
    assert log[-1]["completion_tokens"] == 4


def test_anthropic_stream_with_include_usage_ends_with_usage_chunk(gateway,
                                                                    mock):
    gw = claude_gateway(gateway, mock)
    r = chat(gw.port, "usage for me please", model="smart", stream=True,
             stream_options={"include_usage": True})
    assert r.status == 200, r
    cs, done = chunks(r.body)
    assert done
    assert cs[-1]["choices"] == []
    assert cs[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 4,
                               "total_tokens": 8,
                               "prompt_tokens_details": {"cached_tokens": 0}}
    assert cs[-2]["choices"][0]["finish_reason"] == "stop"
    assert sum(1 for c in cs if c.get("usage")) == 1


def test_anthropic_stream_events_arrive_as_the_upstream_sends_them(gateway,
                                                                    mock):
    gw = claude_gateway(gateway, mock)
    with Conn(gw.port) as c:
        c.request("POST", CHAT, chat_body("[mock:words=4] [mock:gap_ms=150]",
                                          model="smart", stream=True))
        _, status, _, _ = c.read_head()
        assert status == 200
        times = [t for t, data in c.events()
                 if data != "[DONE]" and json.loads(data)["choices"]
                 and json.loads(data)["choices"][0]["delta"].get("content")]
        assert c.complete
    assert len(times) == 4
    # Paced by the mock, not buffered until the end.
    assert times[-1] - times[0] >= 0.3, times


def test_anthropic_tool_call_is_translated_both_ways(gateway, mock):
    gw = claude_gateway(gateway, mock)
    r = chat(gw.port, "find the cat [mock:tool=lookup]", model="smart",
             tools=TOOLS, tool_choice="auto")
    assert r.status == 200, r
    ch = r.json()["choices"][0]
    assert ch["finish_reason"] == "tool_calls"
    msg = ch["message"]
    assert msg["content"] is None
    assert len(msg["tool_calls"]) == 1
    call = msg["tool_calls"][0]
    assert call["id"] == "toolu_mock_1"
    assert call["type"] == "function"
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"text": "find the cat"}
    _, req = sent(mock)
    assert req["tools"] == [{"name": "lookup", "description": "Find a thing",
                             "input_schema": TOOLS[0]["function"][
                                 "parameters"]}]
    assert req["tool_choice"] == {"type": "auto"}


def test_anthropic_tool_call_streams_arguments_in_fragments(gateway, mock):
    gw = claude_gateway(gateway, mock)
    r = chat(gw.port, "find the big black cat [mock:tool=lookup]",
             model="smart", stream=True, tools=TOOLS)
    assert r.status == 200, r
    cs, done = chunks(r.body)
    assert done
    calls = [tc for c in cs for tc in c["choices"][0]["delta"].get(
        "tool_calls", [])]
    assert calls[0]["index"] == 0
    assert calls[0]["id"] == "toolu_mock_1"
    assert calls[0]["function"] == {"name": "lookup", "arguments": ""}
    fragments = [tc["function"]["arguments"] for tc in calls[1:]]
    assert len(fragments) >= 3
    assert all(tc["index"] == 0 for tc in calls)
    assert json.loads("".join(fragments)) == {"text": "find the big black cat"}
    assert cs[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_anthropic_tool_results_go_back_as_tool_result_blocks(gateway, mock):
    gw = claude_gateway(gateway, mock)
    messages = [
        {"role": "user", "content": "find the cat"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "lookup",
                          "arguments": "{\"text\": \"cat\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "on the mat"},
        {"role": "user", "content": "where is it"},
    ]
    with Conn(gw.port) as c:
        c.request("POST", CHAT, {"model": "smart", "messages": messages,
                                 "tools": TOOLS})
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "where is it"
    _, req = sent(mock)
    assert req["messages"] == [
        {"role": "user", "content": "find the cat"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "lookup",
             "input": {"text": "cat"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": "on the mat"},
            {"type": "text", "text": "where is it"}]},
    ]


def test_anthropic_tool_call_with_invalid_arguments_is_a_400(gateway, mock):
    gw = claude_gateway(gateway, mock)
    before = len(mock.requests())
    with Conn(gw.port) as c:
        c.request("POST", CHAT, {"model": "smart", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [
                {"id": "t", "type": "function",
                 "function": {"name": "lookup", "arguments": "{nope"}}]}]})
        r = c.read_response()
    assert r.status == 400, r
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "arguments is not valid JSON" in r.json()["error"]["message"]
    assert len(mock.requests()) == before  # never sent


def test_anthropic_overloaded_is_503_overloaded(gateway, mock):
    gw = claude_gateway(gateway, mock)
    for stream in (None, True):
        r = chat(gw.port, "busy? [mock:status=529]", model="smart",
                 stream=stream)
        assert r.status == 503, r
        assert r.header("content-type").startswith("application/json")
        err = r.json()["error"]
        assert err["code"] == "overloaded"
        assert err["type"] == "service_unavailable"
        assert "provider 'claude'" in err["message"]
        assert "529" in err["message"]
        assert "overloaded_error" in err["message"]


def test_anthropic_errors_keep_their_meaning(gateway, mock):
    gw = claude_gateway(gateway, mock)
    # The client's own mistake: the provider's message as it is.
    r = chat(gw.port, "x [mock:status=400]", model="smart")
    assert r.status == 400, r
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert r.json()["error"]["message"] == "mock error: status 400"
    # The gateway's key refused: not the client's fault.
    r = chat(gw.port, "x [mock:status=401]", model="smart")
    assert r.status == 502, r
    assert r.json()["error"]["code"] == "upstream_error"
    assert "authentication_error" in r.json()["error"]["message"]
    r = chat(gw.port, "x [mock:status=429] [mock:retry_after=7]",
             model="smart")
    assert r.status == 429, r
    assert r.header("retry-after") == "7"
    assert r.json()["error"]["code"] == "upstream_rate_limited"
