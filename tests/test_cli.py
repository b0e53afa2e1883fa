import subprocess

import pytest

from dreamforge.cli.service import parse_epochs
from tests.conftest import PY, ROOT


def test_epochs_parse_as_the_docs_write_them():
    assert parse_epochs("5", ["3", "2"]) == ["5", "3", "2"]
    assert parse_epochs("5,3,2", []) == ["5", "3", "2"]
    assert parse_epochs("5 3", []) == ["5", "3"]
    assert parse_epochs(None, []) == []


@pytest.mark.parametrize(("given", "message"), [(["5", "3", "2", "1"], "at most three"), (["five"], "takes numbers")])
def test_bad_epochs_are_refused_with_the_rule(given, message):
    with pytest.raises(ValueError, match=message):
        parse_epochs(given[0], given[1:])


def test_train_cli_rejects_bad_epochs_before_any_work():
    res = subprocess.run(
        [PY, "-m", "dreamforge.cli", "train", "--epochs", "5", "x"], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 2
    assert "takes numbers" in res.stderr and "Traceback" not in res.stderr


def test_presets_cli_lists_every_preset():
    res = subprocess.run([PY, "-m", "dreamforge.cli", "presets"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0
    names = [line.split()[0] for line in res.stdout.splitlines()]
    assert names == ["generic", "medical-scan", "retail-shelf", "traffic-camera"]
