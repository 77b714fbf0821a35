"""The gateway's own upstream HTTP/1.1 client: HTTPS upstreams verified
against the CAs the operator trusts, host names, keep-alive connections
reused (one connection for many requests), and servers that close
keep-alive connections on their own schedule -- which must never cost a
request."""
import json
import socket
import socketserver
import threading
import time

import pytest

from conftest import KEY_ENV
from helpers import chat, sse_data, stream_text
from test_tls import _start, pki  # noqa: F401  (pki is a fixture)


def tls_front(gateway, pki):  # noqa: F811
    """A gateway with a TLS listener in front of the mock: the upstream."""
    return _start(gateway, pki)


def via(port, scheme="https", host="127.0.0.1"):
    return {
        "providers": {"front": {"type": "openai",
                                "base_url": "%s://%s:%d/v1" % (scheme, host,
                                                               port),
                                "api_key_env": KEY_ENV,
                                "connect_timeout_ms": 2000,
                                "timeout_ms": 10000}},
        "models": {"via-front": {"targets": [{"provider": "front",
                                              "model": "gpt-test"}]}},
    }


def test_https_upstream_verified_against_the_trusted_ca(gateway, pki):  # noqa: F811
    front = tls_front(gateway, pki)
    gw = gateway(env={"SSL_CERT_FILE": str(pki / "ca.pem")},
                 **via(front.tls_port))
    for i in range(5):  # keep-alive over TLS: later calls reuse it
        r = chat(gw.port, "secure %d" % i, model="via-front")
        assert r.status == 200, r.body
        assert r.json()["choices"][0]["message"]["content"] == "secure %d" % i
    r = chat(gw.port, "one two three", model="via-front", stream=True)
    assert r.status == 200, r.body
    assert stream_text(sse_data(r.body)) == "one two three"
    assert r.body.rstrip().endswith(b"data: [DONE]")


def test_https_upstream_with_an_untrusted_certificate_is_refused(gateway, pki):  # noqa: F811
    front = tls_front(gateway, pki)
    # No SSL_CERT_FILE: the system's CAs, which never signed the test CA.
    gw = gateway(**via(front.tls_port))
    r = chat(gw.port, "hello", model="via-front")
    assert r.status == 502, r.body
    assert "certificate" in r.body.decode().lower(), r.body
    assert gw.healthy()


def test_host_names_are_resolved(gateway, mock):
    gw = gateway(**via(mock.port, scheme="http", host="localhost"))
    r = chat(gw.port, "by name", model="via-front")
    assert r.status == 200, r.body
    assert r.json()["choices"][0]["message"]["content"]


class Upstream(socketserver.ThreadingTCPServer):
    """A small OpenAI-shaped upstream whose keep-alive behaviour the test
    chooses: "keep" keeps connections, "close-silently" closes each one
    right after its answer without saying so, "close" says
    Connection: close."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mode):
        self.mode = mode
        self.connections = 0
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        srv = self.server
        with srv.lock:
            srv.connections += 1
        buf = b""
        s = self.request
        while True:
            while b"\r\n\r\n" not in buf:
                data = s.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    n = int(v)
            while len(buf) < n:
                buf += s.recv(65536)
            body, buf = json.loads(buf[:n]), buf[n:]
            with srv.lock:
                srv.requests += 1
            text = body["messages"][-1]["content"]
            answer = json.dumps({
                "id": "x", "object": "chat.completion", "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant",
                                         "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                          "total_tokens": 2}}).encode()
            extra = b"Connection: close\r\n" if srv.mode == "close" else b""
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      + extra + b"Content-Length: %d\r\n\r\n" % len(answer)
                      + answer)
            if srv.mode != "keep":
                s.close()
                return


@pytest.fixture
def upstream():
    servers = []

    def start(mode):
        u = Upstream(mode)
        servers.append(u)
        return u
    yield start
    for u in servers:
        u.shutdown()
        u.server_close()


def test_keep_alive_connections_are_reused(gateway, upstream):
    up = upstream("keep")
    gw = gateway(workers=1, **via(up.port, scheme="http"))
    for i in range(20):
        r = chat(gw.port, "again %d" % i, model="via-front")
        assert r.status == 200, r.body
    assert up.requests == 20
    assert up.connections == 1


@pytest.mark.parametrize("mode", ["close", "close-silently"])
def test_upstreams_that_close_connections_cost_no_request(gateway, upstream,
                                                          mode):
    up = upstream(mode)
    gw = gateway(workers=1, **via(up.port, scheme="http"))
    # Back to back (a request may meet a connection the server is closing
    # right then) and with pauses (the close arrives while it is idle).
    for i in range(30):
        r = chat(gw.port, "n%d" % i, model="via-front")
        assert r.status == 200, (i, r.body)
        assert r.json()["choices"][0]["message"]["content"] == "n%d" % i
        if i % 3 == 0:
            time.sleep(0.05)
    assert up.requests == 30
    assert up.connections == 30


def test_an_upstream_that_never_accepts_times_out_cleanly(gateway):
    # A listening socket whose backlog is full never completes a connect.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(0)
    fillers = []
    for _ in range(8):
        f = socket.socket()
        f.setblocking(False)
        try:
            f.connect(s.getsockname())
        except BlockingIOError:
            pass
        fillers.append(f)
    cfg = via(s.getsockname()[1], scheme="http")
    cfg["providers"]["front"]["connect_timeout_ms"] = 300
    gw = gateway(**cfg)
    t = time.monotonic()
    r = chat(gw.port, "hello", model="via-front")
    assert r.status in (502, 504), r.body
    assert time.monotonic() - t < 5
    assert gw.healthy()
    for f in fillers:
        f.close()
    s.close()


def test_large_requests_and_answers_cross_whole(gateway, upstream):
    # Megabytes each way: the request is written over many writable events
    # and the answer read over many reads.
    up = upstream("keep")
    cfg = via(up.port, scheme="http")
    cfg["limits"] = {"max_body_bytes": 16 << 20}
    gw = gateway(**cfg)
    text = "".join(chr(97 + i % 26) for i in range(3 << 20))
    for _ in range(2):
        r = chat(gw.port, text, model="via-front")
        assert r.status == 200, r.body[:300]
        assert r.json()["choices"][0]["message"]["content"] == text
