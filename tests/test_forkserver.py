"""Stages forked from the warm template behave like cold processes: exit codes, their own
process group (cancel kills it), a log of their own, and death with the template."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from conftest import tiny_job_config
from service_helpers import wait_for

from dreamforge.executors.forkserver import ForkServer
from dreamforge.executors.local import _stop


def _gone(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_forked_stages_exit_log_stop_and_die_with_the_template(tmp_path):
    fs = ForkServer(env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        # a user's mistake: exit code 2 and the error line in the stage's own log
        bad = tmp_path / "bad.json"
        bad.write_text('{"rl": {"tmperature": 1}}')
        p = fs.spawn(["--config", str(bad), "--stages", "1", "--output", str(tmp_path / "o1"), "--quiet"], tmp_path / "1.log")
        assert p.wait(120) == 2
        assert "error: " in (tmp_path / "1.log").read_text() and "rl.tmperature" in (tmp_path / "1.log").read_text()

        # a running stage is stopped through its process group, like a cold one
        cfg = tmp_path / "long.json"
        cfg.write_text(json.dumps(tiny_job_config(warm_start={"max_steps": 100_000})))
        out = tmp_path / "o2"
        p = fs.spawn(["--config", str(cfg), "--stages", "1", "--output", str(out), "--quiet"], tmp_path / "2.log")
        assert os.getpgid(p.pid) == p.pid != os.getpgid(fs.proc.pid)
        wait_for(lambda: (out / "events.jsonl").exists() and '"state": "running"' in (out / "events.jsonl").read_text(),
                 timeout=120, what="the forked stage to start training")  # fmt: skip
        _stop(p)
        assert p.returncode == -signal.SIGTERM and _gone(p.pid)
        with pytest.raises(subprocess.TimeoutExpired):
            fs.spawn(["--config", str(cfg), "--stages", "1", "--output", str(tmp_path / "o3"), "--quiet"],
                     tmp_path / "3.log").wait(0.2)  # fmt: skip

        # the template dies (e.g. the worker was SIGKILLed): its stages die with it
        running = fs._procs.copy()
        fs.proc.kill()
        for q in running.values():
            assert q.wait(10) == -signal.SIGKILL
            wait_for(lambda q=q: _gone(q.pid), timeout=10, what="the orphaned stage to die")
        assert not fs.alive()
    finally:
        fs.close()
        time.sleep(0.1)
