"""Settings come from the environment through pydantic-settings: a bad variable names itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamforge.settings import Settings, SettingsError


def test_a_bad_variable_is_named_with_its_value(monkeypatch):
    monkeypatch.setenv("DREAMFORGE_LEASE_S", "soon")
    monkeypatch.setenv("DREAMFORGE_EXECUTOR", "gpu")
    with pytest.raises(SettingsError) as e:
        Settings()
    msg = str(e.value)
    assert "DREAMFORGE_LEASE_S='soon'" in msg and "valid number" in msg
    assert "DREAMFORGE_EXECUTOR='gpu'" in msg and "'local' or 'modal'" in msg
    monkeypatch.setenv("DREAMFORGE_LEASE_S", "0")  # parsed, but a lease must be positive
    monkeypatch.delenv("DREAMFORGE_EXECUTOR")
    with pytest.raises(SettingsError, match="DREAMFORGE_LEASE_S='0'"):
        Settings()


def test_each_field_reads_its_own_variable_and_arguments_win(monkeypatch, tmp_path):
    monkeypatch.delenv("DREAMFORGE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "someone"))  # a field's bare name is not read: home is not $HOME
    monkeypatch.setenv("DREAMFORGE_LEASE_S", "12.5")
    monkeypatch.setenv("DREAMFORGE_DB", "other")
    s = Settings()
    assert s.home == Path(".dreamforge").resolve() and s.lease_s == 12.5 and s.db_name == "other"
    assert Settings(lease_s=3, home=tmp_path).lease_s == 3.0  # tests and the stack pass fields by name
    monkeypatch.setenv("DREAMFORGE_HOME", "rel")
    assert Settings().home == Path("rel").resolve()  # children run elsewhere: always absolute


def test_the_cli_names_the_variable_not_a_traceback(tmp_path):
    env = {**os.environ, "DREAMFORGE_HOME": str(tmp_path), "DREAMFORGE_MAX_UPLOAD": "lots"}
    r = subprocess.run([sys.executable, "-m", "dreamforge.cli", "jobs"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "DREAMFORGE_MAX_UPLOAD='lots'" in r.stderr and "Traceback" not in r.stderr
