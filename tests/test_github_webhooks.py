"""The server side of the GitHub integration over real HTTP: signed Action posts, GitHub's own
webhook, forks held for approval, superseding, previews, and the commit status outbox posting to
a loopback GitHub that records every request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import tiny_job_config
from github_helpers import SECRET, action_body, link, post_action, pull_request_event, sha
from service_helpers import api

from dreamforge.auth import create_project
from dreamforge.github import status as github_status
from dreamforge.github.webhooks import signature, signature_ok
from dreamforge.jobs import queue
from dreamforge.local.stack import start_stack
from dreamforge.settings import Settings

REPO = "acme/shelves"
DASH = "http://dashboard.test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gh):
    s = start_stack(tmp_path_factory.mktemp("gh-stack"), workers=0,
                    extra_env={"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "ghs_test", "DREAMFORGE_DASHBOARD_URL": DASH,
                               "DREAMFORGE_GITHUB_WRITE_INTERVAL_S": "0"})  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(stack, db):
    _, k = create_project(db, "acme")
    r = link(stack, k, [{"name": REPO, "id": 777}])
    assert r.status_code == 200, r.text
    assert r.json() == {"repos": [{"name": REPO, "id": 777}], "webhook_secret_set": True}  # the secret is never returned
    return k


@pytest.fixture(scope="module")
def settings(stack, gh):
    return Settings(mongodb_uri=stack.uri, github_api_url=gh.url, github_token="ghs_test", dashboard_url=DASH,
                    github_write_interval_s=0)  # fmt: skip


class Clock:
    """sync_once's notion of now, moved past every scheduled look so each call posts what changed."""

    def __init__(self) -> None:
        self.t = datetime.now(UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(minutes=5)
        return self.t


def cfg(name: str) -> dict:
    return tiny_job_config(name=name)


def test_signature_known_answer_from_githubs_documentation():
    # docs.github.com "Validating webhook deliveries": this secret and payload give this signature.
    sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert signature("It's a Secret to Everybody", b"Hello, World!") == sig
    assert signature_ok("It's a Secret to Everybody", b"Hello, World!", sig)
    assert not signature_ok("It's a Secret to Everybody", b"Hello, World?", sig)
    assert not signature_ok("It's a Secret to Everybody", b"Hello, World!", None)


def test_forged_requests_are_401_and_create_nothing(stack, db, key):
    before = db.jobs.count_documents({})
    body = action_body(REPO, "main", sha(), cfg("forged"))
    raw = json.dumps(body).encode()
    tampered = raw.replace(b'"lr": 0.002', b'"lr": 0.9')
    assert tampered != raw
    cases = {
        "tampered body": post_action(stack, key, tampered, sig=signature(SECRET, raw)),
        "wrong secret": post_action(stack, key, raw, secret="not-the-secret-0123456789"),
        "missing header": post_action(stack, key, raw, sig=""),
        "stale timestamp": post_action(stack, key, {**body, "timestamp": body["timestamp"] - 3600}),
        "future timestamp": post_action(stack, key, {**body, "timestamp": body["timestamp"] + 3600}),
    }
    for what, r in cases.items():
        assert r.status_code == 401, (what, r.text)
    assert "does not match" in cases["wrong secret"].json()["detail"]
    assert "X-DreamForge-Signature-256" in cases["missing header"].json()["detail"]
    assert "stale" in cases["stale timestamp"].json()["detail"]
    # a valid signature but no API key, or another project's key: 401 / 403
    r = httpx.post(stack.api_url + "/api/webhooks/github-action", content=raw,
                   headers={"X-DreamForge-Signature-256": signature(SECRET, raw)})  # fmt: skip
    assert r.status_code == 401
    _, other = create_project(db, "other")
    link(stack, other, [], secret=SECRET)
    r = post_action(stack, other, raw)
    assert r.status_code == 403 and "not linked" in r.json()["detail"]
    assert db.jobs.count_documents({}) == before


def test_a_repository_belongs_to_one_project(stack, db, key):
    _, other = create_project(db, "squatter")
    r = link(stack, other, [{"name": REPO}])
    assert r.status_code == 409
    r = link(stack, other, [{"name": "someone/else", "id": 777}])  # the numeric id is taken too
    assert r.status_code == 409


def test_replayed_delivery_and_same_push_give_one_job(stack, db, key):
    commit = sha()
    body = action_body(REPO, "dedupe", commit, cfg("dedupe"))
    first = post_action(stack, key, body)
    assert first.status_code == 201, first.text
    job_id = first.json()["jobId"]
    assert first.json()["dashboard_url"] == f"{DASH}/job?job={job_id}"
    replay = post_action(stack, key, body)  # the identical signed request again
    assert replay.status_code == 200
    assert replay.json() == {**first.json(), "created": False, "duplicate": True}
    rerun = post_action(stack, key, {**body, "delivery": "another-delivery-id", "run_attempt": 2})  # a re-run of the workflow
    assert rerun.status_code == 200 and rerun.json()["jobId"] == job_id and not rerun.json()["duplicate"]
    # a different config at the same commit is a different job
    other = post_action(stack, key, {**body, "delivery": "third-delivery-id", "config": cfg("dedupe-2")})
    assert other.status_code == 201 and other.json()["jobId"] != job_id
    assert db.jobs.count_documents({"source.sha": commit}) == 2
    job = db.jobs.find_one({"_id": job_id})
    assert job["source"] == {"kind": "github", "repo": REPO, "branch": "dedupe", "sha": commit, "run_id": "42"}


def test_a_delivery_recorded_without_its_job_is_finished_by_the_retry(stack, db, key):
    # The first try died between recording the delivery and submitting (a database error): the
    # Action's retry of the same signed body must create the job, not get 409 for a day.
    pid = db.projects.find_one({"github_repos": REPO})["_id"]
    body = action_body(REPO, "half-done", sha(), cfg("half-done"))
    db.github_deliveries.insert_one({"_id": queue.scoped(pid, body["delivery"]), "created_at": datetime.now(UTC)})
    r = post_action(stack, key, body)
    assert r.status_code == 201, r.text
    assert post_action(stack, key, body).json() == {**r.json(), "created": False, "duplicate": True}


def test_invalid_config_is_422_naming_the_field_and_queues_nothing(stack, db, key):
    bad = tiny_job_config(rl={"tmperature": 1.0})
    r = post_action(stack, key, action_body(REPO, "bad", sha(), bad))
    assert r.status_code == 422
    assert ["dreamforge.config.json", "rl", "tmperature"] in [e["loc"] for e in r.json()["detail"]]
    r = post_action(stack, key, action_body(REPO, "bad", sha(), cfg("x") | {"reward": "no-such-reward"}))
    assert r.status_code == 422 and "reward" in r.text
    assert db.jobs.count_documents({"source.branch": "bad"}) == 0


def test_second_push_supersedes_the_first(stack, db, key):
    a, b, c = sha(), sha(), sha()
    ra = post_action(stack, key, action_body(REPO, "feature", a, cfg("v1")))
    rb = post_action(stack, key, action_body(REPO, "feature", b, cfg("v2")))
    job_a, job_b = ra.json()["jobId"], rb.json()["jobId"]
    assert rb.json()["superseded"] == [job_a]
    with api(stack, key) as h:
        old = h.get(f"/api/jobs/{job_a}").json()
        assert old["status"] == "cancelled"
        assert old["error"]["message"] == f"superseded by {b[:12]}"
        assert "queue_key" not in db.jobs.find_one({"_id": job_a})  # no worker will claim it
        # requeued by hand, it is queued again and its commit status is due to be posted again
        db.jobs.update_one({"_id": job_a}, {"$unset": {"github_outbox": ""}})
        assert h.post(f"/api/jobs/{job_a}/requeue").json()["status"] == "queued"
        requeued = db.jobs.find_one({"_id": job_a})
        assert "github_outbox" in requeued and "superseded_by" not in requeued
        h.post(f"/api/jobs/{job_a}/cancel")
        # a running job is asked to stop, as POST /cancel does
        db.jobs.update_one({"_id": job_b}, {"$set": {"status": "running", "attempt": 1}, "$unset": {"queue_key": ""}})
        rc = post_action(stack, key, action_body(REPO, "feature", c, cfg("v3")))
        assert rc.json()["superseded"] == [job_b]
        running = db.jobs.find_one({"_id": job_b})
        assert running["status"] == "running" and running["cancel_requested"] is True
        # another branch is untouched; the previews list the latest job per branch
        post_action(stack, key, action_body(REPO, "other-branch", sha(), cfg("v1")))
        previews = {(p["repo"], p["branch"]): p for p in h.get("/api/previews").json()}
        assert previews[(REPO, "feature")]["jobId"] == rc.json()["jobId"]
        assert previews[(REPO, "feature")]["sha"] == c
        assert previews[(REPO, "feature")]["dashboard_url"] == f"{DASH}/job?job={rc.json()['jobId']}"
        assert (REPO, "other-branch") in previews
        assert [p["branch"] for p in h.get("/api/previews", params={"repo": "nope/nope"}).json()] == []


def test_fork_pull_request_waits_for_approval(stack, db, key, gh, settings):
    head = sha()
    body = action_body(REPO, "fork-idea", head, cfg("fork"), pr=7, head_repo="mallory/shelves", event="pull_request")
    r = post_action(stack, key, body)
    assert r.status_code == 201 and r.json()["status"] == "awaiting_approval"
    job_id = r.json()["jobId"]
    doc = db.jobs.find_one({"_id": job_id})
    assert "queue_key" not in doc  # not claimable
    assert doc["source"]["branch"] == "mallory:fork-idea"  # never the repository's own branch of that name
    github_status.sync_once(db, settings, now=Clock()())
    assert gh.statuses(head)[-1]["state"] == "pending"
    assert gh.statuses(head)[-1]["description"].startswith("awaiting approval")
    _, stranger = create_project(db, "stranger")
    with api(stack, stranger) as other:
        assert other.post(f"/api/jobs/{job_id}/approve").status_code == 404
    with api(stack, key) as h:
        r = h.post(f"/api/jobs/{job_id}/approve")
        assert r.status_code == 200 and r.json()["status"] == "queued"
        assert db.jobs.find_one({"_id": job_id})["queue_key"].endswith(job_id)
        again = h.post(f"/api/jobs/{job_id}/approve")
        assert again.status_code == 409 and "queued" in again.json()["detail"]
    github_status.sync_once(db, settings, now=Clock()())
    assert gh.statuses(head)[-1]["description"] == "queued"
    db.jobs.update_one({"_id": job_id}, {"$set": {"status": "cancelled"}, "$unset": {"queue_key": ""}})


def _run(db, job_id: str, stage: str | None = None) -> None:
    """What a worker's claim does to the job (tested in test_queue.py), without running stages."""
    db.jobs.update_one({"_id": job_id}, {"$set": {"status": "running", "attempt": 1, "stage": stage}, "$unset": {"queue_key": ""}})


RESULT = {"primary_metric": "iou", "models": {"base": {"iou": 0.05, "parse_rate": 0.2}, "domain": {"iou": 0.31, "parse_rate": 1.0},
          "reward": {"iou": 0.42, "parse_rate": 1.0}}, "release": {"release_format": "nf4"}}  # fmt: skip


def test_commit_status_and_one_pr_comment_follow_the_job(stack, db, key, gh, settings):
    clock = Clock()
    first, second = sha(), sha()
    r = post_action(stack, key, action_body(REPO, "pr-branch", first, cfg("pr1"), pr=12, head_repo=REPO, event="pull_request"))
    job_id = r.json()["jobId"]
    mark = len(gh.requests)
    github_status.sync_once(db, settings, now=clock())
    _run(db, job_id)
    queue.stage_started(db, job_id, 1, "warm_start")
    github_status.sync_once(db, settings, now=clock())
    github_status.sync_once(db, settings, now=clock())  # nothing changed: nothing posted
    queue.stage_started(db, job_id, 1, "domain")
    github_status.sync_once(db, settings, now=clock())
    queue.finish(db, job_id, 1, "succeeded", result=RESULT)
    github_status.sync_once(db, settings, now=clock())
    github_status.sync_once(db, settings, now=clock())  # finished and posted: the job left the outbox
    mine = [r for r in gh.requests[mark:] if first in r["path"] or "/issues/12/" in r["path"]]
    assert [(r["method"], r["path"]) for r in mine] == [
        ("POST", f"/repos/{REPO}/statuses/{first}"),
        ("POST", f"/repos/{REPO}/statuses/{first}"),
        ("POST", f"/repos/{REPO}/statuses/{first}"),
        ("POST", f"/repos/{REPO}/statuses/{first}"),
        ("GET", f"/repos/{REPO}/issues/12/comments"),  # ours, by its marker, before creating one
        ("POST", f"/repos/{REPO}/issues/12/comments"),
    ]
    states = [(r["json"]["state"], r["json"]["description"]) for r in mine[:4]]
    assert states == [("pending", "queued"), ("pending", "training: stage 1/4 warm-start SFT"),
                      ("pending", "training: stage 2/4 domain SFT"), ("success", "trained: iou 0.420, nf4 release")]  # fmt: skip
    assert {r["json"]["context"] for r in mine[:4]} == {"dreamforge/train"}
    assert {r["json"]["target_url"] for r in mine[:4]} == {f"{DASH}/job?job={job_id}"}
    assert mine[0]["auth"] == "token ghs_test"
    comment = mine[5]["json"]["body"]
    assert "| reward | 0.42 | 1 |" in comment and "| model | iou | parse_rate |" in comment and job_id in comment
    assert "github_outbox" not in db.jobs.find_one({"_id": job_id})
    # a newer push to the PR edits the same comment in place
    r2 = post_action(stack, key, action_body(REPO, "pr-branch", second, cfg("pr2"), pr=12, head_repo=REPO, event="pull_request"))
    job2 = r2.json()["jobId"]
    _run(db, job2, "domain")
    queue.finish(db, job2, 1, "failed", error={"kind": "user", "stage": "domain", "message": "dataset has no images"})
    mark = len(gh.requests)
    github_status.sync_once(db, settings, now=clock())
    assert gh.calls(since=mark) == [("POST", f"/repos/{REPO}/statuses/{second}"), ("PATCH", f"/repos/{REPO}/issues/comments/1001")]
    assert gh.requests[mark]["json"]["state"] == "failure"
    assert gh.requests[mark]["json"]["description"] == "failed in domain: dataset has no images"
    assert "dataset has no images" in gh.requests[mark + 1]["json"]["body"]


def test_the_pull_request_event_of_a_pushed_commit_attaches_the_pr(stack, db, key, gh, settings):
    commit = sha()
    pushed = post_action(stack, key, action_body(REPO, "both-events", commit, cfg("both"))).json()
    opened = post_action(stack, key, action_body(REPO, "both-events", commit, cfg("both"), pr=31, head_repo=REPO,
                                                 event="pull_request"))  # fmt: skip
    assert opened.status_code == 200 and opened.json()["jobId"] == pushed["jobId"]
    assert db.jobs.find_one({"_id": pushed["jobId"]})["source"]["pr"] == 31
    _run(db, pushed["jobId"], "evaluate")
    queue.finish(db, pushed["jobId"], 1, "succeeded", result=RESULT)
    github_status.sync_once(db, settings, now=Clock()())
    assert ("POST", f"/repos/{REPO}/issues/31/comments") in gh.calls()


def test_github_down_never_touches_the_job_and_is_retried(stack, db, key, gh, settings):
    clock = Clock()
    commit = sha()
    job_id = post_action(stack, key, action_body(REPO, "outage", commit, cfg("outage"))).json()["jobId"]
    gh.down = True
    try:
        for _ in range(3):
            github_status.sync_once(db, settings, now=clock())
    finally:
        gh.down = False
    doc = db.jobs.find_one({"_id": job_id})
    assert doc["status"] == "queued" and doc["github_failures"] == 3 and "github_posted" not in doc
    assert len([r for r in gh.requests if r["path"].endswith(commit)]) == 3  # one try each, no sleeping retries inside
    github_status.sync_once(db, settings, now=clock())
    assert [s["description"] for s in gh.statuses(commit)] == ["queued"] * 4
    assert db.jobs.find_one({"_id": job_id})["github_failures"] == 0


def test_githubs_own_webhook_reads_the_config_at_the_pushed_sha(stack, db, key, gh):
    commit = sha()
    gh.files[(REPO, commit, "dreamforge.config.json")] = json.dumps(cfg("from-webhook"))
    push = {"ref": "refs/heads/hooked", "before": "0" * 40, "after": commit, "deleted": False,
            "repository": {"full_name": REPO, "id": 777, "default_branch": "trunk"}, "pusher": {"name": "octo"}}  # fmt: skip
    raw = json.dumps(push).encode()

    def deliver(raw: bytes, event: str, delivery: str, secret: str = SECRET) -> httpx.Response:
        return httpx.post(stack.api_url + "/api/webhooks/github", content=raw, timeout=30,
                          headers={"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
                                   "X-Hub-Signature-256": signature(secret, raw)})  # fmt: skip

    assert deliver(raw, "push", "d-1", secret="wrong-secret-0123456789").status_code == 401
    assert deliver(json.dumps({**push, "repository": {"full_name": "nobody/x"}}).encode(), "push", "d-0").status_code == 401
    assert deliver(json.dumps({"zen": "hi", "repository": {"full_name": REPO}}).encode(), "ping", "d-p").json() == {"ok": True}
    r = deliver(raw, "push", "d-1")
    assert r.status_code == 201, r.text
    job = db.jobs.find_one({"_id": r.json()["jobId"]})
    assert job["config"]["name"] == "from-webhook" and job["source"]["branch"] == "hooked" and job["source"]["sha"] == commit
    assert job["source"]["default_branch"] == "trunk"  # the preview gate compares with trunk's model, not "main"
    assert ("GET", f"/repos/{REPO}/contents/dreamforge.config.json") in gh.calls()
    assert deliver(raw, "push", "d-1").json()["duplicate"] is True  # GitHub's redelivery
    # no config at that sha: nothing to train
    nothing = json.dumps({**push, "after": sha()}).encode()
    r = deliver(nothing, "push", "d-2")
    assert r.status_code == 202 and "no dreamforge.config.json" in r.json()["skipped"]
    # a pull request from a fork is held
    fork_sha = sha()
    gh.files[(REPO, fork_sha, "dreamforge.config.json")] = json.dumps(cfg("fork-hook"))
    pr = json.dumps(pull_request_event(REPO, "mallory/shelves", 9, "evil", fork_sha)).encode()
    r = deliver(pr, "pull_request", "d-3")
    assert r.status_code == 201 and r.json()["status"] == "awaiting_approval"
    assert deliver(json.dumps(pull_request_event(REPO, REPO, 9, "x", sha(), action="closed")).encode(), "pull_request",
                   "d-4").status_code == 202  # fmt: skip


def test_a_model_that_did_not_learn_is_a_failed_check_naming_the_released_stage(settings):
    reason = "domain SFT, iou 0.310 on 40 validation images; RL scored 0.300 < 0.310 on validation"
    job = {"_id": "job_0123456789abcdef", "status": "succeeded", "source": {"sha": "a" * 40, "branch": "b"},
           "result": {**RESULT, "release": {"release_format": "nf4", "stage": "domain", "reason": reason}}}  # fmt: skip
    # the commit status quotes the released stage's number (domain 0.31), not the last stage's (RL 0.42)
    assert github_status.desired_status(job) == ("success", "trained: iou 0.310, nf4 release")
    assert f"Released: {reason}." in github_status.comment_body(job, settings)
    job["result"]["verdict"] = {"verdict": "did_not_learn", "problems": ["iou 0.310 on val against 0.300 for the base model"]}
    assert github_status.desired_status(job) == ("failure", "did not learn: iou 0.310, see the dashboard for likely causes")


def test_signed_bodies_with_a_non_finite_or_non_numeric_timestamp_are_refused(stack, db, key):
    # abs(now - NaN) > limit is False: a NaN timestamp used to skip the replay window entirely.
    before = db.jobs.count_documents({})
    body = action_body(REPO, "nan-time", sha(), cfg("nan-time"))
    stamp = json.dumps(body["timestamp"])
    raws = [json.dumps(body).replace(f'"timestamp": {stamp}', f'"timestamp": {bad}').encode()
            for bad in ("NaN", "Infinity", "-Infinity", "1e999", '"NaN"', f'"{stamp}"', "true", "null")]
    assert all(b"timestamp" in raw and raw != json.dumps(body).encode() for raw in raws)
    for raw in raws:
        r = post_action(stack, key, raw)  # correctly signed: only the timestamp is wrong
        assert r.status_code in (401, 422), (raw[-120:], r.status_code, r.text)
        if r.status_code == 422:
            assert any(e["loc"][-1] == "timestamp" for e in r.json()["detail"]), r.text
    assert db.jobs.count_documents({}) == before
    assert post_action(stack, key, body).status_code == 201  # the same body with a real timestamp is fine


def test_the_gate_passes_by_the_margin_or_within_the_tolerance_and_sets_the_status(settings):
    from pipeline.gate import GateConfig, decide

    base = "main@abc1234"
    assert decide(GateConfig(margin=0.02), "f1_50", 0.71, 0.67, base)["text"] == "f1_50 0.710, +0.040 vs main@abc1234"
    assert decide(GateConfig(margin=0.05), "f1_50", 0.71, 0.67, base)["passed"] is False
    worse = decide(GateConfig(), "mean_iou", 0.65, 0.67, base)
    assert worse["passed"] is False and worse["text"] == "mean_iou 0.650, -0.020 vs main@abc1234 (needs ≥ +0.000)"
    assert decide(GateConfig(tolerance=0.03), "mean_iou", 0.65, 0.67, base)["passed"] is True
    # fewer counting errors is better
    assert decide(GateConfig(), "mean_count_error", 0.4, 0.6, base)["passed"] is True
    assert decide(GateConfig(), "mean_count_error", 0.6, 0.4, base)["passed"] is False
    # a model that learned but is worse than main fails the check, naming the delta
    job = {"_id": "job_0123456789abcdef", "status": "succeeded", "source": {"sha": "a" * 40, "branch": "b", "pr": 3},
           "result": {**RESULT, "verdict": {"verdict": "learned"}, "release": {"release_format": "nf4", "stage": "reward"},
                      "baseline": {"name": base, "metrics": {"iou": 0.5, "parse_rate": 1.0}, "rescored": True},
                      "gate": {**decide(GateConfig(), "iou", 0.42, 0.5, base), "rescored": True}}}  # fmt: skip
    assert github_status.desired_status(job) == ("failure", "iou 0.420, -0.080 vs main@abc1234 (needs ≥ +0.000), nf4 release")
    body = github_status.comment_body(job, settings)
    table = [ln for ln in body.splitlines() if ln.startswith("|")]
    assert table[-1] == "| **main@abc1234** (released, re-scored on these images) | 0.5 | 1 |", body  # main beside base → stages
    assert [ln.split("|")[1].strip() for ln in table[2:5]] == ["base", "domain", "reward"]
    assert "**Gate ❌ failed**: iou 0.420, -0.080 vs main@abc1234 (needs ≥ +0.000) (margin +0.000)." in body
    job["result"]["gate"] = {**decide(GateConfig(tolerance=0.1), "iou", 0.42, 0.5, base)}
    paused = {**job, "status": "paused", "paused": {"stage": "domain", "reason": "the job's cap of 5 dollars reached (5.01 spent)"}}
    assert github_status.desired_status(paused) == ("pending", "paused at stage 2/4 domain SFT: the job's cap of 5 dollars "
                                                               "reached (5.01 spent)")  # fmt: skip
    assert github_status.desired_status(job) == ("success", "iou 0.420, -0.080 vs main@abc1234, nf4 release")


def test_the_projects_gate_is_set_over_http_and_the_cli_and_wins_over_mains_config(stack, db, key):
    import os
    import subprocess
    import sys

    from dreamforge.auth import hash_key
    from dreamforge.github.gates import judge

    with api(stack, key) as h:
        assert h.get("/api/gate").json() == {"enabled": True, "metric": None, "margin": 0.0, "tolerance": None,
                                             "branch": None, "project_set": False}  # fmt: skip
        bad = h.put("/api/gate", json={"margin": "lots", "tolerance": -1})
        assert bad.status_code == 422 and {tuple(e["loc"][-1:]) for e in bad.json()["detail"]} == {("margin",), ("tolerance",)}
    pid = db.api_keys.find_one({"_id": hash_key(key)})["project_id"]
    # main's released config asks for +0.1; a branch 0.05 better fails by it while the project sets nothing
    main_id = f"job_gate_main_{sha()[:8]}"
    db.jobs.insert_one({"_id": main_id, "project_id": pid, "status": "succeeded", "config": cfg("m") | {"gate": {"margin": 0.1}}})
    result = {"primary_metric": "iou", "release": {"stage": "domain"}, "models": {"domain": {"iou": 0.55}},
              "baseline": {"name": "main@1234567", "job_id": main_id, "metrics": {"iou": 0.5}, "rescored": False}}  # fmt: skip
    branch = {"_id": "job_gate_branch", "project_id": pid}
    assert judge(db, branch, result)["passed"] is False
    env = {**os.environ, "DREAMFORGE_URL": stack.api_url, "DREAMFORGE_API_KEY": key}
    run = subprocess.run([sys.executable, "-m", "dreamforge.cli", "gate", "--tolerance", "0.02", "--metric", "iou"], env=env,
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "set by the project" in run.stdout and "iou is within 0.02 of the default branch" in run.stdout
    assert judge(db, branch, result)["passed"] is True  # the project's gate wins
    run = subprocess.run([sys.executable, "-m", "dreamforge.cli", "gate", "--margin", "nan"], env=env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 1 and "--margin" in run.stderr
    assert subprocess.run([sys.executable, "-m", "dreamforge.cli", "gate", "--reset"], env=env, capture_output=True,
                          timeout=60).returncode == 0  # fmt: skip
    assert judge(db, branch, result)["passed"] is False
