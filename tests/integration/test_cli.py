"""The command line: `sluice check`, --version, --help, bad arguments."""
import json
import os
import subprocess

from conftest import KEY_ENV, SLUICE_BIN, SRC_DIR, TEST_KEY


def run(*args, env=None):
    full = dict(os.environ)
    full[KEY_ENV] = TEST_KEY
    full.update(env or {})
    return subprocess.run([SLUICE_BIN] + list(args), capture_output=True,
                          text=True, timeout=20, env=full)


def good_config():
    return {
        "listen": [{"addr": "127.0.0.1:0"}],
        "workers": 2,
        "providers": {
            "mock": {"type": "mock", "mock_delay_ms": 0},
            "upstream": {"type": "openai",
                         "base_url": "http://127.0.0.1:9/v1",
                         "api_key_env": KEY_ENV}},
        "models": {"gpt-test": {"targets": [
            {"provider": "upstream", "model": "mock-model", "weight": 1}]},
            "echo": {"targets": [{"provider": "mock", "model": "echo"}]}},
        "allow_direct_models": True,
        "limits": {"max_body_bytes": 1000000},
        "access_log": "off",
    }


def test_check_accepts_a_valid_config(tmp_path):
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(good_config()))
    p = run("check", "-c", str(path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("%s: ok" % path), p.stdout


def test_check_reports_every_error_with_its_json_path(tmp_path):
    cfg = good_config()
    cfg["bogus"] = 1                                    # unknown key
    cfg["workers"] = "two"                              # wrong type
    cfg["models"]["gpt-test"]["targets"][0]["provider"] = "nope"  # bad ref
    cfg["providers"]["mock"]["colour"] = "red"          # nested unknown key
    cfg["limits"]["max_body_bytes"] = "big"             # nested wrong type
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    p = run("check", "-c", str(path))
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    for jpath in ["$.bogus", "$.workers",
                  "$.models.gpt-test.targets[0].provider",
                  "$.providers.mock.colour", "$.limits.max_body_bytes"]:
        assert any(l.startswith("%s: %s: " % (path, jpath)) for l in lines), \
            (jpath, lines)
    assert "ok" not in p.stdout


def test_check_refuses_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"listen": [')
    p = run("check", "-c", str(path))
    assert p.returncode == 1
    assert str(path) in p.stderr


def test_check_refuses_missing_file(tmp_path):
    p = run("check", "-c", str(tmp_path / "absent.json"))
    assert p.returncode == 1
    assert "absent.json" in p.stderr


def test_quickstart_example_validates():
    path = os.path.join(SRC_DIR, "examples", "quickstart.json")
    p = run("check", "-c", path, env={"OPENAI_API_KEY": "sk-example"})
    assert p.returncode == 0, p.stderr
    assert "ok" in p.stdout


def test_run_refuses_invalid_config_with_exit_1(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"listen": [{"addr": "nowhere"}]}))
    p = run("-c", str(path))
    assert p.returncode == 1
    assert "$.listen[0].addr" in p.stderr, p.stderr


def test_version_prints_package_version():
    p = run("--version")
    assert p.returncode == 0
    assert p.stdout.strip() == "sluice 0.1.0", p.stdout


def test_help_prints_usage_and_exits_0():
    p = run("--help")
    assert p.returncode == 0
    assert "usage: sluice" in p.stdout
    assert "check" in p.stdout


def test_unknown_argument_exits_2():
    p = run("--no-such-flag")
    assert p.returncode == 2
    assert "usage" in p.stderr
    p = run("frobnicate", "-c", "x.json")
    assert p.returncode == 2


def test_missing_config_argument_exits_2():
    p = run("check")
    assert p.returncode == 2
