"""The benchmark's gateways (bench/variants.sh, shared by make bench and
make bench-icount) are valid configs of the current gateway: a config key
renamed in the core must not silently break the benchmark."""
import os
import subprocess

import pytest

from conftest import SLUICE_BIN

SRC = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
VARIANTS = os.path.join(SRC, "bench", "variants.sh")
PLUGIN_DIR = os.path.join(os.path.dirname(os.path.dirname(SLUICE_BIN)),
                          "plugins")


def variants():
    out = subprocess.run(["bash", "-c", '. "$0"; echo $BENCH_VARIANTS',
                          VARIANTS], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


@pytest.mark.parametrize("name", variants())
def test_bench_variant_config_is_valid(tmp_path, name):
    build = tmp_path / "build"
    os.makedirs(build)
    os.symlink(PLUGIN_DIR, build / "plugins")
    made = subprocess.run(
        ["bash", "-c", '. "$0"; bench_config "$1" "$2" 9 "$3"', VARIANTS,
         name, str(tmp_path), str(build)], capture_output=True, text=True)
    assert made.returncode == 0, "bench_config %s: %s" % (name, made.stderr)
    cfg = tmp_path / ("sluice-%s.json" % name)
    p = subprocess.run([SLUICE_BIN, "check", "-c", str(cfg)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
