"""Runs the C unit tests of the pure parts and the tree checks."""
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
UNIT_BINS = ["test_multipart", "test_uid", "test_response", "test_store", "test_build",
             "test_meta"]


@pytest.mark.parametrize("name", UNIT_BINS)
def test_000_01_unit_binary(name):
    subprocess.run(["make", "-s", f"t/unit/{name}"], cwd=ROOT, check=True)
    res = subprocess.run([str(ROOT / "t" / "unit" / name)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 failed"), last


def test_000_02_check_tree():
    res = subprocess.run(["sh", "t/check_tree.sh"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
