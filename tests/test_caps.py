"""Spending caps over the real stack: a job capped below its need pauses with its stage's
checkpoint, is billed nothing while paused, resumes where it stopped when the cap is raised and
ends with the metrics of the same job run uncapped (to the last bit on a CPU); a project's cap
pauses a job before it starts, and a cancelled job is billed nothing more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import tiny_job_config
from service_helpers import all_logs, api, wait_for, wait_job

from dreamforge.local.stack import start_stack
from dreamforge.schemas import FINAL_STATUSES as FINAL
from dreamforge.schemas import JobStatus

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = start_stack(tmp_path_factory.mktemp("caps-stack"), workers=1, extra_env={"DREAMFORGE_POLL_S": "0.1"})
    yield s
    s.stop()


def cli(*args: str, env: dict) -> str:
    run = subprocess.run([sys.executable, "-m", "dreamforge.cli", *args], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


# Step-bounded, no validation checks (their early stopping is per process), one training stage.
# A time budget far beyond the steps: the schedule decays over the time spent as well (whichever
# is further along), and no two runs spend it alike; over 30000 s that differs by under 1e-8.
CONFIG = tiny_job_config(name="capped", budget_minutes=600, warm_start={"enabled": False}, rl={"enabled": False},
                         domain={"max_steps": 60, "lr": 0.003, "val_checks": 0, "max_seconds": 30000},
                         export={"quantization": "none"},
                         evaluate={"max_samples": 6, "batch_size": 6})  # fmt: skip


def test_a_capped_job_pauses_at_its_checkpoint_and_resumes_to_the_uncapped_metrics(stack):
    with api(stack) as h:
        free = wait_job(h, h.post("/api/train", json={"config": CONFIG}).json()["jobId"])
        assert free["status"] == "succeeded" and free["spend"]["seconds"] > 0 and free["spend"]["usd"] == 0  # a CPU bills time
        r = h.post("/api/train", json={"config": CONFIG, "caps": {"wall_minutes": 0.005}})  # 0.3 s of running stages
        job_id = r.json()["jobId"]
        # The disabled warm start's process alone takes longer: the job pauses before its next stage.
        first = wait_job(h, job_id, until=(JobStatus.PAUSED, *FINAL))
        assert first["status"] == "paused" and first["paused"]["stage"] == "domain", first
        assert "the job's cap of 0.005 minutes of running stages reached" in first["paused"]["reason"]
        assert first["stages"]["domain"]["status"] == "pending" and first["caps"]["wall_minutes"] == 0.005
        time.sleep(1.5)
        assert h.get(f"/api/jobs/{job_id}").json()["spend"] == first["spend"]  # nothing billed while paused
        assert h.put(f"/api/jobs/{job_id}/caps", json={"wall_minutes": -1}).status_code == 422
        # the CLI shows the spend against the cap and why the job paused, and raises the cap
        env = {**os.environ, "DREAMFORGE_URL": stack.api_url, "DREAMFORGE_API_KEY": stack.dev_key}
        shown = cli("status", job_id, env=env)
        assert "(cap 0.005 min)" in shown and "paused in domain: the job's cap of 0.005 minutes" in shown, shown
        raised = cli("caps", job_id, "--wall-minutes", "30", env=env)
        assert "(cap 30 min)" in raised and "[queued]" in raised, raised
        # Training: the cap drops below what it has spent, and the stage checkpoints mid-way.
        wait_for(lambda: (j := h.get(f"/api/jobs/{job_id}").json())["stage"] == "domain" and j["progress"] > 25,
                 every=0.05, what="domain training")  # fmt: skip
        h.put(f"/api/jobs/{job_id}/caps", json={"wall_minutes": 0.005})
        paused = wait_job(h, job_id, until=(JobStatus.PAUSED, *FINAL))
        assert paused["status"] == "paused" and paused["paused"]["stage"] == "domain", paused
        ckpts = list((stack.home / "artifacts" / job_id / "out" / "stages" / "domain.checkpoints").glob("checkpoint-*"))
        assert ckpts and all(0 < int(c.name.split("-")[1]) < 60 for c in ckpts), ckpts
        assert h.put(f"/api/jobs/{job_id}/caps", json={"wall_minutes": 30}).json()["status"] == "queued"
        done = wait_job(h, job_id)
        assert done["status"] == "succeeded", done
        assert any(f"resuming stage domain from {ckpts[-1].name}" in ln["message"] for ln in all_logs(h, job_id))
        # Same seed: the resumed stage ends where the uncapped one did, its weights (held-out
        # metric), its last logged loss and its mean loss over the stage (stages/resume.py).
        key = free["result"]["primary_metric"]
        for model in ("base", "domain"):
            assert done["result"]["models"][model][key] == pytest.approx(free["result"]["models"][model][key], abs=1e-6)
        assert free["result"]["models"]["domain"][key] > free["result"]["models"]["base"][key]  # it learned something to compare

        def trained(jid: str) -> tuple[dict, list[float]]:
            done_file = stack.home / "artifacts" / jid / "out" / "stages" / "domain" / "DONE.json"
            points = h.get(f"/api/jobs/{jid}/metrics", params={"stage": "domain"}).json()["points"]
            return json.loads(done_file.read_text()), [p["values"]["loss"] for p in points if "loss" in p["values"]]

        (info, losses), (free_info, free_losses) = trained(job_id), trained(free["jobId"])
        assert info["steps"] == free_info["steps"] == 60
        assert losses == pytest.approx(free_losses, rel=1e-6) and len(losses) == 6
        assert info["train_loss"] == pytest.approx(free_info["train_loss"], rel=1e-6)
        assert done["spend"]["seconds"] > paused["spend"]["seconds"]

        # The project's cap: its jobs' spend added up. A new job pauses before its first stage.
        spent = h.get("/api/caps").json()["spend"]["seconds"]
        assert spent >= free["spend"]["seconds"] + done["spend"]["seconds"] - 1e-6
        assert h.put("/api/caps", json={"wall_minutes": spent / 60 / 2}).status_code == 200
        held = wait_job(h, h.post("/api/train", json={"config": CONFIG}).json()["jobId"], until=("paused",))
        assert "the project's cap" in held["paused"]["reason"] and held["spend"]["seconds"] == 0
        assert h.post(f"/api/jobs/{held['jobId']}/cancel").json()["status"] == "cancelled"  # at once: no worker holds it
        assert h.put("/api/caps", json={}).json()["resumed"] == []  # a cancelled job stays cancelled
        time.sleep(1.0)
        assert h.get(f"/api/jobs/{held['jobId']}").json()["spend"]["seconds"] == 0
