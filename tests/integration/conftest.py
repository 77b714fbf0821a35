"""Fixtures that run the real gateway and the real mock upstream on free
loopback ports.

Binaries come from SLUICE_BIN and SLUICE_MOCK_BIN (default: core/sluice and
tests/mock/sluice-mock under the current directory, i.e. run from the build
directory: `cd BUILD && python3 -m pytest -q SRC/tests/integration`).
"""
import copy
import json
import os
import select
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from helpers import Conn, http

SLUICE_BIN = os.path.abspath(os.environ.get("SLUICE_BIN", "core/sluice"))
MOCK_BIN = os.path.abspath(
    os.environ.get("SLUICE_MOCK_BIN", "tests/mock/sluice-mock"))
SRC_DIR = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

TEST_KEY = "sk-sluice-integration-0123456789"
KEY_ENV = "SLUICE_IT_UPSTREAM_KEY"

# Sanitizer reports in a child's stderr fail the test that ran it.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "WARNING: ThreadSanitizer")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def closed_port():
    """A loopback port nobody listens on (connect is refused)."""
    return free_port()


def no_quarantine_env():
    """Env for a gateway whose RSS a test measures: a sanitizer build holds
    freed memory in quarantine, which reads as growth; without quarantine
    RSS reflects live memory again. Harmless for a plain build."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    extra = "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
    return {"ASAN_OPTIONS": (opts + ":" + extra) if opts else extra}


def check_sanitizers(path):
    try:
        with open(path, errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return
    for mark in SANITIZER_MARKS:
        assert mark not in text, "sanitizer report in %s:\n%s" % (path,
                                                                   text[-4000:])


class Mock:
    """The running mock upstream."""

    def __init__(self, proc, port, stderr_path):
        self.proc = proc
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.stderr_path = stderr_path

    def get_json(self, path):
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return json.loads(r.read())

    def stats(self):
        return self.get_json("/mock/stats")

    def requests(self):
        """What the gateway sent: [{method, path, headers, body}], oldest
        first."""
        return self.get_json("/mock/requests")

    def last_request(self, path="/v1/chat/completions"):
        reqs = [r for r in self.requests() if r["path"] == path]
        assert reqs, "the mock saw no request on %s" % path
        return reqs[-1]


@pytest.fixture
def mock(tmp_path):
    assert os.access(MOCK_BIN, os.X_OK), "no mock binary at %s" % MOCK_BIN
    err_path = tmp_path / "mock.stderr"
    err = open(err_path, "wb")
    proc = subprocess.Popen([MOCK_BIN, "--port", "0", "--threads", "2"],
                            stdout=subprocess.PIPE, stderr=err)
    err.close()
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        pytest.fail("sluice-mock did not print READY: %r" % line)
    m = Mock(proc, int(line.split()[1]), err_path)
    yield m
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    proc.stdout.close()


def merge(base, over):
    """Deep-merges over into base; a None value deletes the key."""
    for k, v in over.items():
        if v is None:
            base.pop(k, None)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def base_config(port, mock_url, tmp_path, workers=2):
    return {
        "listen": [{"addr": "127.0.0.1:%d" % port}],
        "workers": workers,
        "data_dir": str(tmp_path / "data"),
        "providers": {
            "mock": {"type": "mock", "mock_delay_ms": 0},
            "upstream": {
                "type": "openai",
                "base_url": mock_url + "/v1",
                "api_key_env": KEY_ENV,
                "connect_timeout_ms": 2000,
                "first_byte_timeout_ms": 5000,
                "timeout_ms": 30000,
            },
        },
        "models": {
            "gpt-test": {"targets": [{"provider": "upstream",
                                      "model": "mock-model", "weight": 1}]},
            "echo": {"targets": [{"provider": "mock", "model": "echo"}]},
        },
        "allow_direct_models": True,
        "limits": {
            "header_timeout_ms": 5000,
            "body_timeout_ms": 5000,
            "idle_timeout_ms": 10000,
            "drain_timeout_ms": 5000,
        },
        "access_log": str(tmp_path / "access.log"),
    }


class Gateway:
    """The running gateway."""

    def __init__(self, proc, port, cfg_path, log_path, stderr_path, config):
        self.proc = proc
        self.port = port
        self.url = "http://127.0.0.1:%d" % port
        self.cfg_path = cfg_path
        self.log_path = log_path
        self.stderr_path = stderr_path
        self.config = config

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def access_log(self):
        """Parsed access log lines so far (the gateway flushes every
        200 ms)."""
        try:
            with open(self.log_path) as f:
                return [json.loads(l) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def healthy(self):
        try:
            return http(self.port, "GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    def terminate(self, timeout=10):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


def _wait_ready(proc, port, stderr_path, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with Conn(port, timeout=2) as c:
                c.request("GET", "/healthz")
                if c.read_response().status == 200:
                    return True
        except (OSError, EOFError):
            pass
        time.sleep(0.02)
    return False


@pytest.fixture
def gateway(mock, tmp_path):
    """Factory: gateway(limits=..., providers=..., models=..., workers=...,
    extra=...) starts a gateway whose config is the base config deep-merged
    with the overrides, and returns a Gateway. Teardown sends SIGTERM and
    asserts a clean exit 0 within 10 s."""
    started = []

    def start(limits=None, providers=None, models=None, workers=2,
              extra=None, env=None):
        assert os.access(SLUICE_BIN, os.X_OK), "no gateway at %s" % SLUICE_BIN
        n = len(started)
        for attempt in range(3):
            port = free_port()
            cfg = base_config(port, mock.url, tmp_path, workers)
            merge(cfg, {"limits": limits or {}, "providers": providers or {},
                        "models": models or {}})
            merge(cfg, extra or {})
            cfg_path = tmp_path / ("sluice-%d.json" % n)
            cfg_path.write_text(json.dumps(cfg, indent=2))
            stderr_path = tmp_path / ("sluice-%d-%d.stderr" % (n, attempt))
            full_env = dict(os.environ)
            full_env[KEY_ENV] = TEST_KEY
            full_env.update(env or {})
            err = open(stderr_path, "wb")
            proc = subprocess.Popen([SLUICE_BIN, "-c", str(cfg_path)],
                                    stdout=err, stderr=err, env=full_env)
            err.close()
            if _wait_ready(proc, port, stderr_path):
                gw = Gateway(proc, port, cfg_path,
                             cfg.get("access_log"), stderr_path, cfg)
                started.append(gw)
                return gw
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            text = open(stderr_path, errors="replace").read()
            # Someone else took the port between our probe and its bind.
            if "in use" not in text.lower():
                break
        pytest.fail("gateway did not become healthy:\n%s" % text[-4000:])

    yield start
    for gw in started:
        try:
            rc = gw.terminate(timeout=10)
        except subprocess.TimeoutExpired:
            gw.proc.kill()
            gw.proc.wait()
            pytest.fail("gateway did not exit within 10 s of SIGTERM:\n%s" %
                        gw.stderr()[-4000:])
        assert rc == 0, "gateway exited %r:\n%s" % (rc, gw.stderr()[-4000:])
        check_sanitizers(gw.stderr_path)
    check_sanitizers(mock.stderr_path)


@pytest.fixture
def gw(gateway):
    """A gateway with the default test config."""
    return gateway()
