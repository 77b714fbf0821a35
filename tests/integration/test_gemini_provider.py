"""The gemini provider type: OpenAI clients served by Google's
generateContent API (here the mock speaking it), translated both ways."""
import json
import os
import subprocess
import time

from conftest import KEY_ENV, SLUICE_BIN, TEST_KEY, no_quarantine_env
from helpers import Conn, chat, chat_body, sse_data, stream_text, wait_for

MODEL = "gemini-2.0-flash"


def gemini_gateway(gateway, mock, **provider):
    prov = {"type": "gemini", "base_url": mock.url, "api_key_env": KEY_ENV}
    prov.update(provider)
    return gateway(providers={"gem": prov},
                   models={"gm": {"targets": [{"provider": "gem",
                                               "model": MODEL}]}})


def seen(mock, method="generateContent"):
    """The last request the mock saw on the model's Gemini method."""
    reqs = [r for r in mock.requests()
            if r["path"].startswith("/v1beta/models/%s:%s" % (MODEL, method))]
    assert reqs, "the mock saw no %s request: %r" % (method, mock.requests())
    return reqs[-1]


def chunks(body):
    """The JSON chunks of an event-stream body, and whether it ended with
    [DONE]."""
    events = sse_data(body)
    done = bool(events) and events[-1] == "[DONE]"
    return [json.loads(e) for e in events if e != "[DONE]"], done


def test_gemini_chat_is_translated_both_ways(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    body = chat_body("hello gemini world", model="gm", temperature=0.2,
                     max_tokens=50)
    body["messages"].insert(0, {"role": "system", "content": "be brief"})
    with Conn(gw.port) as c:
        c.request("POST", "/v1/chat/completions", body)
        r = c.read_response()
    assert r.status == 200, r
    assert r.header("x-sluice-provider") == "gem"
    assert r.header("x-sluice-model") == MODEL
    j = r.json()
    assert j["object"] == "chat.completion"
    assert j["id"].startswith("chatcmpl-")
    assert j["model"] == MODEL
    ch = j["choices"][0]
    assert ch["message"] == {"role": "assistant",
                             "content": "hello gemini world"}
    assert ch["finish_reason"] == "stop"
    # The mock counts words: 2 of the system instruction + 3 of the user.
    assert j["usage"]["prompt_tokens"] == 5
    assert j["usage"]["completion_tokens"] == 3
    assert j["usage"]["total_tokens"] == 8

    req = seen(mock)
    assert req["headers"]["x-goog-api-key"] == TEST_KEY
    assert "authorization" not in req["headers"]
    sent = json.loads(req["body"])
    assert sent == {
        "contents": [{"role": "user",
                      "parts": [{"text": "hello gemini world"}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "generationConfig": {"temperature": 0.2, "maxOutputTokens": 50},
    }


def test_gemini_stream_without_include_usage_hides_the_usage_chunk(gateway,
                                                                   mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "one two three four", model="gm", stream=True)
    assert r.status == 200, r
    assert r.header("content-type").startswith("text/event-stream")
    assert r.header("x-sluice-provider") == "gem"
    got, done = chunks(r.body)
    assert done, r.body
    assert got[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in got)
    assert len({c["id"] for c in got}) == 1
    assert stream_text(sse_data(r.body)) == "one two three four"
    # One content delta per word, as the mock streams them.
    deltas = [c for c in got if c["choices"] and
              c["choices"][0]["delta"].get("content")]
    assert len(deltas) == 4
    assert got[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in got)
    req = seen(mock, "streamGenerateContent")
    assert req["path"].endswith("?alt=sse"), req["path"]
    # The gateway still counted the tokens for its log.
    line = wait_for(lambda: [l for l in gw.access_log()
                             if l.get("stream") and l.get("status") == 200])
    assert line and line[-1]["prompt_tokens"] == 4, gw.access_log()
    assert line[-1]["completion_tokens"] == 4


def test_gemini_stream_with_include_usage_ends_with_the_usage_chunk(gateway,
                                                                   mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "alpha beta", model="gm", stream=True,
             stream_options={"include_usage": True})
    assert r.status == 200, r
    got, done = chunks(r.body)
    assert done
    usage = got[-1]
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 2
    assert usage["usage"]["completion_tokens"] == 2
    assert usage["usage"]["total_tokens"] == 4
    assert got[-2]["choices"][0]["finish_reason"] == "stop"
    assert stream_text(sse_data(r.body)) == "alpha beta"


def test_gemini_rate_limit_keeps_429_and_retry_after(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "hi [mock:status=429] [mock:retry_after=7]", model="gm")
    assert r.status == 429, r
    assert r.header("retry-after") == "7"
    e = r.json()["error"]
    assert e["code"] == "upstream_rate_limited"
    assert e["message"] == "mock error: status 429"
    assert e["type"]


def test_gemini_refusal_of_the_gateway_key_is_a_502(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    for status in (403, 503):
        r = chat(gw.port, "hi [mock:status=%d]" % status, model="gm")
        assert r.status == 502, r
        e = r.json()["error"]
        assert e["code"] == "upstream_error"
        assert "provider 'gem' answered with status %d" % status in \
            e["message"], e


def test_gemini_client_error_passes_with_its_status(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "hi [mock:status=400]", model="gm", stream=True)
    assert r.status == 400, r
    assert r.json()["error"]["message"] == "mock error: status 400"


def test_gemini_stream_cut_before_finish_ends_with_an_error_event(gateway,
                                                                 mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "[mock:words=10] [mock:close_after=3]", model="gm",
             stream=True)
    assert r.status == 200, r
    events = sse_data(r.body)
    assert "[DONE]" not in events
    last = json.loads(events[-1])
    assert last["error"]["code"] == "upstream_stream_cut"
    assert stream_text(events[:-1]) == "w1 w2 w3 "


def open_stream(port, text):
    c = Conn(port)
    c.request("POST", "/v1/chat/completions",
              chat_body(text, model="gm", stream=True))
    status = c.read_head()[1]
    assert status == 200, (status, c.buf[:300])
    return c


def test_gemini_client_disconnect_mid_stream_cancels_upstream(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    before = mock.stats()["streams_aborted"]
    c = open_stream(gw.port, "[mock:words=200] [mock:gap_ms=50]")
    got = []
    for _, d in c.events():
        got.append(d)
        if len(got) >= 3:
            break
    c.close()
    assert wait_for(lambda: mock.stats()["streams_aborted"] > before,
                    timeout=2.0), mock.stats()


def test_gemini_slow_reader_gets_backpressure_not_buffering(gateway, mock):
    # About 13 MB of translated chunks: a gateway that buffered what the
    # client has not read would grow by that much while the client sleeps.
    gw = gateway(env=no_quarantine_env(),
                 providers={"gem": {"type": "gemini", "base_url": mock.url}},
                 models={"gm": {"targets": [{"provider": "gem",
                                             "model": MODEL}]}})
    rss0 = gw.rss_kb()
    c = open_stream(gw.port, "[mock:words=60000]")
    with c:
        time.sleep(1.0)
        grown = gw.rss_kb() - rss0
        assert grown < 6 * 1024, "gateway buffered %d KB" % grown
        assert mock.stats()["streams_completed"] == 0
        events = [d for _, d in c.events()]
    assert c.complete
    assert events[-1] == "[DONE]"
    text = stream_text(events)
    assert text.startswith("w1 w2 ") and text.endswith(" w59999 w60000")


def test_gemini_max_tokens_finish_is_length(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "a b c d e f", model="gm", max_completion_tokens=2)
    assert r.status == 200, r
    ch = r.json()["choices"][0]
    assert ch["message"]["content"] == "a b"
    assert ch["finish_reason"] == "length"
    sent = json.loads(seen(mock)["body"])
    assert sent["generationConfig"] == {"maxOutputTokens": 2}


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "additionalProperties": False,
                   "properties": {"text": {"type": "string"}}}}}]


def test_gemini_tool_calls_round_trip(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "Paris [mock:tool=get_weather]", model="gm",
             tools=TOOLS)
    assert r.status == 200, r
    ch = r.json()["choices"][0]
    assert ch["finish_reason"] == "tool_calls"
    call = ch["message"]["tool_calls"][0]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"text": "Paris"}
    sent = json.loads(seen(mock)["body"])
    decl = sent["tools"][0]["functionDeclarations"][0]
    assert decl["name"] == "get_weather"
    assert "additionalProperties" not in decl["parameters"]

    # The client answers the call; Gemini must hear which function spoke.
    body = chat_body("Paris [mock:tool=get_weather]", model="gm", tools=TOOLS)
    body["messages"] += [ch["message"],
                         {"role": "tool", "tool_call_id": call["id"],
                          "content": "sunny"},
                         {"role": "user", "content": "thanks"}]
    with Conn(gw.port) as c:
        c.request("POST", "/v1/chat/completions", body)
        r = c.read_response()
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "thanks"
    sent = json.loads(seen(mock)["body"])
    assert sent["contents"][1] == {"role": "model", "parts": [
        {"functionCall": {"name": "get_weather", "args": {"text": "Paris"}}}]}
    assert sent["contents"][2] == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_weather",
                              "response": {"content": "sunny"}}},
        {"text": "thanks"}]}


def test_gemini_streamed_tool_call(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "Rome [mock:tool=get_weather]", model="gm",
             tools=TOOLS, stream=True)
    assert r.status == 200, r
    got, done = chunks(r.body)
    assert done
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in got
             if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]
    assert len(calls) == 1
    assert calls[0]["index"] == 0
    assert calls[0]["function"]["name"] == "get_weather"
    assert json.loads(calls[0]["function"]["arguments"]) == {"text": "Rome"}
    assert got[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_gemini_request_it_cannot_take_is_refused_before_the_upstream(
        gateway, mock):
    gw = gemini_gateway(gateway, mock)
    before = mock.stats()["requests"]
    r = chat(gw.port, "hi", model="gm", n=3)
    assert r.status == 400, r
    assert r.json()["error"]["code"] == "invalid_request"
    assert "'n' must be 1" in r.json()["error"]["message"]
    assert mock.stats()["requests"] == before


def test_gemini_garbage_answer_is_a_bad_response(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "hi [mock:garbage]", model="gm")
    assert r.status == 502, r
    assert r.json()["error"]["code"] == "upstream_bad_response"


def test_gemini_direct_model_builds_its_url_per_request(gateway, mock):
    gw = gemini_gateway(gateway, mock)
    r = chat(gw.port, "direct hit", model="gem/gemini-1.5-pro")
    assert r.status == 200, r
    assert r.json()["choices"][0]["message"]["content"] == "direct hit"
    assert any(q["path"] == "/v1beta/models/gemini-1.5-pro:generateContent"
               for q in mock.requests())
    r = chat(gw.port, "x", model="gem/bad model")
    assert r.status in (400, 404), r


def test_gemini_retry_after_a_429_reaches_the_answer(gateway, mock):
    gw = gateway(
        providers={"gem": {"type": "gemini", "base_url": mock.url}},
        models={"gm": {"targets": [{"provider": "gem", "model": MODEL}],
                       "retries": 1, "retry_base_ms": 10}})
    r = chat(gw.port, "again [mock:fail_times=gem429:1:429]", model="gm",
             stream=True)
    assert r.status == 200, r
    assert r.header("x-sluice-attempts") == "2"
    assert stream_text(sse_data(r.body)) == "again"


def run_check(tmp_path, providers):
    cfg = {"listen": [{"addr": "127.0.0.1:0"}], "access_log": "off",
           "providers": providers,
           "models": {"gm": {"targets": [{"provider": "gem",
                                          "model": MODEL}]}}}
    path = tmp_path / "gemini.json"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ)
    env[KEY_ENV] = TEST_KEY
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=20, env=env)
    return path, p


def test_gemini_config_is_checked(tmp_path):
    # No base_url needed: Google's is the default.
    path, p = run_check(tmp_path, {"gem": {"type": "gemini",
                                           "api_key_env": KEY_ENV}})
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("%s: ok" % path), p.stdout
    # Options of other types are errors with their path.
    path, p = run_check(tmp_path, {"gem": {"type": "gemini",
                                           "api_version": "2024-10-21",
                                           "anthropic_version": "x"}})
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert any(l.startswith("%s: $.providers.gem.api_version: only for type"
                            % path) for l in lines), lines
    assert any(l.startswith("%s: $.providers.gem.anthropic_version: " % path)
               for l in lines), lines
    # A misspelt type names the right ones.
    path, p = run_check(tmp_path, {"gem": {"type": "gemeni"}})
    assert p.returncode == 1
    assert "$.providers.gem.type" in p.stderr and '"gemini"' in p.stderr, \
        p.stderr
