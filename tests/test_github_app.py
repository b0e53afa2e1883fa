"""DreamForge as a GitHub App against the loopback GitHub: installation tokens, repositories linked
only where the App is installed and the repository names the project, GitHub's refusals given up
at once, its rate limits kept by every worker together, the config's failure cases told apart,
the PR comment found by its marker, and the PR of a push found from its sha."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest import tiny_job_config
from fake_github import APP_ID
from github_helpers import SECRET, action_body, link, post_action, pull_request_event, sha
from service_helpers import api

from dreamforge.auth import create_project
from dreamforge.github import status as github_status
from dreamforge.github.webhooks import signature
from dreamforge.jobs import queue
from dreamforge.local.stack import start_stack
from dreamforge.settings import Settings, SettingsError
from dreamforge.store import GITHUB_LIMITS

REPO, REPO_ID = "acme/shelves", 9001
APP_SECRET = "app-webhook-secret-0123456789"
RESULT = {"primary_metric": "iou", "models": {"base": {"iou": 0.1}, "domain": {"iou": 0.3}}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gh):
    gh.install(1, "acme", [REPO, "acme/renamed-later"])
    gh.install(2, "beta", ["beta/tools"])
    gh.repos[REPO] = {"id": REPO_ID, "private": True}
    gh.repos["acme/secret"] = {"id": 9002, "private": True}  # acme's, but the installation excludes it
    s = start_stack(tmp_path_factory.mktemp("gh-app"), workers=0,
                    extra_env={"GITHUB_API_URL": gh.url, "GITHUB_APP_ID": str(APP_ID), "GITHUB_APP_PRIVATE_KEY": gh.app_pem,
                               "GITHUB_APP_WEBHOOK_SECRET": APP_SECRET, "DREAMFORGE_GITHUB_WRITE_INTERVAL_S": "0"})  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def settings(stack, gh):
    return Settings(mongodb_uri=stack.uri, github_api_url=gh.url, github_app_id=APP_ID, github_app_private_key=gh.app_pem,
                    github_write_interval_s=0)  # fmt: skip


@pytest.fixture(scope="module")
def project_a(stack, db, gh):
    pid, key = create_project(db, "acme")
    gh.files[(REPO, "HEAD", ".github/dreamforge-project")] = pid + "\n"
    r = link(stack, key, [{"name": REPO}])
    assert r.status_code == 200, r.text
    assert r.json()["repos"] == [{"name": REPO, "id": REPO_ID}]  # GitHub's id, read with the installation's token
    return pid, key


def finished_job(stack, db, key: str, commit: str, **over) -> str:
    job_id = post_action(stack, key, action_body(REPO, over.pop("branch", "b"), commit, tiny_job_config(), **over)).json()["jobId"]
    db.jobs.update_one({"_id": job_id}, {"$set": {"status": "running", "attempt": 1, "stage": "evaluate"}, "$unset": {"queue_key": ""}})
    queue.finish(db, job_id, 1, "succeeded", result=RESULT)
    return job_id


def test_project_b_can_neither_link_nor_post_for_project_a_repository(stack, db, gh, settings, project_a):
    _, key_b = create_project(db, "beta")
    # not installed / installation excludes it / installed but the repository does not name project B
    for repo, says in [("nobody/else", "not installed"), ("acme/secret", "not installed"), (REPO, ".github/dreamforge-project")]:
        r = link(stack, key_b, [{"name": repo}])
        assert r.status_code == 403 and says in r.json()["detail"], (repo, r.text)
    for proof in ("prj_someone_else", {"type": "dir"}, {"type": "symlink", "target": "/etc/hostname"}):
        gh.files[("beta/tools", "HEAD", ".github/dreamforge-project")] = proof
        assert link(stack, key_b, [{"name": "beta/tools"}]).status_code == 403
    assert link(stack, key_b, [], secret=SECRET).status_code == 200  # B's secret, no repository
    commit = sha()
    r = post_action(stack, key_b, action_body(REPO, "main", commit, tiny_job_config()))
    assert r.status_code == 403 and "not linked" in r.json()["detail"]
    github_status.sync_once(db, settings, now=datetime.now(UTC) + timedelta(minutes=5))
    assert gh.statuses(commit) == [] and db.jobs.count_documents({"source.sha": commit}) == 0
    # A's own push: the status goes out with an installation token minted from a JWT
    mine = sha()
    assert post_action(stack, project_a[1], action_body(REPO, "main", mine, tiny_job_config())).status_code == 201
    github_status.sync_once(db, settings, now=datetime.now(UTC) + timedelta(minutes=5))
    post = next(r for r in gh.requests if r["path"].endswith(f"/statuses/{mine}"))
    assert gh.tokens[post["auth"].split(" ")[1]] == 1
    assert ("POST", "/app/installations/1/access_tokens") in gh.calls()


def test_a_refusal_is_given_up_at_once_and_shown_on_the_job(stack, db, gh, settings, project_a):
    db[GITHUB_LIMITS].delete_many({})
    commit = sha()
    job_id = post_action(stack, project_a[1], action_body(REPO, "full", commit, tiny_job_config())).json()["jobId"]
    gh.max_statuses = 0  # GitHub's 1000 statuses per sha and context, reached
    try:
        github_status.sync_once(db, settings, now=datetime.now(UTC) + timedelta(minutes=5))
        github_status.sync_once(db, settings, now=datetime.now(UTC) + timedelta(hours=5))
    finally:
        gh.max_statuses = 1000
    assert len([r for r in gh.requests if r["path"].endswith(commit)]) == 1  # not retried
    with api(stack, project_a[1]) as h:
        assert "422" in h.get(f"/api/jobs/{job_id}").json()["github_error"]
    assert "github_outbox" not in db.jobs.find_one({"_id": job_id})


@pytest.mark.parametrize("kind, pause_s", [("secondary", 90), ("429", 90), ("bare", 60), ("primary", 120)])
def test_a_rate_limit_pauses_every_job_of_the_installation(stack, db, gh, settings, project_a, kind, pause_s):
    db[GITHUB_LIMITS].delete_many({})
    db.jobs.update_many({"github_outbox": {"$exists": True}}, {"$unset": {"github_outbox": ""}})
    commits = [sha() for _ in range(3)]
    for c in commits:
        post_action(stack, project_a[1], action_body(REPO, f"rl-{c[:6]}", c, tiny_job_config()))
    t = datetime.now(UTC) + timedelta(seconds=5)
    gh.rate_limit(kind)
    mark = len(gh.requests)
    github_status.sync_once(db, settings, now=t)
    # one write was refused; the same sweep posted nothing more for that installation
    assert len([r for r in gh.requests[mark:] if "/statuses/" in r["path"]]) == 1
    until = datetime.fromisoformat(db[GITHUB_LIMITS].find_one({"_id": "installation:1"})["until"]).replace(tzinfo=UTC)
    assert abs((until - t).total_seconds() - pause_s) < 3
    github_status.sync_once(db, settings, now=t + timedelta(seconds=pause_s - 5))
    assert len([r for r in gh.requests[mark:] if "/statuses/" in r["path"]]) == 1  # a second worker waits too
    github_status.sync_once(db, settings, now=until + timedelta(seconds=1))
    assert sorted(len(gh.statuses(c)) for c in commits) == [1, 1, 2]  # the refused one, again


def test_rate_limits_without_headers_back_off_from_a_minute_doubling(stack, db, gh, settings, project_a):
    db[GITHUB_LIMITS].delete_many({})
    db.jobs.update_many({"github_outbox": {"$exists": True}}, {"$unset": {"github_outbox": ""}})
    commit = sha()
    post_action(stack, project_a[1], action_body(REPO, "doubling", commit, tiny_job_config()))
    t = datetime.now(UTC) + timedelta(seconds=5)
    for expected in (60, 120, 240):
        gh.rate_limit("bare")
        github_status.sync_once(db, settings, now=t)
        until = datetime.fromisoformat(db[GITHUB_LIMITS].find_one({"_id": "installation:1"})["until"]).replace(tzinfo=UTC)
        assert abs((until - t).total_seconds() - expected) < 3
        t = until + timedelta(seconds=1)
    github_status.sync_once(db, settings, now=t)  # GitHub takes it: the next limit starts at a minute again
    assert db[GITHUB_LIMITS].find_one({"_id": "installation:1"})["strikes"] == 0
    assert len(gh.statuses(commit)) == 4


def test_content_writes_stay_under_the_per_minute_budget(stack, db, gh, settings, project_a):
    db[GITHUB_LIMITS].delete_many({})
    db.jobs.update_many({"github_outbox": {"$exists": True}}, {"$unset": {"github_outbox": ""}})
    commits = [sha() for _ in range(3)]
    for c in commits:
        post_action(stack, project_a[1], action_body(REPO, f"budget-{c[:6]}", c, tiny_job_config()))
    t = datetime(2030, 1, 1, 12, 0, 10, tzinfo=UTC)
    github_status.sync_once(db, Settings(**{**settings.model_dump(), "github_writes_per_min": 2}), now=t)
    assert sorted(len(gh.statuses(c)) for c in commits) == [0, 1, 1]
    github_status.sync_once(db, settings, now=t + timedelta(seconds=51))  # the next minute
    assert all(len(gh.statuses(c)) == 1 for c in commits)


def test_the_pr_comment_is_found_by_its_marker_and_a_push_finds_its_pr(stack, db, gh, settings, project_a):
    db[GITHUB_LIMITS].delete_many({})
    # a crash after GitHub created the comment and before its id was saved
    commit = sha()
    gh.comments[(REPO, 5)] = [{"id": 77, "url": f"{gh.url}/repos/{REPO}/issues/comments/77", "body": "<!-- dreamforge:preview -->\nold",
                               "user": {"login": "dreamforge[bot]", "type": "Bot"}}]  # fmt: skip
    job_id = finished_job(stack, db, project_a[1], commit, pr=5, head_repo=REPO, event="pull_request")
    mark = len(gh.requests)
    github_status.sync_once(db, settings, now=datetime.now(UTC) + timedelta(minutes=5))
    assert ("PATCH", f"/repos/{REPO}/issues/comments/77") in gh.calls(since=mark)
    assert ("POST", f"/repos/{REPO}/issues/5/comments") not in gh.calls(since=mark)
    assert job_id in gh.comments[(REPO, 5)][0]["body"]
    # a push-only setup: the job names no PR; GitHub's commit -> pulls lookup finds it
    pushed = sha()
    gh.pulls[(REPO, pushed)] = [8]
    job_id = finished_job(stack, db, project_a[1], pushed, branch="pushed-only")
    github_status.sync_once(db, settings, now=datetime.now(UTC) + timedelta(minutes=5))
    assert ("GET", f"/repos/{REPO}/commits/{pushed}/pulls") in gh.calls()
    assert job_id in gh.comments[(REPO, 8)][-1]["body"]
    assert db.jobs.find_one({"_id": job_id})["source"]["pr"] == 8


def deliver(stack, event: dict, delivery: str, kind: str = "push") -> httpx.Response:
    raw = json.dumps(event).encode()
    return httpx.post(stack.api_url + "/api/webhooks/github", content=raw, timeout=30,
                      headers={"X-GitHub-Event": kind, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
                               "X-Hub-Signature-256": signature(APP_SECRET, raw)})  # fmt: skip


def push_event(commit: str, branch: str, *, name: str = REPO, pad: int = 0) -> dict:
    return {"ref": f"refs/heads/{branch}", "before": "0" * 40, "after": commit, "deleted": False,
            "repository": {"full_name": name, "id": REPO_ID}, "commits": ["x" * 1000] * pad}  # fmt: skip


def test_the_apps_webhook_tells_apart_why_a_config_cannot_be_read(stack, db, gh, settings, project_a):
    db[GITHUB_LIMITS].delete_many({})
    shas = {}
    cases = {"dir": {"type": "dir"}, "symlink": {"type": "symlink", "target": "/etc/passwd"},
             "submodule": {"type": "submodule", "submodule_git_url": "https://github.com/x/y"}}  # fmt: skip
    for branch, entry in cases.items():
        commit = shas[branch] = sha()
        gh.files[(REPO, commit, "dreamforge.config.json")] = entry
        r = deliver(stack, push_event(commit, branch), f"kind-{branch}")
        assert r.status_code == 422 and f"is a {'directory' if branch == 'dir' else branch}" in r.json()["detail"], r.text
        with api(stack, project_a[1]) as h:
            p = next(p for p in h.get("/api/previews", params={"repo": REPO}).json() if p["branch"] == branch)
        assert p["status"] == "failed" and r.json()["detail"] == p["detail"]
    github_status.sync_once(db, settings, now=datetime.now(UTC) + timedelta(seconds=5))
    for branch, commit in shas.items():  # the commit says it too
        [posted] = gh.statuses(commit)
        assert posted["state"] == "error" and len(posted["description"]) <= 140
        assert f"is a {'directory' if branch == 'dir' else branch}" in posted["description"]
    # over 1 MB: read with the raw media type; and a webhook body over the usual 1 MiB cap
    big, commit = tiny_job_config(name="big"), sha()
    gh.files[(REPO, commit, "dreamforge.config.json")] = json.dumps(big) + " " * (1 << 20)
    r = deliver(stack, push_event(commit, "big", pad=2000), "kind-big")  # a 2 MB delivery (GitHub sends up to 25 MB)
    assert r.status_code == 201, r.text
    assert db.jobs.find_one({"_id": r.json()["jobId"]})["config"]["name"] == "big"
    assert any(q["accept"] == "application/vnd.github.raw+json" for q in gh.requests)
    assert post_action(stack, project_a[1], b"x" * (2 << 20)).status_code == 413  # other routes keep 1 MiB
    # a pull request: GitHub's merge commit holds another config than the head; the head's trains
    head, merge = sha(), sha()
    gh.files[(REPO, head, "dreamforge.config.json")] = json.dumps(tiny_job_config(name="at-head"))
    gh.files[(REPO, merge, "dreamforge.config.json")] = json.dumps(tiny_job_config(name="at-merge"))
    ev = pull_request_event(REPO, REPO, 14, "feature", head)
    ev["pull_request"]["merge_commit_sha"] = merge  # what GITHUB_SHA is on pull_request
    ev["repository"]["id"] = REPO_ID
    r = deliver(stack, ev, "kind-pr", kind="pull_request")
    assert r.status_code == 201, r.text
    job = db.jobs.find_one({"_id": r.json()["jobId"]})
    assert (job["config"]["name"], job["source"]["sha"]) == ("at-head", head)
    # the App's webhook also brings installation events, which name no repository
    r = deliver(stack, {"action": "created", "installation": {"id": 1}}, "kind-install", kind="installation")
    assert r.status_code == 202 and "names no repository" in r.json()["skipped"]
    # a renamed repository is found by its id
    commit = sha()
    gh.files[("acme/renamed-later", commit, "dreamforge.config.json")] = json.dumps(tiny_job_config(name="renamed"))
    r = deliver(stack, push_event(commit, "renamed", name="acme/renamed-later"), "kind-renamed")
    assert r.status_code == 201 and db.jobs.find_one({"_id": r.json()["jobId"]})["project_id"] == project_a[0]
    # the installation no longer reaches the repository: GitHub's 404 is not "no config"
    gh.installations[1]["repos"].discard(REPO)
    try:
        r = deliver(stack, push_event(sha(), "hidden"), "kind-hidden")
        github_status.sync_once(db, settings, now=datetime.now(UTC) + timedelta(seconds=5))
    finally:
        gh.installations[1]["repos"].add(REPO)
    assert r.status_code == 422 and "private" in r.json()["detail"], r.text
    assert db.github_notes.count_documents({}) == 0  # nothing to post where GitHub shows nothing


def test_the_apps_settings_are_checked_without_echoing_the_key(gh, monkeypatch):
    monkeypatch.setenv("GITHUB_APP_ID", str(APP_ID))
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----\nsecret-bytes\n-----END RSA PRIVATE KEY-----")
    with pytest.raises(SettingsError) as e:
        Settings()
    assert "GITHUB_APP_PRIVATE_KEY" in str(e.value) and "not a PEM private key" in str(e.value)
    assert "secret-bytes" not in str(e.value)
    monkeypatch.delenv("GITHUB_APP_PRIVATE_KEY")
    with pytest.raises(SettingsError, match="go together"):
        Settings()
    # one line with \n escapes, as some platforms store secrets
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", gh.app_pem.replace("\n", "\\n"))
    assert Settings().github_app_private_key == gh.app_pem
