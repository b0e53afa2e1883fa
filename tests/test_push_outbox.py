"""GitHub's own webhook while GitHub's API is away (``dreamforge/github/push_outbox.py``): a verified
push is accepted with 202 and stored, its preview says it waits for GitHub, and once GitHub
answers again the outbox reads the config at the pushed sha and the job appears. Real HTTP
against the stack's API, a loopback GitHub that goes down and comes back."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import tiny_job_config
from github_helpers import SECRET, link, sha
from service_helpers import api

from dreamforge.auth import create_project
from dreamforge.github.webhooks import signature
from dreamforge.jobs import queue
from dreamforge.local.stack import start_stack
from dreamforge.store import GITHUB_LIMITS, GITHUB_PUSHES

REPO = "acme/outage"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gh):
    s = start_stack(tmp_path_factory.mktemp("push-outbox"), workers=0,
                    extra_env={"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "ghs_test"})  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(stack, db):
    _, k = create_project(db, "outage")
    assert link(stack, k, [{"name": REPO, "id": 4242}]).status_code == 200
    return k


def push(stack, branch: str, commit: str, delivery: str) -> httpx.Response:
    raw = json.dumps({"ref": f"refs/heads/{branch}", "before": "0" * 40, "after": commit, "deleted": False,
                      "repository": {"full_name": REPO, "id": 4242}}).encode()  # fmt: skip
    return httpx.post(stack.api_url + "/api/webhooks/github", content=raw, timeout=30,
                      headers={"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
                               "X-Hub-Signature-256": signature(SECRET, raw)})  # fmt: skip


def wait_for(what, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if got := what():
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def preview(stack, key: str, branch: str) -> dict:
    with api(stack, key) as h:
        return next(p for p in h.get("/api/previews", params={"repo": REPO}).json() if p["branch"] == branch)


@pytest.mark.parametrize("outage", ["down", "unreachable"])
def test_a_push_while_github_is_away_is_kept_and_trains_once_github_is_back(stack, db, key, gh, outage):
    commit, branch = sha(), f"during-{outage}"
    gh.files[(REPO, commit, "dreamforge.config.json")] = json.dumps(tiny_job_config(name=f"outage-{outage}"))
    setattr(gh, outage, True)
    try:
        t0 = time.monotonic()
        r = push(stack, branch, commit, f"d-{outage}")
        assert r.status_code == 202, r.text  # was 502: GitHub does not redeliver, so the push was lost
        assert time.monotonic() - t0 < 10  # inside GitHub's delivery timeout
        assert r.json()["status"] == "waiting_for_github" and r.json()["jobId"] is None
        assert "GitHub did not answer" in r.json()["detail"]
        assert db.jobs.count_documents({"source.sha": commit}) == 0
        p = preview(stack, key, branch)
        assert (p["status"], p["sha"], p["jobId"]) == ("waiting_for_github", commit, None)
        assert "dreamforge.config.json" in p["detail"]
        again = push(stack, branch, commit, f"d-{outage}")  # GitHub's manual redelivery meanwhile
        assert again.status_code == 202 and again.json()["duplicate"] is True
        # the outbox keeps trying while GitHub is away, and nothing is created meanwhile
        wait_for(lambda: (db[GITHUB_PUSHES].find_one({"delivery": f"d-{outage}"}) or {}).get("failures", 0) >= 2)
        assert db.jobs.count_documents({"source.sha": commit}) == 0
    finally:
        setattr(gh, outage, False)
    # the stored delivery is removed last, once its job and the preview are in place
    wait_for(lambda: db[GITHUB_PUSHES].count_documents({"delivery": f"d-{outage}"}) == 0)
    job = db.jobs.find_one({"source.sha": commit})
    assert job["status"] == "queued" and job["config"]["name"] == f"outage-{outage}"
    assert job["source"]["branch"] == branch and job["source"]["repo"] == REPO
    p = preview(stack, key, branch)
    assert (p["status"], p["jobId"], p["detail"]) == ("queued", job["_id"], None)
    r = push(stack, branch, commit, f"d-{outage}")  # a late redelivery finds the job, once
    assert r.status_code == 200 and r.json()["jobId"] == job["_id"] and r.json()["duplicate"] is True
    assert db.jobs.count_documents({"source.sha": commit}) == 1


def test_pushes_kept_during_an_outage_end_with_the_newest_as_the_preview(stack, db, key, gh):
    older, newer, branch = sha(), sha(), "two-pushes"
    for i, c in enumerate((older, newer)):
        gh.files[(REPO, c, "dreamforge.config.json")] = json.dumps(tiny_job_config(name=f"push-{i}"))
    gh.down = True
    try:
        assert push(stack, branch, older, "d-older").status_code == 202
        assert push(stack, branch, newer, "d-newer").status_code == 202
        assert preview(stack, key, branch)["sha"] == newer
    finally:
        gh.down = False
    wait_for(lambda: db[GITHUB_PUSHES].count_documents({"delivery": {"$in": ["d-older", "d-newer"]}}) == 0)
    p = preview(stack, key, branch)
    new_job = db.jobs.find_one({"source.sha": newer})
    assert p["jobId"] == new_job["_id"] and new_job["status"] == "queued"
    # the older commit never trains: superseded whichever order the outbox read them in
    assert db.jobs.count_documents({"source.sha": older, "status": {"$in": ["queued", "running"]}}) == 0


def test_a_bad_config_read_after_an_outage_shows_on_the_preview(stack, db, key, gh):
    commit, branch = sha(), "bad-after-outage"
    gh.files[(REPO, commit, "dreamforge.config.json")] = json.dumps(tiny_job_config(rl={"tmperature": 1.0}))
    gh.down = True
    try:
        assert push(stack, branch, commit, "d-bad").status_code == 202
    finally:
        gh.down = False
    p = wait_for(lambda: (q := preview(stack, key, branch))["status"] == "failed" and q)
    assert p["jobId"] is None and "rl.tmperature" in p["detail"]
    assert db.jobs.count_documents({"source.sha": commit}) == 0
    # GitHub's manual redelivery of it starts over: the same bad file, now said to GitHub
    r = push(stack, branch, commit, "d-bad")
    assert r.status_code == 422 and "tmperature" in r.text


def test_a_read_waits_out_the_tokens_rate_limit_pause_shared_by_every_process(stack, db, key, gh):
    # A worker was told to wait (github/limits.py); the API's reads of the same token wait too.
    cred = "token:" + hashlib.sha256(b"ghs_test").hexdigest()[:16]
    until = datetime.now(UTC) + timedelta(minutes=10)
    db[GITHUB_LIMITS].insert_one({"_id": cred, "until": queue.stamp(until), "expires_at": until})
    commit, mark = sha(), len(gh.requests)
    gh.files[(REPO, commit, "dreamforge.config.json")] = json.dumps(tiny_job_config(name="paused"))
    try:
        r = push(stack, "paused", commit, "d-paused")
        assert r.status_code == 202 and r.json()["status"] == "waiting_for_github" and "paused until" in r.json()["detail"]
        assert gh.calls(since=mark) == []  # GitHub was not asked
        assert db[GITHUB_PUSHES].find_one({"delivery": "d-paused"})["due"] >= queue.stamp(until - timedelta(seconds=5))
    finally:
        db[GITHUB_LIMITS].delete_one({"_id": cred})
        db[GITHUB_PUSHES].delete_one({"delivery": "d-paused"})
