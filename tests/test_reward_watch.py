"""The reward-hacking watch of the RL stage (pipeline/stages/watch.py): its verdict on a trail of
checks, and a real GRPO stage reporting its validation points beside the reward."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_job_config

from pipeline.reporter import BaseReporter
from pipeline.stages.watch import RewardWatch
from pipeline.structures import Sample


class Recorder(BaseReporter):
    def __init__(self) -> None:
        self.logs: list[tuple[str, str]] = []

    def log(self, message: str, *, level: str = "info", stage: str | None = None) -> None:
        self.logs.append((level, message))


def watch(checks: int = 2) -> RewardWatch:
    gt = [Sample(id=i, file_name=f"{i}.png", width=64, height=64, target={"boxes": [[1, 1, 9, 9]], "labels": ["a"]})
          for i in range(4)]  # fmt: skip
    return RewardWatch(every=5, checks=checks, stop=True, reporter=Recorder(), stage="reward", samples=gt, codec=None,
                       task="detect", processor=None)  # fmt: skip


def test_the_watch_flags_a_rising_reward_with_falling_validation_and_box_drift():
    w = watch(checks=2)
    w.trail = [(0.30, 0.50), (0.40, 0.45), (0.50, 0.40)]
    assert w.hacking(1.0) == "the training reward rose 0.300 → 0.500 over 2 checks while validation mean_iou fell 0.500 → 0.400"
    w.trail = [(0.30, 0.50), (0.40, 0.52), (0.50, 0.40)]  # validation rose once in between: not K checks in a row
    assert w.hacking(1.0) is None
    w.trail = [(0.30, 0.50), (0.30, 0.45), (0.50, 0.40)]  # the reward did not rise at every check
    assert w.hacking(2.0) is None  # and exactly 2× the ground truth's boxes is not drift yet
    assert w.hacking(2.5) == "the model answers 2.5 boxes per validation image where the ground truth has 1.0 (over 2×)"


@pytest.mark.slow
def test_grpo_reports_the_watch_beside_the_reward(tmp_path):
    cfg = tiny_job_config(warm_start={"enabled": False}, rl={"watch_every": 1, "watch_samples": 4})
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "pipeline.run", "--config", str(tmp_path / "cfg.json"), "--stages", "1", "2", "3",
                          "--output", str(out), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    events = [json.loads(ln) for ln in (out / "events.jsonl").read_text().splitlines()]
    checks = [e for e in events if e.get("stage") == "reward" and "val_mean_iou" in e]
    assert [e["step"] for e in checks] == [1, 2] and all("val_boxes_per_image" in e for e in checks)
    assert any(e.get("stage") == "reward" and "reward" in e for e in events)  # the reward it is drawn beside
    done = json.loads((out / "stages" / "reward" / "DONE.json").read_text())
    assert done["val_checks"] == 2 and isinstance(done["watch_warnings"], list)
