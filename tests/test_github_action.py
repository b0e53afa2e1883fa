"""The Action run as a runner runs it: ``python -m github_action`` in a subprocess with the
``GITHUB_*`` variables, a real event payload at ``GITHUB_EVENT_PATH``, ``GITHUB_OUTPUT`` and
``GITHUB_STEP_SUMMARY`` files and the ``INPUT_*`` variables ``action.yml`` passes, against the
live local API. The last test lets a worker train the job and follows it with ``wait: true``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest
from conftest import tiny_job_config
from github_helpers import PUSH_FIXTURE, SECRET, Proxy, link, pull_request_event, run_action, sha
from service_helpers import wait_for

from dreamforge.auth import create_project
from dreamforge.jobs import queue
from dreamforge.local.stack import start_stack

FIXTURE = json.loads(PUSH_FIXTURE.read_text())
REPO = FIXTURE["repository"]["full_name"]  # Codertocat/Hello-World
DASH = "http://dashboard.test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gh):
    s = start_stack(tmp_path_factory.mktemp("action-stack"), workers=0,
                    extra_env={"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "ghs_test", "DREAMFORGE_DASHBOARD_URL": DASH,
                               "DREAMFORGE_GITHUB_WRITE_INTERVAL_S": "0", "DREAMFORGE_POLL_S": "0.1"})  # fmt: skip
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(stack, db):
    _, k = create_project(db, "codertocat")
    assert link(stack, k, [{"name": REPO, "id": FIXTURE["repository"]["id"]}]).status_code == 200
    return k


def creds(stack, key: str) -> dict[str, str]:
    return {"secret": SECRET, "api-key": key}


def test_action_yml_passes_every_input_and_output(root):
    import yaml

    action = yaml.safe_load((root / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    step = next(s for s in action["runs"]["steps"] if s.get("id") == "run")
    assert step["run"] == '"$DREAMFORGE_PYTHON" -m github_action' and step["env"]["PYTHONPATH"] == "${{ github.action_path }}"
    # The caller's Python stays theirs: setup-python must not touch PATH for later steps.
    setup = next(s for s in action["runs"]["steps"] if str(s.get("uses", "")).startswith("actions/setup-python"))
    assert setup["with"]["update-environment"] is False
    for name, spec in action["inputs"].items():
        assert spec["description"] and ("default" in spec or spec.get("required")), name
        assert step["env"][f"INPUT_{name.upper().replace('-', '_')}"] == f"${{{{ inputs.{name} }}}}", name
    assert {n: o["value"] for n, o in action["outputs"].items()} == {
        n: f"${{{{ steps.run.outputs.{n} }}}}"
        for n in ("job-id", "status", "dashboard-url", "metrics", "verdict", "reward", "reward-score", "gate", "delta")}
    workflow = yaml.safe_load((root / ".github" / "workflows" / "dreamforge.yml").read_text())
    uses = [s.get("uses") for s in workflow["jobs"]["preview"]["steps"]]
    assert "./" in uses and "pull_request_target" not in workflow[True]  # YAML reads the key `on` as True


def test_no_expression_is_expanded_inside_a_script(root):
    """``${{ … }}`` inside ``run:`` is pasted into the shell script before it runs: a branch name or
    a metrics string can inject commands (GitHub's "script injections"). Values go through env."""
    import yaml

    readme = (root / "README.md").read_text()
    snippets = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    docs = [yaml.safe_load((root / "action.yml").read_text()),
            yaml.safe_load((root / ".github" / "workflows" / "dreamforge.yml").read_text()),
            *(yaml.safe_load(s) for s in snippets)]  # fmt: skip
    runs = []

    def walk(node):
        if isinstance(node, dict):
            runs.extend(v for k, v in node.items() if k == "run" and isinstance(v, str))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for d in docs:
        walk(d)
    assert len(runs) >= 4
    assert [r for r in runs if "${{" in r] == []


def test_the_action_imports_neither_torch_nor_the_service(root):
    # A bare runner installs only pydantic and httpx (action.yml); the step must not need more.
    code = ("import sys, github_action.__main__; from pipeline.config import build_config; build_config({}, preset='generic'); "
            "print(sorted(m for m in ('torch', 'transformers', 'dreamforge', 'pymongo', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env={"PATH": os.environ["PATH"], "PYTHONPATH": str(root)},
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert out.strip() == "[]"


def test_push_event_creates_the_job_with_outputs_and_summary(stack, db, key, tmp_path):
    r = run_action(tmp_path / "a", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE,
                   config=tiny_job_config(name="hello"), inputs=creds(stack, key))  # fmt: skip
    assert r.rc == 0, r.stdout
    job_id = r.outputs["job-id"]
    assert re.fullmatch(r"job_[0-9a-f]{16}", job_id)
    assert r.outputs["status"] == "queued"
    assert r.outputs["dashboard-url"] == f"{DASH}/job?job={job_id}"
    assert json.loads(r.outputs["metrics"]) == {"primary_metric": None, "reward": None, "models": {}, "training": {}, "verdict": "",
                                                "released": None}  # fmt: skip
    assert r.outputs["verdict"] == r.outputs["reward"] == r.outputs["reward-score"] == ""  # queued: no verdict or score yet
    job = db.jobs.find_one({"_id": job_id})
    assert job["source"] == {"kind": "github", "repo": REPO, "branch": "master", "sha": FIXTURE["after"], "run_id": "9001",
                             "default_branch": "master"}  # the base its preview is gated against (github/gates.py)
    assert job["config"]["name"] == "hello" and job["status"] == "queued"
    assert f"## DreamForge preview `{job_id}`: queued" in r.summary
    assert f"`{REPO}` · branch `master` · commit `{FIXTURE['after'][:12]}`" in r.summary
    assert "| stage | status | attempts | seconds |" in r.summary and "| warm_start | pending | 0 |  |" in r.summary
    # the same commit and config again (a re-run): the same job
    again = run_action(tmp_path / "b", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE,
                       config=tiny_job_config(name="hello"), inputs=creds(stack, key), env={"GITHUB_RUN_ATTEMPT": "2"})  # fmt: skip
    assert again.rc == 0 and again.outputs["job-id"] == job_id
    assert "already have a job" in again.summary
    assert db.jobs.count_documents({"source.sha": FIXTURE["after"]}) == 1


def test_the_summary_carries_the_preflight_and_its_errors(stack, db, key, tmp_path):
    # the format reward scores every perturbed answer alike: a preflight error, annotated, while the job still queues
    r = run_action(tmp_path / "a", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE,
                   config=tiny_job_config(name="flat-reward", reward="format"), inputs=creds(stack, key))  # fmt: skip
    assert r.rc == 0, r.stdout
    assert r.outputs["status"] == "queued"
    section = r.summary.split("### Preflight", 1)[1]
    assert "**1 error(s)**" in section and "| severity | check | finding | fix |" in section
    assert re.search(r"\| error \| reward \| .*100 % of GRPO groups have zero variance", section)
    assert re.search(r"Estimated on Modal: [\d.]+ min, \$[\d.]+", section)
    assert "::warning title=DreamForge preflight::preflight: the reward 'format'" in r.stdout
    clean = run_action(tmp_path / "b", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE,
                       config=tiny_job_config(name="clean"), inputs=creds(stack, key))  # fmt: skip
    assert clean.rc == 0 and "No errors." in clean.summary.split("### Preflight", 1)[1]


def test_invalid_config_fails_the_step_with_annotations_at_the_field(stack, db, key, tmp_path):
    before = db.jobs.count_documents({})
    text = '{\n  "name": "typo",\n  "rl": {\n    "tmperature": 1.0\n  },\n  "data": {"split": [0.5, 0.2, 0.2]}\n}\n'
    r = run_action(tmp_path / "a", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE, config=text,
                   inputs=creds(stack, key))  # fmt: skip
    assert r.rc == 1
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("::error ")]
    assert any(ln.startswith("::error file=dreamforge.config.json,line=4,title=DreamForge config::rl.tmperature: ")
               and "spelling" in ln for ln in errors), r.stdout  # fmt: skip
    assert any(ln.startswith("::error file=dreamforge.config.json,line=6,") and "data.split" in ln for ln in errors), r.stdout
    assert "the step failed" in r.summary
    broken = run_action(tmp_path / "b", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE,
                        config='{\n  "name": "x",\n  "rl": {,}\n}', inputs=creds(stack, key))  # fmt: skip
    assert broken.rc == 1
    assert "::error file=dreamforge.config.json,line=3,col=10,title=DreamForge::" in broken.stdout
    # the server's own checks (a server path as dataset) come back as annotations too
    server = run_action(tmp_path / "c", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE,
                        config=tiny_job_config(data={"dataset": "gridfs://65a000000000000000000000"}), inputs=creds(stack, key))
    assert server.rc == 1 and "::error file=dreamforge.config.json,line=" in server.stdout and "data.dataset" in server.stdout
    assert db.jobs.count_documents({}) == before


def test_more_than_ten_problems_annotate_nine_and_list_all_in_the_summary(stack, db, key, tmp_path):
    # GitHub shows 10 error annotations per step; the rest would vanish without the summary.
    cfg = tiny_job_config(name="many", rl={f"typo{i}": 1 for i in range(12)})
    r = run_action(tmp_path, endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE, config=cfg, inputs=creds(stack, key))
    assert r.rc == 1
    errors = [ln for ln in r.stdout.splitlines() if ln.startswith("::error ")]
    assert len(errors) == 10 and "3 more problems in dreamforge.config.json: see the job summary" in errors[-1]
    assert "### 12 problems in `dreamforge.config.json`" in r.summary
    assert all(f"rl.typo{i}" in r.summary for i in range(12))


def git(workspace, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(workspace), *args], env=env, check=True, capture_output=True, text=True).stdout.strip()


def test_a_pull_request_trains_the_config_of_its_head_not_of_the_merge_commit(stack, db, key, tmp_path):
    # actions/checkout checks out GITHUB_SHA, the merge commit; the status is for the head sha
    ws = tmp_path / "a" / "workspace"
    ws.mkdir(parents=True)
    git(ws, "init", "-q")
    (ws / "dreamforge.config.json").write_text(json.dumps(tiny_job_config(name="at-head")))
    git(ws, "add", ".")
    git(ws, "commit", "-qm", "head")
    head = git(ws, "rev-parse", "HEAD")
    (ws / "dreamforge.config.json").write_text(json.dumps(tiny_job_config(name="at-merge")))
    git(ws, "commit", "-qam", "merge of the head into main")
    ev = pull_request_event(REPO, REPO, 21, "feature", head)
    r = run_action(tmp_path / "a", endpoint=stack.api_url, event_name="pull_request", event=ev, config=None,
                   inputs=creds(stack, key), env={"GITHUB_SHA": git(ws, "rev-parse", "HEAD")})  # fmt: skip
    assert r.rc == 0, r.stdout
    job = db.jobs.find_one({"_id": r.outputs["job-id"]})
    assert job["source"]["sha"] == head and job["config"]["name"] == "at-head"
    # a head that is not in the clone and cannot be fetched: the step says how to check it out
    gone = pull_request_event(REPO, REPO, 22, "feature", sha())
    r = run_action(tmp_path / "a", endpoint=stack.api_url, event_name="pull_request", event=gone, config=None,
                   inputs=creds(stack, key))  # fmt: skip
    assert r.rc == 1 and "ref: ${{ github.event.pull_request.head.sha }}" in r.stdout


def test_wrong_secret_or_missing_credentials_fail_the_step(stack, db, key, tmp_path):
    r = run_action(tmp_path / "a", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE, config=tiny_job_config(),
                   inputs={"secret": "not-the-secret-0123456789", "api-key": key})  # fmt: skip
    assert r.rc == 1 and "HTTP 401" in r.stdout and "does not match the body" in r.stdout
    r = run_action(tmp_path / "b", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE, config=tiny_job_config(),
                   inputs={})  # fmt: skip
    assert r.rc == 1 and "id-token: write" in r.stdout  # the message shows the permissions to add


def test_tags_and_commits_without_a_config_train_nothing(stack, db, key, tmp_path):
    before = db.jobs.count_documents({})
    tag = {**FIXTURE, "ref": "refs/tags/v1.0"}
    r = run_action(tmp_path / "a", endpoint=stack.api_url, event_name="push", event=tag, config=tiny_job_config(),
                   inputs=creds(stack, key))  # fmt: skip
    assert r.rc == 0 and r.outputs["status"] == "skipped"
    r = run_action(tmp_path / "b", endpoint=stack.api_url, event_name="push", event=PUSH_FIXTURE, config=None,
                   inputs=creds(stack, key))  # fmt: skip
    assert r.rc == 0 and r.outputs["status"] == "skipped" and "no dreamforge.config.json" in r.stdout
    r = run_action(tmp_path / "c", endpoint=stack.api_url, event_name="pull_request_target",
                   event=pull_request_event(REPO, "fork/x", 3, "b", sha()), config=tiny_job_config(), inputs=creds(stack, key))
    assert r.rc == 1 and "pull_request_target" in r.stdout
    assert db.jobs.count_documents({}) == before


def test_5xx_and_network_errors_are_retried_with_backoff(stack, db, key, tmp_path):
    proxy = Proxy(stack.api_url, fail=2)
    try:
        ev = {**FIXTURE, "ref": "refs/heads/retry", "after": sha()}
        r = run_action(tmp_path / "a", endpoint=proxy.url, event_name="push", event=ev, config=tiny_job_config(),
                       inputs={"secret": SECRET})  # no api-key: the POST needs it  # fmt: skip
        assert r.rc == 1 and "needs the `api-key` input" in r.stdout
        r = run_action(tmp_path / "b", endpoint=proxy.url, event_name="push", event=ev, config=tiny_job_config(),
                       inputs=creds(stack, key))  # fmt: skip
        assert r.rc == 0, r.stdout
        assert proxy.hits == 5  # two 502s, then the POST, the GET of the job and the preflight
        assert r.stdout.count("::warning::attempt") == 2
        assert db.jobs.find_one({"_id": r.outputs["job-id"]})["source"]["branch"] == "retry"
    finally:
        proxy.server.shutdown()
    closed = run_action(tmp_path / "c", endpoint="http://127.0.0.1:9", event_name="push", event=ev,
                        config=tiny_job_config(), inputs=creds(stack, key))  # fmt: skip
    assert closed.rc == 1 and "after 5 attempts" in closed.stdout and closed.stdout.count("::warning::attempt") == 4


def test_wait_fails_the_step_when_the_job_fails(stack, db, key, tmp_path):
    # No worker in this stack yet: the job's end is written as a worker writes it (queue.finish).
    ev = {**FIXTURE, "ref": "refs/heads/doomed", "after": sha()}
    tmp = tmp_path / "bad"
    result: dict = {}
    th = threading.Thread(target=lambda: result.update(run=run_action(
        tmp, endpoint=stack.api_url, event_name="push", event=ev, config=tiny_job_config(name="doomed"),
        inputs={**creds(stack, key), "wait": "true"}, env={"DREAMFORGE_ACTION_POLL_S": "0.2"}, timeout=120)))  # fmt: skip
    th.start()
    job = wait_for(lambda: db.jobs.find_one({"source.sha": ev["after"]}), timeout=60, what="the job")
    assert not result  # still waiting
    db.jobs.update_one({"_id": job["_id"]}, {"$set": {"status": "running", "attempt": 1, "stage": "domain"},
                                             "$unset": {"queue_key": ""}})  # fmt: skip
    queue.finish(db, job["_id"], 1, "failed", error={"kind": "user", "stage": "domain", "message": "annotations.json: image 3 is missing"})
    th.join(120)
    r = result["run"]
    assert r.rc == 1
    assert r.outputs["status"] == "failed" and "image 3 is missing" in r.summary
    assert re.search(rf"^::error title=DreamForge::job {job['_id']} failed in stage domain: annotations.json: image 3 is missing$",
                     r.stdout, re.M), r.stdout  # fmt: skip


def test_wait_follows_the_job_to_its_metrics_and_github_shows_them(stack, db, key, gh, tmp_path):
    # Only this test's jobs may reach the worker.
    db.jobs.update_many({"status": "queued"}, {"$set": {"status": "cancelled"}, "$unset": {"queue_key": ""}})
    stack.start_worker()
    head = sha()
    pr = pull_request_event(REPO, REPO, 5, "better-lr", head)
    pr["repository"]["id"] = FIXTURE["repository"]["id"]
    r = run_action(tmp_path / "ok", endpoint=stack.api_url, event_name="pull_request", event=pr,
                   config=tiny_job_config(name="waited", reward="example:retail_facings"), inputs={**creds(stack, key), "wait": "true"},
                   env={"DREAMFORGE_ACTION_POLL_S": "0.5"}, timeout=240)  # fmt: skip
    # A tiny job cannot learn: it succeeds, and the verdict fails the step and the commit status.
    assert r.rc == 1, r.stdout + r.summary
    assert r.outputs["status"] == "succeeded" and r.outputs["verdict"] == "did_not_learn"
    assert "succeeded but the model did not learn" in r.summary and "**The model did not learn.**" in r.summary
    assert "likely cause: the domain stage ran 4 optimizer steps" in r.summary
    metrics = json.loads(r.outputs["metrics"])
    assert metrics["verdict"] == "did_not_learn" and metrics["released"] in ("warm_start", "domain", "reward")
    key_name = metrics["primary_metric"]
    assert {"base", "warm_start", "domain", "reward"} <= set(metrics["models"])
    assert isinstance(metrics["models"]["reward"][key_name], float)
    assert "| domain | done | 1 |" in r.summary and "| model | " in r.summary and "| reward | " in r.summary
    assert "PR #5" in r.summary
    released = metrics["released"]
    assert f"**{key_name}** of the released model ({released}): **{metrics['models'][released][key_name]:.4g}**" in r.summary
    assert "eval_seconds" not in r.summary and f"| model | {key_name} | " in r.summary
    # the job's JavaScript reward, scored on the held-out split for every model, under its name
    assert metrics["reward"] == r.outputs["reward"] == "retail_facings.js"
    scores = {m: metrics["models"][m].get("reward_score") for m in metrics["models"]}
    assert all(isinstance(scores[m], float) for m in ("base", "warm_start", "domain", "reward")), scores
    assert r.outputs["reward-score"] == f"{scores[released]:.4g}"
    assert " reward: retail_facings |" in next(ln for ln in r.summary.splitlines() if ln.startswith("| model |"))
    assert "reward_score" not in r.summary
    # the worker's status thread posted pending → success, then the PR comment with the same numbers
    wait_for(lambda: any(c == ("POST", f"/repos/{REPO}/issues/5/comments") for c in gh.calls()), timeout=30,
             what="the PR comment")  # fmt: skip
    states = [s["state"] for s in gh.statuses(head)]
    assert states[0] == "pending" and states[-1] == "failure" and set(states[:-1]) == {"pending"}
    assert gh.statuses(head)[-1]["description"].startswith(f"did not learn: {key_name} ")
    assert f", reward: retail_facings {scores[released]:.3f}, see the dashboard" in gh.statuses(head)[-1]["description"]
    comment = next(c["json"]["body"] for c in gh.requests if c["path"] == f"/repos/{REPO}/issues/5/comments"
                   and c["method"] == "POST")  # fmt: skip
    assert f"{metrics['models']['reward'][key_name]:.4g}" in comment
    header = next(ln for ln in comment.splitlines() if ln.startswith("| model |"))
    assert " reward: retail_facings |" in header and "reward_score" not in comment
    assert f" {scores['reward']:.4g} |" in next(ln for ln in comment.splitlines() if ln.startswith("| reward |"))
