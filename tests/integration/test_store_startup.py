"""The LMDB store opens under data_dir at start, and a data_dir that cannot
be used stops the start with a clear message instead of a half-working
gateway."""
import json
import os
import subprocess

from conftest import SLUICE_BIN, base_config, free_port


def test_store_is_created_under_data_dir(gw):
    data = gw.config["data_dir"]
    assert os.path.isdir(os.path.join(data, "store")), os.listdir(data)


def test_unusable_data_dir_stops_the_start(tmp_path, mock):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = base_config(free_port(), mock.url, tmp_path)
    cfg["data_dir"] = str(blocker / "data")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([SLUICE_BIN, "-c", str(path)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode != 0
    assert "cannot open the store" in p.stderr, p.stderr


def test_store_options_are_checked(tmp_path):
    cfg = {"listen": ["127.0.0.1:1"], "store": {"map_size_mb": 0,
                                                 "flush": 1}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(path)],
                       capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert "$.store.map_size_mb" in p.stderr, p.stderr
    assert "$.store.flush: unknown key" in p.stderr, p.stderr
