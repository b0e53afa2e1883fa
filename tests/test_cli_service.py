"""The CLI against the real local stack: `dreamforge up` in one process, the other commands in
others, exactly as a user types them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import tiny_job_config

from pipeline.data.coco import load_dataset
from pipeline.data.synthetic import write_coco
from pipeline.rewards.js import EXAMPLES


def df(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dreamforge.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    env = {**os.environ, "DREAMFORGE_HOME": str(home), "COLUMNS": "200"}
    env.pop("DREAMFORGE_URL", None), env.pop("DREAMFORGE_API_KEY", None), env.pop("MONGODB_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "dreamforge.cli", "up", "--no-dashboard"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (home / "stack.json").exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "dreamforge up did not start"
        time.sleep(0.2)
    yield proc, home, env
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()  # its children die with it (PR_SET_PDEATHSIG)
            proc.wait(5)


def test_train_follow_status_logs_jobs_init(up, tmp_path):
    proc, home, env = up
    info = json.loads((home / "stack.json").read_text())
    assert httpx.get(info["url"] + "/healthz").status_code == 200
    # a local folder is uploaded as a dataset under the name given, then the job trains on it
    # with a JavaScript reward from a file
    folder = write_coco(load_dataset("synthetic://retail-shelf?n=16&seed=4", "detect"), tmp_path / "shelves")
    cfg = tmp_path / "dreamforge.config.json"
    cfg.write_text(json.dumps(tiny_job_config()))
    js = tmp_path / "retail_facings.js"
    js.write_text((EXAMPLES / "retail_facings.js").read_text())
    r = df("train", "--config", str(cfg), "--dataset", str(folder), "--name", "coins", "--reward", str(js), "--follow",
           env={**env, "DREAMFORGE_DASHBOARD_URL": "http://dash.test"})  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    job_id = r.stdout.split("submitted ")[1].split()[0]
    assert re.search(r"^uploaded shelves as dataset coins \(ds_[0-9a-f]+\): 16 images$", r.stdout, re.M), r.stdout
    assert f"  dashboard: http://dash.test/job?job={job_id}\n" in r.stdout  # the job's named dashboard page
    assert "succeeded" in r.stdout and "held-out metrics" in r.stdout
    assert "the model did not learn" in r.stdout and "released: " in r.stdout  # a 4-step job learns nothing
    assert "stage reward completed" in r.stderr  # the followed log lines
    # the held-out table's last column is the job's own reward, under its name, scored for every model
    assert "reward: retail_facings" in r.stdout and "reward_score" not in r.stdout
    rows = {ln.split("│")[1].strip(): ln.split("│")[-2].strip() for ln in r.stdout.splitlines() if ln.count("│") > 4}
    assert {"base", "warm_start", "domain", "reward"} <= set(rows)
    assert all(re.fullmatch(r"\d\.\d{3}", v) for v in rows.values()), rows
    s = df("status", job_id, "--json", env=env)
    job = json.loads(s.stdout)
    assert job["status"] == "succeeded" and job["source"]["kind"] == "cli"
    assert job["stages"]["domain"]["status"] == "done"
    # the job view keeps the user's name of the upload beside the id machines use
    assert job["datasets"]["dataset"]["name"] == "coins" and job["datasets"]["dataset"]["id"].startswith("ds_")
    assert f"  dataset: coins ({job['datasets']['dataset']['id']})" in df("status", job_id, env=env).stdout
    # metrics.json and the job view both report the reward's held-out score per model
    record = json.loads(Path(job["result"]["artifacts"]["metrics.json"]).read_text())
    assert record["reward"] == job["result"]["reward"] == "retail_facings.js"
    models = record["evaluation"]["models"]
    assert {"base", "warm_start", "domain", "reward", "4bit"} <= set(models)
    assert all(isinstance(m["reward_score"], float) for m in models.values())
    assert all(job["result"]["models"][n]["reward_score"] == m["reward_score"] for n, m in models.items())
    logs = df("logs", job_id, env=env).stdout.splitlines()
    assert len(logs) > 5 and "job succeeded" in logs[-1]
    assert any("dataset coins: train " in ln for ln in logs), logs  # the pipeline's own log says its name
    assert job_id in df("jobs", env=env).stdout
    out = tmp_path / "init.json"
    assert df("init", "--preset", "medical-scan", "--out", str(out), env=env).returncode == 0
    assert json.loads(out.read_text())["preset"] == "medical-scan"
    bad = df("train", "--preset", "retail-shelf", "--reward", "nope", env=env)
    assert bad.returncode == 2 and "reward" in bad.stderr
    bad = df("train", "--dataset", "synthetic://retail-shelf?n=8", "--name", "coins", env=env)
    assert bad.returncode == 2 and "--name names a dataset uploaded from a local .zip or folder" in bad.stderr


def test_up_stops_everything_on_ctrl_c(up):
    proc, home, env = up
    info = json.loads((home / "stack.json").read_text())
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    assert "stopping" in proc.stdout.read()
    with pytest.raises(httpx.HTTPError):
        httpx.get(info["url"] + "/healthz", timeout=2)
    assert not (home / "stack.json").exists()
    r = df("jobs", env=env)
    assert r.returncode == 1 and "dreamforge up" in r.stderr
