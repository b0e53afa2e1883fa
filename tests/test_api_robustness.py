"""Hostile and unlucky requests against the live API: bounded work per request, and every error
a documented answer (never a bare 500, never a stalled server)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from conftest import tiny_job_config
from service_helpers import api

from dreamforge.auth import create_project
from dreamforge.local.stack import start_stack
from pipeline.config import load_preset, preset_names
from pipeline.data import parse_synthetic_uri
from pipeline.data.errors import DataError

# A reward that takes ~0.3 s a sample: slow, yet well inside the per-sample and batch limits.
SLOW_JS = "function reward(out, gt) { const t = Date.now(); while (Date.now() - t < 300) {} return 1; }"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    # No worker (nothing trains), and a one-thread probe lane that refuses a second request.
    s = start_stack(tmp_path_factory.mktemp("robust"), workers=0,
                    extra_env={"DREAMFORGE_PROBE_WORKERS": "1", "DREAMFORGE_PROBE_WAITING": "0"})  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def job_id(stack):
    with api(stack) as c:
        r = c.post("/api/train", json={"config": tiny_job_config()})
        assert r.status_code == 201, r.text
        return r.json()["jobId"]


def _problem(r: httpx.Response) -> str | list:
    assert r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert set(body) == {"detail"}, body
    return body["detail"]


# -- 8: synthetic URIs and /api/rewards/test ------------------------------------------------
def test_synthetic_uri_bounds_name_the_parameter():
    for uri, name in [("synthetic://generic?n=8000", "n"), ("synthetic://generic?n=4&size=6000", "size"),
                      ("synthetic://generic?n=4&max_objects=500", "max_objects"),
                      ("synthetic://generic?n=4000&size=256", "n=4000 images of size=256")]:  # fmt: skip
        with pytest.raises(DataError, match=name):
            parse_synthetic_uri(uri)
    # every preset's sets, and the config's own defaults, stay inside the bounds
    for preset in preset_names():
        data = load_preset(preset).get("data", {})
        for uri in (data.get("dataset"), data.get("warm_start_dataset")):
            if uri and uri.startswith("synthetic://"):
                parse_synthetic_uri(uri)
    from pipeline.config import DataConfig

    parse_synthetic_uri(DataConfig().dataset)
    parse_synthetic_uri(DataConfig().warm_start_dataset)


def test_reward_test_refuses_oversized_synthetic_sets(stack):
    with api(stack) as c:
        t = time.monotonic()
        r = c.post("/api/rewards/test", json={"dataset": "synthetic://generic?n=8000&seed=1", "samples": 2})
        assert r.status_code == 422, r.text
        assert "n=8000 is over the limit" in str(_problem(r))
        r = c.post("/api/rewards/test", json={"dataset": "synthetic://generic?n=4&size=6000", "samples": 2})
        assert r.status_code == 422 and "size=6000" in str(_problem(r)), r.text
        assert time.monotonic() - t < 5  # refused before anything is generated
        # At the limit, a reward test generates only the samples it scores (~10 s for all 5000).
        t = time.monotonic()
        r = c.post("/api/rewards/test", json={"dataset": "synthetic://generic?n=5000&seed=1", "samples": 4})
        assert r.status_code == 200 and r.json()["samples"] == 4, r.text
        assert time.monotonic() - t < 4


def test_a_full_probe_lane_refuses_at_once_and_other_routes_stay_fast(stack, db):
    quick = {"dataset": "synthetic://generic?n=4&seed=1", "samples": 2}
    slow_result: dict = {}
    _, other_key = create_project(db, "robust-other")

    def slow():
        # 4 cases x 4 samples x 0.3 s: ~5 s in the lane's only thread. The quick probes below may hold
        # the lane at the moment this one arrives; it is then refused (429) and tries again.
        with api(stack) as c:
            for _ in range(50):
                slow_result["r"] = c.post("/api/rewards/test", json={**quick, "samples": 4, "source": SLOW_JS})
                if slow_result["r"].status_code != 429:
                    break
                time.sleep(0.05)

    th = threading.Thread(target=slow)
    th.start()
    with api(stack) as c, api(stack, other_key) as theirs:
        busy = None
        while th.is_alive() and busy is None:
            r = c.post("/api/rewards/test", json=quick)
            if r.status_code == 429:
                busy = r
            else:
                assert r.status_code == 200, r.text
        assert busy is not None, "the probe lane never refused"
        # the project holding the lane is told to wait (429), another that the server is full (503)
        assert int(busy.headers["Retry-After"]) > 0 and "already runs its share" in _problem(busy)
        full = theirs.post("/api/rewards/test", json=quick)
        assert full.status_code == 503 and int(full.headers["Retry-After"]) > 0, full.text
        assert "busy" in _problem(full)
        # Light routes, and reward checks (their own lane), answer while the probe lane is full.
        t = time.monotonic()
        assert c.get("/api/rewards").status_code == 200
        r = c.post("/api/rewards", json={"name": "fine", "source": "function reward(out, gt) { return 1; }"})
        assert r.status_code == 201, r.text
        assert time.monotonic() - t < 5
        assert th.is_alive(), "the slow reward test ended before the light routes were checked"
        th.join(60)
        assert slow_result["r"].status_code == 200, slow_result["r"].text
        assert [row["mean"] for row in slow_result["r"].json()["cases"]] == [1.0] * 4
        # the place is free again
        assert theirs.post("/api/rewards/test", json=quick).status_code == 200


# -- 10: unhandled 500s ---------------------------------------------------------------------
@pytest.mark.parametrize("route", ["logs", "metrics", "logs/stream"])
def test_cursor_beyond_int64_is_422(stack, job_id, route):
    with api(stack) as c:
        r = c.get(f"/api/jobs/{job_id}/{route}", params={"after": 2**64})
        assert r.status_code == 422, r.text
        assert _problem(r)[0]["loc"] == ["query", "after"]
        assert c.get(f"/api/jobs/{job_id}/logs", params={"after": 2**63 - 1}).json()["lines"] == []


@pytest.mark.parametrize("over", [{"seed": 2**70}, {"warm_start": {"max_steps": 2**70}}])
def test_integers_too_large_to_store_are_422(stack, over):
    with api(stack) as c:
        r = c.post("/api/train", json={"config": tiny_job_config(**over)})
        assert r.status_code == 422, r.text
        assert _problem(r)


def test_deeply_nested_json_on_the_github_webhook_is_400(stack):
    deep = b"[" * 200_000 + b"]" * 200_000
    r = httpx.post(stack.api_url + "/api/webhooks/github", content=deep,
                   headers={"content-type": "application/json", "X-GitHub-Event": "push"})  # fmt: skip
    assert r.status_code == 400, r.text
    assert "not a GitHub webhook payload" in _problem(r)


def test_an_unexpected_error_is_a_documented_500_without_internals(stack, db):
    # A job document missing its stages (e.g. written by an older version) breaks the view.
    db["jobs"].insert_one({"_id": "job_broken", "project_id": "prj_dev", "status": "queued"})
    with api(stack) as c:
        r = c.get("/api/jobs/job_broken")
    assert r.status_code == 500
    detail = _problem(r)
    assert "reference" in detail and "Traceback" not in detail and "KeyError" not in detail and "stages" not in detail
    ref = detail.split("reference ")[1].split(")")[0]
    assert ref in (stack.home / "logs" / "api.log").read_text()  # the log has the details under that reference


def test_non_finite_numbers_in_a_request_are_a_documented_422(stack):
    """JSON has no NaN or Infinity, but Python's parser takes them; the 422 that names the field
    must not echo the value back into a response body JSON cannot hold."""
    with api(stack) as c:
        for path, body in [("/api/rewards/test", '{"dataset": "synthetic://generic?n=4", "samples": NaN}'),
                           ("/api/train", '{"config": {}, "epochs": [1, Infinity]}'),
                           ("/api/train", '{"config": {"seed": NaN}}')]:  # fmt: skip
            r = c.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 422, (path, r.status_code, r.text)
            assert _problem(r)


def test_the_reward_tester_reads_no_javascript_file_of_the_server(stack):
    with api(stack) as c:
        for reward in ("/etc/passwd.js", "../../pipeline/rewards/examples/iou.js", "example:../../x"):
            r = c.post("/api/rewards/test", json={"dataset": "synthetic://generic?n=4", "reward": reward})
            assert r.status_code == 422, (reward, r.text)
            assert [d["loc"] for d in _problem(r)] == [["reward"]]


def test_the_reward_tester_runs_the_weak_rewards_and_refuses_them_for_other_tasks(stack):
    with api(stack) as c:
        for reward in ("points", "count"):
            r = c.post("/api/rewards/test", json={"dataset": "synthetic://retail-shelf?n=6&seed=2", "reward": reward,
                                                  "samples": 6})  # fmt: skip
            assert r.status_code == 200, r.text
            cases = {row["case"]: row["mean"] for row in r.json()["cases"]}
            assert cases["exact"] == 1.0 > cases["missing"], (reward, cases)
        r = c.post("/api/rewards/test", json={"dataset": "synthetic://generic?n=4", "reward": "points",
                                              "task": "keypoints"})  # fmt: skip
        assert r.status_code == 422, r.text
        assert [d["loc"] for d in _problem(r)] == [["reward"]] and "detect and segment" in str(_problem(r))


def test_a_stage_that_cannot_fit_its_chosen_gpu_is_refused_at_submit_with_the_numbers(stack, db):
    """Issue 18: not out of memory an hour into a paid run. A 7B model trained in full on an L4
    (its ``compute`` hint) is a 422 on that field, saying how much it needs and what to change."""
    before = db.jobs.count_documents({})
    cfg = tiny_job_config(model="Qwen/Qwen2.5-VL-7B-Instruct", domain={"compute": "L4", "lora": False, "batch_size": 8})
    with api(stack) as c:
        r = c.post("/api/train", json={"config": cfg})
    assert r.status_code == 422, r.text
    (problem,) = _problem(r)
    assert problem["loc"] == ["domain", "compute"]
    assert problem["msg"].startswith("stage domain: full fine-tuning, 8290.0M trainable parameters, about 102.2 GiB of 22 GiB on L4")
    assert "it does not fit; most of it is gradients" in problem["msg"]
    assert "set lora: true" in problem["msg"]
    assert db.jobs.count_documents({}) == before  # nothing queued, nothing billed
