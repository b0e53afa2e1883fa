"""Stages checkpoint on a timer and resume from the newest checkpoint: a stage killed mid-way
(Modal preempts with ~30 s notice, too little to save optimizer state then) carries on from
its last checkpoint instead of step 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, tiny_job_config

from pipeline.config import build_config
from pipeline.stages.common import newest_checkpoint

STEPS = 24


def _events(path, start: int = 0) -> list[dict]:
    with path.open("rb") as fh:
        fh.seek(start)
        return [json.loads(line) for line in fh.read().splitlines() if line.strip()]


def test_stage_killed_mid_way_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    cfg = tiny_job_config(warm_start={"max_steps": STEPS, "batch_size": 4})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.run", "--config", str(tmp_path / "config.json"), "--stages", "1",
           "--output", str(out), "--quiet"]  # fmt: skip
    # A checkpoint every 4 steps; the timer is off so the test does not depend on the machine's speed.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DREAMFORGE_CHECKPOINT_S": "0", "DREAMFORGE_CHECKPOINT_STEPS": "4"}
    ckpts = out / "stages" / "warm_start.checkpoints"

    first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while (newest_checkpoint(ckpts) is None or newest_checkpoint(ckpts).name == "checkpoint-4") and first.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # no chance to save anything on the way out
    first.wait()
    assert first.returncode == -signal.SIGKILL, first.stderr.read().decode()[-2000:]
    assert not (out / "stages" / "warm_start" / "DONE.json").exists()
    resumed_from = int(newest_checkpoint(ckpts).name.split("-")[1])
    assert 4 < resumed_from < STEPS

    # The restart (what Modal's retry does) runs in this process: one interpreter start fewer.
    from pipeline.job import run_job
    from pipeline.reporter import MetricsFileReporter

    offset = (out / "events.jsonl").stat().st_size
    for k in ("DREAMFORGE_CHECKPOINT_S", "DREAMFORGE_CHECKPOINT_STEPS"):
        monkeypatch.setenv(k, env[k])
    reporter = MetricsFileReporter(out / "events.jsonl")
    try:
        run_job(build_config(cfg), out, stages=[1], reporter=reporter)
    finally:
        reporter.close()
    events = _events(out / "events.jsonl", offset)
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert f"resuming stage warm_start from checkpoint-{resumed_from}" in logs
    # One progress event per optimizer step (each step moves it by 1/STEPS): the restart
    # trained exactly the steps after the checkpoint, none before it.
    trained = [round(e["fraction"] * STEPS) for e in events if e["type"] == "progress" and 0 < e["fraction"] < 1]
    assert trained == list(range(resumed_from + 1, STEPS))
    done = json.loads((out / "stages" / "warm_start" / "DONE.json").read_text())
    assert done["steps"] == STEPS
    assert (out / "stages" / "warm_start" / "model" / "config.json").exists()
    assert not ckpts.exists()  # the optimizer state is deleted once the stage's model is saved


def test_a_resumed_stage_keeps_the_time_budget_it_had_left(tmp_path, monkeypatch):
    budget = 40.0
    cfg = tiny_job_config(warm_start={"max_seconds": budget, "max_steps": None, "epochs": 10_000, "batch_size": 4})
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pipeline.run", "--config", str(tmp_path / "config.json"), "--stages", "1",
           "--output", str(out), "--quiet"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DREAMFORGE_CHECKPOINT_S": "0", "DREAMFORGE_CHECKPOINT_STEPS": "3"}
    ckpts = out / "stages" / "warm_start.checkpoints"
    first = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while first.poll() is None and not (newest_checkpoint(ckpts) and (newest_checkpoint(ckpts) / "dreamforge_clock.json").exists()):
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    ckpt = newest_checkpoint(ckpts)
    clock = json.loads((ckpt / "dreamforge_clock.json").read_text())
    assert 0 < clock["spent_seconds"] < budget
    # As if the killed attempt had run for most of its budget before this checkpoint.
    (ckpt / "dreamforge_clock.json").write_text(json.dumps({"spent_seconds": budget - 2}))

    from pipeline.job import run_job
    from pipeline.reporter import MetricsFileReporter

    offset = (out / "events.jsonl").stat().st_size
    for k in ("DREAMFORGE_CHECKPOINT_S", "DREAMFORGE_CHECKPOINT_STEPS"):
        monkeypatch.setenv(k, env[k])
    reporter = MetricsFileReporter(out / "events.jsonl")
    try:
        run_job(build_config(cfg), out, stages=[1], reporter=reporter)
    finally:
        reporter.close()
    logs = [e["message"] for e in _events(out / "events.jsonl", offset) if e["type"] == "log"]
    assert "stage warm_start resumes with 2 s of its 40 s budget left" in logs
    done = json.loads((out / "stages" / "warm_start" / "DONE.json").read_text())
    assert done["train_seconds"] < budget / 4  # a fresh budget would have trained ~40 s more


def test_a_checkpoint_that_does_not_hold_the_models_weights_fails_the_resume_instead_of_warning():
    """transformers 5 resumed a Llava from a checkpoint none of whose keys matched, with only a
    warning (issue #43701): the stage then trained on from its input weights. Now that raises."""
    from types import SimpleNamespace

    from pipeline.stages.resume import ExactResume

    trainer = SimpleNamespace(model=SimpleNamespace(_tied_weights_keys={"lm_head.weight": "embed.weight"}))
    ok = SimpleNamespace(missing_keys=["lm_head.weight"], unexpected_keys=[])  # a tied copy, not saved
    ExactResume._issue_warnings_after_load(trainer, ok)
    legacy = SimpleNamespace(missing_keys=["model.language_model.embed_tokens.weight"],
                             unexpected_keys=["language_model.model.embed_tokens.weight"])  # fmt: skip
    with pytest.raises(RuntimeError, match="does not hold this model's weights"):
        ExactResume._issue_warnings_after_load(trainer, legacy)
