"""What an OpenAI-compatible provider gets: the client's own bytes, with
only the model name replaced and, for a stream, a request for usage added;
and what the gateway makes of bodies its in-place reader refuses (cJSON
decides those, as before)."""
import json

import pytest

from helpers import chat, http

CHAT = "/v1/chat/completions"


def post(gw, raw):
    return http(gw.port, "POST", CHAT, raw,
                {"Content-Type": "application/json"})


def test_upstream_gets_the_client_bytes_when_the_model_name_is_the_same(
        gw, mock):
    raw = (b'{ "model" : "upstream/mock-model",\n  "seed": 12345678901234567890,'
           b' "messages": [ {"role":"user","content":"same bytes"} ] }')
    r = post(gw, raw)
    assert r.status == 200, r
    # A direct provider/model name is rewritten to the provider's name ...
    sent = mock.last_request()["body"].encode()
    assert sent == raw.replace(b'"upstream/mock-model"', b'"mock-model"')


def test_alias_rewrite_keeps_everything_else_byte_for_byte(gw, mock):
    # cJSON would print the seed as 1.2345678901234567e+19: the provider
    # must see the number the client sent.
    raw = (b'{"seed": 12345678901234567890, "model":"gpt-test", '
           b'"temperature": 0.10,"messages":[{"role":"user",'
           b'"content":"caf\\u00e9 \xf0\x9f\x98\x80"}]}')
    r = post(gw, raw)
    assert r.status == 200, r
    sent = mock.last_request()["body"].encode()
    assert sent == raw.replace(b'"gpt-test"', b'"mock-model"')
    assert r.json()["choices"][0]["message"]["content"] == "caf\u00e9 \U0001F600"


def test_stream_gets_include_usage_added_as_the_last_member(gw, mock):
    raw = (b'{"model":"gpt-test","stream":true,"messages":'
           b'[{"role":"user","content":"a b"}]}')
    r = post(gw, raw)
    assert r.status == 200, r
    sent = mock.last_request()["body"].encode()
    assert sent == (b'{"model":"mock-model","stream":true,"messages":'
                    b'[{"role":"user","content":"a b"}],'
                    b'"stream_options":{"include_usage":true}}')


def test_client_stream_options_without_include_usage_keep_their_members(
        gw, mock):
    r = chat(gw.port, "a b", stream=True,
             stream_options={"continuous_usage_stats": False})
    assert r.status == 200, r
    sent = json.loads(mock.last_request()["body"])
    assert sent["stream_options"] == {"continuous_usage_stats": False,
                                      "include_usage": True}
    assert sent["model"] == "mock-model"


def test_model_name_with_escapes_is_decoded_before_routing(gw, mock):
    raw = (b'{"model":"gpt\\u002dtest","messages":'
           b'[{"role":"user","content":"escaped"}]}')
    r = post(gw, raw)
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "mock-model"
    assert json.loads(mock.last_request()["body"])["model"] == "mock-model"


def test_repeated_keys_count_the_first_one(gw, mock):
    raw = (b'{"model":"gpt-test","model":"nope","messages":'
           b'[{"role":"user","content":"first"}],"messages":[]}')
    r = post(gw, raw)
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "mock-model"


@pytest.mark.parametrize("raw", [
    # bytes after the object, a BOM, a control character in a string and
    # a form feed as white space: not strict JSON, but cJSON took them
    # before and still does
    b'{"model":"gpt-test","messages":[{"role":"user","content":"x"}]} tail',
    b'\xef\xbb\xbf{"model":"gpt-test","messages":'
    b'[{"role":"user","content":"x"}]}',
    b'{"model":"gpt-test","messages":[{"role":"user","content":"a\tb"}]}',
    b'{\x0c"model":"gpt-test","messages":[{"role":"user","content":"x"}]}',
], ids=["trailing", "bom", "raw_tab", "form_feed"])
def test_bodies_the_scanner_refuses_are_read_as_before(gw, raw):
    r = post(gw, raw)
    assert r.status == 200, r
    assert r.header("x-sluice-model") == "mock-model"


@pytest.mark.parametrize("raw,index", [
    (b'{"model":"gpt-test","messages":[{"role":"user"},7]}', 1),
    (b'{"model":"gpt-test","messages":[{"role":"user"},{"role":1},[]]}', 1),
    (b'{"model":"gpt-test","messages":[{"content":"x","role":null}]}', 0),
])
def test_bad_message_names_its_index(gw, raw, index):
    r = post(gw, raw)
    assert r.status == 400, r
    err = r.json()["error"]
    assert err["code"] == "invalid_messages"
    assert "messages[%d]" % index in err["message"]


@pytest.mark.parametrize("raw", [
    b'{"model":"gpt-test","messages":[{"role":"user","content":"x"}],}',
    b'{"model":"gpt-test","messages":[{"role":"user","content":"\\ud800"}]}',
    b'{"model":"gpt-test","messages":[{"role":"user","content":"x"}]',
])
def test_bodies_neither_reader_takes_are_invalid_json(gw, raw):
    r = post(gw, raw)
    assert r.status == 400, r
    assert r.json()["error"]["code"] == "invalid_json"

