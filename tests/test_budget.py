"""The job's budget_minutes is shared out over the training stages still to run."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_job_config

from pipeline.budget import MIN_STAGE_SECONDS, stage_seconds
from pipeline.config import build_config


def test_each_stage_gets_its_share_of_what_is_left():
    cfg = build_config({"budget_minutes": 10, "warm_start": {"enabled": True, "max_steps": 5},
                        "domain": {"max_seconds": None}})  # fmt: skip
    # 540 s for training (10 % kept for evaluation): warm start 30 %, then domain 5/7 of what is left
    assert stage_seconds(cfg, "warm_start", 0)[0] == pytest.approx(162)
    assert stage_seconds(cfg, "domain", 40)[0] == pytest.approx(500 * 5 / 7)
    assert stage_seconds(cfg, "reward", 400)[0] == pytest.approx(140)
    # a stage's own max_seconds wins when it is the smaller
    assert stage_seconds(build_config({"domain": {"max_seconds": 30}}), "domain", 0)[0] == 30
    # a spent budget still leaves a started stage a few seconds, and no budget at all is None
    assert stage_seconds(cfg, "reward", 10_000)[0] == MIN_STAGE_SECONDS
    assert stage_seconds(build_config({"budget_minutes": None, "domain": {"max_seconds": None}}), "domain", 0)[0] is None


def test_a_disabled_later_stage_leaves_its_share_to_the_ones_that_run():
    on = build_config({"domain": {"max_seconds": None}})
    off = build_config({"domain": {"max_seconds": None}, "rl": {"enabled": False}})
    assert stage_seconds(off, "domain", 0)[0] > stage_seconds(on, "domain", 0)[0]
    assert stage_seconds(off, "domain", 0)[0] == pytest.approx(540)


def test_a_job_budget_ends_a_stage_that_has_no_budget_of_its_own(tmp_path):
    from pipeline.job import run_job
    from pipeline.reporter import MetricsFileReporter

    cfg = build_config(tiny_job_config(budget_minutes=0.25, warm_start={"enabled": False},
                                       domain={"max_steps": None, "max_seconds": None, "epochs": 10_000,
                                               "val_checks": 0, "batch_size": 4}))  # fmt: skip
    reporter = MetricsFileReporter(tmp_path / "events.jsonl")
    try:
        run_job(cfg, tmp_path / "out", stages=[2], reporter=reporter)
    finally:
        reporter.close()
    share = max(MIN_STAGE_SECONDS, 15 * 0.9 * 5 / 7)  # domain's share of 13.5 s of training, RL still to come
    done = json.loads((tmp_path / "out" / "stages" / "domain" / "DONE.json").read_text())
    assert share * 0.8 < done["train_seconds"] < share + 5
    logs = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert any(e.get("message", "").startswith("stage domain trains for at most 10 s (71% of the 14 s left")
               for e in logs), [e.get("message") for e in logs if e["type"] == "log"]  # fmt: skip
