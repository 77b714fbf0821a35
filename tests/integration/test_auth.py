"""The bundled auth plugin through the real binary: API keys made by
`sluice keys` and by the admin API, revocation, model restriction, both
headers, JWTs (HS256 and RS256, keys made here with python and the openssl
CLI), missing credentials, no secret in any log, and keys that survive a
restart."""
import base64
import hashlib
import hmac
import json
import os
import subprocess
import time

import pytest

from conftest import SLUICE_BIN
from helpers import chat, http, sse_data, wait_for
from test_reload import TOKEN, admin, admin_gateway

BUILD_DIR = os.path.dirname(os.path.dirname(SLUICE_BIN))
PLUGIN_DIR = os.path.join(BUILD_DIR, "plugins")
CHAT = "/v1/chat/completions"
JWT_ENV = "SLUICE_IT_JWT_SECRET"
JWT_SECRET = "it-jwt-secret-0123456789abcdef-0123456789"


@pytest.fixture(scope="module", autouse=True)
def auth_plugin_built():
    assert os.path.exists(os.path.join(PLUGIN_DIR, "auth.so")), (
        "no plugins/auth.so in %s: build it with `make`" % BUILD_DIR)


def auth_extra(config=None):
    return {
        "plugin_dir": PLUGIN_DIR,
        "plugins": {"auth": {"path": "auth.so", "config": config or {}}},
        "routes": [{"path": CHAT, "plugins": ["auth"]},
                   {"path": "/v1/models"}, {"path": "/healthz"}],
    }


def start(gateway, config=None):
    return admin_gateway(gateway, extra=auth_extra(config))


def keys_cli(gw, *args):
    return subprocess.run([SLUICE_BIN, "keys", *args, "-c", str(gw.cfg_path)],
                          capture_output=True, text=True, timeout=20)


def cli_create(gw, *args):
    p = keys_cli(gw, "create", *args)
    assert p.returncode == 0, p.stderr
    key = p.stdout.strip()
    assert key.startswith("sk-sl-") and "\n" not in key, p.stdout
    return key


def bearer(key):
    return {"Authorization": "Bearer " + key}


def consumers(gw, n):
    """The consumer field of the last n chat lines of the access log."""
    assert wait_for(lambda: len([l for l in gw.access_log()
                                 if l.get("path") == CHAT]) >= n)
    return [l.get("consumer") for l in gw.access_log()
            if l.get("path") == CHAT][-n:]


def all_logs(gw):
    text = gw.stderr()
    time.sleep(0.3)  # the access log is flushed every 200 ms
    if os.path.exists(gw.log_path):
        text += open(gw.log_path).read()
    return text


def test_cli_key_authenticates_and_names_the_consumer(gateway):
    gw = start(gateway)
    key = cli_create(gw, "--name", "team-a")
    r = chat(gw.port, "hello", model="echo", headers=bearer(key))
    assert r.status == 200, r
    assert consumers(gw, 1) == ["team-a"]
    # A stream is authenticated the same way.
    r = chat(gw.port, "hi there", model="echo", stream=True,
             headers=bearer(key))
    assert r.status == 200 and sse_data(r.body)[-1] == "[DONE]", r
    # Listed without its secret, stored only as its hash.
    p = keys_cli(gw, "list")
    assert p.returncode == 0 and "team-a" in p.stdout and "active" in p.stdout
    assert key not in p.stdout and key[6:] not in p.stdout
    listed = json.loads(keys_cli(gw, "list", "--json").stdout)
    assert [k["name"] for k in listed] == ["team-a"]
    data = b"".join(open(os.path.join(d, f), "rb").read()
                    for d, _, fs in os.walk(gw.config["data_dir"])
                    for f in fs)
    assert key.encode() not in data and key[6:].encode() not in data
    assert hashlib.sha256(key.encode()).digest() in data


def test_x_api_key_header_is_accepted(gateway):
    gw = start(gateway)
    key = cli_create(gw, "--name", "via-header")
    r = chat(gw.port, "hello", model="echo", headers={"x-api-key": key})
    assert r.status == 200, r
    assert consumers(gw, 1) == ["via-header"]


def test_admin_api_creates_lists_shows_and_revokes_keys(gateway, mock):
    gw = start(gateway)
    r = admin(gw, "POST", "/admin/keys",
              body={"name": "svc", "models": ["echo"], "rpm": 60, "tpm": 1000})
    assert r.status == 201, r
    made = r.json()
    key, kid = made["key"], made["id"]
    assert key.startswith("sk-sl-") and made["models"] == ["echo"]
    assert made["rpm"] == 60 and made["tpm"] == 1000
    assert made["revoked"] is False
    assert chat(gw.port, "x", model="echo", headers=bearer(key)).status == 200
    listed = admin(gw, "GET", "/admin/keys").json()["keys"]
    assert [k["id"] for k in listed] == [kid]
    assert "key" not in listed[0] and key not in json.dumps(listed)
    shown = admin(gw, "GET", "/admin/keys/" + kid)
    assert shown.status == 200 and shown.json()["name"] == "svc"
    assert "key" not in shown.json()
    # Revoked: refused at once, and said so in the listing.
    r = admin(gw, "DELETE", "/admin/keys/" + kid)
    assert r.status == 200 and r.json()["revoked"] is True
    r = chat(gw.port, "x", model="echo", headers=bearer(key))
    assert r.status == 401 and r.error_code() == "invalid_api_key", r
    assert admin(gw, "GET", "/admin/keys/" + kid).json()["revoked"] is True
    # Errors: unknown id, bad body, no admin token.
    assert admin(gw, "GET", "/admin/keys/key_nope").status == 404
    assert admin(gw, "DELETE", "/admin/keys/key_nope").status == 404
    bad = admin(gw, "POST", "/admin/keys", body={"name": "x", "rpm": -1})
    assert bad.status == 400 and "rpm" in bad.json()["error"]["message"]
    assert admin(gw, "POST", "/admin/keys", body={"models": []}).status == 400
    assert admin(gw, "GET", "/admin/keys", token=None).status == 401
    assert admin(gw, "PUT", "/admin/keys").status == 405


def test_cli_revoke_refuses_the_key(gateway):
    gw = start(gateway)
    key = cli_create(gw, "--name", "short-lived")
    assert chat(gw.port, "x", model="echo", headers=bearer(key)).status == 200
    kid = json.loads(keys_cli(gw, "list", "--json").stdout)[0]["id"]
    p = keys_cli(gw, "revoke", kid)
    assert p.returncode == 0, p.stderr
    r = chat(gw.port, "x", model="echo", headers=bearer(key))
    assert r.status == 401 and r.error_code() == "invalid_api_key", r
    assert "revoked" in keys_cli(gw, "list").stdout
    p = keys_cli(gw, "revoke", "key_nope")
    assert p.returncode == 1 and "no key" in p.stderr


def test_model_restricted_key_gets_403_for_other_models(gateway, mock):
    gw = start(gateway)
    key = cli_create(gw, "--name", "echo-only", "--models", "echo",
                     "--rpm", "10")
    assert chat(gw.port, "x", model="echo", headers=bearer(key)).status == 200
    before = len(mock.requests())
    r = chat(gw.port, "x", model="gpt-test", headers=bearer(key))
    assert r.status == 403, r
    err = r.json()["error"]
    assert err["code"] == "model_not_allowed" and err["type"]
    assert len(mock.requests()) == before  # never reached the upstream


def test_missing_or_unknown_credentials_get_401(gateway, mock):
    gw = start(gateway)
    before = len(mock.requests())
    r = chat(gw.port, "x")
    assert r.status == 401 and r.error_code() == "missing_api_key", r
    assert r.header("www-authenticate", "").startswith("Bearer")
    assert r.json()["error"]["type"] == "invalid_request_error"
    for cred in ("sk-sl-" + "A" * 43, "not-a-key", "Bearer"):
        r = chat(gw.port, "x", headers=bearer(cred))
        assert r.status == 401 and r.error_code() == "invalid_api_key", r
    r = chat(gw.port, "x", headers={"Authorization": "Basic dTpw"})
    assert r.status == 401 and r.error_code() == "missing_api_key", r
    assert len(mock.requests()) == before
    # Routes without the plugin stay open.
    assert http(gw.port, "GET", "/v1/models").status == 200


def test_bad_auth_config_is_refused_at_start(tmp_path):
    cfg = {"listen": [{"addr": "127.0.0.1:1"}],
           "data_dir": str(tmp_path / "d"),
           "providers": {"mock": {"type": "mock"}},
           "models": {"echo": {"targets": [{"provider": "mock",
                                            "model": "echo"}]}}}
    cfg.update(auth_extra({"jwt_secret_env": "SLUICE_IT_UNSET_VAR"}))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_IT_UNSET_VAR"}
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, env=env, timeout=20)
    assert p.returncode == 1
    assert "$.plugins.auth" in p.stderr and "SLUICE_IT_UNSET_VAR" in p.stderr


# ---- JWT ----

def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(claims, secret=JWT_SECRET, header=None):
    head = b64(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), ("%s.%s" % (head, body)).encode(),
                   hashlib.sha256).digest()
    return "%s.%s.%s" % (head, body, b64(sig))


def jwt_gateway(gateway, config):
    gw = gateway(extra=auth_extra(config), env={JWT_ENV: JWT_SECRET})
    return gw


def test_jwt_hs256_valid_expired_none_and_tampered(gateway):
    gw = jwt_gateway(gateway, {"jwt_secret_env": JWT_ENV,
                               "jwt_issuer": "https://idp.test",
                               "jwt_audience": ["sluice"],
                               "jwt_leeway_s": 5})
    now = int(time.time())
    good = {"sub": "user-42", "iss": "https://idp.test", "aud": "sluice",
            "exp": now + 300}
    r = chat(gw.port, "x", model="echo", headers=bearer(hs256(good)))
    assert r.status == 200, r
    assert consumers(gw, 1) == ["user-42"]

    def refused(token, why):
        r = chat(gw.port, "x", model="echo", headers=bearer(token))
        assert r.status == 401, r
        assert r.error_code() == "invalid_token", r
        assert why in r.json()["error"]["message"], r.json()
    refused(hs256(dict(good, exp=now - 60)), "expired")
    refused(hs256(dict(good, nbf=now + 600)), "not valid yet")
    refused(hs256(dict(good, iss="https://evil")), "issuer")
    refused(hs256(dict(good, aud="other")), "audience")
    refused(hs256(good, secret="another-secret-0123456789abcdef-xyz"),
            "signature")
    none = hs256(good, header={"alg": "none", "typ": "JWT"})
    refused(none.rsplit(".", 1)[0] + ".", "algorithm")
    head, body, sig = hs256(good).split(".")
    forged = b64(json.dumps(dict(good, sub="admin")).encode())
    refused("%s.%s.%s" % (head, forged, sig), "signature")
    # API keys stay on (api_keys defaults to true): an unknown one is 401.
    r = chat(gw.port, "x", model="echo", headers=bearer("sk-sl-nope"))
    assert r.status == 401 and r.error_code() == "invalid_api_key"


def openssl(*args, **kw):
    subprocess.run(["openssl", *args], check=True, capture_output=True,
                   timeout=30, **kw)


def test_jwt_rs256_with_a_pem_public_key(gateway, tmp_path):
    key, pub = tmp_path / "rsa.pem", tmp_path / "rsa.pub.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt",
            "rsa_keygen_bits:2048", "-out", str(key))
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    other = tmp_path / "other.pem"
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt",
            "rsa_keygen_bits:2048", "-out", str(other))

    def rs256(claims, signer=key):
        head = b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        data = tmp_path / "input"
        data.write_text("%s.%s" % (head, body))
        out = tmp_path / "sig"
        openssl("dgst", "-sha256", "-sign", str(signer), "-out", str(out),
                str(data))
        return "%s.%s.%s" % (head, body, b64(out.read_bytes()))

    gw = jwt_gateway(gateway, {"jwt_public_keys": [str(pub)],
                               "jwt_algorithms": ["RS256"],
                               "consumer_claim": "client_id"})
    now = int(time.time())
    claims = {"sub": "u", "client_id": "app-rs", "exp": now + 300}
    r = chat(gw.port, "x", model="echo", headers=bearer(rs256(claims)))
    assert r.status == 200, r
    assert consumers(gw, 1) == ["app-rs"]
    r = chat(gw.port, "x", model="echo",
             headers=bearer(rs256(claims, signer=other)))
    assert r.status == 401 and r.error_code() == "invalid_token", r
    # HS256 is not among the algorithms: refused even when well signed.
    r = chat(gw.port, "x", model="echo", headers=bearer(hs256(claims)))
    assert r.status == 401 and "algorithm" in r.json()["error"]["message"]


def test_no_credential_appears_in_any_log(gateway):
    gw = jwt_gateway(gateway, {"jwt_secret_env": JWT_ENV})
    key = cli_create(gw, "--name", "quiet")
    token = hs256({"sub": "jwt-user", "exp": int(time.time()) + 300})
    bad_token = hs256({"sub": "x"}, secret="wrong-secret-0123456789abcdef-0123")
    used = [key, token, bad_token, "sk-sl-" + "Z" * 43, "plain-garbage-cred"]
    for cred in used:
        chat(gw.port, "x", model="echo", headers=bearer(cred))
        chat(gw.port, "x", model="echo", headers={"x-api-key": cred})
    kid = json.loads(keys_cli(gw, "list", "--json").stdout)[0]["id"]
    keys_cli(gw, "revoke", kid)
    chat(gw.port, "x", model="echo", headers=bearer(key))
    assert wait_for(lambda: len(gw.access_log()) >= 2 * len(used) + 1)
    text = all_logs(gw)
    assert "quiet" in text and "jwt-user" in text  # consumers are logged
    for cred in used + [JWT_SECRET]:
        for piece in (cred, cred[-24:]):
            assert piece not in text, "a credential is in the logs"
    for part in token.split(".")[1:]:
        assert part not in text


def test_keys_survive_a_gateway_restart(gateway):
    gw = start(gateway)
    r = admin(gw, "POST", "/admin/keys", body={"name": "durable"})
    key = r.json()["key"]
    gone = admin(gw, "POST", "/admin/keys", body={"name": "gone"}).json()
    admin(gw, "DELETE", "/admin/keys/" + gone["id"])
    assert gw.terminate() == 0
    gw2 = start(gateway)
    assert gw2.config["data_dir"] == gw.config["data_dir"]
    r = chat(gw2.port, "x", model="echo", headers=bearer(key))
    assert r.status == 200, r
    assert consumers(gw2, 1) == ["durable"]
    r = chat(gw2.port, "x", model="echo", headers=bearer(gone["key"]))
    assert r.status == 401
    names = [k["name"] for k in admin(gw2, "GET", "/admin/keys").json()["keys"]]
    assert sorted(names) == ["durable", "gone"]


def test_a_keys_own_rpm_is_applied_by_the_ratelimit_plugin(gateway):
    if not os.path.exists(os.path.join(PLUGIN_DIR, "ratelimit.so")):
        pytest.skip("no plugins/ratelimit.so in this build")
    extra = auth_extra()
    extra["plugins"]["ratelimit"] = {"path": "ratelimit.so",
                                     "config": {"requests_per_minute": 100,
                                                "persist": False}}
    extra["routes"][0]["plugins"] = ["auth", "ratelimit"]
    gw = admin_gateway(gateway, extra=extra)
    tight = cli_create(gw, "--name", "tight", "--rpm", "2")
    loose = cli_create(gw, "--name", "loose")
    # Fixed one-minute windows: do not straddle a minute's end.
    if time.time() % 60 > 55:
        time.sleep(60 - time.time() % 60 + 0.2)
    got = [chat(gw.port, "x", model="echo", headers=bearer(tight)).status
           for _ in range(3)]
    assert got == [200, 200, 429], got
    assert chat(gw.port, "x", model="echo",
                headers=bearer(loose)).status == 200


def der_to_raw(der):
    """An ECDSA DER signature (SEQUENCE of two INTEGERs) as JOSE's r || s."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\0").rjust(32, b"\0")
        i += 2 + n
    return out


def test_jwt_es256_pem_and_a_jwks_file_chosen_by_kid(gateway, tmp_path):
    key, pub = tmp_path / "ec.pem", tmp_path / "ec.pub.pem"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout",
            "-out", str(key))
    openssl("pkey", "-in", str(key), "-pubout", "-out", str(pub))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [
        {"kty": "oct", "kid": "k1", "k": b64(b"k1-secret-0123456789abcdef-0123456")},
        {"kty": "oct", "kid": "k2", "k": b64(b"k2-secret-0123456789abcdef-0123456")},
    ]}))

    def es256(claims):
        head = b64(json.dumps({"alg": "ES256", "typ": "JWT"}).encode())
        body = b64(json.dumps(claims).encode())
        data = tmp_path / "input"
        data.write_text("%s.%s" % (head, body))
        out = tmp_path / "sig"
        openssl("dgst", "-sha256", "-sign", str(key), "-out", str(out),
                str(data))
        return "%s.%s.%s" % (head, body, b64(der_to_raw(out.read_bytes())))

    gw = jwt_gateway(gateway, {"jwt_public_keys": [str(pub)],
                               "jwks_file": str(jwks)})
    exp = int(time.time()) + 300
    r = chat(gw.port, "x", model="echo",
             headers=bearer(es256({"sub": "ec-user", "exp": exp})))
    assert r.status == 200, r
    k2 = hs256({"sub": "kid-user", "exp": exp},
               secret="k2-secret-0123456789abcdef-0123456",
               header={"alg": "HS256", "kid": "k2"})
    r = chat(gw.port, "x", model="echo", headers=bearer(k2))
    assert r.status == 200, r
    assert sorted(consumers(gw, 2)) == ["ec-user", "kid-user"]  # two workers flush in either order
    # k2's token presented as k1's: the key named by kid must verify it.
    wrong = hs256({"sub": "kid-user", "exp": exp},
                  secret="k2-secret-0123456789abcdef-0123456",
                  header={"alg": "HS256", "kid": "k1"})
    r = chat(gw.port, "x", model="echo", headers=bearer(wrong))
    assert r.status == 401 and "signature" in r.json()["error"]["message"]
