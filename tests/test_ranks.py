"""Under ``accelerate launch`` (a job's ``H100:N``), only the main process writes (pipeline.ranks):
a real two-process launch on the CPU (gloo) trains a tiny stage, and every write under the job's
folder is recorded per rank through Python's audit hooks (tests/rank_audit/sitecustomize.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, tiny_job_config

from dreamforge.executors.local import stage_command

pytestmark = pytest.mark.slow  # two processes importing torch and TRL on shared cores: ~40 s


def test_only_the_main_process_writes_stage_files_metrics_and_logs(tmp_path):
    out, audit = tmp_path / "out", tmp_path / "audit"
    out.mkdir()
    audit.mkdir()
    cfg = tiny_job_config(warm_start={"enabled": False}, domain={"max_steps": 2, "batch_size": 4, "val_checks": 0})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'tests' / 'rank_audit'}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1",
           "DREAMFORGE_AUDIT_ROOT": str(out), "DREAMFORGE_AUDIT_DIR": str(audit)}  # fmt: skip
    # The service's own command for a stage on two GPUs; without GPUs, accelerate's processes fall
    # back to the CPU and gloo.
    cmd = stage_command(sys.executable, tmp_path / "config.json", "domain", out, num_processes=2)
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    main = (audit / "rank0.log").read_text()
    # The hook sees the main process's writes: the stage's DONE.json, the config, the events.
    for written in ("DONE.json", "config.json", "events.jsonl", "stages/domain/model"):
        assert written in main, main
    assert not (audit / "rank1.log").exists(), (audit / "rank1.log").read_text()
    # One stage's events, once: not one copy per process.
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    done = [e for e in events if e.get("type") == "stage" and e.get("state") == "completed"]
    assert len(done) == 1, events
    assert json.loads((out / "stages" / "domain" / "DONE.json").read_text())["state"] == "completed"
    assert Path(out / "stages" / "domain" / "model" / "config.json").exists()
