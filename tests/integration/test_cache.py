"""The cache plugin (plugins/cache.so) in the real gateway, in front of
the mock upstream (whose GET /mock/requests shows whether it was called):
hits and misses, SSE replay of a cached answer, streams cached once
complete and never when cut, errors and hot temperatures not cached,
Cache-Control: no-cache, per-consumer and shared scopes, TTL, the size
cap, the admin purge, and the access log's cache field."""
import json
import os
import time

import pytest

from conftest import SLUICE_BIN
from helpers import chat, chat_body, http, sse_data, stream_text, wait_for
from test_reload import TOKEN, admin, admin_gateway

BUILD_DIR = os.path.dirname(os.path.dirname(SLUICE_BIN))
PLUGIN_DIR = os.path.join(BUILD_DIR, "plugins")
TESTGOOD = os.path.join(BUILD_DIR, "tests", "plugins", "testgood.so")
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module", autouse=True)
def cache_built():
    assert os.path.exists(os.path.join(PLUGIN_DIR, "cache.so")), \
        "build plugins/cache.so with `make`"


def cached(route=("cache",), plugins=None, **config):
    entries = {"cache": {"path": "cache.so", "config": config}}
    entries.update(plugins or {})
    return {
        "plugin_dir": PLUGIN_DIR,
        "plugins": entries,
        "routes": [{"path": CHAT, "plugins": list(route)},
                   {"path": "/v1/messages", "plugins": list(route)},
                   {"path": "/healthz"}],
    }


def upstream_calls(mock):
    return len([r for r in mock.requests() if r["path"] == CHAT])


def ask(gw, text, headers=None, **extra):
    extra.setdefault("temperature", 0)
    return chat(gw.port, text, headers=headers, **extra)


def until_hit(gw, text, **kw):
    """Asks until the answer comes from the cache (stores are queued to
    the store's writer: visible within milliseconds, not at once)."""
    return wait_for(lambda: (lambda r: r if r.header("x-sluice-cache") ==
                             "hit" else None)(ask(gw, text, **kw)),
                    timeout=5)


def content(r):
    return r.json()["choices"][0]["message"]["content"]


def test_second_identical_request_is_a_hit_without_the_upstream(gateway,
                                                                 mock):
    gw = gateway(extra=cached())
    first = ask(gw, "what is a cache")
    assert first.status == 200, first
    assert first.header("x-sluice-cache") == "miss"
    hit = until_hit(gw, "what is a cache")
    assert hit, "the answer was never served from the cache"
    before = upstream_calls(mock)
    again = ask(gw, "what is a cache")
    assert again.header("x-sluice-cache") == "hit"
    assert upstream_calls(mock) == before
    assert content(again) == content(first)
    assert again.json()["usage"] == first.json()["usage"]
    # Another prompt, or another output-changing parameter, is a miss.
    assert ask(gw, "what is a cachet").header("x-sluice-cache") == "miss"
    assert ask(gw, "what is a cache", max_tokens=7).header(
        "x-sluice-cache") == "miss"


def test_hits_of_any_size_are_served_whole(gateway, mock):
    """A hit reads its entry into a buffer sized by the last hit: a bigger
    entry after a small one, and a small one after a big one, come back
    whole."""
    gw = gateway(extra=cached())
    prompts = ["[mock:words=3] small", "[mock:words=3000] big",
               "[mock:words=5] small again", "[mock:words=3000] big"]
    first = {}
    for p in prompts:
        r = ask(gw, p)
        assert r.status == 200, r
        first.setdefault(p, content(r))
        assert until_hit(gw, p), p
    before = upstream_calls(mock)
    for p in prompts + prompts[::-1]:
        r = ask(gw, p)
        assert r.header("x-sluice-cache") == "hit", p
        assert content(r) == first[p]
    assert upstream_calls(mock) == before
    assert len(first["[mock:words=3000] big"]) > 8000


def test_cached_answer_is_replayed_to_a_streaming_request_as_sse(gateway,
                                                                mock):
    gw = gateway(extra=cached())
    text = "replay me as a proper stream please"
    assert ask(gw, text).header("x-sluice-cache") == "miss"
    assert until_hit(gw, text)
    before = upstream_calls(mock)
    r = ask(gw, text, stream=True, stream_options={"include_usage": True})
    assert r.status == 200, r
    assert r.header("x-sluice-cache") == "hit"
    assert r.header("content-type").startswith("text/event-stream")
    assert upstream_calls(mock) == before
    events = sse_data(r.body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert stream_text(events).endswith(text)
    assert len(chunks) > 4  # role, several content events, finish, usage
    finish = [c for c in chunks if c["choices"] and
              c["choices"][0].get("finish_reason")]
    assert finish and finish[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"][
        "completion_tokens"] > 0


def test_streamed_answer_is_cached_once_complete(gateway, mock):
    gw = gateway(extra=cached())
    text = "stream first then hit"
    r = ask(gw, text, stream=True)
    assert r.header("x-sluice-cache") == "miss"
    assert sse_data(r.body)[-1] == "[DONE]"
    hit = until_hit(gw, text)  # a plain request served from the stream
    assert hit and content(hit).endswith(text)
    before = upstream_calls(mock)
    r = ask(gw, text, stream=True)
    assert r.header("x-sluice-cache") == "hit"
    assert stream_text(sse_data(r.body)).endswith(text)
    assert upstream_calls(mock) == before


def test_cut_streams_and_errors_are_never_cached(gateway, mock):
    gw = gateway(extra=cached())
    cut = "[mock:close_after=3] one two three four five six seven eight"
    for _ in range(2):
        r = ask(gw, cut, stream=True)
        assert "[DONE]" not in sse_data(r.body)
        assert r.header("x-sluice-cache") == "miss"
    time.sleep(0.2)
    assert ask(gw, cut, stream=True).header("x-sluice-cache") == "miss"
    err = "[mock:status=500] fail please"
    for _ in range(3):
        r = ask(gw, err)
        assert r.status >= 500, r
        assert r.header("x-sluice-cache") == "miss"
        time.sleep(0.1)


def test_hot_temperature_bypasses_unless_configured(gateway, mock):
    gw = gateway(extra=cached())
    r = ask(gw, "creative", temperature=0.9)
    assert r.header("x-sluice-cache") == "bypass"
    time.sleep(0.1)
    assert ask(gw, "creative", temperature=0.9).header(
        "x-sluice-cache") == "bypass"
    gw2 = gateway(extra=cached(cache_temperature=True))
    assert ask(gw2, "creative", temperature=0.9).header(
        "x-sluice-cache") == "miss"
    assert until_hit(gw2, "creative", temperature=0.9)


def test_cache_control_no_cache_bypasses(gateway, mock):
    gw = gateway(extra=cached())
    ask(gw, "fresh please")
    assert until_hit(gw, "fresh please")
    before = upstream_calls(mock)
    r = ask(gw, "fresh please", headers={"Cache-Control": "no-cache"})
    assert r.header("x-sluice-cache") == "bypass"
    assert upstream_calls(mock) == before + 1


def test_consumer_scope_keeps_consumers_apart_and_shared_does_not(gateway):
    who = {"who": {"path": TESTGOOD, "config": {"consumer_header": "x-user"}}}
    gw = gateway(extra=cached(route=("who", "cache"), plugins=who))
    alice, bob = {"x-user": "alice"}, {"x-user": "bob"}
    ask(gw, "scoped question", headers=alice)
    assert until_hit(gw, "scoped question", headers=alice)
    assert ask(gw, "scoped question", headers=bob).header(
        "x-sluice-cache") == "miss"
    gw2 = gateway(extra=cached(route=("who", "cache"), plugins=who,
                               scope="shared"))
    ask(gw2, "shared question", headers=alice)
    assert until_hit(gw2, "shared question", headers=bob)


def test_entries_expire_after_their_ttl(gateway):
    gw = gateway(extra=cached(ttl_seconds=1))
    ask(gw, "short lived")
    assert until_hit(gw, "short lived")
    time.sleep(1.3)
    assert ask(gw, "short lived").header("x-sluice-cache") == "miss"


def test_size_cap_evicts_the_oldest_entry(gateway):
    gw = gateway(extra=cached(max_entries=2))
    for q in ["first entry", "second entry", "third entry"]:
        ask(gw, q)
        assert until_hit(gw, q), q
    # "first" was evicted when "third" took its slot.
    assert wait_for(lambda: ask(gw, "first entry").header(
        "x-sluice-cache") == "miss")
    assert ask(gw, "third entry").header("x-sluice-cache") == "hit"


def test_admin_purges_all_or_one_model(gateway, mock):
    gw = admin_gateway(gateway, extra=cached())
    ask(gw, "purge a")
    ask(gw, "purge b", model="echo")
    assert until_hit(gw, "purge a")
    assert until_hit(gw, "purge b", model="echo")
    r = admin(gw, "DELETE", "/admin/cache?model=echo")
    assert r.status == 200, r
    assert r.json()["purged"] == 1 and r.json()["model"] == "echo"
    assert wait_for(lambda: ask(gw, "purge b", model="echo").header(
        "x-sluice-cache") == "miss")
    assert ask(gw, "purge a").header("x-sluice-cache") == "hit"
    r = admin(gw, "DELETE", "/admin/cache")
    assert r.status == 200, r
    assert r.json()["purged"] >= 1
    assert wait_for(lambda: ask(gw, "purge a").header(
        "x-sluice-cache") == "miss")
    assert admin(gw, "GET", "/admin/cache").status == 405
    assert admin(gw, "DELETE", "/admin/cache", token="wrong").status == 401


def test_admin_purges_one_entry_by_the_key_the_access_log_names(gateway):
    gw = admin_gateway(gateway, extra=cached())
    assert ask(gw, "entry one").header("x-sluice-cache") == "miss"
    first = wait_for(lambda: [l for l in gw.access_log()
                              if l.get("cache_key")])
    assert first and len(first) == 1, first
    key = first[0]["cache_key"]
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    assert until_hit(gw, "entry one")
    ask(gw, "entry two")
    assert until_hit(gw, "entry two")
    r = admin(gw, "DELETE", "/admin/cache?key=" + key)
    assert r.status == 200, r
    assert r.json()["purged"] == 1
    assert wait_for(lambda: ask(gw, "entry one").header(
        "x-sluice-cache") == "miss")
    assert ask(gw, "entry two").header("x-sluice-cache") == "hit"
    assert admin(gw, "DELETE", "/admin/cache?key=abc").status == 400


def test_access_log_counts_hits_with_no_provider(gateway):
    gw = gateway(extra=cached())
    ask(gw, "logged question")
    assert until_hit(gw, "logged question")

    def lines():
        return [l for l in gw.access_log() if l.get("path") == CHAT]
    # Each worker flushes its own log buffer: wait for both lines.
    assert wait_for(lambda: {"hit", "miss"} <= {l.get("cache")
                                                for l in lines()})
    seen = lines()
    hits = [l for l in seen if l.get("cache") == "hit"]
    misses = [l for l in seen if l.get("cache") == "miss"]
    assert hits and misses, seen
    hit, miss = hits[-1], misses[0]
    assert hit["provider"] is None and hit["upstream_ms"] == 0
    assert hit["status"] == 200
    assert miss["provider"] == "upstream"


def test_anthropic_front_door_gets_cached_answers_in_its_own_shape(gateway):
    gw = gateway(extra=cached())
    body = {"model": "gpt-test", "max_tokens": 50, "temperature": 0,
            "messages": [{"role": "user", "content": "front door"}]}
    r = http(gw.port, "POST", "/v1/messages", body)
    assert r.status == 200, r
    assert r.header("x-sluice-cache") == "miss"
    r = wait_for(lambda: (lambda x: x if x.header("x-sluice-cache") == "hit"
                          else None)(http(gw.port, "POST", "/v1/messages",
                                          body)))
    assert r, "never a hit"
    assert r.json()["type"] == "message"
    assert "front door" in r.json()["content"][0]["text"]


def test_a_hit_goes_back_through_the_plugins_before_the_cache(gateway,
                                                              mock):
    # testgood before the cache appends to answers and upper-cases stream
    # deltas: a hit is seen by it as the provider's answer would be.
    tg = {"tg": {"path": TESTGOOD, "config": {"response_suffix": " [tg]",
                                               "delta_upper": True}}}
    gw = gateway(extra=cached(route=("tg", "cache"), plugins=tg))
    first = ask(gw, "through the chain")
    assert content(first).endswith("through the chain [tg]")
    hit = until_hit(gw, "through the chain")
    assert hit and content(hit) == content(first)  # stored raw: one suffix
    r = ask(gw, "through the chain", stream=True)
    assert r.header("x-sluice-cache") == "hit"
    assert stream_text(sse_data(r.body)).endswith("THROUGH THE CHAIN")


def test_guardrails_before_the_cache_check_cached_answers_too(gateway):
    extra = cached(route=("guard", "cache"), plugins={
        "guard": {"path": "guardrails.so", "config": {}}})
    gw = gateway(extra=extra)
    ask(gw, "the launch code is 1234")
    assert until_hit(gw, "the launch code is 1234")
    # The same cache, now behind a stricter policy: the hit is blocked.
    extra["plugins"]["guard"]["config"] = {
        "response_deny": {"codes": {"pattern": "launch code"}}}
    assert gw.terminate() == 0  # the store stays: same data_dir
    gw2 = gateway(extra=extra)
    r = ask(gw2, "the launch code is 1234")
    assert r.status == 400, r
    assert r.json()["error"]["code"] == "content_blocked"
