"""Plain requests through the gateway: chat, embeddings, models, health,
routing errors."""
import json

from conftest import TEST_KEY
from helpers import Conn, chat, http, sse_data, stream_text


def test_chat_through_upstream_echoes_text_with_usage_and_headers(gw, mock):
    r = chat(gw.port, "hello from the integration suite")
    assert r.status == 200, r
    body = r.json()
    assert body["object"] == "chat.completion"
    msg = body["choices"][0]["message"]
    assert msg["role"] == "assistant"
    assert msg["content"] == "hello from the integration suite"
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 5,
                             "total_tokens": 10}
    assert r.header("content-type").startswith("application/json")
    assert r.header("x-sluice-provider") == "upstream"
    assert r.header("x-sluice-model") == "mock-model"
    overhead = float(r.header("x-sluice-overhead-ms"))
    assert 0 <= overhead < 10000


def test_chat_upstream_sees_target_model_and_bearer_key(gw, mock):
    r = chat(gw.port, "who am I talking to", temperature=0.5)
    assert r.status == 200, r
    seen = mock.last_request()
    assert seen["method"] == "POST"
    assert seen["headers"]["authorization"] == "Bearer " + TEST_KEY
    sent = json.loads(seen["body"])
    assert sent["model"] == "mock-model"
    assert sent["messages"] == [{"role": "user",
                                 "content": "who am I talking to"}]
    # Fields the gateway does not interpret pass through.
    assert sent["temperature"] == 0.5


# Regression: the direct target's model once pointed into the request
# JSON's "model" string, freed when the adapter rewrote it, so
# x-sluice-model showed freed memory.
def test_chat_direct_provider_slash_model_form(gw, mock):
    r = chat(gw.port, "direct route", model="upstream/some-other-model")
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "direct route"
    assert r.header("x-sluice-provider") == "upstream"
    assert r.header("x-sluice-model") == "some-other-model"
    assert json.loads(mock.last_request()["body"])["model"] == \
        "some-other-model"


def test_chat_direct_model_refused_when_direct_models_disabled(gateway):
    gw = gateway(extra={"allow_direct_models": False})
    r = chat(gw.port, "direct route", model="upstream/some-other-model")
    assert r.status == 404, r
    assert r.error_code() == "model_not_found"


def test_chat_unknown_model_is_404_model_not_found(gw, mock):
    before = mock.stats()["requests"]
    r = chat(gw.port, "hi", model="no-such-model")
    assert r.status == 404, r
    err = r.json()["error"]
    assert err["code"] == "model_not_found"
    assert err["type"] == "invalid_request_error"
    assert err["message"]
    assert r.header("x-sluice-overhead-ms") is not None
    assert mock.stats()["requests"] == before


def test_chat_unknown_provider_in_direct_form_is_404(gw):
    r = chat(gw.port, "hi", model="nosuchprovider/some-model")
    assert r.status == 404, r
    assert r.error_code() == "model_not_found"


def test_builtin_mock_provider_chat_echoes_last_user_message(gw, mock):
    before = mock.stats()["requests"]
    body = {"model": "echo", "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "the second question here"}]}
    r = http(gw.port, "POST", "/v1/chat/completions", body)
    assert r.status == 200, r
    b = r.json()
    assert b["choices"][0]["message"]["content"] == "the second question here"
    # Words of all messages; words of the reply.
    assert b["usage"]["prompt_tokens"] == 2 + 2 + 2 + 4
    assert b["usage"]["completion_tokens"] == 4
    assert r.header("x-sluice-provider") == "mock"
    assert r.header("x-sluice-model") == "echo"
    # The built-in provider never touches the network.
    assert mock.stats()["requests"] == before


def test_builtin_mock_provider_streams_word_by_word(gw):
    text = "one two  three four"
    r = chat(gw.port, text, model="echo", stream=True)
    assert r.status == 200, r
    assert r.header("content-type") == "text/event-stream; charset=utf-8"
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    assert stream_text(events) == text
    deltas = [json.loads(e)["choices"][0]["delta"].get("content")
              for e in events[:-1] if json.loads(e)["choices"]]
    # One content delta per word, each with the whitespace after it.
    assert [d for d in deltas if d] == ["one ", "two  ", "three ", "four"]
    assert r.header("x-sluice-provider") == "mock"


def test_builtin_mock_provider_via_direct_form(gw):
    r = chat(gw.port, "direct mock", model="mock/whatever")
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "direct mock"
    assert r.header("x-sluice-model") == "whatever"


def test_tool_calls_pass_through_non_stream(gw, mock):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {"type": "object"}}}]
    r = chat(gw.port, "weather in Oslo [mock:tool=get_weather]", tools=tools)
    assert r.status == 200, r
    msg = r.json()["choices"][0]["message"]
    call = msg["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {
        "text": "weather in Oslo"}
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(mock.last_request()["body"])["tools"] == tools


def test_embeddings_through_upstream(gw, mock):
    r = http(gw.port, "POST", "/v1/embeddings",
             {"model": "gpt-test", "input": ["alpha beta", "gamma"]})
    assert r.status == 200, r
    b = r.json()
    assert b["object"] == "list"
    assert [d["index"] for d in b["data"]] == [0, 1]
    assert all(len(d["embedding"]) == 8 for d in b["data"])
    assert b["usage"]["prompt_tokens"] == 3
    seen = mock.last_request("/v1/embeddings")
    assert json.loads(seen["body"])["model"] == "mock-model"
    assert seen["headers"]["authorization"] == "Bearer " + TEST_KEY
    assert r.header("x-sluice-provider") == "upstream"


def test_embeddings_builtin_mock_is_deterministic_8_dims(gw):
    r1 = http(gw.port, "POST", "/v1/embeddings",
              {"model": "echo", "input": "same text"})
    r2 = http(gw.port, "POST", "/v1/embeddings",
              {"model": "echo", "input": "same text"})
    r3 = http(gw.port, "POST", "/v1/embeddings",
              {"model": "echo", "input": "other text"})
    assert r1.status == r2.status == r3.status == 200, (r1, r3)
    v1 = r1.json()["data"][0]["embedding"]
    assert len(v1) == 8
    assert v1 == r2.json()["data"][0]["embedding"]
    assert v1 != r3.json()["data"][0]["embedding"]


def test_embeddings_bad_input_is_400_invalid_input(gw):
    r = http(gw.port, "POST", "/v1/embeddings", {"model": "echo", "input": 42})
    assert r.status == 400, r
    assert r.error_code() == "invalid_input"


def test_models_lists_configured_aliases(gw):
    r = http(gw.port, "GET", "/v1/models")
    assert r.status == 200, r
    b = r.json()
    assert b["object"] == "list"
    ids = sorted(m["id"] for m in b["data"])
    assert ids == ["echo", "gpt-test"]
    assert all(m["object"] == "model" for m in b["data"])
    assert r.header("x-sluice-overhead-ms") is not None


def test_healthz_answers_ok(gw):
    r = http(gw.port, "GET", "/healthz")
    assert r.status == 200
    assert r.json() == {"status": "ok"}
    float(r.header("x-sluice-overhead-ms"))


def test_wrong_method_is_405_with_allow(gw):
    r = http(gw.port, "GET", "/v1/chat/completions")
    assert r.status == 405, r
    assert r.error_code() == "method_not_allowed"
    assert "POST" in r.header("allow", "")
    r = http(gw.port, "POST", "/v1/models", {})
    assert r.status == 405, r
    assert "GET" in r.header("allow", "")


def test_unknown_path_is_404_not_found(gw):
    r = http(gw.port, "GET", "/v1/nothing-here")
    assert r.status == 404, r
    err = r.json()["error"]
    assert err["code"] == "not_found"
    assert set(err) >= {"message", "type", "code"}


def test_every_response_has_overhead_header(gw):
    with Conn(gw.port) as c:
        for method, path, body in [
                ("GET", "/healthz", None), ("GET", "/v1/models", None),
                ("GET", "/nope", None), ("POST", "/v1/chat/completions", "{"),
                ("POST", "/v1/chat/completions",
                 {"model": "echo",
                  "messages": [{"role": "user", "content": "x"}]})]:
            c.request(method, path, body)
            r = c.read_response()
            assert float(r.header("x-sluice-overhead-ms")) >= 0, r


def test_content_parts_messages_are_accepted(gw, mock):
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "parts here"}]}]}
    r = http(gw.port, "POST", "/v1/chat/completions", body)
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "parts here"
    assert json.loads(mock.last_request()["body"])["messages"] == \
        body["messages"]
    body["model"] = "echo"
    r = http(gw.port, "POST", "/v1/chat/completions", body)
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "parts here"


def test_query_string_does_not_change_the_route(gw):
    r = http(gw.port, "GET", "/healthz?probe=1")
    assert r.status == 200, r
    assert r.json() == {"status": "ok"}


def test_expect_100_continue_gets_interim_response(gw):
    # curl sends Expect: 100-continue for larger bodies and waits a second
    # for the interim answer before sending the body.
    body = json.dumps({"model": "echo", "messages": [
        {"role": "user", "content": "expecting"}]}).encode()
    with Conn(gw.port) as c:
        c.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
               "Content-Type: application/json\r\nExpect: 100-continue\r\n"
               "Content-Length: %d\r\n\r\n" % len(body))
        c.sock.settimeout(1.0)
        version, status, reason, headers = c.read_head()
        assert status == 100, (status, headers)
        c.sock.settimeout(5)
        c.send(body)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["choices"][0]["message"]["content"] == "expecting"


def test_upstream_answer_over_max_response_bytes_is_502(gateway):
    gw = gateway(limits={"max_response_bytes": 10000})
    r = chat(gw.port, "[mock:words=5000]")
    assert r.status == 502, r
    assert r.error_code().startswith("upstream_"), r
    # A small answer is still fine.
    assert chat(gw.port, "small").status == 200
