"""The layering (DESIGN.md) and the lint hold on every commit, not only where someone ran them."""

import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_import_contracts_hold(root):
    r = subprocess.run([str(BIN / "lint-imports")], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout and "pipeline <- dreamforge <- modal_app KEPT" in r.stdout
    assert "no import cycles between the modules of a service package KEPT" in r.stdout


def test_ruff_is_clean(root):
    r = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:]
