"""TLS on client listeners: HTTPS with certificate verification, TLS 1.2+
only, ALPN http/1.1, client certificates (mTLS) naming the consumer, and
certificates that reload with the config without dropping connections.
The test CA and certificates are made here with the openssl command."""
import http.client
import json
import socket
import ssl
import subprocess

import pytest

from conftest import free_port
from test_reload import admin, admin_gateway


def sh(*args, cwd):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


def make_ca(d):
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
       "-subj", "/CN=Sluice Test CA", "-keyout", "ca.key", "-out", "ca.pem",
       cwd=d)


def make_cert(d, name, cn, serial, client=False):
    sh("openssl", "req", "-newkey", "ec", "-pkeyopt",
       "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=" + cn,
       "-keyout", name + ".key", "-out", name + ".csr", cwd=d)
    ext = d / (name + ".ext")
    ext.write_text("extendedKeyUsage=clientAuth\n" if client else
                   "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "extendedKeyUsage=serverAuth\n")
    sh("openssl", "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem",
       "-CAkey", "ca.key", "-set_serial", str(serial), "-days", "2",
       "-extfile", name + ".ext", "-out", name + ".pem", cwd=d)


@pytest.fixture
def pki(tmp_path):
    d = tmp_path / "pki"
    d.mkdir()
    make_ca(d)
    make_cert(d, "server", "localhost", 1001)
    make_cert(d, "server2", "localhost", 2002)
    make_cert(d, "client", "team-blue", 3003, client=True)
    return d


def client_ctx(pki, cert=None, **kw):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.set_alpn_protocols(["http/1.1"])
    if cert:
        ctx.load_cert_chain(str(pki / (cert + ".pem")),
                            str(pki / (cert + ".key")))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def https(port, ctx, method="POST", path="/v1/chat/completions", body=None):
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    c.request(method, path, data, {"Content-Type": "application/json"})
    r = c.getresponse()
    return c, r, r.read()


def chat_body(text, **extra):
    b = {"model": "gpt-test", "messages": [{"role": "user", "content": text}]}
    b.update(extra)
    return b


def test_https_chat_with_verified_certificate(gateway, pki):
    gw = _start(gateway, pki)
    c, r, body = https(gw.tls_port, client_ctx(pki), body=chat_body("secure"))
    assert r.status == 200, body
    assert json.loads(body)["choices"][0]["message"]["content"] == "secure"
    assert c.sock.selected_alpn_protocol() == "http/1.1"
    assert c.sock.version() in ("TLSv1.2", "TLSv1.3")
    # Keep-alive works over TLS, streams too.
    c.request("POST", "/v1/chat/completions",
              json.dumps(chat_body("a b c", stream=True)).encode(),
              {"Content-Type": "application/json"})
    r = c.getresponse()
    text = r.read().decode()
    assert r.status == 200 and text.rstrip().endswith("data: [DONE]")
    c.close()


def s_client(port, *args):
    p = subprocess.run(["openssl", "s_client", "-connect",
                        "127.0.0.1:%d" % port, *args], input="",
                       capture_output=True, text=True, timeout=20)
    return p.stdout + p.stderr


def test_old_tls_and_plain_http_are_refused(gateway, pki):
    gw = _start(gateway, pki)
    # The client is allowed TLS 1.1 (security level 0): the refusal is the
    # server's own alert.
    out = s_client(gw.tls_port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert "alert protocol version" in out, out
    out = s_client(gw.tls_port, "-tls1_2")
    assert "Protocol  : TLSv1.2" in out, out
    s = socket.create_connection(("127.0.0.1", gw.tls_port), timeout=5)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        data = s.recv(100)
    except ConnectionResetError:
        data = b""
    assert not data.startswith(b"HTTP/1.1 200"), data
    s.close()
    assert gw.healthy()


def test_mtls_requires_a_client_certificate(gateway, pki):
    gw = _start(gateway, pki, mtls=True)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        c, r, body = https(gw.tls_port, client_ctx(pki), "GET", "/healthz")
        r.status  # TLS 1.3 reports the refusal on first use
    c, r, body = https(gw.tls_port, client_ctx(pki, cert="client"),
                       body=chat_body("with cert"))
    assert r.status == 200, body


def test_certificates_reload_without_dropping_connections(gateway, pki):
    gw = _start(gateway, pki, admin_api=True)
    c, r, body = https(gw.tls_port, client_ctx(pki), "GET", "/healthz")
    assert c.sock.getpeercert()["serialNumber"] == "03E9"  # 1001
    cfg = json.loads(gw.cfg_path.read_text())
    cfg["listen"][1]["tls"]["cert"] = str(pki / "server2.pem")
    cfg["listen"][1]["tls"]["key"] = str(pki / "server2.key")
    gw.cfg_path.write_text(json.dumps(cfg))
    assert admin(gw, "POST", "/admin/reload").status == 200
    # The open connection keeps working on the context it began with...
    c.request("GET", "/healthz")
    assert c.getresponse().read() == b'{"status":"ok"}'
    c.close()
    # ...and a new one gets the new certificate.
    c2, r2, _ = https(gw.tls_port, client_ctx(pki), "GET", "/healthz")
    assert c2.sock.getpeercert()["serialNumber"] == "07D2"  # 2002
    c2.close()


def test_a_bad_certificate_path_is_a_config_error(gateway, pki, tmp_path):
    cfg = {"listen": [{"addr": "127.0.0.1:1",
                       "tls": {"cert": str(pki / "nope.pem"),
                               "key": str(pki / "server.key")}}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    from conftest import SLUICE_BIN
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "$.listen[0].tls.cert" in p.stderr, p.stderr


def _start(gateway, pki, mtls=False, admin_api=False):
    """A gateway with its usual plain listener (for the fixture's health
    checks) plus a TLS one."""
    import conftest
    tls_port = free_port()
    tls = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key")}
    if mtls:
        tls["client_ca"] = str(pki / "ca.pem")
    orig = conftest.base_config

    def with_tls(port, mock_url, tmp_path, workers=2):
        cfg = orig(port, mock_url, tmp_path, workers)
        cfg["listen"].append({"addr": "127.0.0.1:%d" % tls_port, "tls": tls})
        return cfg
    conftest.base_config = with_tls
    try:
        gw = admin_gateway(gateway) if admin_api else gateway()
    finally:
        conftest.base_config = orig
    gw.tls_port = tls_port
    return gw


def test_curl_verifies_the_gateway_and_presents_a_client_cert(gateway, pki):
    gw = _start(gateway, pki, mtls=True)
    url = "https://127.0.0.1:%d/v1/chat/completions" % gw.tls_port
    body = json.dumps(chat_body("over curl"))
    p = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"),
                        "--cert", str(pki / "client.pem"), "--key",
                        str(pki / "client.key"), "-H",
                        "Content-Type: application/json", "-d", body, url],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["choices"][0]["message"]["content"] == \
        "over curl"
    # Without the client certificate the handshake is refused.
    p = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"),
                        "-d", body, url], capture_output=True, text=True,
                       timeout=20)
    assert p.returncode != 0


def test_mtls_certificate_names_the_consumer_for_the_auth_plugin(
        gateway, pki):
    import os
    from conftest import SLUICE_BIN
    plugin_dir = os.path.join(os.path.dirname(os.path.dirname(SLUICE_BIN)),
                              "plugins")
    import conftest
    tls_port = free_port()
    tls = {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"),
           "client_ca": str(pki / "ca.pem")}
    orig = conftest.base_config

    def with_tls(port, mock_url, tmp_path, workers=2):
        cfg = orig(port, mock_url, tmp_path, workers)
        cfg["listen"].append({"addr": "127.0.0.1:%d" % tls_port, "tls": tls})
        cfg["plugin_dir"] = plugin_dir
        cfg["plugins"] = {"auth": {"path": "auth.so",
                                   "config": {"client_certificates": True}}}
        cfg["routes"] = [{"path": "/v1/chat/completions",
                          "plugins": ["auth"]}, {"path": "/healthz"}]
        return cfg
    conftest.base_config = with_tls
    try:
        gw = gateway()
    finally:
        conftest.base_config = orig
    c, r, body = https(tls_port, client_ctx(pki, cert="client"),
                       body=chat_body("cert only"))
    assert r.status == 200, body
    # The plain listener has no certificate: the same request is refused.
    from helpers import chat
    assert chat(gw.port, "no cert").status == 401
    line = None
    import time
    for _ in range(100):
        lines = [l for l in gw.access_log() if l.get("status") == 200 and
                 l.get("path") == "/v1/chat/completions"]
        if lines:
            line = lines[-1]
            break
        time.sleep(0.05)
    assert line is not None and line.get("consumer") == "team-blue", line
