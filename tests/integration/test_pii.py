"""The bundled pii plugin in the running gateway: the provider (the mock,
GET /mock/requests) never sees the raw values in any message; tokenized
values come back to the caller in plain and streamed answers, also when a
placeholder is cut between two stream events; a conversation's
placeholders persist across turns; answers can be scanned; a stream the
plugin cannot handle fails closed; bad configs are refused with their
JSON path and the PCRE2 error offset.

A scripted upstream (a few lines of Python below) stands in for the mock
where a test needs an exact stream the mock does not make."""
from http.server import BaseHTTPRequestHandler
import json
import os
import signal
import socketserver
import subprocess
import threading

import pytest

from conftest import KEY_ENV, SLUICE_BIN, base_config, free_port
from helpers import Conn, chat, chat_body, http, sse_data, stream_text, \
    wait_for

BUILD_DIR = os.path.dirname(os.path.dirname(SLUICE_BIN))
PLUGIN_DIR = os.path.join(BUILD_DIR, "plugins")
CHAT = "/v1/chat/completions"

EMAIL = "alice.smith@example.com"
EMAIL2 = "bob@example.org"
PHONE = "+44 20 7946 0958"
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
SSN = "123-45-6780"
IP = "192.168.10.20"
SECRET = "AKIAIOSFODNN7EXAMPLE"
RAW = [EMAIL, EMAIL2, PHONE, CARD, IBAN, SSN, IP, SECRET, "7946 0958",
       "1111 1111", "0532 0130", "alice.smith", "IOSFODNN7"]


@pytest.fixture(scope="module", autouse=True)
def pii_plugin_built():
    assert os.path.exists(os.path.join(PLUGIN_DIR, "pii.so")), (
        "no plugins/pii.so in %s: build it with `make`" % BUILD_DIR)


def pii_config(config=None, extra_models=None, providers=None):
    cfg = {
        "plugin_dir": PLUGIN_DIR,
        "plugins": {"pii": {"path": "pii.so", "config": config or {}}},
        "routes": [{"path": CHAT, "plugins": ["pii"]},
                   {"path": "/v1/messages", "plugins": ["pii"]},
                   {"path": "/healthz"}],
    }
    if extra_models:
        cfg["models"] = extra_models
    if providers:
        cfg["providers"] = providers
    return cfg


def sent_body(mock):
    return mock.last_request()["body"]


def assert_no_raw(text):
    for raw in RAW:
        assert raw not in text, "raw value %r reached the provider: %s" % (
            raw, text)


def test_provider_sees_no_raw_value_in_any_message(gateway, mock):
    gw = gateway(extra=pii_config())
    body = {"model": "gpt-test", "messages": [
        {"role": "system", "content": "The customer is %s, ip %s." % (
            EMAIL, IP)},
        {"role": "user", "content": [
            {"type": "text", "text": "My card is %s and" % CARD},
            {"type": "text", "text": "my IBAN %s" % IBAN}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "lookup", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1",
         "content": "ssn %s, phone %s, key %s" % (SSN, PHONE, SECRET)},
        {"role": "assistant", "content": "Noted %s." % EMAIL2},
        {"role": "user", "content": "Write to %s please" % EMAIL},
    ]}
    r = http(gw.port, "POST", CHAT, body)
    assert r.status == 200, r
    sent = sent_body(mock)
    assert_no_raw(sent)
    msgs = json.loads(sent)["messages"]
    assert msgs[0]["content"] == "The customer is <EMAIL_1>, ip <IP_1>."
    assert "<CARD_1>" in json.dumps(msgs[1]) and "<IBAN_1>" in json.dumps(
        msgs[1])
    assert msgs[3]["content"] == "ssn <SSN_1>, phone <PHONE_1>, key <SECRET_1>"
    assert msgs[4]["content"] == "Noted <EMAIL_2>."
    # The same value gets the same placeholder across messages.
    assert msgs[5]["content"] == "Write to <EMAIL_1> please"
    # And the caller gets its own data back.
    assert r.json()["choices"][0]["message"]["content"] == \
        "Write to %s please" % EMAIL


def test_anthropic_front_door_is_masked_and_restored_too(gateway, mock):
    gw = gateway(extra=pii_config())
    body = {"model": "gpt-test", "max_tokens": 64,
            "system": "Customer card %s." % CARD,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "reply to %s" % EMAIL}]}]}
    r = http(gw.port, "POST", "/v1/messages", body)
    assert r.status == 200, r
    assert_no_raw(sent_body(mock))
    assert "<CARD_1>" in sent_body(mock)
    assert r.json()["content"][0]["text"] == "reply to %s" % EMAIL
    body["stream"] = True
    r = http(gw.port, "POST", "/v1/messages", body)
    assert r.status == 200, r
    text = "".join(
        json.loads(d)["delta"].get("text", "") for d in sse_data(r.body)
        if '"content_block_delta"' in d)
    assert text == "reply to %s" % EMAIL
    assert_no_raw(sent_body(mock))


def test_redact_and_mask_modes_per_detector(gateway, mock):
    gw = gateway(extra=pii_config({"mode": "redact",
                                   "detectors": {"card": "mask",
                                                 "ipv4": False}}))
    r = chat(gw.port, "mail %s card %s from %s" % (EMAIL, CARD, IP))
    assert r.status == 200, r
    sent = json.loads(sent_body(mock))["messages"][-1]["content"]
    assert sent == "mail [EMAIL] card **** **** **** 1111 from %s" % IP
    # Nothing to restore: the answer is what the provider said.
    assert r.json()["choices"][0]["message"]["content"] == sent


def test_tokenize_round_trip_in_a_stream_of_many_events(gateway, mock):
    gw = gateway(extra=pii_config())
    text = ("one %s two %s three %s four %s five %s six" %
            (EMAIL, PHONE, EMAIL, CARD, SSN))
    r = chat(gw.port, text + " [mock:gap_ms=2]", stream=True)
    assert r.status == 200, r
    sent = json.loads(sent_body(mock))["messages"][-1]["content"]
    assert_no_raw(sent)
    assert sent.startswith("one <EMAIL_1> two <PHONE_1> three <EMAIL_1> four "
                           "<CARD_1> five <SSN_1> six")
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    assert len(events) >= 13  # role, 11 words, finish, [DONE]: not a blob
    assert stream_text(events) == text


class Scripted:
    """An OpenAI-shaped upstream that streams the events it is given."""

    def __init__(self):
        self.events = []
        self.answer = ""
        self.bodies = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("content-length", 0))
                body = self.rfile.read(n).decode()
                outer.bodies.append(body)
                if not json.loads(body).get("stream"):
                    data = json.dumps({
                        "id": "c", "object": "chat.completion", "created": 1,
                        "model": "m", "choices": [{
                            "index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant",
                                        "content": outer.answer}}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                  "total_tokens": 2}}).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for ev in outer.events + ["[DONE]"]:
                    data = ("data: %s\n\n" % ev).encode()
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0),
                                                      Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever,
                         daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    s = Scripted()
    yield s
    s.close()


def delta(text, finish=None):
    d = {"content": text} if text is not None else {}
    return json.dumps({"id": "c", "object": "chat.completion.chunk",
                       "created": 1, "model": "m",
                       "choices": [{"index": 0, "delta": d,
                                    "finish_reason": finish}]})


def scripted_gateway(gateway, scripted, config=None):
    return gateway(extra=pii_config(
        config,
        providers={"scripted": {"type": "openai",
                                "base_url": "http://127.0.0.1:%d/v1" %
                                scripted.port,
                                "api_key_env": KEY_ENV}},
        extra_models={"scripted": {"targets": [
            {"provider": "scripted", "model": "m"}]}}))


def test_placeholder_cut_between_events_at_every_byte_is_restored(
        gateway, scripted):
    gw = scripted_gateway(gateway, scripted)
    answer = "Sure, <EMAIL_1> is on file."
    for cut in range(len(answer) + 1):
        scripted.events = [json.dumps({
            "id": "c", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": [{"index": 0,
                                       "delta": {"role": "assistant",
                                                 "content": ""},
                                       "finish_reason": None}]}),
            delta(answer[:cut]), delta(answer[cut:]), delta(None, "stop")]
        r = chat(gw.port, "mail me at %s" % EMAIL, model="scripted",
                 stream=True)
        assert r.status == 200, r
        events = sse_data(r.body)
        assert events[-1] == "[DONE]", events
        assert stream_text(events) == "Sure, %s is on file." % EMAIL, cut
        # Text before the '<' is never held back.
        first = json.loads(events[1])["choices"][0]["delta"]["content"]
        assert first == answer[:min(cut, answer.index("<"))] or \
            (cut >= answer.index(">") + 1 and first.startswith("Sure, " +
                                                               EMAIL)), \
            (cut, first)
    assert_no_raw(scripted.bodies[-1])


def test_answer_scanning_masks_pii_the_model_produced_across_events(
        gateway, scripted):
    gw = scripted_gateway(gateway, scripted, {
        "scan_response": True, "response_mode": "redact"})
    scripted.events = [delta("Her address is car"), delta("ol@exam"),
                       delta("ple.com and card 4111 11"),
                       delta("11 1111 1111 ok"), delta(None, "stop")]
    r = chat(gw.port, "who?", model="scripted", stream=True)
    events = sse_data(r.body)
    assert events[-1] == "[DONE]", events
    text = stream_text(events)
    assert text == "Her address is [EMAIL] and card [CARD] ok", text
    assert "carol" not in r.body.decode() and "1111" not in r.body.decode()


def test_value_cut_between_events_at_every_byte_never_reaches_the_caller(
        gateway, scripted):
    gw = scripted_gateway(gateway, scripted, {"scan_response": True})
    answer = "Write carol@example.com today"
    for cut in range(len(answer) + 1):
        scripted.events = [delta(answer[:cut]), delta(answer[cut:]),
                           delta(None, "stop")]
        r = chat(gw.port, "who?", model="scripted", stream=True)
        events = sse_data(r.body)
        assert events[-1] == "[DONE]", (cut, events)
        assert stream_text(events) == "Write [EMAIL] today", cut
        assert b"carol" not in r.body and b"example" not in r.body, cut


def test_answer_scanning_in_a_plain_answer_masks_and_still_restores(
        gateway, scripted):
    gw = scripted_gateway(gateway, scripted, {
        "scan_response": True, "response_mode": "mask"})
    scripted.answer = "Dear <EMAIL_1>, your SSN 219-09-9998 and %s." % CARD
    r = chat(gw.port, "I am %s" % EMAIL, model="scripted")
    assert r.status == 200, r
    assert_no_raw(scripted.bodies[-1])
    # The model's own PII is masked; the caller's own value comes back.
    assert r.json()["choices"][0]["message"]["content"] == \
        "Dear %s, your SSN ***-**-9998 and **** **** **** 1111." % EMAIL


def test_a_stream_it_cannot_handle_fails_closed(gateway, scripted):
    gw = scripted_gateway(gateway, scripted)
    # A partial placeholder is held, then an event with no delta to carry
    # it: the plugin cannot place the text, so the stream ends in error.
    scripted.events = [delta("Write to <EMA"),
                       json.dumps({"object": "something.else",
                                   "text": "IL_1> now"}),
                       delta(" more"), delta(None, "stop")]
    r = chat(gw.port, "mail %s" % EMAIL, model="scripted", stream=True)
    body = r.body.decode()
    events = sse_data(r.body)
    assert "[DONE]" not in events, events
    assert json.loads(events[-1])["error"]["code"] == "plugin_error"
    assert " more" not in stream_text(
        [e for e in events if "choices" in e])
    assert EMAIL not in body or "Write to " + EMAIL not in body


def test_conversation_map_persists_across_turns(gateway, mock):
    gw = gateway(extra=pii_config({"conversation_header":
                                   "x-conversation-id"}))
    h = {"x-conversation-id": "conv-42"}
    r = chat(gw.port, "I am %s" % EMAIL, headers=h)
    assert r.status == 200, r
    assert json.loads(sent_body(mock))["messages"][-1]["content"] == \
        "I am <EMAIL_1>"

    # A later turn quotes the placeholder (as a model's earlier answer
    # would have): it is restored from the stored map. The map is stored
    # through the store's writer: wait for it with a turn that adds no
    # value (one that did would save its own map over the first).
    def stored():
        r = chat(gw.port, "recall <EMAIL_1>", headers=h)
        return EMAIL in r.json()["choices"][0]["message"]["content"]
    assert wait_for(stored, timeout=3), "the map of turn 1 was not stored"
    r = chat(gw.port, "recall <EMAIL_1> and %s" % EMAIL2, headers=h)
    assert EMAIL in r.json()["choices"][0]["message"]["content"], \
        "the second turn did not restore <EMAIL_1>"
    assert r.json()["choices"][0]["message"]["content"] == \
        "recall %s and %s" % (EMAIL, EMAIL2)
    # New values continue the conversation's numbering.
    assert json.loads(sent_body(mock))["messages"][-1]["content"] == \
        "recall <EMAIL_1> and <EMAIL_2>"
    # Streams too (once turn 2's map is stored).
    assert wait_for(lambda: stream_text(sse_data(chat(
        gw.port, "again <EMAIL_2> [mock:gap_ms=1]", headers=h,
        stream=True).body)) == "again %s" % EMAIL2, timeout=3)
    # Another conversation (or none) does not see this one's values.
    r = chat(gw.port, "recall <EMAIL_1>", headers={"x-conversation-id": "x"})
    assert r.json()["choices"][0]["message"]["content"] == "recall <EMAIL_1>"
    r = chat(gw.port, "recall <EMAIL_1>")
    assert r.json()["choices"][0]["message"]["content"] == "recall <EMAIL_1>"


def write_config(tmp_path, config):
    cfg = base_config(free_port(), "http://127.0.0.1:9", tmp_path)
    cfg.update(pii_config(config))
    path = tmp_path / "pii.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("config,want", [
    ({"custom": {"employee": {"pattern": "EMP-(\\d+"}}},
     ["$.plugins.pii.config.custom.employee.pattern: invalid regex at "
      "offset 8", "missing closing parenthesis"]),
    ({"custom": {"badge": "[a-"}},
     ["$.plugins.pii.config.custom.badge: invalid regex at offset 3"]),
    ({"detectors": {"fingerprint": True}},
     ["$.plugins.pii.config.detectors.fingerprint: unknown detector"]),
    ({"detectors": {"email": "scramble"}},
     ["$.plugins.pii.config.detectors.email: 'scramble' is not"]),
    ({"response_mode": "tokenize"},
     ["$.plugins.pii.config.response_mode:"]),
])
def test_bad_config_is_refused_with_path_and_offset(tmp_path, config, want):
    path = write_config(tmp_path, config)
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "plugin 'pii'" in p.stderr, p.stderr
    for w in want:
        assert w in p.stderr, p.stderr


def test_reload_with_a_bad_pattern_keeps_the_running_config(gateway, mock):
    gw = gateway(extra=pii_config({"custom": {"emp": {
        "pattern": "EMP-\\d{4}", "mode": "tokenize"}}}))
    chat(gw.port, "badge EMP-1234")
    assert "<EMP_1>" in sent_body(mock)
    cfg = json.loads(gw.cfg_path.read_text())
    cfg["plugins"]["pii"]["config"]["custom"]["emp"]["pattern"] = \
        "EMP-(\\d{4}"
    gw.cfg_path.write_text(json.dumps(cfg))
    gw.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: "reload on SIGHUP rejected" in gw.stderr(),
                    timeout=5), gw.stderr()[-2000:]
    assert "$.plugins.pii.config.custom.emp.pattern: invalid regex at " \
        "offset 10" in gw.stderr()
    chat(gw.port, "badge EMP-9876")
    assert "<EMP_1>" in sent_body(mock) and "9876" not in sent_body(mock)
