"""Persistent connections and pipelining."""
import json

from helpers import Conn, build_request, chat_body, sse_data

CHAT = "/v1/chat/completions"


def test_several_requests_share_one_connection(gw, mock):
    before = mock.stats()
    with Conn(gw.port) as c:
        c.request("GET", "/healthz")
        assert c.read_response().status == 200
        c.request("POST", CHAT, chat_body("first on the connection"))
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["choices"][0]["message"]["content"] == \
            "first on the connection"
        c.request("POST", CHAT, chat_body("now a stream", stream=True))
        r = c.read_response()
        assert r.status == 200, r
        assert sse_data(r.body)[-1] == "[DONE]"
        c.request("POST", CHAT, chat_body("x", model="nope"))
        r = c.read_response()
        assert r.status == 404, r  # an answered error keeps the connection
        c.request("POST", CHAT, chat_body("echo after error", model="echo"))
        r = c.read_response()
        assert r.status == 200, r
        c.request("GET", "/v1/models")
        assert c.read_response().status == 200
        assert not c.is_closed(timeout=0.2)
    # Only the two upstream-model requests went upstream: the 404 and the
    # built-in mock provider never touch it.
    after = mock.stats()
    assert after["requests"] - before["requests"] == 2


def test_http10_without_keepalive_closes_after_response(gw):
    with Conn(gw.port) as c:
        c.send("GET /healthz HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200, r
        assert r.json() == {"status": "ok"}
        assert c.is_closed(timeout=5)


def test_http10_chat_works_and_closes(gw):
    with Conn(gw.port) as c:
        c.send(build_request("POST", CHAT, chat_body("old client"),
                             version="1.0"))
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["choices"][0]["message"]["content"] == "old client"
        assert c.is_closed(timeout=5)


def test_connection_close_header_closes_after_response(gw):
    with Conn(gw.port) as c:
        c.request("GET", "/healthz", headers={"Connection": "close"})
        r = c.read_response()
        assert r.status == 200, r
        assert c.is_closed(timeout=5)


def test_pipelined_requests_are_answered_in_order(gw):
    with Conn(gw.port) as c:
        c.send(build_request("GET", "/healthz") +
               build_request("GET", "/healthz"))
        r1 = c.read_response()
        r2 = c.read_response()
        assert r1.status == r2.status == 200
        assert r1.json() == r2.json() == {"status": "ok"}
        assert not c.is_closed(timeout=0.2)


def test_pipelined_slow_then_fast_keeps_order(gw):
    # The first request waits on the upstream, the second could be answered
    # at once: the answers must still come in request order.
    with Conn(gw.port) as c:
        c.send(build_request("POST", CHAT,
                             chat_body("slow one [mock:delay_ms=300]")) +
               build_request("GET", "/v1/models") +
               build_request("POST", CHAT, chat_body("third", model="echo")))
        r1 = c.read_response()
        r2 = c.read_response()
        r3 = c.read_response()
        assert r1.status == 200, r1
        assert r1.json()["choices"][0]["message"]["content"] == "slow one"
        assert r2.status == 200 and r2.json()["object"] == "list", r2
        assert r3.json()["choices"][0]["message"]["content"] == "third", r3


def test_request_split_in_tiny_pieces_is_assembled(gw):
    raw = build_request("POST", CHAT, chat_body("byte by byte", model="echo"))
    with Conn(gw.port) as c:
        for i in range(0, len(raw), 7):
            c.send(raw[i:i + 7])
        r = c.read_response()
        assert r.status == 200, r
        assert json.loads(r.body)["choices"][0]["message"]["content"] == \
            "byte by byte"


def test_chunked_request_body_is_accepted(gw):
    body = json.dumps(chat_body("sent in chunks", model="echo")).encode()
    raw = (b"POST " + CHAT.encode() + b" HTTP/1.1\r\nHost: x\r\n"
           b"Content-Type: application/json\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(body), 10):
        part = body[i:i + 10]
        raw += b"%x\r\n%s\r\n" % (len(part), part)
    raw += b"0\r\n\r\n"
    with Conn(gw.port) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 200, r
        assert r.json()["choices"][0]["message"]["content"] == \
            "sent in chunks"
        # And the connection is still usable.
        c.request("GET", "/healthz")
        assert c.read_response().status == 200


def test_idle_timeout_counts_from_the_last_answer_not_the_first(gateway):
    # Each answer starts the idle wait again: a connection used every
    # 200 ms outlives an idle timeout of 500 ms, whether its requests are
    # answered at once (/healthz) or after an upstream call.
    import time
    gw = gateway(limits={"idle_timeout_ms": 500, "header_timeout_ms": 5000})
    with Conn(gw.port) as c:
        for i in range(10):
            if i < 5:
                c.request("GET", "/healthz")
            else:
                c.request("POST", CHAT, chat_body("still here"))
            assert c.read_response().status == 200, i
            time.sleep(0.2)
        t0 = time.monotonic()
        assert c.is_closed(timeout=5)
        assert 0.25 <= time.monotonic() - t0 < 4


def test_head_timeout_runs_for_a_head_that_arrives_in_pieces(gateway):
    import time
    gw = gateway(limits={"header_timeout_ms": 400, "idle_timeout_ms": 10000})
    with Conn(gw.port) as c:
        c.request("GET", "/healthz")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        c.sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        r = c.read_response()
        assert r.status == 408, r
        assert time.monotonic() - t0 < 4


def test_long_prompts_in_turn_on_one_connection_keep_their_own_text(gw):
    # A connection's memory is reused from request to request (the arena
    # keeps a grown block): each answer must still be its own prompt's.
    with Conn(gw.port) as c:
        for i, n in enumerate([30000, 50, 45000, 30000, 10]):
            text = " ".join(["w%d" % i] * (n // 3))
            c.request("POST", CHAT, chat_body(text))
            r = c.read_response()
            assert r.status == 200, r
            got = r.json()["choices"][0]["message"]["content"]
            assert got == text, (i, len(got), len(text))
