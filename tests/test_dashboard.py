"""The dashboard against the live local API: Streamlit's AppTest drives every page with real jobs
in each state. One tiny job really trains (the finished one, with artifacts); the queued,
running, failed and cancelled ones are made through the API and the queue's own functions,
exactly as a worker writes them, because those tests are about display, not training."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import httpx
import pytest
from bson import ObjectId
from conftest import tiny_job_config
from dashboard_helpers import app, chart_data, claim, frame, log_rows, metric_rows, submit, texts
from PIL import Image
from service_helpers import api, wait_job

from dreamforge.auth import create_project
from dreamforge.jobs import queue, streams
from dreamforge.local.stack import start_dashboard, start_stack
from dreamforge.settings import dashboard_page
from pipeline.rewards.js import EXAMPLES

REPO = "acme/shelves"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # No standing worker: jobs stay in the state a test puts them in. One is started for the
    # finished job only.
    s = start_stack(tmp_path_factory.mktemp("dash"), workers=0, extra_env={"DREAMFORGE_POLL_S": "0.1"})
    saved = {k: os.environ.get(k) for k in ("DREAMFORGE_URL", "DREAMFORGE_API_KEY")}
    yield s
    s.stop()
    for k, v in saved.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture(scope="module")
def finished(stack):
    """One real tiny job, all four stages, on branch main of acme/shelves, trained with a stored
    JavaScript reward (retail_facings): its held-out score shows under its name."""
    worker = stack.start_worker()
    try:
        with api(stack) as c:
            source = (EXAMPLES / "retail_facings.js").read_text()
            rid = c.post("/api/rewards", json={"name": "retail_facings", "source": source}).json()["id"]
            job_id = submit(c, tiny_job_config(reward=rid), repo=REPO, branch="main", sha="a1b2c3d4e5f6")
            job = wait_job(c, job_id, timeout=300)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(20)
        stack.workers.remove(worker)
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.fixture(scope="module")
def jobs(stack, db, finished):
    """A running, a failed, a cancelled and a queued job, on their own branches."""
    cfg = tiny_job_config()
    with api(stack) as c:
        running = submit(c, cfg, repo=REPO, branch="feature-running", sha="1111111aaaa")
        attempt = claim(db, running)
        queue.stage_started(db, running, attempt, "warm_start")
        queue.stage_finished(db, running, attempt, "warm_start", "done", {"seconds": 3.0})
        queue.stage_started(db, running, attempt, "domain")
        streams.append(db, running, attempt, "logs", log_rows(30, "warm_start"))
        streams.append(db, running, attempt, "metrics", metric_rows(20, "warm_start"), {"metrics.domain": {"step": 5, "loss": 0.8}})
        streams.append(db, running, attempt, "metrics", metric_rows(5, "domain"))
        queue.set_progress(db, running, attempt, "domain", 37.5)

        failed = submit(c, cfg, repo=REPO, branch="feature-failed", sha="2222222bbbb")
        attempt_f = claim(db, failed)
        queue.stage_started(db, failed, attempt_f, "warm_start")
        streams.append(db, failed, attempt_f, "logs", [{"t": time.time(), "level": "error", "stage": "warm_start",
                                                      "message": "dataset.zip: annotations.json: image 3 has a box outside"}])  # fmt: skip
        queue.stage_finished(db, failed, attempt_f, "warm_start", "failed", {})
        queue.finish(db, failed, attempt_f, "failed", error={"kind": "user", "stage": "warm_start",
                     "message": "dataset.zip: annotations.json: annotation 17 of image 3 has a box outside the 64×64 image"})  # fmt: skip

        cancelled = submit(c, cfg, repo=REPO, branch="feature-cancelled", sha="3333333cccc")
        assert c.post(f"/api/jobs/{cancelled}/cancel").json()["status"] == "cancelled"
        queued = submit(c, cfg, repo=REPO, branch="feature-queued", sha="4444444dddd")
    return {"running": running, "failed": failed, "cancelled": cancelled, "queued": queued, "attempt": attempt}


def test_finished_job_page_shows_stages_curves_metrics_samples_artifacts(stack, finished):
    at = app(stack, "app_pages/job.py", job=finished["jobId"])
    assert not at.exception
    assert at.title[0].value == f"Job {finished['jobId']}"
    assert at.progress[0].value == 100
    shown = {m.label: m.value for m in at.metric}
    assert shown["Status"] == "succeeded" and shown["Remaining"] == "0s"
    # the verdict stands above the numbers, with a cause the job found and its fix
    verdict = [e.value for e in at.error]
    assert len(verdict) == 1 and "The model did not learn." in verdict[0] and "optimizer steps" in verdict[0]
    stages = frame(at, "attempts")
    assert list(stages["status"]) == ["done"] * 4
    # held-out metrics: one row per model, base → warm-start → domain → RL → 4-bit, the API's numbers
    table = frame(at, "model")
    assert list(table["model"]) == ["base", "warm-start SFT", "domain SFT", "reward RL", "4-bit"]
    key = finished["result"]["primary_metric"]
    assert list(table[key]) == [finished["result"]["models"][m][key] for m in ("base", "warm_start", "domain", "reward", "4bit")]
    # the job's own JavaScript reward, scored for every model, in a column named after it
    assert finished["result"]["reward"] == "retail_facings.js"
    scores = [finished["result"]["models"][m].get("reward_score") for m in ("base", "warm_start", "domain", "reward", "4bit")]
    assert all(isinstance(x, float) for x in scores), scores
    assert "reward_score" not in table.columns and list(table["reward: retail_facings"]) == scores
    per_stage = frame(at, "steps")
    assert list(per_stage["steps"]) == [6, 4, 2]  # tiny_job_config's max_steps per stage
    # curves: the loss chart holds the SFT stages, the reward chart the RL stage's reward
    loss = chart_data(at, "loss vs step")
    assert {"warm_start", "domain"} <= set(loss["stage"])
    reward = chart_data(at, "reward vs step")
    assert set(reward["stage"]) == {"reward"} and set(reward["metric"]) == {"reward"}
    spec = next(json.loads(c.proto.spec) for c in at.get("vega_lite_chart") if json.loads(c.proto.spec)["title"] == "reward vs step")
    assert spec["encoding"]["y"]["title"] == "reward: retail_facings"
    # samples: each held-out image twice (prediction, ground truth), decodable PNGs
    assert len(at.get("image")) == 12
    artifacts = frame(at, "artifact")
    assert dict(zip(artifacts["artifact"], artifacts["location"]))["model"] == finished["result"]["artifacts"]["model"]
    # a finished job offers no cancel button, and its logs end with the job's last line
    assert not [b for b in at.button if b.key == "cancel"]
    assert "job succeeded" in at.code[-1].value


def test_try_it_on_the_job_page_asks_the_jobs_model_and_draws_its_answer(stack, finished):
    at = app(stack, "app_pages/job.py", job=finished["jobId"], timeout=240)
    assert at.radio(key="try_skill").options == ["detect", "point"]  # what a detection model answers
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (30, 120, 200)).save(buf, "PNG")
    at.file_uploader(key="try_image").set_value(("mine.png", buf.getvalue(), "image/png")).run()
    assert not at.exception and not at.error[1:], [e.value for e in at.error]  # [0] is the verdict
    with api(stack) as c:  # the same answer the API gives for the same image
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        n = len(c.post(f"/api/jobs/{finished['jobId']}/try/detect", json={"image_url": url}, timeout=120).json()["objects"])
    captions = [i.caption for el in at.get("image") for i in el.proto.imgs]
    assert f"mine.png: {n} object{'s' * (n != 1)} found" in captions, captions
    at.text_input(key="try_object").set_value("unicorn").run()
    assert any("it knows:" in e.value for e in at.error), [e.value for e in at.error]


def test_running_job_page_shows_progress_and_fetches_only_new_rows(stack, db, jobs):
    job_id, attempt = jobs["running"], jobs["attempt"]
    at = app(stack, "app_pages/job.py", job=job_id)
    assert not at.exception
    assert at.progress[0].value == 38  # 37.5 % rounded
    shown = {m.label: m.value for m in at.metric}
    assert shown["Status"] == "running" and shown["Stage"] == "2 · domain SFT"
    assert shown["Elapsed"] != "–" and shown["Remaining"].endswith("s")  # extrapolated from 37.5 %
    assert list(frame(at, "attempts")["status"]) == ["done", "running", "pending", "pending"]
    assert at.expander[0].label == "Logs (30 lines)"
    assert "warm_start line 29" in at.code[0].value
    assert len(chart_data(at, "loss vs step")) == 25
    stream = at.session_state["streams"][job_id]
    first_requests = stream.requests
    # the worker writes more; a refresh asks only for rows after the last seq it holds
    streams.append(db, job_id, attempt, "logs", log_rows(5, "domain", start=100))
    streams.append(db, job_id, attempt, "metrics", metric_rows(3, "domain", start=5))
    at.run()
    stream = at.session_state["streams"][job_id]
    assert [ln["seq"] for ln in stream.logs] == list(range(1, 36))  # no line twice, none missing
    assert stream.log_next == 35 and stream.metric_next == 28
    assert stream.requests - first_requests == 2  # one logs and one metrics request per refresh
    assert at.expander[0].label == "Logs (35 lines)"
    assert "domain line 104" in at.code[0].value  # the panel follows: the newest 30 lines
    assert "warm_start line 4" not in at.code[0].value
    assert any(c.startswith("the last 30 of 35 lines") for c in texts(at, "caption"))
    at.toggle(key=f"more_logs_{job_id}").set_value(True).run()
    assert "warm_start line 0" in at.code[0].value
    assert len(chart_data(at, "loss vs step")) == 28
    assert [b for b in at.button if b.key == "cancel"]
    with api(stack) as c:  # opening a long log starts at its tail
        tail = c.get(f"/api/jobs/{job_id}/logs", params={"last": 10}).json()
        assert [ln["seq"] for ln in tail["lines"]] == list(range(26, 36)) and tail["next"] == 35


def test_validation_checks_are_drawn_as_their_own_curve(stack, db, jobs):
    with api(stack) as c:
        job_id = submit(c, tiny_job_config())  # no repository: it stays off the previews page
    attempt = 1  # what a claim does, without taking the fixture's queued job
    db.jobs.update_one({"_id": job_id}, {"$set": {"status": "running", "attempt": attempt}, "$unset": {"queue_key": ""}})
    queue.stage_started(db, job_id, attempt, "domain")
    val = [{"t": time.time(), "stage": "domain", "step": s, "values": {"val_mean_iou": v, "val_parse_rate": 1.0}}
           for s, v in ((20, 0.1), (40, 0.3), (60, 0.25))]  # fmt: skip
    streams.append(db, job_id, attempt, "metrics", metric_rows(6, "domain", start=0) + val)
    at = app(stack, "app_pages/job.py", job=job_id)
    assert not at.exception
    curve = chart_data(at, "validation vs step")
    assert list(curve["step"]) == [20, 40, 60] and list(curve["value"]) == [0.1, 0.3, 0.25]
    assert set(curve["metric"]) == {"val_mean_iou"} and len(chart_data(at, "loss vs step")) == 6
    queue.finish(db, job_id, attempt, "cancelled", error={"kind": "cancelled", "message": "test over"})


def test_failed_job_page_names_the_stage_and_the_problem(stack, jobs):
    at = app(stack, "app_pages/job.py", job=jobs["failed"])
    assert not at.exception
    errors = texts(at, "error")
    assert any("user error in stage warm_start" in e and "annotation 17 of image 3" in e for e in errors), errors
    assert list(frame(at, "attempts")["status"])[0] == "failed"
    assert "image 3 has a box outside" in at.code[0].value
    assert not [b for b in at.button if b.key == "cancel"]


def test_cancel_button_cancels_a_queued_job(stack, db):
    with api(stack) as c:
        job_id = submit(c, tiny_job_config())
        at = app(stack, "app_pages/job.py", job=job_id)
        assert {m.label: m.value for m in at.metric}["Status"] == "queued"
        assert "waiting for a worker" in at.progress[0].proto.text
        at.button(key="cancel").click().run()
        assert not at.exception
        assert any("cancelled" in s for s in texts(at, "success"))
        assert c.get("/api/train/status", params={"jobId": job_id}).json()["status"] == "cancelled"


def test_a_held_fork_preview_can_be_filtered_and_approved(stack, db):
    # A fork's pull request waits for a member's approval (webhooks.py): its status must be
    # filterable, and its page must offer the approval instead of refreshing while nothing moves.
    with api(stack) as c:
        # Not REPO (the previews test counts its branches), and after it in order (the default choice).
        job_id = submit(c, tiny_job_config(), repo="zeta/forked", branch="fork-held", sha="5555555eeee")
        db.jobs.update_one({"_id": job_id}, {"$set": {"status": "awaiting_approval"}, "$unset": {"queue_key": ""}})
        at = app(stack, "app_pages/jobs.py")
        at.multiselect(key="f_status").set_value(["awaiting_approval"]).run()
        assert not at.exception
        assert [u.split("=")[1] for u in frame(at, "progress")["job"]] == [job_id]
        at = app(stack, "app_pages/job.py", job=job_id)
        assert not at.exception
        assert {m.label: m.value for m in at.metric}["Status"] == "awaiting_approval"
        assert any("approves it" in t for t in texts(at, "info"))
        at.button(key="approve").click().run()
        assert not at.exception
        assert c.get("/api/train/status", params={"jobId": job_id}).json()["status"] == "queued"
        assert {m.label: m.value for m in at.metric}["Status"] == "queued" and not [b for b in at.button if b.key == "approve"]


def test_jobs_page_lists_and_filters_by_repo_branch_status(stack, jobs, finished):
    at = app(stack, "app_pages/jobs.py")
    assert not at.exception
    table = frame(at, "progress")
    ids = [u.split("=")[1] for u in table["job"]]
    assert {finished["jobId"], jobs["running"], jobs["failed"], jobs["cancelled"], jobs["queued"]} <= set(ids)
    row = table[table["job"] == f"/job?job={jobs['running']}"].iloc[0]
    assert row["progress"] == 37.5 and row["status"] == "running" and row["branch"] == "feature-running"
    done = table[table["job"] == f"/job?job={finished['jobId']}"].iloc[0]
    key, released = finished["result"]["primary_metric"], finished["result"]["release"]["stage"]
    assert done["key metric"] == f"{key} {finished['result']['models'][released][key]:.3f}"
    assert done["status"] == "succeeded · did not learn"  # a 4-step job learns nothing, and the list says so
    at.multiselect(key="f_status").set_value(["failed"]).run()
    assert [u.split("=")[1] for u in frame(at, "progress")["job"]] == [jobs["failed"]]
    at.multiselect(key="f_status").set_value([]).run()
    at.text_input(key="f_branch").input("feature-queued").run()
    assert [u.split("=")[1] for u in frame(at, "progress")["job"]] == [jobs["queued"]]
    at.text_input(key="f_repo").input("someone/else").run()
    assert not at.dataframe and "No jobs match." in texts(at, "info")


def test_previews_page_has_one_row_per_branch_with_its_latest_commit(stack, jobs, finished):
    with api(stack) as c:  # a newer push to main replaces main's row
        newer = submit(c, tiny_job_config(), repo=REPO, branch="main", sha="9999999ffff")
        c.post(f"/api/jobs/{newer}/cancel")
    at = app(stack, "app_pages/previews.py")
    assert not at.exception
    assert at.selectbox(key="preview_repo").value == REPO
    table = frame(at, "branch")
    assert sorted(table["branch"]) == sorted(["main", "feature-running", "feature-failed", "feature-cancelled", "feature-queued"])
    rows = {r["branch"]: r for _, r in table.iterrows()}
    assert rows["main"]["commit"] == "9999999" and rows["main"]["job"] == f"/job?job={newer}"
    assert rows["main"]["status"] == "cancelled"
    assert rows["feature-failed"]["status"] == "failed" and rows["feature-running"]["commit"] == "1111111"


def _dataset_zip(tmp_path) -> bytes:
    from pipeline.data.coco import load_dataset
    from pipeline.data.synthetic import write_coco

    folder = write_coco(load_dataset("synthetic://retail-shelf?n=8&seed=3", "detect"), tmp_path / "shelves")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in folder.rglob("*"):
            if p.is_file():
                z.write(p, p.relative_to(folder))
    return buf.getvalue()


def test_train_page_uploads_a_zip_and_launches_onto_the_job_page(stack, db, tmp_path):
    at = app(stack, "app_pages/train.py")
    assert not at.exception
    at.radio(key="ds_how").set_value("Upload a ZIP").run()
    # a broken archive is refused with the API's reason
    at.file_uploader(key="ds_zip").set_value(("junk.zip", b"not a zip at all", "application/zip")).run()
    at.button(key="ds_upload").click().run()
    assert any(e.startswith("junk.zip: upload rejected") for e in texts(at, "error")), texts(at, "error")
    assert at.button(key="launch").disabled
    at.file_uploader(key="ds_zip").set_value(("shelves.zip", _dataset_zip(tmp_path), "application/zip")).run()
    at.button(key="ds_upload").click().run()
    ok = texts(at, "success")
    assert any(s.startswith("shelves: 8 images") for s in ok), ok
    ds_id = at.session_state["uploaded"]["id"]
    # curriculum: preset values shown, then edited
    assert at.number_input(key="retail-shelf.rl.group").value == 8
    at.number_input(key="retail-shelf.domain.epochs").set_value(3.0)
    at.number_input(key="retail-shelf.domain.max_steps").set_value(0)
    at.number_input(key="retail-shelf.rl.group").set_value(4)
    at.number_input(key="retail-shelf.rl.batch").set_value(8)
    at.selectbox(key="rw_builtin").set_value("f1")
    at.button(key="launch").click().run()
    assert not at.exception and not texts(at, "error"), texts(at, "error")
    job_id = at.session_state["job_id"]
    assert at.title[0].value == f"Job {job_id}"  # landed on the job page
    doc = db.jobs.find_one({"_id": job_id})
    assert doc["source"]["kind"] == "dashboard" and doc["preset"] == "retail-shelf"
    assert doc["config"]["data"]["dataset"].startswith("gridfs://")
    assert doc["config"]["domain"]["epochs"] == 3.0 and doc["config"]["domain"].get("max_steps") is None
    assert doc["config"]["rl"]["num_generations"] == 4 and doc["config"]["rl"]["batch_size"] == 8
    assert doc["config"]["reward"] == "f1"
    assert db.datasets.find_one({"_id": ds_id})["images"] == 8
    # the upload keeps its name: in GridFS, on the job, and on the job's page (the id is for machines)
    gid = doc["config"]["data"]["dataset"].removeprefix("gridfs://")
    assert db["datasets.files"].find_one({"_id": ObjectId(gid)})["metadata"]["name"] == "shelves"
    assert doc["datasets"] == {"dataset": {"id": ds_id, "name": "shelves"}}
    assert any(" · dataset shelves · " in c for c in texts(at, "caption")), texts(at, "caption")
    with api(stack) as c:
        c.post(f"/api/jobs/{job_id}/cancel")


def test_train_page_shows_the_fields_the_api_refused(stack, db):
    before = db.jobs.count_documents({})
    at = app(stack, "app_pages/train.py")
    at.number_input(key="retail-shelf.rl.group").set_value(6)  # 16 completions are not a multiple of 6
    at.radio(key="ds_how").set_value("Link (s3:// or gs://)").run()
    at.text_input(key="ds_link").input("ftp://example.com/data.zip").run()
    assert any("must start with s3://, gs:// or https://" in e for e in texts(at, "error"))
    assert at.button(key="launch").disabled
    at.radio(key="ds_how").set_value("Synthetic").run()
    at.button(key="launch").click().run()
    errors = texts(at, "error")
    assert any(e.startswith("not launched: rl: batch_size 16 is not a multiple of num_generations 6") for e in errors), errors
    assert db.jobs.count_documents({}) == before
    assert at.title[0].value == "Train"


def test_preflight_button_shows_findings_and_cost_without_launching(stack, db):
    before = db.jobs.count_documents({})
    at = app(stack, "app_pages/train.py")
    at.radio(key="ds_how").set_value("Synthetic").run()
    at.selectbox(key="rw_builtin").set_value("format").run()  # scores every perturbed answer alike
    at.button(key="preflight").click().run()
    # the preset's stage 3 is RFT, which keeps the best of its samples: a flat reward is a warning there, not an error
    assert "preflight: no errors" in texts(at, "success")
    warnings = texts(at, "warning")
    assert any(w.startswith("**reward**: the reward 'format' scores every") and "— fix: " in w for w in warnings), warnings
    assert any("images by label" in i for i in texts(at, "info"))
    assert list(frame(at, "stage")["stage"]) == ["warm_start", "domain", "reward", "evaluate"]
    assert db.jobs.count_documents({}) == before


def test_test_reward_button_shows_scores_or_the_line_of_the_error(stack):
    routes = httpx.get(stack.api_url + "/openapi.json").json()["paths"]
    at = app(stack, "app_pages/train.py")
    at.radio(key="ds_how").set_value("Synthetic").run()
    if "/api/rewards/test" not in routes:
        at.button(key="test_reward").click().run()
        assert any("not available from this API version" in i for i in texts(at, "info"))
        pytest.skip("POST /api/rewards/test is not on this API yet; the dashboard's 'not available' message was checked")
    at.button(key="test_reward").click().run()  # a built-in reward
    cases = frame(at, "case")
    assert list(cases["case"]) == ["exact", "shifted", "missing", "extra"]
    assert cases["mean"].iloc[0] == pytest.approx(1.0) and cases["mean"].iloc[0] > cases["mean"].iloc[2]
    at.radio(key="rw_how").set_value("JavaScript").run()
    at.text_area(key="rw_js").input("function reward(out, gt) {\n  let x = 1;\n  return x +* 2;\n}\n").run()
    at.button(key="test_reward").click().run()
    errors = texts(at, "error")
    assert any(e.startswith("line 3") for e in errors), errors
    assert "> " in at.code[-1].value and "return x +* 2" in at.code[-1].value


def test_samples_route_is_tenant_checked_and_only_for_finished_jobs(stack, db, jobs, finished):
    _, other = create_project(db, "other-dash")
    with api(stack) as mine, api(stack, other) as theirs:
        assert theirs.get(f"/api/jobs/{finished['jobId']}/samples").status_code == 404
        r = mine.get(f"/api/jobs/{jobs['running']}/samples")
        assert r.status_code == 409 and "running" in r.json()["detail"]
        r = mine.get(f"/api/jobs/{finished['jobId']}/samples", params={"n": 3, "model": "domain"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "domain" and set(body["models"]) >= {"base", "warm_start", "domain", "reward"}
        assert len(body["samples"]) == 3
        s = body["samples"][0]
        im = Image.open(io.BytesIO(base64.b64decode(s["gt_png"])))
        assert im.size == (s["gt"]["image"]["width"] * 4, s["gt"]["image"]["height"] * 4)  # drawn at 4× scale
        # the ground truth's first box is outlined in the first colour
        x1, y1, x2, y2 = (v * 4 for v in s["gt"]["boxes"][0])
        assert im.getpixel((x1, (y1 + y2) // 2)) == (255, 64, 64)
        r = mine.get(f"/api/jobs/{finished['jobId']}/samples", params={"model": "nope"})
        assert r.status_code == 422 and "base" in r.json()["detail"]


def test_a_wrong_api_key_is_explained_on_the_page(stack):
    at = app(stack, "app_pages/jobs.py", key="dfk_not-a-key")
    assert not at.exception
    assert any("paste a valid API key" in e for e in texts(at, "error"))
    at.sidebar.text_input(key="api_key").input(stack.dev_key).run()
    assert not texts(at, "error") and frame(at, "progress") is not None


def test_dreamforge_up_starts_the_dashboard_and_prints_its_url(tmp_path):
    env = {**os.environ, "DREAMFORGE_HOME": str(tmp_path / "home")}
    for k in ("DREAMFORGE_URL", "DREAMFORGE_API_KEY", "MONGODB_URI"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "dreamforge.cli", "up", "--workers", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        out = []
        deadline = time.monotonic() + 120
        while not any(ln.startswith("Press Ctrl-C") for ln in out):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(out)
            out.append(proc.stdout.readline())
        url = next(ln.split()[1] for ln in out if ln.strip().startswith("dashboard:"))
        assert url.endswith("/train")  # the named page, not the root
        assert httpx.get(url.removesuffix("/train") + "/_stcore/health", timeout=5).text == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def browser(stack):
    """Headless Debian Chromium driven by Playwright, and the stack's dashboard server."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it with apt-get install -y chromium")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")
    from playwright.sync_api import sync_playwright

    start_dashboard(stack)
    with sync_playwright() as p:
        # Playwright gives each launch a fresh temporary profile (the fresh --user-data-dir).
        b = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def test_browser_renders_the_finished_job_page(stack, finished, browser, root):
    """The job page as a person sees it; the screenshot lands in test-artifacts/."""
    shots = root / "test-artifacts"
    shots.mkdir(exist_ok=True)
    # tall: Streamlit scrolls inside its own container, so a full-page shot is one viewport
    page = browser.new_page(viewport={"width": 1400, "height": 2800})
    page.goto(f"{stack.dashboard_url}/job?job={finished['jobId']}", timeout=60_000)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=60_000)
    try:
        page.wait_for_selector('.st-key-charts [data-testid="stVegaLiteChart"] canvas, '
                               '.st-key-charts [data-testid="stVegaLiteChart"] svg', timeout=30_000)  # fmt: skip
        page.wait_for_selector('.st-key-metrics-table [data-testid="stDataFrame"]', timeout=30_000)
        page.wait_for_selector('[data-testid="stImage"] img', timeout=30_000)
    finally:
        page.screenshot(path=str(shots / "dashboard-job.png"), full_page=True)
    charts = page.locator('.st-key-charts [data-testid="stVegaLiteChart"]')
    assert charts.count() == 2
    assert "loss vs step" in charts.first.inner_text() and "reward vs step" in charts.last.inner_text()
    table = page.locator('.st-key-metrics-table [data-testid="stDataFrame"]')
    assert table.bounding_box()["height"] > 100  # the five model rows, not an empty frame
    assert page.locator('[data-testid="stImage"] img').count() == 12
    assert page.get_by_text("Held-out metrics per stage").is_visible()
    assert (shots / "dashboard-job.png").stat().st_size > 20_000
    # Icons come from Streamlit's Material font: Debian's Chromium has no emoji font (empty boxes).
    assert page.locator('[data-testid="stSidebarNav"] [data-testid="stIconMaterial"]').count() == 4
    assert not re.search("[\U0001F300-\U0001FAFF\u2600-\u27BF]", page.inner_text("body"))
    page.close()


def test_browser_follows_a_running_job_without_reloading(stack, db, jobs, browser):
    """The live part refreshes on its own (st.fragment(run_every=…)): new lines appear."""
    job_id, attempt = jobs["running"], jobs["attempt"]
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(f"{stack.dashboard_url}/job?job={job_id}", timeout=60_000)
    n = db.jobs.find_one({"_id": job_id})["log_seq"]
    page.get_by_text(f"Logs ({n} lines)").wait_for(timeout=60_000)
    streams.append(db, job_id, attempt, "logs", log_rows(3, "domain", start=900))
    page.get_by_text(f"Logs ({n + 3} lines)").wait_for(timeout=15_000)
    page.wait_for_function("document.body.innerText.includes('domain line 902')", timeout=15_000)
    page.close()


def test_browser_opens_every_page_by_its_url(stack, browser):
    """/train, /jobs, /job?job=…, /previews open by URL (links from the README, the API, the CLI
    and the Action land there); the root and a bare /?job=… link go on to the right page."""
    with api(stack) as c:
        job_id = submit(c, tiny_job_config())
    base = stack.dashboard_url
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    try:
        # the URLs the service prints (dashboard_page) must be the dashboard's own page names
        for url, title in ((dashboard_page(base, "train"), "Train"), (dashboard_page(base, "jobs"), "Jobs"),
                           (dashboard_page(base, "job", job_id), f"Job {job_id}"), (dashboard_page(base, "previews"), "Previews"),
                           (base + "/", "Train"), (f"{base}/?job={job_id}", f"Job {job_id}")):  # fmt: skip
            page.goto(url, timeout=60_000)
            page.locator("h1").filter(has_text=title).first.wait_for(timeout=60_000)
            assert "Page not found" not in page.inner_text("body"), url
        assert page.url == f"{base}/job?job={job_id}"  # the address bar names the page too
        page.goto(base + "/", timeout=60_000)
        page.wait_for_url(f"{base}/train", timeout=30_000)
    finally:
        page.close()
        with api(stack) as c:
            c.post(f"/api/jobs/{job_id}/cancel")
