"""Every error status the gateway gives, each with its OpenAI-shaped body."""
import json
import socket
import time

import pytest

from conftest import closed_port
from helpers import Conn, build_request, chat, chat_body, http, wait_for

CHAT = "/v1/chat/completions"


def assert_error(r, status, code, overhead=True):
    assert r.status == status, r
    assert r.header("content-type", "").startswith("application/json"), r
    err = r.json()["error"]
    assert err["code"] == code, r
    assert isinstance(err["message"], str) and err["message"], r
    assert isinstance(err["type"], str) and err["type"], r
    if overhead:
        float(r.header("x-sluice-overhead-ms"))


# -- 400: the request body ---------------------------------------------------

@pytest.mark.parametrize("body", [b"{", b"not json", b"", b"{\"model\":}"],
                         ids=["truncated", "text", "empty", "bad_value"])
def test_body_not_json_is_400_invalid_json(gw, body):
    r = http(gw.port, "POST", CHAT, body,
             {"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_json")


def test_body_not_an_object_is_400_invalid_request(gw):
    r = http(gw.port, "POST", CHAT, [1, 2, 3])
    assert_error(r, 400, "invalid_request")


def test_missing_model_is_400_missing_model(gw):
    r = http(gw.port, "POST", CHAT,
             {"messages": [{"role": "user", "content": "hi"}]})
    assert_error(r, 400, "missing_model")


@pytest.mark.parametrize("messages", [None, [], [1], [{"content": "x"}],
                                      "hello"],
                         ids=["absent", "empty", "not_object", "no_role",
                              "string"])
def test_bad_messages_is_400_invalid_messages(gw, messages):
    body = {"model": "gpt-test"}
    if messages is not None:
        body["messages"] = messages
    r = http(gw.port, "POST", CHAT, body)
    assert_error(r, 400, "invalid_messages")


def test_stream_not_bool_is_400_invalid_request(gw, mock):
    before = mock.stats()["requests"]
    r = chat(gw.port, "hi", stream="yes")
    assert_error(r, 400, "invalid_request")
    assert mock.stats()["requests"] == before


# -- 413, 431, 408: limits ---------------------------------------------------

def test_content_length_over_max_body_is_413_and_close(gateway):
    gw = gateway(limits={"max_body_bytes": 1024})
    with Conn(gw.port) as c:
        # Only the head: the gateway must refuse from Content-Length alone.
        c.send("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: "
               "application/json\r\nContent-Length: 5000\r\n\r\n" % CHAT)
        r = c.read_response()
        assert_error(r, 413, "body_too_large")
        assert c.is_closed()


def test_body_at_max_body_is_accepted(gateway):
    body = json.dumps(chat_body("x", model="echo"))
    gw = gateway(limits={"max_body_bytes": len(body)})
    r = http(gw.port, "POST", CHAT, body)
    assert r.status == 200, r


def test_chunked_body_growing_over_max_body_is_413_and_close(gateway):
    gw = gateway(limits={"max_body_bytes": 1024})
    with Conn(gw.port) as c:
        c.send("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: "
               "application/json\r\nTransfer-Encoding: chunked\r\n\r\n" % CHAT)
        chunk = b"200\r\n" + b" " * 0x200 + b"\r\n"
        sent = 0
        try:
            for _ in range(8):  # 4 KiB in all, never terminated
                c.send(chunk)
                sent += 0x200
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        assert_error(r, 413, "body_too_large")
        assert c.is_closed()


def test_huge_header_is_431_and_close(gateway):
    gw = gateway(limits={"max_header_bytes": 2048})
    with Conn(gw.port) as c:
        try:
            c.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" %
                   ("a" * 8000))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        assert_error(r, 431, "headers_too_large")
        assert c.is_closed()


def test_header_under_max_header_bytes_is_fine(gateway):
    gw = gateway(limits={"max_header_bytes": 2048})
    r = http(gw.port, "GET", "/healthz", headers={"X-Big": "a" * 1500})
    assert r.status == 200, r


def test_half_a_head_times_out_with_408_and_close(gateway):
    gw = gateway(limits={"header_timeout_ms": 300})
    with Conn(gw.port) as c:
        t0 = time.monotonic()
        c.send("POST %s HTTP/1.1\r\nHost: x\r\nContent-Le" % CHAT)
        r = c.read_response()
        waited = time.monotonic() - t0
        assert_error(r, 408, "request_timeout")
        assert c.is_closed()
    assert 0.25 <= waited < 5, waited


def test_half_a_body_times_out_with_408_and_close(gateway):
    gw = gateway(limits={"body_timeout_ms": 300})
    with Conn(gw.port) as c:
        t0 = time.monotonic()
        c.send("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: "
               "application/json\r\nContent-Length: 100\r\n\r\n{\"model\":" %
               CHAT)
        r = c.read_response()
        waited = time.monotonic() - t0
        assert_error(r, 408, "request_timeout")
        assert c.is_closed()
    assert 0.25 <= waited < 5, waited


def test_idle_keepalive_connection_is_closed_after_idle_timeout(gateway):
    gw = gateway(limits={"idle_timeout_ms": 300, "header_timeout_ms": 5000})
    with Conn(gw.port) as c:
        c.request("GET", "/healthz")
        assert c.read_response().status == 200
        t0 = time.monotonic()
        assert c.is_closed(timeout=5)
        assert time.monotonic() - t0 < 4


# -- 501, 505: protocol -----------------------------------------------------

def test_transfer_encoding_gzip_is_501_and_close(gw):
    with Conn(gw.port) as c:
        c.send("POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
               "\r\n" % CHAT)
        r = c.read_response()
        assert_error(r, 501, "unsupported_transfer_encoding")
        assert c.is_closed()


def test_http_2_request_line_is_505(gw):
    with Conn(gw.port) as c:
        c.send("GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
        r = c.read_response()
        assert_error(r, 505, "http_version_not_supported")
        assert c.is_closed()


# -- 502, 504: the upstream failed ------------------------------------------

def test_upstream_connect_refused_is_502(gateway):
    port = closed_port()
    gw = gateway(providers={"dead": {
        "type": "openai", "base_url": "http://127.0.0.1:%d/v1" % port,
        "connect_timeout_ms": 1000}})
    t0 = time.monotonic()
    r = chat(gw.port, "anyone there", model="dead/some-model")
    assert_error(r, 502, "upstream_error")
    assert time.monotonic() - t0 < 3
    assert gw.healthy()


def test_upstream_garbage_body_is_502_upstream_bad_response(gw):
    r = chat(gw.port, "hi [mock:garbage]")
    assert_error(r, 502, "upstream_bad_response")


def test_embeddings_upstream_garbage_is_502_upstream_bad_response(gw):
    r = http(gw.port, "POST", "/v1/embeddings",
             {"model": "gpt-test", "input": "x [mock:garbage]"})
    assert_error(r, 502, "upstream_bad_response")


# Regression: upstream 503/504 were once passed through, and an upstream
# 502 reached the client with the provider's own code.
@pytest.mark.parametrize("status", [500, 502, 503, 401, 403])
def test_upstream_5xx_and_auth_errors_are_502(gw, status):
    r = chat(gw.port, "hi [mock:status=%d]" % status)
    assert_error(r, 502, "upstream_error")


def test_stream_upstream_garbage_is_502_upstream_bad_response(gw):
    r = chat(gw.port, "hi [mock:garbage]", stream=True)
    assert r.status == 502, r
    assert r.error_code() in ("upstream_bad_response", "upstream_error"), r


def test_stream_request_with_upstream_500_is_plain_502(gw):
    r = chat(gw.port, "hi [mock:status=500]", stream=True)
    assert_error(r, 502, "upstream_error")


def test_upstream_truncated_body_is_502(gw):
    # Non-stream close_after: the mock sends half the body, then closes.
    r = chat(gw.port, "a longer answer to cut in half [mock:close_after=1]")
    assert_error(r, 502, "upstream_error")


def test_upstream_hang_is_504_after_first_byte_timeout(gateway, mock):
    gw = gateway(providers={"upstream": {"first_byte_timeout_ms": 300}})
    t0 = time.monotonic()
    r = chat(gw.port, "hi [mock:hang]")
    waited = time.monotonic() - t0
    assert_error(r, 504, "upstream_timeout")
    assert 0.25 <= waited < 3, waited


def test_upstream_slow_first_byte_is_504(gateway):
    gw = gateway(providers={"upstream": {"first_byte_timeout_ms": 300}})
    r = chat(gw.port, "hi [mock:first_byte_ms=1500]")
    assert_error(r, 504, "upstream_timeout")


def test_stream_slow_first_byte_is_504(gateway):
    gw = gateway(providers={"upstream": {"first_byte_timeout_ms": 300}})
    r = chat(gw.port, "hi [mock:first_byte_ms=1500]", stream=True)
    assert_error(r, 504, "upstream_timeout")


def test_upstream_over_total_timeout_is_504(gateway):
    gw = gateway(providers={"upstream": {"first_byte_timeout_ms": 5000,
                                         "timeout_ms": 300}})
    r = chat(gw.port, "hi [mock:delay_ms=1500]")
    assert_error(r, 504, "upstream_timeout")


def test_upstream_delay_within_timeouts_succeeds(gateway):
    gw = gateway(providers={"upstream": {"first_byte_timeout_ms": 2000}})
    t0 = time.monotonic()
    r = chat(gw.port, "slow but fine [mock:delay_ms=300]")
    assert r.status == 200, r
    assert time.monotonic() - t0 >= 0.28
    assert r.json()["choices"][0]["message"]["content"] == "slow but fine"


# -- upstream 4xx passes through --------------------------------------------

def test_upstream_429_passes_through_with_retry_after(gw):
    r = chat(gw.port, "hi [mock:status=429] [mock:retry_after=7]")
    assert r.status == 429, r
    assert r.header("retry-after") == "7"
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded"
    assert err["type"] == "rate_limit_error"


def test_embeddings_upstream_429_passes_through(gw):
    r = http(gw.port, "POST", "/v1/embeddings",
             {"model": "gpt-test",
              "input": "x [mock:status=429] [mock:retry_after=3]"})
    assert r.status == 429, r
    assert r.header("retry-after") == "3"
    assert r.error_code() == "rate_limit_exceeded"


@pytest.mark.parametrize("status", [400, 404, 422])
def test_upstream_4xx_passes_through_with_its_error_body(gw, status):
    r = chat(gw.port, "hi [mock:status=%d]" % status)
    assert r.status == status, r
    err = r.json()["error"]
    # The upstream's own body, as-is.
    assert err["message"] == "mock error: status %d" % status
    assert "param" in err


def test_upstream_400_body_is_forwarded_byte_for_byte(gw):
    r = chat(gw.port, "hi [mock:status=400]")
    assert r.status == 400, r
    assert r.body == (b'{"error":{"message":"mock error: status 400",'
                      b'"type":"invalid_request_error","param":null,'
                      b'"code":"bad_request"}}')


# -- 503: too many connections ----------------------------------------------

def test_over_max_connections_is_503_server_busy_and_close(gateway):
    gw = gateway(workers=1, limits={"max_connections": 2})
    time.sleep(0.2)  # the start-up probe's connection must be gone first
    held = [Conn(gw.port), Conn(gw.port)]
    try:
        for c in held:  # make sure both are accepted and counted
            c.request("GET", "/healthz")
            assert c.read_response().status == 200
        with Conn(gw.port) as third:
            try:
                third.request("GET", "/healthz")
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = third.read_response()
            assert_error(r, 503, "server_busy", overhead=False)
            assert third.is_closed()
        # The held ones still work.
        held[0].request("GET", "/healthz")
        assert held[0].read_response().status == 200
    finally:
        for c in held:
            c.close()
    # Once they are gone, new connections are served again.
    assert wait_for(gw.healthy, timeout=3)
    # Regression: the canned 503 written at accept time once lacked the
    # overhead header the spec puts on every response.
    assert r.header("x-sluice-overhead-ms") is not None, r
