"""The service end to end: embedded SecantusDB + the API under uvicorn + worker processes,
driven over HTTP exactly as the CLI, the dashboard and the GitHub Action drive it."""

from __future__ import annotations

import io
import os
import re
import signal
import zipfile
from pathlib import Path

import pytest
from conftest import tiny_job_config
from service_helpers import all_logs, api, wait_for, wait_job

from dreamforge.auth import create_project
from dreamforge.local.stack import start_stack
from pipeline.config import build_config, load_preset, preset_names
from pipeline.rewards.js import EXAMPLES
from pipeline.sealed import reward_ref


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # Short leases so a killed worker's job is reaped within seconds.
    s = start_stack(tmp_path_factory.mktemp("stack"), workers=1,
                    extra_env={"DREAMFORGE_LEASE_S": "3", "DREAMFORGE_BACKOFF_S": "0.2", "DREAMFORGE_POLL_S": "0.1"})
    yield s
    s.stop()


def tiny(**over) -> dict:
    return {"config": tiny_job_config(**over)}


def test_health_presets_and_auth(stack):
    import httpx

    assert httpx.get(stack.api_url + "/healthz").json() == {"ok": True, "db": "up"}
    presets = httpx.get(stack.api_url + "/api/presets").json()
    assert {"generic", "retail-shelf", "medical-scan", "traffic-camera"} <= set(presets)
    assert httpx.post(stack.api_url + "/api/train", json=tiny()).status_code == 401
    r = httpx.get(stack.api_url + "/api/jobs", headers={"Authorization": "Bearer dfk_wrong"})
    assert r.status_code == 401
    schema = httpx.get(stack.api_url + "/openapi.json").json()
    assert {"/api/train", "/api/train/status", "/api/jobs/{job_id}/logs", "/api/datasets", "/api/rewards"} <= set(schema["paths"])


def test_job_from_submit_to_model(stack, db):
    with api(stack) as c:
        r = c.post("/api/train", json={**tiny(), "source": {"kind": "cli"}})
        assert r.status_code == 201, r.text
        job_id = r.json()["jobId"]
        job = wait_job(c, job_id)
        assert job["status"] == "succeeded", (job["error"], all_logs(c, job_id)[-10:])
        assert job["progress"] == 100.0
        assert [job["stages"][s]["status"] for s in ("warm_start", "domain", "reward", "evaluate")] == ["done"] * 4
        assert all(job["stages"][s]["attempts"] == 1 for s in job["stages"])
        result = job["result"]
        assert set(result["models"]) >= {"base", "warm_start", "domain", "reward"}
        assert os.path.isdir(result["artifacts"]["model"])
        assert result["release"]["release_format"] in ("nf4", "16bit")
        # 4 domain steps teach nothing: the job succeeds, and says the model did not learn, and why
        assert result["verdict"]["verdict"] == "did_not_learn" and result["verdict"]["problems"]
        assert any("optimizer steps" in c["cause"] for c in result["verdict"]["causes"])
        # logs: dense sequence numbers, in order, readable incrementally
        lines = all_logs(c, job_id)
        seqs = [ln["seq"] for ln in lines]
        assert seqs == list(range(1, len(seqs) + 1))
        assert any("stage reward completed" in ln["message"] for ln in lines)
        half = c.get(f"/api/jobs/{job_id}/logs", params={"after": seqs[len(seqs) // 2]}).json()["lines"]
        assert [ln["seq"] for ln in half] == seqs[len(seqs) // 2 + 1:]
        # metrics: loss points per training stage, reward points for RL
        pts = c.get(f"/api/jobs/{job_id}/metrics").json()["points"]
        stages = {p["stage"] for p in pts}
        assert {"warm_start", "domain", "reward"} <= stages
        assert any({"loss", "train_loss"} & set(p["values"]) for p in pts if p["stage"] == "domain")
        assert "reward" in job["metrics"]
        # the job list shows it, filterable by status
        listed = c.get("/api/jobs", params={"status": "succeeded"}).json()["jobs"]
        assert job_id in [j["jobId"] for j in listed]
        # the SSE stream replays the logs and ends because the job is finished
        with c.stream("GET", f"/api/jobs/{job_id}/logs/stream") as s:
            body = "".join(s.iter_text())
        assert body.count("event: log") == len(lines) and "event: end" in body


def test_invalid_config_is_422_with_field_paths_and_nothing_queued(stack, db):
    before = db.jobs.count_documents({})
    with api(stack) as c:
        r = c.post("/api/train", json={"preset": "retail-shelf", "overrides": {"rl": {"tmperature": 1.0}}})
        assert r.status_code == 422
        locs = [e["loc"] for e in r.json()["detail"]]
        assert ["rl", "tmperature"] in locs
        assert "spelling" in r.text
        r = c.post("/api/train", json={"preset": "retail-shelf", "reward": "no-such-reward"})
        assert r.status_code == 422 and "reward" in r.text
        r = c.post("/api/train", json={"preset": "retail-shelf", "dataset": "ds_0123456789abcdef"})
        assert r.status_code == 404 and "ds_0123456789abcdef" in r.text
        r = c.post("/api/train", json={"preset": "retail-shelf", "reward": "rw_0123456789abcdef"})
        assert r.status_code == 404
        r = c.post("/api/train", json={"preset": "retail-shelf", "bogus": 1})
        assert r.status_code == 422
        # a raw GridFS id would skip the tenant check that dataset ids get
        r = c.post("/api/train", json={"preset": "retail-shelf", "dataset": "gridfs://65a000000000000000000000"})
        assert r.status_code == 422 and "ds_" in r.text
    assert db.jobs.count_documents({}) == before


def test_idempotency_key_gives_one_job(stack, db):
    with api(stack) as c:
        body = {**tiny(), "overrides": {"name": "idem"}}
        h = {"Idempotency-Key": "push-123"}
        a = c.post("/api/train", json=body, headers=h)
        b = c.post("/api/train", json=body, headers=h)
        assert a.status_code == 201 and b.status_code == 200
        assert a.json()["jobId"] == b.json()["jobId"]
        assert db.jobs.count_documents({"idempotency_key": "prj_dev|push-123"}) == 1
        c.post(f"/api/jobs/{a.json()['jobId']}/cancel")


def test_tenants_are_isolated(stack, db):
    _, other_key = create_project(db, "other")
    with api(stack) as mine, api(stack, other_key) as theirs:
        job_id = mine.post("/api/train", json=tiny()).json()["jobId"]
        mine.post(f"/api/jobs/{job_id}/cancel")
        assert theirs.get("/api/train/status", params={"jobId": job_id}).status_code == 404
        assert theirs.get(f"/api/jobs/{job_id}/logs").status_code == 404
        assert theirs.post(f"/api/jobs/{job_id}/cancel").status_code == 404
        assert job_id not in [j["jobId"] for j in theirs.get("/api/jobs").json()["jobs"]]


def test_javascript_rewards_are_checked_stored_tried_and_private(stack, db):
    ds = "synthetic://retail-shelf?n=16&seed=1"
    _, other_key = create_project(db, "reward-other")
    with api(stack) as c, api(stack, other_key) as theirs:
        r = c.post("/api/rewards", json={"name": "broken", "source": "function reward(out, gt) {\n  return out.boxes.length +;\n}"})
        assert r.status_code == 422
        problem = r.json()["detail"][0]
        assert problem["line"] == 2 and "SyntaxError" in problem["msg"] and problem["loc"] == ["source"]
        assert db.rewards.count_documents({"name": "broken"}) == 0
        source = (Path(EXAMPLES) / "retail_facings.js").read_text()
        rid = c.post("/api/rewards", json={"name": "facings", "source": source}).json()["id"]
        assert rid in [x["id"] for x in c.get("/api/rewards").json()]
        table = c.post("/api/rewards/test", json={"reward": rid, "dataset": ds, "samples": 4})
        assert table.status_code == 200, table.text
        cases = {row["case"]: row for row in table.json()["cases"]}
        assert table.json()["samples"] == 4 and cases["exact"]["mean"] == 1.0 and cases["missing"]["mean"] < 1.0
        src = "function reward(o, g) {\n  if (o.boxes.length > 1) throw new Error('x');\n  return 1\n}"
        thrown = c.post("/api/rewards/test", json={"source": src, "dataset": ds, "samples": 4})
        assert thrown.status_code == 422 and thrown.json()["detail"][0]["line"] == 2
        # another project can neither list, try nor train with it
        assert rid not in [x["id"] for x in theirs.get("/api/rewards").json()]
        assert theirs.post("/api/rewards/test", json={"reward": rid, "dataset": ds}).status_code == 404
        assert theirs.post("/api/train", json={**tiny(), "reward": rid}).status_code == 404
        # inline JavaScript on /api/train is checked, stored for the project and referenced by the job
        bad = c.post("/api/train", json={**tiny(), "reward_js": "function reward(o, g) { return NaN }"})
        assert bad.status_code == 422 and "returned NaN" in bad.text
        job_id = c.post("/api/train", json={**tiny(), "reward_js": source}).json()["jobId"]
        c.post(f"/api/jobs/{job_id}/cancel")
        job = db.jobs.find_one({"_id": job_id})
        assert job["reward_source"] == source and job["config"]["reward"] == reward_ref("inline.js", source)
        assert db.rewards.find_one({"source": source, "name": "inline.js"})["project_id"] == "prj_dev"


def test_cancel_queued_and_running(stack, db):
    with api(stack) as c:
        # queued: a job whose dataset never loads would fail; cancel it before any worker can claim it
        db.jobs.update_many({"status": "queued"}, {"$set": {"status": "cancelled"}, "$unset": {"queue_key": ""}})
        long_cfg = tiny_job_config(warm_start={"max_steps": 2000})
        job_id = c.post("/api/train", json={"config": long_cfg}).json()["jobId"]
        wait_job(c, job_id, until=("running",), timeout=60)
        wait_for(lambda: c.get(f"/api/jobs/{job_id}/metrics").json()["points"], timeout=90, what="training steps")
        r = c.post(f"/api/jobs/{job_id}/cancel")
        assert r.status_code == 202
        job = wait_job(c, job_id, timeout=20)
        assert job["status"] == "cancelled" and job["error"]["message"] == "cancelled by the user"
        assert job["stages"]["warm_start"]["status"] == "cancelled"
        # a newer push superseding a running job (what webhooks.supersede writes): the job says so
        job_id = c.post("/api/train", json={"config": long_cfg}).json()["jobId"]
        wait_job(c, job_id, until=("running",), timeout=60)
        db.jobs.update_one({"_id": job_id, "status": "running"},
                           {"$set": {"cancel_requested": True, "superseded_by": "superseded by 0123456789ab"}})  # fmt: skip
        job = wait_job(c, job_id, timeout=30)
        assert job["status"] == "cancelled" and job["error"]["message"] == "superseded by 0123456789ab"


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_dataset_upload_and_hostile_archives(stack, db, tmp_path):
    from pipeline.data.coco import load_dataset
    from pipeline.data.synthetic import write_coco

    folder = write_coco(load_dataset("synthetic://retail-shelf?n=8&seed=3", "detect"), tmp_path / "shelves")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in folder.rglob("*"):
            if p.is_file():
                z.write(p, p.relative_to(folder))
    n_files = db["datasets.files"].count_documents({})
    with api(stack) as c:
        r = c.post("/api/datasets", params={"name": "shelves"}, content=buf.getvalue())
        assert r.status_code == 201, r.text
        ds = r.json()
        assert ds["images"] == 8 and ds["id"].startswith("ds_")
        assert ds["id"] in [d["id"] for d in c.get("/api/datasets").json()]
        slip = _zip({"../../evil.json": b"{}", "annotations.json": b"{}"})
        r = c.post("/api/datasets", params={"name": "evil"}, content=slip)
        assert r.status_code == 422 and "evil.json" in r.text
        r = c.post("/api/datasets", params={"name": "junk"}, content=b"not a zip at all")
        assert r.status_code == 422
        # a job can train on the stored dataset
        job_id = c.post("/api/train", json={**tiny(), "dataset": ds["id"]}).json()["jobId"]
        assert db.jobs.find_one({"_id": job_id})["config"]["data"]["dataset"].startswith("gridfs://")
        job = wait_job(c, job_id)
        assert job["status"] == "succeeded", job["error"]
        line = next(ln["message"] for ln in all_logs(c, job_id) if ln["message"].startswith("dataset "))
        assert sum(int(n) for n in re.findall(r"(\d+) images?\b", line)) == 8, line  # the 8 uploaded images
        # known by the name it was uploaded under, in the logs and the job view; the id stays for machines
        assert line.startswith("dataset shelves: "), line
        assert job["datasets"] == {"dataset": {"id": ds["id"], "name": "shelves"}}
    assert db["datasets.files"].count_documents({}) == n_files + 1


def test_request_bodies_are_capped(stack):
    with api(stack) as c:
        r = c.post("/api/train", content=b"{" + b" " * (2 << 20) + b"}", headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_user_error_fails_once_without_retry(stack, db, tmp_path):
    with api(stack) as c:
        # what submit can check it refuses (an unknown synthetic kind); a path that is gone when the job runs it cannot
        cfg = tiny_job_config(data={"dataset": "synthetic://no-such-kind?n=4"})
        r = c.post("/api/train", json={"config": cfg})
        assert r.status_code == 422 and "no-such-kind" in r.text
        cfg = tiny_job_config(data={"dataset": str(tmp_path / "no-such-folder")})
        job_id = c.post("/api/train", json={"config": cfg}).json()["jobId"]
        job = wait_job(c, job_id, timeout=120)
        assert job["status"] == "failed"
        assert job["error"]["kind"] == "user" and "no-such-folder" in job["error"]["message"]
        assert job["attempt"] == 1


def test_worker_killed_mid_stage_is_resumed_by_another(stack, db):
    with api(stack) as c:
        cfg = tiny_job_config(domain={"max_steps": 60})
        job_id = c.post("/api/train", json={"config": cfg}).json()["jobId"]
        job = wait_job(c, job_id, until=("running",), timeout=60)
        wait_for(lambda: c.get("/api/train/status", params={"jobId": job_id}).json()["stages"]["domain"]["status"] == "running",
                 timeout=120, what="the domain stage")
        worker = db.jobs.find_one({"_id": job_id})["worker"]
        pid = int(worker.rsplit("-", 1)[1])
        victim = next(p for p in stack.workers if p.pid == pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        stack.workers.remove(victim)
        stack.start_worker()  # the replacement picks the job up after the lease expires
        job = wait_job(c, job_id, timeout=240)
        assert job["status"] == "succeeded", job["error"]
        assert job["attempt"] == 2
        assert job["stages"]["warm_start"]["attempts"] == 1  # finished stages are not rerun
        assert job["stages"]["domain"]["attempts"] == 2
        completed = [ln["message"] for ln in all_logs(c, job_id) if " completed" in ln["message"]]
        for stage in ("warm_start", "domain", "reward", "evaluate"):
            assert sum(m.startswith(f"stage {stage} completed") for m in completed) == 1, completed


def test_presets_listed_in_json(stack):
    import httpx

    presets = httpx.get(stack.api_url + "/api/presets").json()
    assert set(presets) == set(preset_names())
    for name, p in presets.items():  # each served as its shipped file, and valid as a whole curriculum
        assert p == load_preset(name)
        assert build_config(p, source=name).task == p.get("task", "detect")
    assert presets["retail-shelf"]["task"] == "detect"


def test_database_down_is_503_and_nothing_is_lost(tmp_path):
    from dreamforge.local import embedded_db

    s = start_stack(tmp_path / "stack", workers=1, extra_env={"DREAMFORGE_POLL_S": "0.1"})
    try:
        with api(s) as c:
            gone = {"config": tiny_job_config(data={"dataset": str(tmp_path / "no-such-folder")})}  # fails fast, as the user's
            job_id = c.post("/api/train", json=gone).json()["jobId"]
            wait_job(c, job_id, timeout=120)
            port, storage = s.db.port, s.db.storage
            s.db.kill()  # SIGKILL: what was acknowledged must survive (--sync-on-commit)
            r = c.get("/api/jobs")
            assert r.status_code == 503 and "database" in r.json()["detail"]
            assert r.headers["Retry-After"]
            s.db = embedded_db.start(storage, port)
            wait_for(lambda: c.get("/api/jobs").status_code == 200, timeout=30, what="the API to reconnect")
            assert c.get("/api/train/status", params={"jobId": job_id}).json()["status"] == "failed"
            # the worker rode out the outage: a new job is still picked up and run
            job2 = c.post("/api/train", json=gone).json()["jobId"]
            job = wait_job(c, job2, timeout=120)
            assert job["status"] == "failed" and job["error"]["kind"] == "user" and job["attempt"] == 1
    finally:
        s.stop()
