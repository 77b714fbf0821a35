"""`sluice plugins describe NAME -c FILE` prints a plugin's version, ABI and
config schema, reading only what its descriptor holds."""
import json
import os
import subprocess

from conftest import SLUICE_BIN
from test_plugins import PLUGIN_DIR


def describe(tmp_path, name, plugins):
    cfg = {"listen": ["127.0.0.1:1"], "plugin_dir": PLUGIN_DIR,
           "plugins": plugins}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([SLUICE_BIN, "plugins", "describe", name, "-c",
                           str(path)], capture_output=True, text=True,
                          timeout=20)


def test_describe_prints_the_schema(tmp_path):
    p = describe(tmp_path, "good", {"good": {"path": "testgood.so"}})
    assert p.returncode == 0, p.stderr
    first = p.stdout.splitlines()[0]
    assert "ABI 1." in first, p.stdout
    assert os.path.join(PLUGIN_DIR, "testgood.so") in p.stdout
    assert "config:" in p.stdout
    # Every schema line names a type and whether it is required.
    keys = [l for l in p.stdout.splitlines()[p.stdout.splitlines().index(
        "config:") + 1:] if l.strip()]
    assert keys and all(("required" in l or "optional" in l) for l in keys), \
        p.stdout


def test_describe_an_older_plugin_reads_only_its_fields(tmp_path):
    p = describe(tmp_path, "old", {"old": {"path": "oldabi.so"}})
    assert p.returncode == 0, p.stderr
    assert "ABI 1." in p.stdout


def test_describe_unknown_name_or_broken_library(tmp_path):
    p = describe(tmp_path, "nope", {"good": {"path": "testgood.so"}})
    assert p.returncode == 1
    assert 'no plugin "nope"' in p.stderr
    p = describe(tmp_path, "x", {"x": {"path": "nosymbol.so"}})
    assert p.returncode == 1
    assert "sluice_plugin" in p.stderr, p.stderr
