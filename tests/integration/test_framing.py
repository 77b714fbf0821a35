"""Strict HTTP/1.1 framing on both sides: ambiguous requests are refused
and the connection closed (no request smuggling through the gateway);
ambiguous upstream answers are 502."""
import pytest

from helpers import Conn, chat

CHAT = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
BODY = '{"model":"echo","messages":[{"role":"user","content":"hi"}]}'
N = len(BODY)

# name -> (raw request, expected status, expected code)
CASES = {
    "te_and_cl": (
        CHAT + "Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
        "%x\r\n%s\r\n0\r\n\r\n" % (N, N, BODY), 400, "bad_request"),
    "cl_and_te": (
        CHAT + "Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n"
        "%x\r\n%s\r\n0\r\n\r\n" % (N, N, BODY), 400, "bad_request"),
    "duplicate_cl_equal": (
        CHAT + "Content-Length: %d\r\nContent-Length: %d\r\n\r\n%s" %
        (N, N, BODY), 400, "bad_request"),
    "duplicate_cl_different": (
        CHAT + "Content-Length: %d\r\nContent-Length: 5\r\n\r\n%s" %
        (N, BODY), 400, "bad_request"),
    "cl_list": (
        CHAT + "Content-Length: %d, %d\r\n\r\n%s" % (N, N, BODY),
        400, "bad_request"),
    "cl_plus_sign": (
        CHAT + "Content-Length: +%d\r\n\r\n%s" % (N, BODY),
        400, "bad_request"),
    "cl_minus_sign": (
        CHAT + "Content-Length: -1\r\n\r\n%s" % BODY, 400, "bad_request"),
    "cl_inner_space": (
        CHAT + "Content-Length: 5 5\r\n\r\n%s" % BODY, 400, "bad_request"),
    "cl_hex": (
        CHAT + "Content-Length: 0x%x\r\n\r\n%s" % (N, BODY),
        400, "bad_request"),
    "te_chunked_twice": (
        CHAT + "Transfer-Encoding: chunked, chunked\r\n\r\n"
        "%x\r\n%s\r\n0\r\n\r\n" % (N, BODY), 400, "bad_request"),
    "te_two_headers": (
        CHAT + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
        "\r\n%x\r\n%s\r\n0\r\n\r\n" % (N, BODY), 400, "bad_request"),
    "obs_fold": (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Folded: first\r\n"
        "  continued\r\n\r\n", 400, "bad_request"),
    "space_before_colon": (
        CHAT + "Content-Length : %d\r\n\r\n%s" % (N, BODY),
        400, "bad_request"),
    "space_in_header_name": (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        400, "bad_request"),
    "nul_in_header_value": (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
        400, "bad_request"),
    "control_byte_in_header_value": (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Ctl: a\x01b\r\n\r\n",
        400, "bad_request"),
    "del_in_header_value": (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Del: a\x7fb\r\n\r\n",
        400, "bad_request"),
    "bare_cr_in_header_value": (
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Cr: a\rb\r\n\r\n",
        400, "bad_request"),
    "bare_lf_line_ends": (
        "GET /healthz HTTP/1.1\nHost: x\n\n", 400, "bad_request"),
    "bare_lf_after_request_line": (
        "GET /healthz HTTP/1.1\nHost: x\r\n\r\n", 400, "bad_request"),
    "bad_chunk_size": (
        CHAT + "Transfer-Encoding: chunked\r\n\r\nzz\r\n%s\r\n0\r\n\r\n" %
        BODY, 400, "bad_request"),
    "chunk_size_0x_prefix": (
        CHAT + "Transfer-Encoding: chunked\r\n\r\n0x%x\r\n%s\r\n0\r\n\r\n" %
        (N, BODY), 400, "bad_request"),
    "chunk_missing_crlf": (
        CHAT + "Transfer-Encoding: chunked\r\n\r\n%x\r\n%sXX0\r\n\r\n" %
        (N, BODY), 400, "bad_request"),
    "missing_host_http11": (
        "GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request"),
    "two_hosts": (
        "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400, "bad_request"),
    "garbage_request_line": (
        "HELLO\r\n\r\n", 400, "bad_request"),
    "te_gzip": (
        CHAT + "Transfer-Encoding: gzip\r\n\r\n", 501,
        "unsupported_transfer_encoding"),
    # A coding list the gateway cannot decode: refusing it as malformed
    # (400) or as unsupported (501) both keep the framing safe.
    "te_gzip_chunked": (
        CHAT + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        (400, 501), ("bad_request", "unsupported_transfer_encoding")),
    "http_2_0": (
        "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505,
        "http_version_not_supported"),
    "http_1_2": (
        "GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n", 505,
        "http_version_not_supported"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ambiguous_request_framing_is_refused_and_closed(gw, name):
    raw, status, code = CASES[name]
    with Conn(gw.port) as c:
        try:
            c.send(raw.encode("latin-1"))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        if isinstance(status, tuple):
            assert r.status in status, r
            assert r.json()["error"]["code"] in code, r
        else:
            assert r.status == status, r
            assert r.json()["error"]["code"] == code, r
        # Framing is unknown after this, so the connection must end.
        assert c.is_closed(timeout=5), "connection left open after %r" % r


def test_smuggled_second_request_is_never_answered(gw):
    # A classic CL.TE smuggle: if the gateway used Content-Length it would
    # see a second request (GET /v1/models) in the body.
    smuggled = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"
    body = "0\r\n\r\n" + smuggled
    raw = (CHAT + "Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
           % len(body) + body)
    with Conn(gw.port) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 400, r
        rest = c.read_to_eof()
        assert b"HTTP/1.1" not in rest, rest


def test_gateway_stays_healthy_after_framing_errors(gw):
    for name in sorted(CASES):
        with Conn(gw.port) as c:
            try:
                c.send(CASES[name][0].encode("latin-1"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            c.read_to_eof()
    assert gw.healthy()
    r = chat(gw.port, "still here", model="echo")
    assert r.status == 200, r


# -- the upstream side -------------------------------------------------------

FRAMES = ["cl_te", "dup_cl", "te_gzip", "bad_chunk", "obs_fold", "bare_lf"]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("frame", FRAMES)
def test_upstream_bad_framing_is_502(gw, frame, stream):
    r = chat(gw.port, "framed badly [mock:frame=%s]" % frame,
             stream=True if stream else None)
    if stream and r.status == 200:
        # Acceptable only if nothing but an error event came through.
        pytest.fail("stream answered 200 for a badly framed upstream: %r" % r)
    assert r.status == 502, r
    assert r.json()["error"]["code"] == "upstream_error", r
    # Nothing of the bad answer reached the client, and the gateway is
    # fine afterwards.
    assert b"mock-model" not in r.body
    assert gw.healthy()
    ok = chat(gw.port, "good again")
    assert ok.status == 200, ok
