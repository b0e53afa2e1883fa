"""Preview gates against main, end to end: real pushes through the Action's signed POST (and the
Action itself), a real worker training tiny jobs, the commit status and PR comment posted to
the loopback GitHub. Main trains first; a branch that trains less fails its status with the
delta, a branch that trains as well passes (the gate's default margin is 0: at least as good);
each PR comment carries both models' numbers.

Whether more steps help a tiny model on six images depends on the code of the day, so the
passing branch trains exactly what main trained (training is deterministic on one CPU thread,
seed 0) and is scored on other images: main's model is re-scored on them and the delta is 0."""

from __future__ import annotations

import pytest
from conftest import tiny_job_config
from github_helpers import action_body, link, post_action, pull_request_event, run_action, sha
from service_helpers import api, wait_for, wait_job

from dreamforge.auth import create_project
from dreamforge.github import status as github_status
from dreamforge.local.stack import start_stack

pytestmark = pytest.mark.slow

REPO = "acme/gated"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, gh):
    s = start_stack(tmp_path_factory.mktemp("gates-stack"), workers=0,
                    extra_env={"GITHUB_API_URL": gh.url, "GITHUB_TOKEN": "ghs_test", "DREAMFORGE_GITHUB_WRITE_INTERVAL_S": "0",
                               "DREAMFORGE_POLL_S": "0.1"})  # fmt: skip
    s.start_worker()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def key(stack, db):
    _, k = create_project(db, "gated")
    assert link(stack, k, [{"name": REPO, "id": 4242}]).status_code == 200
    return k


def cfg(steps: int, **evaluate) -> dict:
    # Only the domain stage trains: the gate compares released models, whatever trained them.
    # min_gain 0: a tiny model that learned a little is not "did not learn" on 6 images.
    return tiny_job_config(name=f"gate-{steps}", budget_minutes=None, warm_start={"enabled": False}, rl={"enabled": False},
                           domain={"max_steps": steps, "lr": 0.003},
                           evaluate={"max_samples": 6, "batch_size": 6, "min_gain": 0.0, **evaluate},
                           export={"quantization": "none"})  # fmt: skip


def pr_comment(gh, pr: int) -> str:
    """The newest body posted to pull request ``pr``'s comment (created, then edited in place)."""
    posts = [r["json"]["body"] for r in gh.requests if r["method"] == "POST" and r["path"] == f"/repos/{REPO}/issues/{pr}/comments"]
    return posts[-1] if posts else ""


def test_a_worse_branch_fails_against_main_and_a_better_one_passes(stack, db, key, gh, tmp_path):
    main_sha = sha()
    with api(stack, key) as h:
        # main's gate section: a branch within 0.01 of main passes (rounding in the re-score is no regression)
        r = post_action(stack, key, action_body(REPO, "main", main_sha, {**cfg(90), "gate": {"tolerance": 0.01}}))
        main_job = wait_job(h, r.json()["jobId"])
        assert main_job["status"] == "succeeded", main_job
        key_name = main_job["result"]["primary_metric"]
        main_value = main_job["result"]["models"]["domain"][key_name]
        assert main_value > 0 and "gate" not in main_job["result"]  # main itself is not gated
        fp = main_job["result"]["split_fingerprint"]
        wait_for(lambda: gh.statuses(main_sha) and gh.statuses(main_sha)[-1]["state"] == "success", what="main's status")

        # Fewer steps on the same images: main's numbers are reused (same split fingerprint).
        worse_sha = sha()
        r = post_action(stack, key, action_body(REPO, "fewer-steps", worse_sha, cfg(2), pr=21, head_repo=REPO,
                                                event="pull_request"))  # fmt: skip
        worse = wait_job(h, r.json()["jobId"])
        assert worse["status"] == "succeeded", worse
        gate = worse["result"]["gate"]
        assert gate["passed"] is False and gate["rescored"] is False and worse["result"]["split_fingerprint"] == fp
        assert gate["base"] == f"main@{main_sha[:7]}" and gate["base_job"] == main_job["jobId"]
        assert gate["base_value"] == pytest.approx(main_value, abs=1e-6) and gate["delta"] < 0
    wait_for(lambda: gh.statuses(worse_sha) and gh.statuses(worse_sha)[-1]["state"] != "pending", what="the branch's status")
    final = gh.statuses(worse_sha)[-1]
    assert final["state"] == "failure" and f"{gate['delta']:+.3f} vs main@{main_sha[:7]}" in final["description"], final
    comment = wait_for(lambda: pr_comment(gh, 21), what="PR 21's comment")
    rows = {ln.split("|")[1].strip(): ln for ln in comment.splitlines() if ln.startswith("| ")}
    assert {"base", "domain", f"**main@{main_sha[:7]}** (released, on the same images)"} <= set(rows), comment
    assert f"{main_value:.4g}" in rows[f"**main@{main_sha[:7]}** (released, on the same images)"]
    assert "**Gate ❌ failed**" in comment

    # Main's training, scored on 5 of the images: another split, so main's model is scored again on
    # it; this one goes through the Action, which waits and reports the delta.
    better_sha = sha()
    event = pull_request_event(REPO, REPO, 22, "more-steps", better_sha)
    event["repository"]["default_branch"] = "main"
    run = run_action(tmp_path / "better", endpoint=stack.api_url, event_name="pull_request", event=event,
                     config=cfg(90, max_samples=5), inputs={"secret": "s3cret-for-tests-only-0123456789", "api-key": key,
                                                              "wait": "true"},
                     env={"DREAMFORGE_ACTION_POLL_S": "0.5"}, timeout=240)  # fmt: skip
    assert run.rc == 0, run.stdout + run.summary
    assert run.outputs["gate"] == "passed" and float(run.outputs["delta"]) >= 0
    job = db.jobs.find_one({"_id": run.outputs["job-id"]})
    assert job["source"]["default_branch"] == "main"
    better = job["result"]["gate"]
    assert better["passed"] is True and better["rescored"] is True
    assert job["result"]["baseline"]["split_fingerprint"] != fp and job["result"]["split_fingerprint"] != fp
    assert f"{float(run.outputs['delta']):+.4f}" == f"{better['delta']:+.4f}"
    assert f"| **main@{main_sha[:7]}** |" in run.summary and "**Gate ✅ passed**" in run.summary
    wait_for(lambda: gh.statuses(better_sha) and gh.statuses(better_sha)[-1]["state"] == "success", what="the status")
    assert gh.statuses(better_sha)[-1]["description"].startswith(f"{key_name} {better['value']:.3f}, {better['delta']:+.3f} "
                                                                 f"vs main@{main_sha[:7]}")  # fmt: skip
    comment = wait_for(lambda: pr_comment(gh, 22), what="PR 22's comment")
    assert f"**main@{main_sha[:7]}** (released, re-scored on these images)" in comment and "**Gate ✅ passed**" in comment
    assert github_status.desired_status({**job, "status": "succeeded"})[0] == "success"
