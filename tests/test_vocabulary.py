"""One vocabulary: the stage table and the job statuses are defined once, published by
``GET /api/meta``, and every state change of a waiting job (approve, cancel) goes through the
queue's one function for it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_job_config
from service_helpers import api

from dreamforge.auth import create_project
from dreamforge.executors.local import stage_command
from dreamforge.local.stack import start_stack
from dreamforge.schemas import JobStatus
from pipeline.config import CurriculumConfig
from pipeline.reporter import overall_progress
from pipeline.stage_table import STAGE_TABLE, STAGES, as_json, key_metric, models_newest_first


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("stack"), workers=0)  # no worker: jobs stay where the test puts them
    yield s
    s.stop()


def held_job(c, db) -> str:
    """A job held for approval, as a fork's pull request leaves it (``queue.new_job`` with
    ``status="awaiting_approval"``: no queue key)."""
    r = c.post("/api/train", json={"config": tiny_job_config()})
    assert r.status_code == 201, r.text
    job_id = r.json()["jobId"]
    db.jobs.update_one({"_id": job_id}, {"$set": {"status": "awaiting_approval"}, "$unset": {"queue_key": ""}})
    return job_id


def test_each_stage_title_is_spelled_in_one_place(root):
    # As a string literal, alone or numbered ("2 · domain SFT", "2/4 domain SFT"): prose may name a stage.
    for s in STAGE_TABLE:
        out = subprocess.run(["git", "grep", "--untracked", "-l", "-E", f"[\"'][0-9/ ·]*{re.escape(s.title)}[\"']",
                              "--", "*.py", ":!tests"], cwd=root, capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
        assert out == ["pipeline/stage_table.py"], (s.title, out)


def test_the_table_gives_numbers_sections_progress_and_the_model_order():
    cfg = CurriculumConfig()
    for s in STAGE_TABLE:
        assert cfg.stage(s.name) is getattr(cfg, s.section)
        args = stage_command(sys.executable, Path("c.json"), s.name, Path("out"))
        assert args[args.index("--stages") + 1] == str(s.number)
    assert cfg.stage("reward") is cfg.rl  # the reward stage's settings live in the rl section
    assert sum(s.weight for s in STAGE_TABLE) == 100.0
    assert overall_progress(STAGES[1], 0.0) == STAGE_TABLE[0].weight and overall_progress(STAGES[-1], 1.0) == 100.0
    assert models_newest_first() == ["reward", "domain", "warm_start"]
    assert models_newest_first("domain", base=True) == ["domain", "reward", "warm_start", "base"]  # the released one first


def test_key_metric_is_defined_once_for_the_dashboard_and_github(root):
    out = subprocess.run(["git", "grep", "--untracked", "-l", "-E", r"def key_metric\b", "--", "*.py", ":!tests"],
                         cwd=root, capture_output=True, text=True, check=False).stdout.split()  # fmt: skip
    assert out == ["pipeline/stage_table.py"]
    released = {"result": {"primary_metric": "mean_iou", "release": {"stage": "domain"},
                           "models": {"base": {"mean_iou": 0.1}, "domain": {"mean_iou": 0.5}, "reward": {"mean_iou": 0.6}}}}
    assert key_metric(released) == ("mean_iou", 0.5)  # the released model's, not the best one's
    assert key_metric({"result": {"primary_metric": "mean_iou", "models": {"base": {"mean_iou": 0.1}}}}) == ("mean_iou", 0.1)
    running = {"stage": "reward", "metrics": {"domain": {"loss": 0.3}, "reward": {"reward": 0.42}}}
    assert key_metric(running) == ("reward", 0.42)
    assert key_metric({"stage": None, "metrics": {"domain": {"loss": 0.3}}}) == ("domain loss", 0.3)  # failed after domain
    assert key_metric({"stage": None, "metrics": {}}) is None


def test_meta_is_public_and_publishes_the_stages_and_the_status_sets(stack):
    import httpx

    r = httpx.get(stack.api_url + "/api/meta")  # no key, like /api/presets
    assert r.status_code == 200, r.text
    m = r.json()
    assert m["stages"] == as_json() and [s["name"] for s in m["stages"]] == list(STAGES)
    assert m["statuses"] == [s.value for s in JobStatus] and "awaiting_approval" in m["statuses"]
    final, active = set(m["final"]), set(m["active"])
    assert final | active == set(m["statuses"]) and not final & active
    assert set(m["requeuable"]) <= final and "succeeded" not in m["requeuable"]
    # held: waiting for a person (an approval, or a raised budget cap), not for a worker
    assert set(m["held"]) == {"awaiting_approval", "paused"} and set(m["held"]) <= set(m["waiting"]) <= active


def test_approve_queues_a_held_job_once_and_only_for_its_project(stack, db):
    _, other = create_project(db, "someone-else")
    with api(stack) as c, api(stack, other) as o:
        job_id = held_job(c, db)
        assert o.post(f"/api/jobs/{job_id}/approve").status_code == 404  # another tenant cannot even see it
        r = c.post(f"/api/jobs/{job_id}/approve")
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        doc = db.jobs.find_one({"_id": job_id})
        assert doc["queue_key"] and doc["approved_at"]  # claimable now
        again = c.post(f"/api/jobs/{job_id}/approve")
        assert again.status_code == 409 and "only jobs awaiting approval" in again.json()["detail"]


def test_cancel_ends_a_held_job_at_once(stack, db):
    with api(stack) as c:
        job_id = held_job(c, db)
        r = c.post(f"/api/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
        assert r.json()["error"]["message"] == "cancelled by the user"
        assert c.post(f"/api/jobs/{job_id}/approve").status_code == 409  # nothing left to approve


def test_cli_approves_a_held_job_and_names_the_stages(stack, db):
    env = {**os.environ, "DREAMFORGE_URL": stack.api_url, "DREAMFORGE_API_KEY": stack.dev_key}
    with api(stack) as c:
        job_id = held_job(c, db)
    cli = [sys.executable, "-m", "dreamforge.cli"]
    r = subprocess.run([*cli, "approve", job_id], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and f"{job_id}: approved, queued" in r.stdout, r.stdout + r.stderr
    assert db.jobs.find_one({"_id": job_id})["status"] == "queued"
    again = subprocess.run([*cli, "approve", job_id], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "only jobs awaiting approval can be approved" in again.stderr
    shown = subprocess.run([*cli, "status", job_id], env=env, capture_output=True, text=True, timeout=60).stdout
    assert [s.label for s in STAGE_TABLE if s.label in shown] == [s.label for s in STAGE_TABLE], shown
